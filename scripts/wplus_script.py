"""W+ Adapter for AUTOMATIC1111's WebUI: the always-visible panel and the branch during sampling.

Thin glue: the panel, identity resolution, row layout and session live in `wplus/` (host-agnostic,
tested without the WebUI). Lifetime of the branch in one generation:
  process()                       detach stale hooks, resolve identity + adapter, attach, infotext
  process_before_every_sampling() re-attach if the model changed (hires checkpoint)
  on_cfg_denoiser (every step)    CFG rows -> [identity | zero-W+] bank rows, λ or 0 (delayed start);
                                  in Forge each UNet call says its rows (wplus/webui/forge.py)
  postprocess() / p.close()       detach (p.close also runs when sampling raises)
Sessions belong to one processing object (`wplus.webui.lifetime`): shallow copies of `p` made by
other extensions neither close nor replace them. ADetailer's face pass (`_ad_inner`) gets its own
nested session: face-pass λ, the identity listed for that face, on from its first step.
Anything that keeps the branch from working is reported under the image (p.comment), in the
image's parameters ("Wplus warning", which API clients see) and in the console, and the image is
generated without the branch: never silently wrong.
"""
from __future__ import annotations

import copy
import logging
import traceback
from pathlib import Path
from typing import Any

from modules import script_callbacks, scripts, shared

try:  # WebUI >= 1.7
    from modules.ui_components import InputAccordion, ToolButton
except ImportError:  # older WebUI: plain checkbox + accordion
    InputAccordion = ToolButton = None

from wplus.branch import rows
from wplus.errors import IncompatibleModelError, WPlusError
from wplus.webui import api as api_args
from wplus.webui import catalog, forge, infotext, passes
from wplus.webui import options as panel_state
from wplus.webui import panel as wpanel
from wplus.webui import session as generation
from wplus.webui.lifetime import Sessions
from wplus.webui.settings import EXT_MODELS, ExtensionSettings

TITLE = wpanel.TITLE
WARNING_KEY = panel_state.WARNING_KEY

log = logging.getLogger("wplus")
_resolvers: dict[ExtensionSettings, generation.IdentityResolver] = {}
SESSIONS = Sessions()  # which processing object owns which session (copies of p own none)
RESOLVER_FACTORY = generation.IdentityResolver  # tests swap in a resolver with a small fake encoder


def current_settings() -> ExtensionSettings:
    return ExtensionSettings.from_opts(shared.opts, EXT_MODELS)


def resolver(settings: ExtensionSettings | None = None) -> generation.IdentityResolver:
    settings = settings or current_settings()
    if settings not in _resolvers:
        _resolvers.clear()  # settings changed: drop the old encoder and cache handle
        _resolvers[settings] = RESOLVER_FACTORY(settings)
    return _resolvers[settings]


def adapter_dirs(settings: ExtensionSettings) -> list[Path]:
    return settings.adapter_dirs(EXT_MODELS)


def adapter_choices(current: str = "") -> catalog.AdapterChoices:
    """The adapter dropdown; a default adapter that is not on disk says what happens on first use."""
    settings = current_settings()
    cause = settings.download_blocker()
    note = f"not on disk; {cause}, so put it in the models folder" if cause else "not on disk yet (will be downloaded)"
    return catalog.adapter_choices(adapter_dirs(settings), current, note)


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


class WPlusScript(scripts.Script):
    def __init__(self) -> None:
        super().__init__()
        self.direction_names: list[str] = []
        self.edit_limits: dict[str, tuple[float, float]] = {}

    def title(self) -> str:
        return TITLE

    def show(self, is_img2img: bool) -> Any:
        return scripts.AlwaysVisible

    # -- UI ---------------------------------------------------------------------------------------
    def ui(self, is_img2img: bool) -> list:
        settings = current_settings()
        directions = catalog.direction_catalog(settings.models_dir)
        callbacks = wpanel.PanelCallbacks(
            refresh_adapters=adapter_choices,
            refresh_identities=lambda: catalog.list_identities(current_settings().models_dir),
            preview=_preview,
            save_identity=_save_identity,
        )
        panel = wpanel.build(self.elem_id, directions, catalog.list_identities(settings.models_dir),
                             adapter_choices(), callbacks, accordion_cls=InputAccordion, tool_button_cls=ToolButton,
                             adetailer=adetailer_installed())
        self.direction_names = panel.direction_names
        self.edit_limits = {d.name: (d.minimum, d.maximum) for d in directions}
        self.infotext_fields = paste_fields(panel)
        self.paste_field_names = list(infotext.ALL_KEYS)
        return panel.inputs

    # -- generation -------------------------------------------------------------------------------
    def request(self, p: Any, args: tuple) -> panel_state.PanelArgs:
        """Panel values, or the API's dict, with X/Y/Z overrides applied."""
        if args and api_args.is_api_dict(args[0]):
            request = api_args.parse(args[0], self.edit_limits)
        else:
            request = panel_state.from_values(args, self.direction_names, self.edit_limits)
        return panel_state.apply_xyz(request, getattr(p, panel_state.XYZ_ATTR, None), self.edit_limits)

    def process(self, p: Any, *args: Any) -> None:
        if SESSIONS.of_running_original(p):
            return  # a shallow copy of a running generation (ADetailer re-runs process() on copy(p))
        if passes.is_face_pass(p):
            start_face_pass(p, self, args)
            return
        own_generation_params(p)
        SESSIONS.close(p)
        SESSIONS.close_stale()  # e.g. an X/Y/Z cell that raised: xyz_grid never closes its copy of p
        unet = generation.unet_of(p.sd_model)
        if unet is not None:
            from wplus.branch.hook import detach_all

            detach_all(unet)
        try:
            request = self.request(p, args)
        except (WPlusError, ValueError, TypeError) as e:  # a malformed API payload, positional or dict
            warn(p, f"W+ Adapter disabled: {e}")
            return
        if request.enabled:
            start_session(p, request, unet)

    def process_before_every_sampling(self, p: Any, *args: Any, **kwargs: Any) -> None:
        session = SESSIONS.owned(p)
        if session is None or session.closed:
            return
        try:
            session.attach(generation.unet_of(p.sd_model))
        except WPlusError as e:
            session.close()
            warn(p, f"W+ Adapter disabled for this pass: {e}")

    def postprocess_image(self, p: Any, pp: Any, *args: Any) -> None:
        session = SESSIONS.owned(p)
        if session is not None:
            report_seam(p, session)

    def postprocess(self, p: Any, processed: Any, *args: Any) -> None:
        SESSIONS.close(p)  # only the session this very object owns: never one a shallow copy shares


def own_generation_params(p: Any) -> None:
    """xyz_grid's cells are shallow copies of one `p`: give each its own parameters and comments,
    without the W+ entries an earlier cell left there."""
    extra = getattr(p, "extra_generation_params", None)
    if isinstance(extra, dict):
        p.extra_generation_params = {k: v for k, v in extra.items() if not k.startswith(infotext.PREFIX + " ")}
    comments = getattr(p, "comments", None)
    if isinstance(comments, dict):
        p.comments = {k: v for k, v in comments.items() if not str(k).startswith("W+")}


# --- session lifetime ---------------------------------------------------------------------------


def compute_device() -> Any:
    """The device the WebUI runs the UNet on (with --medvram/--lowvram its weights wait on the CPU)."""
    try:
        from modules import devices

        return devices.device
    except (ImportError, AttributeError):
        return None


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


def adetailer_installed() -> bool:
    return any(Path(getattr(d, "path", "")).stem == "!adetailer" for d in getattr(scripts, "scripts_data", []))


def start_session(p: Any, request: panel_state.PanelArgs, unet: Any) -> None:
    if refiner_active(p):
        warn(p, "W+ Adapter disabled: the refiner swaps the model mid-sampling and the W+ branch cannot follow "
                "it. Turn the refiner off to use W+.")
        return
    if unet is None:
        warn(p, "W+ Adapter disabled: the loaded model has no UNet the adapter can attach to.")
        return
    settings = current_settings()
    try:
        generation.check_sources(request)  # what the user can fix in the panel first
        path = generation.resolve_adapter_path(request.adapter, settings, adapter_dirs(settings)[1:])
        adapter, adapter_hash = generation.load_adapter_cached(path)
        resolved = resolver(settings).resolve(request)
        host = forge.session_options(p.sd_model) if forge.is_forge(p.sd_model) else dict(device=compute_device())
        session = generation.GenerationSession(
            adapter, resolved.wplus, generation.BranchPlan(scale=request.scale, start=request.start / 100.0), **host)
        session.attach(unet)
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
    info = resolved.info
    info.adapter_name, info.adapter_hash = path.name, adapter_hash
    p.extra_generation_params.update(infotext.params(info))
    if adetailer_installed() and not request.ad_enabled:
        p.extra_generation_params[infotext.K_AD] = infotext.AD_OFF
    session.request = request
    if request.ad_enabled and adetailer_installed():  # let ADetailer run us in its face pass
        undo = passes.make_eligible(shared.opts.data)
        if undo is not None:
            session.cleanups.append(undo)
    SESSIONS.register(p, session)


def start_face_pass(p: Any, script: "WPlusScript", args: tuple) -> None:
    """ADetailer's inpaint pass of one face: the branch from the first step, the face-pass λ and
    the identity listed for this face (X/Y/Z values come from the generation's own request)."""
    outer = SESSIONS.outer()
    if outer is not None:
        request = outer.request
    else:
        try:
            request = script.request(p, args)
        except (WPlusError, ValueError, TypeError):
            return  # the generation itself reported it
    if not request.enabled or not request.ad_enabled:
        p._wplus_face_pass = "off"
        return
    owner = _owner_p(outer)
    index = passes.image_index(owner) if owner is not None else 0
    seen = outer.face_passes.get(index, 0) if outer is not None else 0
    same_seed = bool(shared.opts.data.get(passes.AD_SAME_SEED, False))
    face = passes.face_number(getattr(p, "seed", None), passes.image_seed(owner, index) if owner else None,
                              seen, same_seed)
    if outer is not None:
        outer.face_passes[index] = seen + 1
    name = passes.identity_for_face(passes.parse_identity_list(request.ad_identities), face)
    if name is None:
        p._wplus_face_pass = "skip"
        return
    unet = generation.unet_of(p.sd_model)
    try:
        if name == passes.PANEL_IDENTITY and outer is not None:
            wplus, adapter, host = outer.wplus, outer.adapter, outer.host_options()
        else:
            face_request = copy.copy(request)
            if name != passes.PANEL_IDENTITY:
                face_request.source, face_request.identity = panel_state.Source.SAVED, name
            settings = current_settings()
            path = generation.resolve_adapter_path(request.adapter, settings, adapter_dirs(settings)[1:])
            adapter, _ = generation.load_adapter_cached(path)
            wplus = resolver(settings).resolve(face_request).wplus
            host = outer.host_options() if outer is not None else (
                forge.session_options(p.sd_model) if forge.is_forge(p.sd_model) else dict(device=compute_device()))
        session = generation.GenerationSession(
            adapter, wplus, generation.BranchPlan(scale=request.face_pass_scale(), start=0.0), request=request,
            nested=True, **host)
        session.attach(unet)
    except Exception as e:  # WPlusError: a bad name or file; anything else: never break ADetailer's pass
        if not isinstance(e, WPlusError):
            traceback.print_exc()
        target = owner if owner is not None else p
        warn(target, f"W+ Adapter: ADetailer's pass of face {face + 1} ran without W+: {e}")
        p._wplus_face_pass = "error"
        return
    p._wplus_face_pass = name
    if owner is not None:
        params = {infotext.K_AD_LAMBDA: f"{request.face_pass_scale():g}"}
        if request.ad_identities.strip():
            params[infotext.K_AD_IDENTITIES] = passes.format_identity_list(
                passes.parse_identity_list(request.ad_identities))
        owner.extra_generation_params.update(params)
    SESSIONS.register(p, session)


def _owner_p(session: generation.GenerationSession | None) -> Any:
    if session is None:
        return None
    return session.owner


def on_cfg_denoiser(params: Any) -> None:
    """Every sampler step of every pass: the branch runs for the processing object that owns a
    session and for nothing else (ADetailer's passes without W+, other extensions' nested passes)."""
    denoiser = getattr(params, "denoiser", None)
    p = getattr(denoiser, "p", None)
    if p is None:
        return
    unet = generation.unet_of(shared.sd_model)
    session = SESSIONS.for_step(p)
    if session is None:
        _branch_off(unet)
        _check_face_pass(p)
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


def _branch_off(unet: Any) -> None:
    """A pass without a session (ADetailer's face pass with W+ off for it, another extension's
    own pass): an attachment left by the generation around it must not act here."""
    from wplus.branch.hook import attached_handle

    handle = attached_handle(unet)
    if handle is not None:
        handle.scale = 0.0


def _check_face_pass(p: Any) -> None:
    """ADetailer inpainted a face without running our script although W+ wanted that pass."""
    if not passes.is_face_pass(p) or hasattr(p, "_wplus_face_pass"):
        return
    outer = SESSIONS.outer()
    if outer is None or outer.request is None or not outer.request.ad_enabled:
        return
    p._wplus_face_pass = "not run"
    owner = _owner_p(outer)
    if owner is not None:
        warn(owner, "W+ Adapter: ADetailer's face pass ran without W+ (ADetailer did not run the W+ script in it: "
                    f"add '{passes.SCRIPT_STEM}' to Settings > ADetailer > script names, or turn off "
                    "'W+ in ADetailer's face pass')")


def report_seam(p: Any, session: generation.GenerationSession) -> None:
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


def on_script_unloaded() -> None:
    unet = generation.unet_of(getattr(shared, "sd_model", None))
    if unet is not None:
        from wplus.branch.hook import detach_all

        detach_all(unet)


# --- X/Y/Z, infotext ----------------------------------------------------------------------------


def paste_fields(panel: wpanel.Panel) -> list:
    """(component, callable) pairs: pasting an infotext restores the panel (or turns W+ off when
    the infotext has no W+ parameters)."""
    import gradio as gr

    UNCHANGED = object()  # the pasted W+ parameters hold a bad value: leave the panel as it is
    last: list = [None, None]  # (params dict, panel values): one parse per paste, not one per field

    limits = {name: (s.minimum, s.maximum) for name, s in panel.edit_sliders.items()}

    def restored(params: dict):
        if last[0] is not params:  # identity, not id(): the dict is kept alive, so no id reuse
            try:
                args = infotext.panel_from_params(params, panel.direction_names, limits)
            except WPlusError as e:  # a value outside its option's limits: the panel stays as it is
                log.warning(f"{e} (the pasted W+ parameters were not applied)")
                args = UNCHANGED
            last[:] = [params, args]
        return last[1]

    def field_value(name: str):
        def get(params: dict):
            args = restored(params)
            if args is UNCHANGED:
                return gr.update()
            if name == "enabled":
                return gr.update(value=args is not None)
            if args is None or name in ("reference", "reference2", "more_references"):
                return gr.update()
            value = getattr(args, name)
            if isinstance(value, (panel_state.Source, panel_state.MixMode)):
                value = str(value)  # the radio's choice as gradio knows it
            return gr.update(value=value)

        return get

    def edit_value(direction: str):
        def get(params: dict):
            args = restored(params)
            if args is None or args is UNCHANGED:
                return gr.update()
            return gr.update(value=float(args.edits.get(direction, 0.0)))

        return get

    fields = [(panel.by_field[name], field_value(name)) for name in panel_state.FIXED_FIELDS
              if name not in ("reference", "reference2", "more_references")]
    fields += [(slider, edit_value(name)) for name, slider in panel.edit_sliders.items()]
    return fields


# --- preview / save (panel buttons) -------------------------------------------------------------


def _preview(args: panel_state.PanelArgs):
    try:
        resolved, rendering = resolver().preview(args)
        return resolved.thumbnail, rendering, f"Identity {resolved.info.identity_hash}"
    except WPlusError as e:
        return None, None, f"**{e}**"


def _save_identity(args: panel_state.PanelArgs, name: str) -> str:
    from wplus.identity.files import Identity, identities_dir, save_identity

    name = (name or "").strip()
    if not name:
        return "**W+: type a name to save the identity under.**"
    try:
        resolved = resolver().resolve(args)
        ident = Identity(wplus=resolved.wplus[0], name=name, thumbnail=resolved.thumbnail,
                         edits=infotext.format_edits(resolved.info.edits),
                         source=f"webui, mean of {len(resolved.sources)} photos" if resolved.sources else "webui",
                         sources=resolved.sources)
        path = save_identity(ident, name, folder=identities_dir(current_settings().models_dir))
    except WPlusError as e:
        return f"**{e}**"
    return f"Saved identity **{name}** to `{path}`"


script_callbacks.on_cfg_denoiser(on_cfg_denoiser)
script_callbacks.on_script_unloaded(on_script_unloaded)
