"""Validation images at fixed prompts, seeds and identities (DDIM + classifier-free guidance).

Rows are [conditional, unconditional], the unconditional row with the empty prompt and the
all-zero W+, exactly as the WebUI extension samples, and λ follows the hosts' one schedule
(`wplus.generation.schedule`, with the config's `validation_start`). Written to OUT/samples/step-N.png and
TensorBoard.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from diffusers import DDIMScheduler
from PIL import Image

from trainer import data as data_mod
from wplus.branch import rows
from wplus.generation.schedule import Schedule, token_bank
from wplus.geometry import WPLUS_SHAPE
from wplus.stylegan.pixels import to_pil


def validation_identities(cfg) -> list[torch.Tensor]:
    if cfg.validation_identities:
        return [data_mod.load_wplus(p) for p in cfg.validation_identities]
    records = data_mod.stage_records(data_mod.read_manifest(cfg.manifest), cfg.stage)
    return [data_mod.load_wplus(records[0]["wplus"])]


@torch.no_grad()
def sample(base, model, w: torch.Tensor, prompt: str, seed: int, steps: int, guidance: float,
           scale: float, size: int, start: float = 0.0) -> Image.Image:
    sched = DDIMScheduler.from_config(base.scheduler.config)
    sched.set_timesteps(steps)
    unet, vae = base.unet, base.vae
    factor = 2 ** (len(vae.config.block_out_channels) - 1)
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(1, unet.config.in_channels, size // factor, size // factor, generator=g)
    x = (x * sched.init_noise_sigma).to(unet.device, unet.dtype)
    context, added = base.encode_prompt([prompt, ""], size)
    bank = token_bank(model.adapter, w.reshape(1, *WPLUS_SHAPE))
    model.handle.tokens = bank[rows.cfg_row_index(2, 1)]  # rows [identity, zero-W+]
    schedule = Schedule(scale, start)
    for i, t in enumerate(sched.timesteps):
        model.handle.scale = schedule.scale_at(i, steps)
        inp = sched.scale_model_input(torch.cat([x, x]), t)
        pred = unet(inp, t, encoder_hidden_states=context, added_cond_kwargs=added).sample
        cond, uncond = pred.chunk(2)
        x = sched.step(uncond + guidance * (cond - uncond), t, x).prev_sample
    img = vae.decode((x / vae.config.scaling_factor).to(vae.dtype)).sample[0].float()
    return to_pil(img)[0]


def grid(images: list[Image.Image], cols: int) -> Image.Image:
    w, h = images[0].size
    rows = (len(images) + cols - 1) // cols
    out = Image.new("RGB", (cols * w, rows * h), "white")
    for i, im in enumerate(images):
        out.paste(im, ((i % cols) * w, (i // cols) * h))
    return out


def render_validation(trainer: Any, model: Any) -> Path:
    cfg, base, acc = trainer.cfg, trainer.base, trainer.accelerator
    images = []
    with acc.autocast():
        for w in validation_identities(cfg):
            for prompt in cfg.validation_prompts:
                for seed in cfg.validation_seeds:
                    images.append(sample(base, model, w, prompt, int(seed), cfg.validation_steps,
                                         cfg.validation_guidance, cfg.validation_scale, cfg.resolution,
                                         cfg.validation_start))
    sheet = grid(images, cols=max(1, len(cfg.validation_prompts) * len(cfg.validation_seeds)))
    path = trainer.out / "samples" / f"step-{trainer.step:07d}.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(path)
    if cfg.report_to == "tensorboard":
        try:
            writer = acc.get_tracker("tensorboard", unwrap=True)
            writer.add_image("validation", np.asarray(sheet), trainer.step, dataformats="HWC")
        except Exception as exc:  # logging must never stop training
            acc.print(f"validation image not logged to TensorBoard: {exc}")
    return path
