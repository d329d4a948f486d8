"""Puts the ComfyUI stand-in (`comfy`, `folder_paths`) on sys.path for one test, then removes it; the
pytest fixtures of tests/comfy (import them into the test module)."""
from __future__ import annotations

import os
import shutil
import sys
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch

from conftest import FIXTURES

STUB_DIR = Path(__file__).resolve().parent


@contextmanager
def installed(base: Path):
    sys.path.insert(0, str(STUB_DIR))
    try:
        import folder_paths

        folder_paths.reset(str(base))
        yield folder_paths
    finally:
        sys.path.remove(str(STUB_DIR))
        for name in [n for n in sys.modules if n == "folder_paths" or n == "comfy" or n.startswith("comfy.")]:
            del sys.modules[name]


@pytest.fixture
def comfy(tmp_path, monkeypatch):
    """A fresh ComfyUI tree (models/ under tmp_path) with the stand-in importable; the pack's folders registered."""
    monkeypatch.setenv("WPLUS_MODELS_DIR", str(tmp_path / "product_models"))
    with installed(tmp_path) as folder_paths:
        from wplus.comfy import files

        files.register()
        files._adapters.clear()
        yield folder_paths


_REFERENCE: list = []


def _reference(build):
    """The fixture UNet, built once per test session (the tests never change its weights)."""
    if not _REFERENCE:
        _REFERENCE.append(build("sd15"))
    return _REFERENCE[0]


@pytest.fixture
def patcher(comfy):
    """The reference SD1.5 UNet (fixtures) as ComfyUI's ModelPatcher, its adapter in models/wplus/."""
    from comfy.model_patcher import ModelPatcher
    from comfy.model_sampling import ModelSamplingDiscrete
    from comfy.samplers import BaseModel

    from helpers.unet_fixtures import ldm_unet

    ref = _reference(ldm_unet)
    folder = comfy.get_folder_paths("wplus")[0]
    os.makedirs(folder, exist_ok=True)
    shutil.copy(FIXTURES / "reference_sd15" / "wplus_adapter.bin", f"{folder}/wplus_adapter.bin")
    model = ModelPatcher(BaseModel(ref.unet, ModelSamplingDiscrete()))
    model.model.reference = ref
    return model


def run_unet(model, marks=(0, 1), **options) -> torch.Tensor:
    """One UNet call of the fixture batch (rows 0..2 cond, 3..5 uncond) through the stand-in's blocks."""
    from comfy.ldm.modules.diffusionmodules.openaimodel import unet_forward

    ref = model.model.reference
    to = dict(model.model_options["transformer_options"])
    to.update(cond_or_uncond=list(marks), **options)
    with torch.no_grad():
        return unet_forward(ref.unet, ref.io["x"], ref.io["timesteps"], ref.context, to)
