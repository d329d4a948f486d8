"""The extension's part of one WebUI generation, with the WebUI's objects handed in by the glue.

`scripts/wplus_script.py` only reads the WebUI (`shared.opts`, the device, the installed scripts,
the loaded model) and calls in here:
  process()                       `Extension.begin`: detach stale hooks, request -> session, infotext
  ADetailer's face pass           `Extension.begin_face_pass`: a nested session for that face
  on_cfg_denoiser (every step)    `Extension.step`: CFG rows -> [identity | zero-W+] bank rows, λ or 0
Sessions belong to one processing object (`wplus.webui.lifetime`). Anything that keeps the branch
from working is reported under the image (p.comment), in the image's parameters ("Wplus warning",
which API clients see) and in the console, and the image is generated without the branch: never
silently wrong.
"""
from __future__ import annotations

import copy
import logging
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from wplus.errors import IncompatibleModelError, WPlusError
from wplus.generation.adapters import load_adapter_cached, resolve_adapter_path
from wplus.generation.resolve import IdentityResolver, check_sources
from wplus.generation.schedule import Schedule
from wplus.webui import catalog, forge, infotext, passes
from wplus.webui.lifetime import OwnedSession, Sessions
from wplus.webui.options import WARNING_KEY, PanelArgs, Source
from wplus.webui.session import unet_of
from wplus.webui.settings import ExtensionSettings

log = logging.getLogger("wplus")


@dataclass
class Host:
    """What the glue reads from the WebUI for one call."""

    opts_data: dict = field(default_factory=dict)  # `shared.opts.data`
    device: Any = None  # where the WebUI runs the UNet (`devices.device`; weights may wait on the CPU)
    adetailer: bool = False  # ADetailer is installed


def warn(p: Any, message: str) -> None:
    """Visible under the image, in the image's parameters and the API's `info` (as "Wplus warning":
    the API's info has no comments) and in the console."""
    text = message if message.startswith("W+") else f"W+ Adapter: {message}"
    text = text.replace(": W+ Adapter: ", ": ").replace(": W+: ", ": ")  # "…disabled: W+: no face" reads once
    if hasattr(p, "comment"):
        p.comment(text)
    extra = getattr(p, "extra_generation_params", None)
    if isinstance(extra, dict):  # image metadata: file names, not the user's folders (the console has those)
        extra[WARNING_KEY] = infotext.without_local_paths(" ".join(text.split()))
    log.warning(text)  # the WebUI's logging shows warnings in the console


def own_generation_params(p: Any) -> None:
    """xyz_grid's cells are shallow copies of one `p`: give each its own parameters and comments,
    without the W+ entries an earlier cell left there."""
    extra = getattr(p, "extra_generation_params", None)
    if isinstance(extra, dict):
        p.extra_generation_params = {k: v for k, v in extra.items() if not k.startswith(infotext.PREFIX + " ")}
    comments = getattr(p, "comments", None)
    if isinstance(comments, dict):
        p.comments = {k: v for k, v in comments.items() if not str(k).startswith("W+")}


def checkpoint_family(sd_model: Any) -> str:
    """The WebUI's own idea of the checkpoint's family (its is_sd1/is_sd2/is_sdxl/is_sd3 flags)."""
    for flag, name in (("is_sd3", "SD3"), ("is_sdxl", "SDXL"), ("is_sd2", "SD2"), ("is_sd1", "SD1.x")):
        if getattr(sd_model, flag, False) is True:
            return name
    return ""


def refiner_active(p: Any) -> bool:
    name = getattr(p, "refiner_checkpoint", None)
    at = getattr(p, "refiner_switch_at", None)
    return name not in (None, "", "None", "none") and at is not None and float(at) < 1.0


def host_options(sd_model: Any, host: Host) -> dict[str, Any]:
    """How this host runs the UNet, for a new session (Forge: rows per call, its dtype and device)."""
    return forge.session_options(sd_model) if forge.is_forge(sd_model) else dict(device=host.device)


class Extension:
    """The extension's state across generations: settings, one resolver per settings, the sessions."""

    def __init__(self, read_settings: Callable[[], ExtensionSettings], ext_models: Path) -> None:
        self.read_settings = read_settings
        self.ext_models = ext_models
        self.resolver_factory: Callable[[ExtensionSettings], IdentityResolver] = IdentityResolver
        self.resolvers: dict[ExtensionSettings, IdentityResolver] = {}
        self.sessions = Sessions()  # which processing object owns which session (copies of p own none)

    # -- resolution ---------------------------------------------------------------------------
    def resolver(self, settings: ExtensionSettings | None = None) -> IdentityResolver:
        settings = settings or self.read_settings()
        if settings not in self.resolvers:
            self.resolvers.clear()  # settings changed: drop the old encoder and cache handle
            self.resolvers[settings] = self.resolver_factory(settings)
        return self.resolvers[settings]

    def adapter_dirs(self, settings: ExtensionSettings) -> list[Path]:
        return settings.adapter_dirs(self.ext_models)

    def adapter_choices(self, current: str = "") -> catalog.AdapterChoices:
        """The adapter dropdown; a default adapter that is not on disk says what happens on first use."""
        settings = self.read_settings()
        cause = settings.download_blocker()
        note = (f"not on disk; {cause}, so put it in the models folder" if cause
                else "not on disk yet (will be downloaded)")
        return catalog.adapter_choices(self.adapter_dirs(settings), current, note)

    def adapter(self, request: PanelArgs, settings: ExtensionSettings) -> tuple[Any, Path, str]:
        """(adapter, its file, its short hash) by the one choice rule (the panel's and the API's)."""
        path = resolve_adapter_path(request.adapter, settings, self.adapter_dirs(settings)[1:])
        adapter, adapter_hash = load_adapter_cached(path)
        return adapter, path, adapter_hash

    # -- the panel's buttons --------------------------------------------------------------------
    def preview(self, args: PanelArgs) -> tuple[Any, Any, str]:
        """(aligned face, StyleGAN rendering, status) of the panel's identity."""
        try:
            resolved, rendering = self.resolver().preview(args)
            return resolved.thumbnail, rendering, f"Identity {resolved.info.identity_hash}"
        except WPlusError as e:
            return None, None, f"**{e}**"

    def save_identity(self, args: PanelArgs, name: str) -> str:
        """Save the panel's identity under `name` in the identities folder; the status line."""
        from wplus.identity.files import Identity, identities_dir, save_identity

        name = (name or "").strip()
        if not name:
            return "**W+: type a name to save the identity under.**"
        try:
            resolved = self.resolver().resolve(args)
            ident = Identity(wplus=resolved.wplus[0], name=name, thumbnail=resolved.thumbnail,
                             edits=infotext.format_edits(resolved.info.edits),
                             source=f"webui, mean of {len(resolved.sources)} photos" if resolved.sources else "webui",
                             sources=resolved.sources)
            path = save_identity(ident, name, folder=identities_dir(self.read_settings().models_dir))
        except WPlusError as e:
            return f"**{e}**"
        return f"Saved identity **{name}** to `{path}`"

    # -- a generation -------------------------------------------------------------------------
    def begin(self, p: Any, request: PanelArgs, unet: Any, host: Host) -> None:
        """The branch for `p`'s generation, or a warning saying why it runs without it."""
        problem = _unusable(p, unet)
        if problem:
            warn(p, f"W+ Adapter disabled: {problem}")
            return
        try:
            session, info = self._open(p, request, unet, host)
        except IncompatibleModelError as e:
            family = checkpoint_family(p.sd_model)
            warn(p, f"W+ Adapter disabled: {e}" + (f" (the loaded checkpoint is {family})" if family else ""))
            return
        except WPlusError as e:
            warn(p, f"W+ Adapter disabled: {e}")
            return
        except Exception as e:  # never break the user's generation; say what happened
            traceback.print_exc()
            warn(p, f"W+ Adapter disabled by an unexpected error: {e!r} (details in the console)")
            return
        p.extra_generation_params.update(infotext.params(info))
        if host.adetailer and not request.ad_enabled:
            p.extra_generation_params[infotext.K_AD] = infotext.AD_OFF
        if request.ad_enabled and host.adetailer:  # let ADetailer run us in its face pass
            undo = passes.make_eligible(host.opts_data)
            if undo is not None:
                session.cleanups.append(undo)
        self.sessions.register(p, session)

    def _open(self, p: Any, request: PanelArgs, unet: Any, host: Host) -> tuple[OwnedSession, Any]:
        settings = self.read_settings()
        check_sources(request)  # what the user can fix in the panel first
        adapter, path, adapter_hash = self.adapter(request, settings)
        resolved = self.resolver(settings).resolve(request)
        session = OwnedSession(adapter, resolved.wplus, Schedule(request.scale, request.start),
                                    request=request, **host_options(p.sd_model, host))
        session.attach(unet)
        info = resolved.info
        info.adapter_name, info.adapter_hash = path.name, adapter_hash
        return session, info

    # -- ADetailer's face pass ----------------------------------------------------------------
    def begin_face_pass(self, p: Any, request_of: Callable[[], PanelArgs], host: Host) -> None:
        """ADetailer's inpaint pass of one face: the branch from the first step, the face-pass λ and
        the identity listed for this face (X/Y/Z values come from the generation's own request)."""
        outer = self.sessions.outer()
        request = outer.request if outer is not None else _request_or_none(request_of)
        if request is None:
            return  # the generation itself reported it
        if not request.enabled or not request.ad_enabled:
            p._wplus_face_pass = "off"
            return
        owner = outer.owner if outer is not None else None
        face = self._face_number(p, outer, owner, host)
        name = passes.identity_for_face(passes.parse_identity_list(request.ad_identities), face)
        if name is None:
            p._wplus_face_pass = "skip"
            return
        try:
            session = self._face_session(p, request, name, outer, host)
            session.attach(unet_of(p.sd_model))
        except Exception as e:  # WPlusError: a bad name or file; anything else: never break ADetailer's pass
            if not isinstance(e, WPlusError):
                traceback.print_exc()
            warn(owner if owner is not None else p,
                 f"W+ Adapter: ADetailer's pass of face {face + 1} ran without W+: {e}")
            p._wplus_face_pass = "error"
            return
        p._wplus_face_pass = name
        if owner is not None:
            owner.extra_generation_params.update(_face_pass_params(request))
        self.sessions.register(p, session)

    def _face_number(self, p: Any, outer: OwnedSession | None, owner: Any, host: Host) -> int:
        index = passes.image_index(owner) if owner is not None else 0
        seen = outer.face_passes.get(index, 0) if outer is not None else 0
        same_seed = bool(host.opts_data.get(passes.AD_SAME_SEED, False))
        face = passes.face_number(getattr(p, "seed", None), passes.image_seed(owner, index) if owner else None,
                                  seen, same_seed)
        if outer is not None:
            outer.face_passes[index] = seen + 1
        return face

    def _face_session(self, p: Any, request: PanelArgs, name: str, outer: OwnedSession | None,
                      host: Host) -> OwnedSession:
        schedule = Schedule(request.face_pass_scale(), 0.0, from_first_step=True)
        if name == passes.PANEL_IDENTITY and outer is not None:
            return OwnedSession(outer.adapter, outer.wplus, schedule, request=request, nested=True,
                                     **outer.host_options())
        face_request = copy.copy(request)
        if name != passes.PANEL_IDENTITY:
            face_request.source, face_request.identity = Source.SAVED, name
        settings = self.read_settings()
        adapter, _, _ = self.adapter(request, settings)
        wplus = self.resolver(settings).resolve(face_request).wplus
        options = outer.host_options() if outer is not None else host_options(p.sd_model, host)
        return OwnedSession(adapter, wplus, schedule, request=request, nested=True, **options)

    # -- every sampler step -------------------------------------------------------------------
    def step(self, p: Any, params: Any, unet: Any) -> None:
        """Every sampler step of every pass: the branch runs for the processing object that owns a
        session and for nothing else (ADetailer's passes without W+, other extensions' nested passes)."""
        from wplus.branch import rows

        session = self.sessions.for_step(p)
        if session is None:
            _branch_off(unet)
            self._check_face_pass(p)
            return
        try:
            session.attach(unet)  # a no-op when attached; after a nested pass or a model change it re-attaches
            report_seam(p, session)
            step, total = _progress(params)
            n_cond = rows.batch_rows(params.text_cond) if session.rows_per_call is None else 0
            session.on_step(int(params.x.shape[0]), n_cond, step, total, hires=bool(getattr(p, "is_hr_pass", False)))
        except Exception as e:
            session.close()
            warn(p, f"W+ Adapter stopped mid-generation: {e}")

    def _check_face_pass(self, p: Any) -> None:
        """ADetailer inpainted a face without running our script although W+ wanted that pass."""
        if not passes.is_face_pass(p) or hasattr(p, "_wplus_face_pass"):
            return
        outer = self.sessions.outer()
        if outer is None or outer.request is None or not outer.request.ad_enabled:
            return
        p._wplus_face_pass = "not run"
        if outer.owner is not None:
            warn(outer.owner, "W+ Adapter: ADetailer's face pass ran without W+ (ADetailer did not run the W+ "
                              f"script in it: add '{passes.SCRIPT_STEM}' to Settings > ADetailer > script names, "
                              "or turn off 'W+ in ADetailer's face pass')")


def _unusable(p: Any, unet: Any) -> str:
    """Why this generation cannot have the branch at all ("" when it can)."""
    if refiner_active(p):
        return ("the refiner swaps the model mid-sampling and the W+ branch cannot follow it. Turn the refiner "
                "off to use W+.")
    if unet is None:
        return "the loaded model has no UNet the adapter can attach to."
    return ""


def _request_or_none(request_of: Callable[[], PanelArgs]) -> PanelArgs | None:
    try:
        return request_of()
    except (WPlusError, ValueError, TypeError):
        return None


def _face_pass_params(request: PanelArgs) -> dict[str, str]:
    params = {infotext.K_AD_LAMBDA: f"{request.face_pass_scale():g}"}
    if request.ad_identities.strip():
        names = passes.parse_identity_list(request.ad_identities)
        params[infotext.K_AD_IDENTITIES] = passes.format_identity_list(names)
    return params


def _branch_off(unet: Any) -> None:
    """A pass without a session (ADetailer's face pass with W+ off for it, another extension's
    own pass): an attachment left by the generation around it must not act here."""
    from wplus.branch.hook import attached_handle

    handle = attached_handle(unet)
    if handle is not None:
        handle.scale = 0.0


def report_seam(p: Any, session: OwnedSession) -> None:
    """Say under the image when another extension hid the branch's seam since the last check."""
    handle = session.handle
    if handle is None:
        return
    problem = handle.seam.problem(*handle.seam.take())
    if problem and problem not in session.reported:
        session.reported.add(problem)
        warn(p, f"W+ Adapter: {problem}.")


def _progress(params: Any) -> tuple[int, int]:
    """(step, total) of this denoiser call. The denoiser's own counters are exact; the WebUI's
    `state.sampling_step` is updated after each step's model call, one step late."""
    denoiser = params.denoiser
    step, total = getattr(denoiser, "step", None), getattr(denoiser, "total_steps", None)
    if isinstance(step, int) and isinstance(total, int) and total > 0:
        return step, total
    return int(params.sampling_step), int(params.total_sampling_steps)
