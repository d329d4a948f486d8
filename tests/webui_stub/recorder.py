"""Records every UNet call of a generation with the CFG layout of its step, and recomputes what
each call should have returned with the core API (`wplus.attach` + per-row tokens), so tests can
check row by row that cond rows saw the identity, uncond rows the zero-W+ tokens, and steps
before the start saw no branch."""
from __future__ import annotations

from dataclasses import dataclass

import torch

import wplus
from wplus.generation.schedule import branch_on, token_bank


@dataclass
class Call:
    step: int
    total: int
    n_cond: int
    n_rows: int
    hires: bool
    offset: int
    p: object  # the processing object sampled
    x: torch.Tensor
    t: torch.Tensor
    ctx: torch.Tensor
    out: torch.Tensor


class Recorder:
    def __init__(self, unet: torch.nn.Module):
        from modules import script_callbacks

        self.unet = unet
        self.calls: list[Call] = []
        self._step: dict | None = None
        self._offset = 0
        self._cb = script_callbacks
        script_callbacks.on_cfg_denoiser(self._on_step)  # after the script's: sees the final layout
        self._hook = unet.register_forward_hook(self._on_call, with_kwargs=True)

    def _on_step(self, params) -> None:
        d = params.denoiser
        self._step = dict(step=d.step, total=d.total_steps, n_cond=int(params.text_cond.shape[0]),
                          n_rows=int(params.x.shape[0]), hires=bool(getattr(d.p, "is_hr_pass", False)), p=d.p)
        self._offset = 0

    def _on_call(self, module, args, kwargs, out) -> None:
        x = args[0]
        t = args[1] if len(args) > 1 else kwargs["timesteps"]
        ctx = kwargs["context"] if "context" in kwargs else args[2]
        self.calls.append(Call(**self._step, offset=self._offset, x=x.detach().clone(), t=t.detach().clone(),
                               ctx=ctx.detach().clone(), out=out.detach().clone()))
        self._offset += x.shape[0]

    def close(self) -> None:
        self._hook.remove()
        self._cb.remove_callback("cfg_denoiser", self._on_step)


def expected_output(unet, adapter, w_id: torch.Tensor, call: Call, scale: float, start: float,
                    hires_full: bool = True) -> tuple[torch.Tensor, bool]:
    """(what the UNet should return for `call`, whether the branch was on); `start` in percent,
    None for a pass on from its first step (ADetailer's face pass)."""
    on = scale != 0 and ((call.hires and hires_full) or start is None
                          or branch_on(call.step, call.total, start))
    with torch.no_grad():
        if not on:
            return unet(call.x, call.t, context=call.ctx), False
        tok = token_bank(adapter, w_id)
        rows = range(call.offset, call.offset + call.x.shape[0])
        tokens = torch.stack([tok[0] if r < call.n_cond else tok[1] for r in rows])
        with wplus.attach(unet, adapter) as handle:
            handle.tokens = tokens
            handle.scale = scale
            return unet(call.x, call.t, context=call.ctx), True
