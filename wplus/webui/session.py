"""The branch during one WebUI generation, whose CFG loop the host runs (A1111 and Forge).

`GenerationSession` attaches the branch to a UNet, sets the token bank [identity, zero-W+] once
(`wplus.generation.schedule`), and at every sampler step maps the host's CFG rows onto it
(AUTOMATIC1111's layout) or lets each UNet call say its rows (`rows_per_call`: Forge's layout),
and sets λ from the schedule. Which processing object owns a session: `wplus.webui.lifetime`.
Nothing here imports the WebUI.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import torch
from torch import nn

from wplus.branch import rows
from wplus.errors import WPlusError
from wplus.generation.schedule import Schedule, token_bank


@dataclass
class GenerationSession:
    """The branch for one `process_images` call: attach, per-step rows/scale, close."""

    adapter: nn.Module
    wplus: torch.Tensor  # (1,18,512)
    schedule: Schedule
    device: Any = None  # where the host runs the UNet; its weights may sit elsewhere (WebUI --medvram)
    dtype: Any = None  # the UNet's compute dtype, when its weights are stored in another (Forge fp8/GGUF)
    rows_per_call: Callable[[int, dict], Any] | None = None  # bank rows read from each UNet call (Forge)
    follow_dtype: bool = False  # run the branch in the activations' dtype at every call (Forge)
    handle: Any = None
    closed: bool = False
    _index_cache: dict = field(default_factory=dict)

    def host_options(self) -> dict[str, Any]:
        """How this host runs the UNet (device, dtype, rows per call), for sessions of nested passes."""
        return dict(device=self.device, dtype=self.dtype, rows_per_call=self.rows_per_call,
                    follow_dtype=self.follow_dtype)

    def attach(self, unet: nn.Module) -> None:
        """Attach to `unet` (raises IncompatibleModelError); a no-op when already attached there."""
        from wplus.branch.hook import attach

        if self.closed:
            raise WPlusError("W+: this generation's branch is already closed")
        if self.handle is not None and self.handle.unet is unet and self.handle.attached:
            return
        self.detach()
        handle = attach(unet, self.adapter, device=self.device, dtype=self.dtype,
                        follow_dtype=self.follow_dtype)  # attach drops any stale attachment
        try:
            handle.set_bank(token_bank(self.adapter, self.wplus))
        except Exception:
            handle.remove()
            raise
        handle.scale = 0.0  # off until the first step says otherwise
        handle.row_source = self.rows_per_call
        self._index_cache.clear()
        self.handle = handle

    def on_step(self, n_rows: int, n_cond: int, step: int, total_steps: int, hires: bool = False) -> float:
        """Before the UNet calls of one sampler step: rows -> bank rows (unless each call says its
        rows), λ or 0 (the schedule)."""
        handle = self.handle
        if handle is None or not handle.attached:
            return 0.0
        if self.rows_per_call is None:
            key = (n_rows, n_cond)
            index = self._index_cache.get(key)
            if index is None:
                index = self._index_cache[key] = rows.cfg_row_index(n_rows, n_cond)
            handle.row_index = index
            handle.reset_rows()
        handle.scale = self.schedule.scale_at(step, total_steps, hires)
        return handle.scale

    def detach(self) -> None:
        if self.handle is not None:
            self.handle.remove()
            self.handle = None

    def close(self) -> None:
        self.detach()
        self.closed = True


def unet_of(sd_model: Any) -> nn.Module | None:
    """The denoiser network of a WebUI-style model object (`sd_model.model.diffusion_model`, or
    Forge's `sd_model.forge_objects.unet.model.diffusion_model`)."""
    from wplus.webui import forge

    if forge.is_forge(sd_model):
        return forge.unet_of(sd_model)
    model = getattr(sd_model, "model", None)
    return getattr(model, "diffusion_model", None)
