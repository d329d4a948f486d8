"""Callback registry with the WebUI's parameter objects; each callback's exception is reported
and swallowed, as in the WebUI."""
from __future__ import annotations

from collections import defaultdict
from typing import Any, Callable

from modules import errors


class CFGDenoiserParams:
    def __init__(self, x, image_cond, sigma, sampling_step, total_sampling_steps, text_cond, text_uncond,
                 denoiser=None):
        self.x = x
        self.image_cond = image_cond
        self.sigma = sigma
        self.sampling_step = sampling_step
        self.total_sampling_steps = total_sampling_steps
        self.text_cond = text_cond
        self.text_uncond = text_uncond
        self.denoiser = denoiser


class CFGDenoisedParams:
    def __init__(self, x, sampling_step, total_sampling_steps, inner_model):
        self.x = x
        self.sampling_step = sampling_step
        self.total_sampling_steps = total_sampling_steps
        self.inner_model = inner_model


class AfterCFGCallbackParams:
    def __init__(self, x, sampling_step, total_sampling_steps):
        self.x = x
        self.sampling_step = sampling_step
        self.total_sampling_steps = total_sampling_steps


_callbacks: dict[str, list[Callable]] = defaultdict(list)


def clear_callbacks() -> None:
    _callbacks.clear()


def _add(kind: str, callback: Callable) -> None:
    _callbacks[kind].append(callback)


def _call(kind: str, *args: Any) -> None:
    for callback in list(_callbacks[kind]):
        try:
            callback(*args)
        except Exception:
            errors.report(f"Error executing callback {kind} for {callback}", exc_info=True)


def registered(kind: str) -> list[Callable]:
    return list(_callbacks[kind])


def on_cfg_denoiser(callback, *, name=None): _add("cfg_denoiser", callback)
def on_cfg_denoised(callback, *, name=None): _add("cfg_denoised", callback)
def on_cfg_after_cfg(callback, *, name=None): _add("cfg_after_cfg", callback)
def on_ui_settings(callback, *, name=None): _add("ui_settings", callback)
def on_before_ui(callback, *, name=None): _add("before_ui", callback)
def on_infotext_pasted(callback, *, name=None): _add("infotext_pasted", callback)
def on_script_unloaded(callback, *, name=None): _add("script_unloaded", callback)
def on_app_started(callback, *, name=None): _add("app_started", callback)
def on_model_loaded(callback, *, name=None): _add("model_loaded", callback)


def cfg_denoiser_callback(params: CFGDenoiserParams) -> None: _call("cfg_denoiser", params)
def cfg_denoised_callback(params: CFGDenoisedParams) -> None: _call("cfg_denoised", params)
def cfg_after_cfg_callback(params: AfterCFGCallbackParams) -> None: _call("cfg_after_cfg", params)
def ui_settings_callback() -> None: _call("ui_settings")
def before_ui_callback() -> None: _call("before_ui")
def infotext_pasted_callback(infotext: str, params: dict) -> None: _call("infotext_pasted", infotext, params)
def script_unloaded_callback() -> None: _call("script_unloaded")
def app_started_callback(demo, app) -> None: _call("app_started", demo, app)
def model_loaded_callback(sd_model) -> None: _call("model_loaded", sd_model)


def remove_callback(kind: str, callback: Callable) -> None:
    """Test helper: unregister one callback."""
    if callback in _callbacks[kind]:
        _callbacks[kind].remove(callback)
