"""What differs when the host is Forge (lllyasviel/stable-diffusion-webui-forge), read from its
objects without importing it.

Forge keeps AUTOMATIC1111's script API but runs its own backend: the model's networks hang under
`sd_model.forge_objects` (a UNet patcher whose `model.diffusion_model` is the UNet, cloned per
sampling pass), and its sampling function batches cond and uncond chunks in an order and grouping
of its own, telling the UNet which chunk is which in `transformer_options["cond_or_uncond"]`. So
the branch reads its rows from each UNet call (`rows.forge_call_rows`), and because Forge may
store weights as fp8/GGUF and move models between devices at sampling time, the branch computes
in the dtype and on the device of the activations it meets.
"""
from __future__ import annotations

from typing import Any

from torch import nn

from wplus.branch import rows


def unet_patcher(sd_model: Any) -> Any:
    """Forge's UNet patcher of a loaded model, or None when the model is not Forge's."""
    objects = getattr(sd_model, "forge_objects", None)
    return getattr(objects, "unet", None)


def is_forge(sd_model: Any) -> bool:
    return unet_patcher(sd_model) is not None


def unet_of(sd_model: Any) -> nn.Module | None:
    """The UNet inside Forge's patcher (the same module for every clone of the patcher); None for
    Forge's transformer denoisers (Flux, SD3), which have no UNet blocks for the branch."""
    model = getattr(unet_patcher(sd_model), "model", None)
    unet = getattr(model, "diffusion_model", None)
    return unet if hasattr(unet, "input_blocks") else None


def session_options(sd_model: Any) -> dict[str, Any]:
    """GenerationSession settings for a Forge model: rows per UNet call, the UNet's compute dtype
    (its weights may be stored as fp8/GGUF) and device, and following the activations."""
    patcher = unet_patcher(sd_model)
    model = getattr(patcher, "model", None)
    return dict(rows_per_call=rows.forge_call_rows, follow_dtype=True,
                dtype=getattr(model, "computation_dtype", None), device=getattr(patcher, "load_device", None))
