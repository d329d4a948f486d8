"""The training loop (accelerate): both stages, checkpoints, exact resume, logs, validation.

The residual branch is `wplus`'s own: `WPlusAdapter.from_unet` + `wplus.attach`, tokens set every
step from `adapter.project(w)`, so the trained weights are exactly what the WebUI runs.

Determinism: every random draw of micro-batch k (sample choice and augmentation, VAE sample,
noise, timesteps, perturbation) is seeded from (seed, k, rank). The only state a resume needs is
then the adapter, the optimizer, the LR schedule, the fp16 grad scaler and the step — all in the
checkpoint — so a resumed run computes the same next loss as an uninterrupted one.
"""
from __future__ import annotations

import json
import math
import random
import shutil
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import torch
from accelerate import Accelerator
from accelerate.state import AcceleratorState
from accelerate.utils import ProjectConfiguration
from diffusers.optimization import get_scheduler
from torch import nn
from tqdm.auto import tqdm

import wplus
from trainer import data as data_mod
from trainer import losses
from trainer.config import TrainConfig, save_config
from trainer.export import OFFICIAL, OURS, export_adapter
from trainer.perturb import DirectionBank, perturb_wplus
from trainer.resume import apply_settings, check_resume
from trainer.validate import render_validation
from wplus.assets.checkpoint import BaseModel, load_base_model
from wplus.assets.io import load_pickle

CKPT_DIR = "checkpoints"
ADAPTER_FILE = OURS  # a checkpoint's adapter: the same file name as the export


class TrainModel(nn.Module):
    """Frozen UNet + trainable adapter; one forward = one UNet call with the identity branch."""

    def __init__(self, unet: nn.Module, adapter: wplus.WPlusAdapter):
        super().__init__()
        self.unet = unet
        self.adapter = adapter
        self.handle = wplus.attach(unet, adapter, cast=False)

    def forward(self, noisy: torch.Tensor, timesteps: torch.Tensor, context: torch.Tensor,
                w: torch.Tensor, scale: float, added: Optional[dict] = None) -> torch.Tensor:
        self.handle.tokens = self.adapter.project(w) if scale != 0 else None
        self.handle.scale = scale
        return self.unet(noisy, timesteps, encoder_hidden_states=context,
                         added_cond_kwargs=added).sample


def seed_for(seed: int, micro: int, rank: int) -> int:
    return (seed * 1_000_003 + micro * 7919 + rank * 104_729 + 17) % (2 ** 63)


@dataclass
class Trainer:
    cfg: TrainConfig
    accelerator: Any = None
    base: Optional[BaseModel] = None
    model: Any = None
    optimizer: Any = None
    lr_scheduler: Any = None
    step: int = 0
    bank: DirectionBank = field(default_factory=DirectionBank)
    out: Path = Path(".")
    history: list = field(default_factory=list)
    records: list = field(default_factory=list)
    last_checkpoint: Optional[Path] = None
    stopped: Optional[str] = None  # "SIGTERM" when pre-empted: checkpointed, not exported

    # ------------------------------------------------------------------ setup
    def setup(self) -> "Trainer":
        cfg = self.cfg.validate()
        self._start_accelerator(cfg)
        acc = self.accelerator
        torch.manual_seed(cfg.seed)
        random.seed(cfg.seed)
        self.records = data_mod.stage_records(data_mod.read_manifest(cfg.manifest), cfg.stage)  # fail fast
        self.base = load_base_model(cfg.pretrained_model, arch=cfg.arch, original_config=cfg.original_config,
                                    tokenizer=cfg.tokenizer, cache_dir=self.out,
                                    prediction_type=cfg.prediction_type)
        adapter = self._new_adapter(cfg)
        self._place_models(adapter)
        params = self._make_optimizer(adapter)
        model = TrainModel(self.base.unet, adapter)
        self.model, self.optimizer = acc.prepare(model, self.optimizer)
        if cfg.stage == 2:
            self.bank = DirectionBank.from_folder(cfg.directions)
        if cfg.resume:
            self.load_checkpoint(self._resolve_resume(cfg.resume))
        if acc.is_main_process and cfg.report_to == "tensorboard":
            acc.init_trackers("wplus", config=_flat(cfg.to_dict()))
        acc.print(f"W+ trainer: stage {cfg.stage}, {self.base.arch} base, adapter {adapter.describe()}, "
                  f"{sum(p.numel() for p in params) / 1e6:.2f}M trainable parameters "
                  f"(projection {'frozen' if cfg.stage == 2 else 'trained'}), step {self.step}/{cfg.max_steps}, "
                  f"{acc.num_processes} process(es), {cfg.train_batch_size}x{cfg.gradient_accumulation_steps} "
                  f"images per process per step, mixed precision {cfg.mixed_precision}")
        return self

    def _start_accelerator(self, cfg: TrainConfig) -> None:
        """The accelerator (fp32 where fp16 has no GPU), the output folder and its config.json."""
        if cfg.mixed_precision == "fp16" and not torch.cuda.is_available():
            print("W+ trainer: fp16 needs a GPU; training in fp32 on this machine (--mixed-precision no)")
            cfg.mixed_precision = "no"
        self.out = Path(cfg.output_dir)
        _allow_new_precision(cfg.mixed_precision)
        self.accelerator = Accelerator(
            # accelerate >= 1.x sets up data-parallel CPU processes (gloo) only when told it runs on the CPU
            cpu=not torch.cuda.is_available(),
            gradient_accumulation_steps=cfg.gradient_accumulation_steps,
            mixed_precision=cfg.mixed_precision,
            log_with="tensorboard" if cfg.report_to == "tensorboard" else None,
            project_config=ProjectConfiguration(project_dir=str(self.out), logging_dir=str(self.out / "logs")),
        )
        if self.accelerator.is_main_process:
            self.out.mkdir(parents=True, exist_ok=True)
            save_config(cfg, self.out / "config.json")

    def _new_adapter(self, cfg: TrainConfig) -> wplus.WPlusAdapter:
        """The adapter for the base UNet (from --init if given); Stage II freezes its projection."""
        adapter = wplus.WPlusAdapter.from_unet(self.base.unet).float()
        if cfg.init:
            _load_weights(adapter, wplus.load_adapter(cfg.init), cfg.init)
        if cfg.stage == 2:
            adapter.proj.requires_grad_(False)
        return adapter

    def _place_models(self, adapter: wplus.WPlusAdapter) -> None:
        """Base models to the device in the weight dtype, the adapter in fp32; gradient checkpointing."""
        dtype, device = self.weight_dtype, self.accelerator.device
        for m in [self.base.unet, self.base.vae, *self.base.text_encoders]:
            m.to(device, dtype=dtype)
        if self.base.is_sdxl and dtype == torch.float16:
            self.base.vae.to(dtype=torch.float32)  # the SDXL VAE overflows in fp16
        adapter.to(device)
        if self.cfg.gradient_checkpointing:
            # diffusers only recomputes in train mode; SD UNets have no dropout, so train mode is harmless
            self.base.unet.enable_gradient_checkpointing()
            self.base.unet.train()

    def _make_optimizer(self, adapter: wplus.WPlusAdapter) -> list:
        """AdamW and the LR schedule over the adapter's trainable parameters (returned)."""
        cfg = self.cfg
        params = [p for p in adapter.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(params, lr=cfg.learning_rate, weight_decay=cfg.weight_decay,
                                           betas=(cfg.adam_beta1, cfg.adam_beta2), eps=cfg.adam_epsilon)
        self.lr_scheduler = get_scheduler(cfg.lr_scheduler, self.optimizer,
                                          num_warmup_steps=cfg.lr_warmup_steps, num_training_steps=cfg.max_steps)
        return params

    @property
    def weight_dtype(self) -> torch.dtype:
        return {"fp16": torch.float16, "bf16": torch.bfloat16}.get(self.cfg.mixed_precision, torch.float32)

    @property
    def adapter(self) -> wplus.WPlusAdapter:
        return self.accelerator.unwrap_model(self.model).adapter

    # ------------------------------------------------------------------ one step
    def compute_losses(self, batch: dict, micro: int) -> dict[str, torch.Tensor]:
        cfg, base, acc = self.cfg, self.base, self.accelerator
        gen = torch.Generator().manual_seed(seed_for(cfg.seed, micro, acc.process_index))
        rng = random.Random(seed_for(cfg.seed + 1, micro, acc.process_index))
        device, dtype = acc.device, self.weight_dtype
        with torch.no_grad():
            pixels = batch["pixels"].to(device, base.vae.dtype)
            dist = base.vae.encode(pixels).latent_dist
            latents = (dist.mean + dist.std * _randn(dist.mean.shape, gen, dist.mean)) * base.vae.config.scaling_factor
            latents = latents.to(dtype)
            noise = _randn(latents.shape, gen, latents)
            t = torch.randint(0, base.scheduler.config.num_train_timesteps, (latents.shape[0],), generator=gen)
            t = t.to(device)
            noisy = base.scheduler.add_noise(latents, noise, t)
            target = losses.diffusion_target(base.scheduler, latents, noise, t)
            context, added = base.encode_prompt(batch["text"], cfg.resolution)
        w = batch["wplus"].to(device)
        out: dict[str, torch.Tensor] = {}
        if cfg.stage == 2:
            # No-grad predictions first: the grad forward must be the last one before backward
            # (gradient checkpointing recomputes with the hook's current tokens).
            others = None
            if w.shape[0] == 1 and len(self.records) > 1:  # no other identity in the batch: draw one
                others = data_mod.load_wplus(rng.choice(self.records)["wplus"])[None]
            w_neg, kind = perturb_wplus(w, batch["id_dropped"], rng, gen, cfg.perturb_probs, self.bank,
                                        cfg.direction_strength, others=others)
            with torch.no_grad():
                pred_neg = self.model(noisy, t, context, w_neg, cfg.train_scale, added)
                pred_off = self.model(noisy, t, context, w, 0.0, added)
        pred = self.model(noisy, t, context, w, cfg.train_scale, added)
        out["rec"] = losses.rec_loss(pred, target)
        loss = out["rec"]
        if cfg.stage == 2:
            outside = losses.outside_face(batch["face_mask"].to(device), tuple(pred.shape[-2:]))
            out["disen"] = losses.disen_loss(pred, pred_neg, outside)
            out["preserve"] = losses.preserve_loss(pred, pred_off)
            loss = loss + cfg.lambda_disen * out["disen"] + cfg.lambda_preserve * out["preserve"]
        out["loss"] = loss
        return out

    # ------------------------------------------------------------------ loop
    def train(self) -> "Trainer":
        cfg, acc = self.cfg, self.accelerator
        start = 0 if cfg.overfit_batch else self.step * cfg.gradient_accumulation_steps
        loader = data_mod.make_loader(cfg, self.records, acc.num_processes, acc.process_index, start)
        progress = _progress(cfg, acc, self.step)
        stop = _StopFlag()
        batches = iter(loader)
        try:
            last_ckpt = self._run_steps(batches, progress, stop)
        except FloatingPointError:
            progress.close()
            stop.restore()
            raise  # never checkpoint or export diverged weights
        except BaseException:
            progress.close()
            stop.restore()
            self.save_checkpoint()  # Ctrl-C or a crash: keep the progress made so far
            raise
        progress.close()
        stop.restore()
        return self._finish_run(stop, last_ckpt)

    def _run_steps(self, batches: Any, progress: Any, stop: _StopFlag) -> int:
        """Optimizer steps until max_steps or SIGTERM; returns the step of the last checkpoint."""
        cfg, acc = self.cfg, self.accelerator
        micro = self.step * cfg.gradient_accumulation_steps
        last_ckpt = self.step
        batch = None
        t0, images = time.perf_counter(), 0
        while self.step < cfg.max_steps and not stop.seen(acc):
            if not cfg.overfit_batch or batch is None:
                batch = next(batches)
            parts = self._micro_step(batch, 0 if cfg.overfit_batch else micro)
            micro += 1
            images += len(batch["text"]) * acc.num_processes
            if not acc.sync_gradients:
                continue
            if self._end_step(parts, progress, images / max(time.perf_counter() - t0, 1e-9)):
                last_ckpt = self.step
        return last_ckpt

    def _micro_step(self, batch: dict, seed_micro: int) -> dict[str, torch.Tensor]:
        """Forward and backward of one micro-batch (the optimizer steps when gradients sync)."""
        cfg, acc = self.cfg, self.accelerator
        with acc.accumulate(self.model):
            with acc.autocast():
                parts = self.compute_losses(batch, seed_micro)
            acc.backward(parts["loss"])
            if acc.sync_gradients and cfg.max_grad_norm > 0:
                acc.clip_grad_norm_([p for p in self.model.parameters() if p.requires_grad],
                                    cfg.max_grad_norm)
            self.optimizer.step()
            self.optimizer.zero_grad(set_to_none=True)
        return parts

    def _end_step(self, parts: dict, progress: Any, ips: float) -> bool:
        """After an optimizer step: schedule, log, refuse a diverged loss, then the periodic
        checkpoint and validation. True when it saved a checkpoint."""
        cfg = self.cfg
        self.lr_scheduler.step()
        self.step += 1
        logs = self._log(parts, progress, ips)
        if not math.isfinite(logs["loss"]):
            raise FloatingPointError(f"loss became {logs['loss']} at step {self.step}; lower the "
                                     "learning rate or use bf16 instead of fp16")
        saved = False
        if cfg.checkpoint_every and self.step % cfg.checkpoint_every == 0:
            self.save_checkpoint()
            saved = True
        if cfg.validation_every and self.step % cfg.validation_every == 0:
            self.validate()
        return saved

    def _finish_run(self, stop: _StopFlag, last_ckpt: int) -> "Trainer":
        """The final checkpoint, then the exported adapter (not when pre-empted by SIGTERM)."""
        cfg, acc = self.cfg, self.accelerator
        if self.step != last_ckpt or not self._checkpoints():
            self.save_checkpoint()
        if stop.raised:  # pre-empted: keep the checkpoint, do not pass an unfinished adapter off as the result
            self.stopped = "SIGTERM"
            acc.print(f"W+ trainer: stopped by SIGTERM at step {self.step}/{cfg.max_steps}; checkpoint saved: "
                      f"{self._latest()}. Continue with --resume latest --output-dir {self.out} (the adapter "
                      "is exported when the run finishes).")
            acc.end_training()
            return self
        path = self.export()
        if path is not None:
            extra = f" and {path.with_name(OFFICIAL)}" if self.cfg.export_official else ""
            acc.print(f"W+ trainer: finished at step {self.step}. Adapter: {path}{extra} "
                      f"(last checkpoint: {self._latest()})")
        acc.end_training()
        return self

    def _log(self, parts: dict, progress: Any, ips: float) -> dict:
        acc, cfg = self.accelerator, self.cfg
        logs = {k: acc.gather(v.detach().float().reshape(1)).mean().item() for k, v in parts.items()}
        logs["lr"] = self.lr_scheduler.get_last_lr()[0]
        logs["images_per_s"] = ips
        if acc.is_main_process:
            self.history.append({"step": self.step, **logs})
            with open(self.out / "metrics.jsonl", "a") as f:
                f.write(json.dumps({"step": self.step, **logs}) + "\n")
            if cfg.report_to == "tensorboard" and (self.step % cfg.log_every == 0 or self.step == 1):
                acc.log({f"train/{k}": v for k, v in logs.items()}, step=self.step)
            progress.set_postfix({k: f"{v:.4g}" for k, v in logs.items() if k in ("loss", "rec", "disen", "preserve")})
            progress.update(1)
        return logs

    # ------------------------------------------------------------------ checkpoints
    def _checkpoints(self) -> list[Path]:
        root = self.out / CKPT_DIR
        found = [p for p in root.glob("step-*") if p.name[5:].isdigit()] if root.is_dir() else []  # not *.tmp
        return sorted(found, key=lambda p: int(p.name[5:]))

    def _latest(self) -> Optional[Path]:
        """The newest checkpoint (the main process knows it; the others may not see the folder)."""
        return self.last_checkpoint or next(reversed(self._checkpoints()), None)

    def _resolve_resume(self, resume: str) -> Path:
        if resume == "latest":
            found = self._checkpoints()
            if not found:
                raise FileNotFoundError(f"--resume latest: no checkpoint in {self.out / CKPT_DIR}")
            return found[-1]
        path = Path(resume)
        if not (path / "state.pt").is_file():
            raise FileNotFoundError(f"--resume {resume}: not a checkpoint folder (no state.pt)")
        return path

    def save_checkpoint(self) -> Optional[Path]:
        acc = self.accelerator
        acc.wait_for_everyone()
        if not acc.is_main_process:
            return None
        final = self.out / CKPT_DIR / f"step-{self.step:07d}"
        tmp = final.with_name(final.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        wplus.save_adapter(self.adapter, tmp / ADAPTER_FILE)
        state = {
            "step": self.step,
            "optimizer": self.optimizer.state_dict(),
            "lr_scheduler": self.lr_scheduler.state_dict(),
            "scaler": acc.scaler.state_dict() if acc.scaler is not None else None,
            "torch_rng": torch.get_rng_state(),
        }
        torch.save(state, tmp / "state.pt")
        (tmp / "meta.json").write_text(json.dumps({"step": self.step, "stage": self.cfg.stage,
                                                   "processes": acc.num_processes,
                                                   "config": self.cfg.to_dict()}, indent=1))
        shutil.rmtree(final, ignore_errors=True)
        tmp.rename(final)
        self.last_checkpoint = final
        keep = self.cfg.checkpoints_keep
        if keep > 0:
            for old in self._checkpoints()[:-keep]:
                shutil.rmtree(old, ignore_errors=True)
        return final

    def load_checkpoint(self, path: Path) -> None:
        changed = check_resume(path, self.cfg, self.accelerator.num_processes, self.accelerator.print)
        _load_weights(self.adapter, wplus.load_adapter(path / ADAPTER_FILE), str(path))
        state = load_pickle(path / "state.pt", "training state")
        self.optimizer.load_state_dict(state["optimizer"])
        self.lr_scheduler.load_state_dict(state["lr_scheduler"])
        if changed:  # the optimizer and schedule states hold the old hyper-parameters: use the new ones
            apply_settings(self.optimizer, self.lr_scheduler, self.cfg, changed)
        if state.get("scaler") and self.accelerator.scaler is not None:
            self.accelerator.scaler.load_state_dict(state["scaler"])
        torch.set_rng_state(state["torch_rng"])
        self.step = int(state["step"])
        self.accelerator.print(f"resumed from {path} at step {self.step}")

    # ------------------------------------------------------------------ export / validation
    def export(self) -> Optional[Path]:
        self.accelerator.wait_for_everyone()
        if not self.accelerator.is_main_process:
            return None
        return export_adapter(self.adapter, self.out, official=self.cfg.export_official)

    def validate(self) -> Optional[Path]:
        self.accelerator.wait_for_everyone()
        if not self.accelerator.is_main_process:
            return None
        model = self.accelerator.unwrap_model(self.model)
        return render_validation(self, model)


def _allow_new_precision(mixed_precision: str) -> None:
    """accelerate keeps one global state per process; a second in-process run (tests, notebooks)
    with another precision would be refused, so drop the old precision (the process group stays)."""
    try:
        if AcceleratorState._shared_state and AcceleratorState().mixed_precision != mixed_precision:
            AcceleratorState._reset_state(reset_partial_state=False)
    except (AttributeError, TypeError):  # a future accelerate without these internals
        pass


def _load_weights(adapter: wplus.WPlusAdapter, loaded: wplus.WPlusAdapter, source: str) -> None:
    """Copy a loaded adapter's weights into the one being trained (its dtype and device stay)."""
    try:
        adapter.load_state_dict(loaded.state_dict(), strict=True)
    except RuntimeError as exc:
        raise wplus.WPlusError(f"{source}: adapter for {loaded.describe()} does not fit this base model "
                               f"({adapter.describe()})") from exc


def _randn(shape, gen: torch.Generator, like: torch.Tensor) -> torch.Tensor:
    return torch.randn(shape, generator=gen, dtype=torch.float32).to(like.device, like.dtype)


def _flat(d: dict) -> dict:
    return {k: (v if isinstance(v, (int, float, str, bool)) else str(v)) for k, v in d.items()}


def _progress(cfg: TrainConfig, acc: Any, initial: int):
    return tqdm(total=cfg.max_steps, initial=initial, desc=f"stage {cfg.stage}", unit="step",
                disable=not (cfg.progress and acc.is_local_main_process), dynamic_ncols=True)


class _StopFlag:
    """SIGTERM (cluster pre-emption) ends the loop after the current step; the exit checkpoint follows."""

    def __init__(self) -> None:
        self.raised = False
        try:
            self._old = signal.signal(signal.SIGTERM, self._handle)
        except ValueError:  # not the main thread
            self._old = None

    def _handle(self, *_: Any) -> None:
        self.raised = True

    def seen(self, acc: Any) -> bool:
        """Whether any process got the signal: all of them stop after the same micro-batch."""
        if acc.num_processes > 1:
            flag = torch.tensor([1.0 if self.raised else 0.0], device=acc.device)
            self.raised = acc.reduce(flag, reduction="sum").item() > 0
        return self.raised

    def restore(self) -> None:
        if self._old is not None:
            signal.signal(signal.SIGTERM, self._old)


def run(cfg: TrainConfig) -> Trainer:
    return Trainer(cfg).setup().train()
