"""The W+ branch on a diffusers StableDiffusionPipeline / StableDiffusionXLPipeline.

    with wplus.pipeline.attach(pipe, adapter, w_plus, scale=1.0, start=20):
        images = pipe(prompt, negative_prompt=..., generator=...).images

The branch is `wplus.attach` on `pipe.unet` (the same hooks, residual math and layer order as the
WebUI and the trainer). What this module adds is the diffusers side of the contract:
- rows: diffusers batches [negative rows, positive rows] in one UNet call per step; positive rows
  get the identity, negative rows the projection of an all-zero W+ (`rows.uncond_first_row_index`);
- the one start rule (`wplus.generation.schedule.branch_on`, the paper's): UNet call i of a
  `steps`-step run is step i. `steps` is read when the pipeline sets its scheduler's timesteps,
  which also restarts the count, so each `pipe(...)` call starts at step 0.
Leaving the block (or `remove()`) takes every hook off: the pipeline is exactly as before.
"""
from __future__ import annotations

import os
from typing import Any

import torch

from wplus.branch import rows
from wplus.branch.adapter import WPlusAdapter
from wplus.branch.hook import attach as attach_unet
from wplus.errors import WPlusError
from wplus.generation.schedule import Schedule, token_bank
from wplus.pipeline.defaults import DEFAULT_SCALE, DEFAULT_START, check_scale, check_start


class PipelineBranch:
    """A live attachment to one pipeline; `scale`, `start` and `set_identity` may change between calls."""

    def __init__(self, pipe: Any, adapter: WPlusAdapter | str | os.PathLike, w_plus: Any,
                 scale: float = DEFAULT_SCALE, start: float = DEFAULT_START) -> None:
        unet = getattr(pipe, "unet", None)
        scheduler = getattr(pipe, "scheduler", None)
        if unet is None or scheduler is None or not hasattr(scheduler, "set_timesteps"):
            raise WPlusError(f"{type(pipe).__name__} is not a diffusers Stable Diffusion pipeline "
                             "(it needs .unet and .scheduler)")
        if not isinstance(adapter, WPlusAdapter):
            from wplus.branch.files import load_adapter

            adapter = load_adapter(adapter).eval()
        self.pipe, self.adapter = pipe, adapter
        self.scale, self.start = check_scale(scale), check_start(start)
        self.steps: int | None = None
        self._schedule = Schedule(self.scale, self.start)
        self.calls = 0
        self.trace: list[tuple[int, float]] = []  # (UNet call, λ used) of the latest pipeline call
        self._scheduler = scheduler
        self._index: dict[tuple[int, bool], list[int]] = {}
        self._handle = attach_unet(unet, adapter)
        try:
            self._n_codes = 0
            self.set_identity(w_plus)
            self._own_set_timesteps = "set_timesteps" in vars(scheduler)
            self._saved_set_timesteps = vars(scheduler).get("set_timesteps")
            original = scheduler.set_timesteps

            def set_timesteps(*args: Any, **kwargs: Any) -> Any:
                out = original(*args, **kwargs)
                self._begin(scheduler)
                return out

            scheduler.set_timesteps = set_timesteps
            self._pre = unet.register_forward_pre_hook(self._before_unet, with_kwargs=True, prepend=True)
        except Exception:
            self._handle.remove()
            raise

    # -- identity -----------------------------------------------------------------------------
    def set_identity(self, w_plus: Any) -> None:
        """W+ code(s): (18,512), (1,18,512) for every image, or (N,18,512) one per image."""
        codes = None

        def bank() -> torch.Tensor:  # a failure here drops the previous identity too (set_bank_from)
            nonlocal codes
            codes = as_codes(w_plus)
            return token_bank(self.adapter, codes)

        self._handle.set_bank_from(bank)
        self._n_codes = codes.shape[0]
        self._index.clear()

    # -- per call -----------------------------------------------------------------------------
    def _begin(self, scheduler: Any) -> None:
        steps = getattr(scheduler, "num_inference_steps", None)
        self.steps = int(steps) if steps else len(scheduler.timesteps)
        self.calls = 0
        self.trace = []
        self._schedule = Schedule(self.scale, self.start)  # λ and start as set before this pipeline call

    def _before_unet(self, module: Any, args: tuple, kwargs: dict) -> None:
        if self.pipe.scheduler is not self._scheduler:
            raise WPlusError("W+: the pipeline's scheduler was replaced while the branch was attached; "
                             "set pipe.scheduler before wplus.pipeline.attach")
        if self.steps is None:
            raise WPlusError("W+: the UNet was called before the pipeline set its timesteps; run it "
                             "through the pipeline (pipe(...)) inside the `with` block")
        x = args[0] if args else kwargs.get("sample")
        n = int(x.shape[0])
        cfg = bool(getattr(self.pipe, "do_classifier_free_guidance", n == 2 * self._n_codes))
        key = (n, cfg)
        if key not in self._index:
            try:
                self._index[key] = rows.uncond_first_row_index(n, cfg, self._n_codes)
            except ValueError as exc:
                raise WPlusError(f"W+: {exc}") from None
        handle = self._handle
        handle.row_index = self._index[key]
        handle.reset_rows()
        handle.scale = self._schedule.scale_at(self.calls, self.steps)
        self.trace.append((self.calls, handle.scale))
        self.calls += 1

    # -- lifetime -----------------------------------------------------------------------------
    def remove(self) -> None:
        """Take the hooks and the scheduler wrapper off; safe to call twice."""
        if getattr(self, "_pre", None) is not None:
            self._pre.remove()
            self._pre = None
            if self._own_set_timesteps:
                self._scheduler.set_timesteps = self._saved_set_timesteps
            else:
                vars(self._scheduler).pop("set_timesteps", None)
        self._handle.remove()

    @property
    def attached(self) -> bool:
        return self._handle.attached

    def __enter__(self) -> "PipelineBranch":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.remove()


def attach(pipe: Any, adapter: WPlusAdapter | str | os.PathLike, w_plus: Any, scale: float = DEFAULT_SCALE,
           start: float = DEFAULT_START) -> PipelineBranch:
    """Attach the W+ branch to a diffusers SD/SDXL pipeline (a context manager; see the module doc).

    adapter: a `WPlusAdapter` or an adapter file; w_plus: a W+ tensor or an `Identity`; scale: λ
    (0 = exactly the plain pipeline); start: percent of the steps before the identity is injected.
    """
    return PipelineBranch(pipe, adapter, w_plus, scale=scale, start=start)


def as_codes(w_plus: Any) -> torch.Tensor:
    """(N,18,512) float32 from a tensor of shape (18,512)/(N,18,512) or an `Identity`."""
    w = getattr(w_plus, "wplus", w_plus)
    if not isinstance(w, torch.Tensor):
        raise WPlusError(f"W+ code must be a tensor or an Identity; got {type(w_plus).__name__}")
    if w.ndim == 2:
        w = w.unsqueeze(0)
    if w.ndim != 3 or tuple(w.shape[1:]) != (18, 512) or w.shape[0] == 0:
        raise WPlusError(f"W+ codes must be (18,512) or (N,18,512); got {tuple(w.shape)}")
    if not torch.isfinite(w).all():
        raise WPlusError("W+ code contains NaN or infinite values")
    return w.detach().float()
