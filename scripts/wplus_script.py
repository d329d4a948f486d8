"""W+ Adapter for AUTOMATIC1111's WebUI (and Forge): the always-visible panel and the branch during
sampling. Thin glue: it reads the WebUI (`shared.opts`, the device, the installed scripts, the
loaded model) and hands it to `wplus.webui.extension`, where a generation's work lives:
  process()                       detach stale hooks, request -> session (or ADetailer's face pass)
  process_before_every_sampling() re-attach if the model changed (hires checkpoint)
  on_cfg_denoiser (every step)    CFG rows -> [identity | zero-W+] bank rows, λ or 0
  postprocess() / p.close()       detach (p.close also runs when sampling raises)
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from modules import script_callbacks, scripts, shared

try:  # WebUI >= 1.7
    from modules.ui_components import InputAccordion, ToolButton
except ImportError:  # older WebUI: plain checkbox + accordion
    InputAccordion = ToolButton = None

from wplus.errors import WPlusError
from wplus.webui import api as api_args
from wplus.webui import catalog, passes
from wplus.webui import infotext as wplus_infotext
from wplus.webui import options as panel_state
from wplus.webui import panel as wpanel
from wplus.webui.extension import Extension, Host, own_generation_params, report_seam, warn
from wplus.webui.paste import paste_fields
from wplus.webui.session import unet_of
from wplus.webui.settings import EXT_MODELS, ExtensionSettings

TITLE = wpanel.TITLE


def current_settings() -> ExtensionSettings:
    return ExtensionSettings.from_opts(shared.opts, EXT_MODELS)


EXTENSION = Extension(current_settings, EXT_MODELS)
SESSIONS = EXTENSION.sessions


def host() -> Host:
    try:
        from modules import devices

        device = devices.device
    except (ImportError, AttributeError):
        device = None
    return Host(opts_data=shared.opts.data, device=device, adetailer=adetailer_installed())


def adetailer_installed() -> bool:
    return any(Path(getattr(d, "path", "")).stem == "!adetailer" for d in getattr(scripts, "scripts_data", []))


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
            refresh_adapters=EXTENSION.adapter_choices,
            refresh_identities=lambda: catalog.list_identities(current_settings().models_dir),
            preview=EXTENSION.preview,
            save_identity=EXTENSION.save_identity,
        )
        panel = wpanel.build(self.elem_id, directions, catalog.list_identities(settings.models_dir),
                             EXTENSION.adapter_choices(), callbacks, accordion_cls=InputAccordion,
                             tool_button_cls=ToolButton, adetailer=adetailer_installed())
        self.direction_names = panel.direction_names
        self.edit_limits = {d.name: (d.minimum, d.maximum) for d in directions}
        self.infotext_fields = paste_fields(panel)
        self.paste_field_names = list(wplus_infotext.ALL_KEYS)
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
            EXTENSION.begin_face_pass(p, lambda: self.request(p, args), host())
            return
        own_generation_params(p)
        SESSIONS.close(p)
        SESSIONS.close_stale()  # e.g. an X/Y/Z cell that raised: xyz_grid never closes its copy of p
        unet = unet_of(p.sd_model)
        if unet is not None:
            from wplus.branch.hook import detach_all

            detach_all(unet)
        try:
            request = self.request(p, args)
        except (WPlusError, ValueError, TypeError) as e:  # a malformed API payload, positional or dict
            warn(p, f"W+ Adapter disabled: {e}")
            return
        if request.enabled:
            EXTENSION.begin(p, request, unet, host())

    def process_before_every_sampling(self, p: Any, *args: Any, **kwargs: Any) -> None:
        session = SESSIONS.owned(p)
        if session is None or session.closed:
            return
        try:
            session.attach(unet_of(p.sd_model))
        except WPlusError as e:
            session.close()
            warn(p, f"W+ Adapter disabled for this pass: {e}")

    def postprocess_image(self, p: Any, pp: Any, *args: Any) -> None:
        session = SESSIONS.owned(p)
        if session is not None:
            report_seam(p, session)

    def postprocess(self, p: Any, processed: Any, *args: Any) -> None:
        SESSIONS.close(p)  # only the session this very object owns: never one a shallow copy shares


def on_cfg_denoiser(params: Any) -> None:
    denoiser = getattr(params, "denoiser", None)
    p = getattr(denoiser, "p", None)
    if p is not None:
        EXTENSION.step(p, params, unet_of(shared.sd_model))


def on_script_unloaded() -> None:
    unet = unet_of(getattr(shared, "sd_model", None))
    if unet is not None:
        from wplus.branch.hook import detach_all

        detach_all(unet)


script_callbacks.on_cfg_denoiser(on_cfg_denoiser)
script_callbacks.on_script_unloaded(on_script_unloaded)
