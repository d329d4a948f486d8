"""Records every UNet call of a generation in the Forge stand-in with the `cond_or_uncond` Forge
gave it, and recomputes what it should have returned with the core API: the rows of cond chunks
(mark 0) with the identity tokens, the uncond chunks' rows with the zero-W+ tokens."""
from __future__ import annotations

from dataclasses import dataclass

import torch

import wplus
from wplus.generation.schedule import branch_on, token_bank


@dataclass
class Call:
    step: int
    total: int
    hires: bool
    cond_or_uncond: list
    x: torch.Tensor
    t: torch.Tensor
    ctx: torch.Tensor
    out: torch.Tensor


class Recorder:
    def __init__(self, unet: torch.nn.Module):
        from modules import script_callbacks

        self.calls: list[Call] = []
        self._step: dict | None = None
        self._cb = script_callbacks
        script_callbacks.on_cfg_denoiser(self._on_step)
        self._hook = unet.register_forward_hook(self._on_call, with_kwargs=True)

    def _on_step(self, params) -> None:
        d = params.denoiser
        self._step = dict(step=d.step, total=d.total_steps, hires=bool(getattr(d.p, "is_hr_pass", False)))

    def _on_call(self, module, args, kwargs, out) -> None:
        self.calls.append(Call(**self._step, cond_or_uncond=list(kwargs["transformer_options"]["cond_or_uncond"]),
                               x=args[0].detach().clone(), t=args[1].detach().clone(),
                               ctx=kwargs["context"].detach().clone(), out=out.detach().clone()))

    def close(self) -> None:
        self._hook.remove()
        self._cb.remove_callback("cfg_denoiser", self._on_step)


def expected_output(unet, adapter, w_id: torch.Tensor, call: Call, scale: float,
                    start: float) -> tuple[torch.Tensor, bool]:
    """(what the UNet should return for `call`, whether the branch was on); `start` in percent,
    None for a pass on from its first step (ADetailer's face pass)."""
    on = scale != 0 and (call.hires or start is None or branch_on(call.step, call.total, start))
    with torch.no_grad():
        if not on:
            return unet(call.x, call.t, context=call.ctx), False
        tok = token_bank(adapter, w_id)
        per_chunk = call.x.shape[0] // len(call.cond_or_uncond)
        marks = [mark for mark in call.cond_or_uncond for _ in range(per_chunk)]
        tokens = torch.stack([tok[0] if mark == 0 else tok[1] for mark in marks])
        with wplus.attach(unet, adapter) as handle:
            handle.tokens = tokens
            handle.scale = scale
            return unet(call.x, call.t, context=call.ctx), True
