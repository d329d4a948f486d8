"""Which processing object owns which W+ session, for hosts whose extensions copy it.

The WebUI hands scripts a processing object `p`; other extensions make shallow copies of it
(ADetailer calls every script's `postprocess()`/`process()` on `copy(p)` between images, X/Y/Z
makes a copy per cell) and nest their own generations in it (ADetailer's face pass). A session is
therefore kept on `p` but owned by exactly that object: a copy sees the attribute and owns nothing,
so closing or starting a session on a copy never touches the generation's. One generation runs at
a time; nested passes (`session.nested`) live inside it. Nothing here imports the WebUI.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Callable

from wplus.webui.session import GenerationSession

SESSION_ATTR = "_wplus_session"

log = logging.getLogger("wplus")


@dataclass
class OwnedSession(GenerationSession):
    """A session with its owner: the one processing object it belongs to, and what nests in it."""

    request: Any = None  # the panel values it was made from (X/Y/Z applied)
    nested: bool = False  # a pass inside another generation (ADetailer's face pass)
    owner_id: int | None = None  # id() of the one processing object this session belongs to
    owner: Any = field(default=None, repr=False)  # that object while the session is open
    face_passes: dict[int, int] = field(default_factory=dict)  # image index -> ADetailer passes seen
    children: list["OwnedSession"] = field(default_factory=list)  # sessions of copies sampled on their own
    cleanups: list[Callable[[], None]] = field(default_factory=list)  # run once on close
    reported: set = field(default_factory=set)  # problems already told to the user

    def own(self, p: Any) -> None:
        """Bind to `p`: shallow copies of `p` see the session but do not own it."""
        self.owner_id, self.owner = id(p), p

    def owned_by(self, p: Any) -> bool:
        return self.owner_id is not None and self.owner_id == id(p)

    def close(self) -> None:
        for child in self.children:
            child.close()
        self.children.clear()
        super().close()
        self.owner = None
        while self.cleanups:
            try:
                self.cleanups.pop()()
            except Exception:  # a cleanup must not keep the others from running
                pass

    def reopen(self, p: Any) -> None:
        """Closed before its processing object `p` finished sampling (another extension called the
        script's postprocess on it): take it up again rather than sample without the branch."""
        self.closed = False
        self.own(p)

    def fork(self, p: Any) -> "OwnedSession":
        """A session with the same code, adapter and schedule for a copy of this session's `p` that
        is sampled on its own; closed with this one at the latest."""
        child = OwnedSession(self.adapter, self.wplus, self.schedule, request=self.request, **self.host_options())
        child.own(p)
        self.children.append(child)
        return child


class Sessions:
    def __init__(self) -> None:
        self.live: list[OwnedSession] = []

    def owned(self, p: Any) -> OwnedSession | None:
        """The session `p` itself owns; a shallow copy of `p` sees the attribute but owns nothing."""
        session = getattr(p, SESSION_ATTR, None)
        return session if session is not None and session.owned_by(p) else None

    def of_running_original(self, p: Any) -> bool:
        """`p` is a shallow copy of a processing object whose generation is still running."""
        session = getattr(p, SESSION_ATTR, None)
        return session is not None and not session.owned_by(p) and not session.closed

    def register(self, p: Any, session: OwnedSession) -> None:
        session.own(p)
        setattr(p, SESSION_ATTR, session)
        self.live.append(session)
        _close_on_p_close(p, session)

    def close(self, p: Any) -> None:
        """Close the session `p` owns (never one a copy of `p` merely shares)."""
        session = self.owned(p)
        if session is not None:
            session.close()
            try:
                delattr(p, SESSION_ATTR)
            except AttributeError:
                pass

    def close_stale(self) -> None:
        """A new top-level generation starts: any session still open is stale (possibly on another
        model's UNet, which the new generation's detach does not reach)."""
        while self.live:
            self.live.pop().close()

    def outer(self) -> OwnedSession | None:
        """The session of the generation a nested pass belongs to (the newest open top-level one)."""
        for session in reversed(self.live):
            if not session.closed and session.request is not None and not session.nested:
                return session
        return None

    def for_step(self, p: Any) -> OwnedSession | None:
        """The session to run a sampler step of `p` with. Sampling proves `p` is still generating: a
        session closed under it is taken up again, and a shallow copy of a generation sampled on its
        own gets its own session, so the branch is never silently off for an image that names the
        identity."""
        session = getattr(p, SESSION_ATTR, None)
        if session is None:
            return None
        if session.owned_by(p):
            if session.closed:
                log.info("W+ Adapter: the branch was closed before this image was sampled; re-opened it")
                session.reopen(p)
                self.live.append(session)
            return session
        if session.closed:
            return None
        child = session.fork(p)
        self.register(p, child)
        return child


def _close_on_p_close(p: Any, session: OwnedSession) -> None:
    """The WebUI runs `p.close()` in a `closing(p)` block even when sampling raises, while scripts'
    `postprocess` is then skipped: detach there too, so no hook outlives its generation."""
    original = getattr(p, "close", None)
    if original is None:
        return

    def close(*a: Any, **kw: Any) -> Any:
        session.close()
        return original(*a, **kw)

    p.close = close
