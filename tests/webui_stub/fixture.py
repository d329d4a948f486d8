"""Installs the WebUI stand-in into sys.modules for one test and drives the real extension.

`WebUI` loads the extension's scripts/ the way the WebUI does, registers settings and X/Y/Z axes,
builds the txt2img/img2img panels inside gr.Blocks (so components and arg ranges are real), and
runs generations against a real ldm UNet.
"""
from __future__ import annotations

import os
import shutil
import sys
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path
from typing import Any

import torch

STUB_DIR = Path(__file__).resolve().parent
ROOT = STUB_DIR.parents[1]
SHARED = ROOT.parent / "shared"
FIX = SHARED / "fixtures" / "reference_sd15"
OFFICIAL = SHARED / "data" / "official"
EXTENSION_SCRIPTS = ("wplus_script.py", "wplus_settings.py", "wplus_xyz.py", "wplus_api.py")


def _host_module(name: str) -> bool:
    return name.split(".")[0] in ("modules", "backend")


@contextmanager
def installed(webui_root: Path, host_dir: Path = STUB_DIR):
    """The stand-in's `modules` (and, for the Forge stand-in in `host_dir`, `backend`) importable."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny convolutions: threads only add contention on a shared CPU
    saved = {k: sys.modules.pop(k) for k in list(sys.modules) if _host_module(k)}
    old_env = os.environ.get("WEBUI_STUB_ROOT")
    os.environ["WEBUI_STUB_ROOT"] = str(webui_root)
    sys.path.insert(0, str(host_dir))
    try:
        import modules.shared  # noqa: F401

        yield
    finally:
        for k in [k for k in sys.modules if _host_module(k)]:
            del sys.modules[k]
        sys.modules.update(saved)
        sys.path.remove(str(host_dir))
        torch.set_num_threads(threads)
        if old_env is None:
            os.environ.pop("WEBUI_STUB_ROOT", None)
        else:
            os.environ["WEBUI_STUB_ROOT"] = old_env


@lru_cache(maxsize=None)
def tiny_unet_state() -> tuple[dict, dict]:
    from helpers.unet_fixtures import ldm_config, ldm_state

    return ldm_config("sd15"), ldm_state("sd15")


def tiny_unet(context_dim: int | None = None) -> torch.nn.Module:
    """The fixture's tiny SD1.5-shaped ldm UNet (real weights); another context width gives a
    model the SD1.5 adapter does not fit."""
    from ldm.modules.diffusionmodules.openaimodel import UNetModel

    cfg, sd = tiny_unet_state()
    if context_dim is not None:
        torch.manual_seed(0)
        return UNetModel(**{**cfg, "context_dim": context_dim}).eval()
    unet = UNetModel(**cfg).eval()
    unet.load_state_dict(sd)
    return unet


def make_models_dir(path: Path, *, adapter: bool = True, identities: bool = True, directions: bool = False) -> Path:
    """A models folder like a user's: the fixture adapter, the paper's N.pth codes as identities,
    optionally the paper's w_direction/ (copied for the test; never committed)."""
    path.mkdir(parents=True, exist_ok=True)
    if adapter:
        shutil.copy(FIX / "wplus_adapter.bin", path / "wplus_adapter.bin")
    if identities:
        (path / "identities").mkdir(exist_ok=True)
        for n in (1, 2):
            shutil.copy(OFFICIAL / "test_data" / "e4e" / f"{n}.pth", path / "identities" / f"person{n}.pth")
    if directions:
        shutil.copytree(OFFICIAL / "w_direction", path / "w_direction", dirs_exist_ok=True)
    return path


def identity_code(n: int) -> torch.Tensor:
    code = torch.load(OFFICIAL / "test_data" / "e4e" / f"{n}.pth", map_location="cpu", weights_only=True)
    return code.float().reshape(1, 18, 512)


class WebUI:
    def __init__(self, models_dir: Path, unet: torch.nn.Module | None = None, *, with_xyz: bool = True,
                 with_adetailer: bool = False):
        from modules import script_callbacks, scripts, shared
        from modules.sd_models import FakeSDModel

        self.scripts_mod, self.callbacks, self.shared = scripts, script_callbacks, shared
        self.unet = unet if unet is not None else tiny_unet()
        shared.sd_model = FakeSDModel(self.unet, context_dim=self.unet_context_dim(self.unet))
        xyz = (str(STUB_DIR / "builtin_scripts"), str(STUB_DIR / "builtin_scripts" / "xyz_grid.py"))
        files = [xyz] if with_xyz else []
        if with_adetailer:  # extensions load in folder order: adetailer/ before sd-webui-wplus/
            ad = STUB_DIR / "extensions" / "adetailer"
            files.append((str(ad), str(ad / "!adetailer.py")))
        files += [(str(ROOT), str(ROOT / "scripts" / name)) for name in EXTENSION_SCRIPTS]
        scripts.load_scripts(files)
        script_callbacks.ui_settings_callback()
        shared.opts.wplus_models_dir = str(models_dir)
        shared.opts.wplus_auto_download = False
        shared.opts.wplus_face_backend = "dlib"
        script_callbacks.before_ui_callback()
        self.runners = {}
        self.blocks = {}
        for tab in ("txt2img", "img2img"):
            import gradio as gr

            runner = scripts.ScriptRunner()
            runner.initialize_scripts(tab == "img2img")
            with gr.Blocks() as demo:
                runner.setup_ui()
            self.runners[tab], self.blocks[tab] = runner, demo

    @staticmethod
    def unet_context_dim(unet) -> int:
        from wplus.branch.layers import cross_attention_layers

        return cross_attention_layers(unet)[0].to_k.in_features

    def module(self, filename: str):
        return next(m for path, m in self.scripts_mod.loaded_modules.items() if path.endswith(filename))

    @property
    def script_module(self):
        return self.module("wplus_script.py")

    def script(self, tab: str = "txt2img"):
        return self.runners[tab].script("W+ Adapter")

    def args(self, tab: str = "txt2img", raw: list | None = None, **fields: Any) -> tuple:
        """The full script_args of a generation, with the W+ panel set to `fields` (or `raw` values)."""
        from wplus.webui.options import PanelArgs, to_values

        runner, script = self.runners[tab], self.script(tab)
        values = runner.default_args()
        panel = raw
        if panel is None:
            panel = to_values(PanelArgs(**fields), script.direction_names)
        values[script.args_from:script.args_to] = panel
        return tuple(values)

    def processing(self, tab: str = "txt2img", wplus: dict | None = None, raw=None, **kwargs: Any):
        from modules import processing

        cls = (processing.StableDiffusionProcessingImg2Img if tab == "img2img"
               else processing.StableDiffusionProcessingTxt2Img)
        p = cls(**kwargs)
        p.scripts = self.runners[tab]
        if wplus is not None or raw is not None:
            p.script_args = self.args(tab, raw=raw, **(wplus or {}))
        else:
            p.script_args = tuple(self.runners[tab].default_args())
        return p

    def served_controls(self, tab: str = "txt2img") -> dict:
        """The JSON table the W+ panel serves to javascript/wplus.js (hints and reset values)."""
        import html
        import json
        import re

        import gradio as gr

        from wplus.webui.panel import HINTS_ATTR

        for block in self.blocks[tab].blocks.values():
            value = getattr(block, "value", None)
            if isinstance(block, gr.HTML) and isinstance(value, str) and HINTS_ATTR in value:
                return json.loads(html.unescape(re.search(HINTS_ATTR + r'="([^"]*)"', value).group(1)))
        raise AssertionError("the W+ panel serves no control table")

    def generate(self, tab: str = "txt2img", wplus: dict | None = None, raw=None, **kwargs: Any):
        from modules import txt2img

        p = self.processing(tab, wplus, raw, **kwargs)
        return txt2img.run(p), p


@contextmanager
def kept_settings():
    """Whatever a test sets in `shared.opts` is undone afterwards."""
    from modules import shared

    data = dict(shared.opts.data)
    try:
        yield shared.opts
    finally:
        shared.opts.data.clear()
        shared.opts.data.update(data)


def hooks_on(unet: torch.nn.Module) -> int:
    """Forward (pre-)hooks anywhere in the UNet: 0 when nothing of W+ is attached."""
    return sum(len(m._forward_pre_hooks) + len(m._forward_hooks) for m in unet.modules())
