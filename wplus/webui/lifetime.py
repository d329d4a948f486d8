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
from typing import Any

from wplus.webui.session import GenerationSession

SESSION_ATTR = "_wplus_session"

log = logging.getLogger("wplus")


class Sessions:
    def __init__(self) -> None:
        self.live: list[GenerationSession] = []

    def owned(self, p: Any) -> GenerationSession | None:
        """The session `p` itself owns; a shallow copy of `p` sees the attribute but owns nothing."""
        session = getattr(p, SESSION_ATTR, None)
        return session if session is not None and session.owned_by(p) else None

    def of_running_original(self, p: Any) -> bool:
        """`p` is a shallow copy of a processing object whose generation is still running."""
        session = getattr(p, SESSION_ATTR, None)
        return session is not None and not session.owned_by(p) and not session.closed

    def register(self, p: Any, session: GenerationSession) -> None:
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

    def outer(self) -> GenerationSession | None:
        """The session of the generation a nested pass belongs to (the newest open top-level one)."""
        for session in reversed(self.live):
            if not session.closed and session.request is not None and not session.nested:
                return session
        return None

    def for_step(self, p: Any) -> GenerationSession | None:
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


def _close_on_p_close(p: Any, session: GenerationSession) -> None:
    """The WebUI runs `p.close()` in a `closing(p)` block even when sampling raises, while scripts'
    `postprocess` is then skipped: detach there too, so no hook outlives its generation."""
    original = getattr(p, "close", None)
    if original is None:
        return

    def close(*a: Any, **kw: Any) -> Any:
        session.close()
        return original(*a, **kw)

    p.close = close
