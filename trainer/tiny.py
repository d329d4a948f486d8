"""A tiny Stable Diffusion model in diffusers layout, built offline from configs (tests, benchmarks,
smoke-testing a training setup in seconds): `python -m trainer.tiny OUT_DIR`.

Real architectures at toy width: the SD1-style UNet of the reference fixture (its weights when
`../shared/fixtures/reference_sd15` is present), a 4-level AutoencoderKL (8x downsampling like SD),
a 2-layer CLIPTextModel with CLIP's full 49408-token vocabulary, and the real CLIP BPE tokenizer.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Optional

import torch
from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
from safetensors.torch import load_file
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from trainer.models import CLIP_VOCAB_SIZE, write_clip_tokenizer

FIXTURE = Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "reference_sd15"

TINY_UNET = {
    "sample_size": 8, "in_channels": 4, "out_channels": 4, "block_out_channels": [32, 64, 64, 64],
    "down_block_types": ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
    "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
    "layers_per_block": 2, "cross_attention_dim": 32, "attention_head_dim": 2, "norm_num_groups": 32,
}


def build_tiny_sd(folder: str | Path, fixture: Optional[Path] = FIXTURE, unet_config: Optional[dict] = None,
                  seed: int = 0) -> Path:
    """Write a diffusers SD folder (unet, vae, text_encoder, tokenizer, scheduler) and return it."""
    folder = Path(folder)
    torch.manual_seed(seed)
    cfg = dict(unet_config or TINY_UNET)
    weights = None
    if unet_config is None and fixture is not None and (fixture / "config.json").is_file():
        cfg = json.loads((fixture / "config.json").read_text())["diffusers_unet"]
        weights = fixture / "unet_diffusers.safetensors"
    unet = UNet2DConditionModel(**cfg)
    if weights is not None and weights.is_file():
        unet.load_state_dict(load_file(str(weights)))
    unet.save_pretrained(folder / "unet")
    vae = AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=4, norm_num_groups=8, layers_per_block=1,
        block_out_channels=[8, 16, 16, 16], down_block_types=["DownEncoderBlock2D"] * 4,
        up_block_types=["UpDecoderBlock2D"] * 4, sample_size=64,
    )
    vae.save_pretrained(folder / "vae")
    context = cfg["cross_attention_dim"]
    text = CLIPTextModel(CLIPTextConfig(
        vocab_size=CLIP_VOCAB_SIZE, hidden_size=context, intermediate_size=2 * context, num_hidden_layers=2,
        num_attention_heads=2, max_position_embeddings=77, hidden_act="quick_gelu",
        bos_token_id=CLIP_VOCAB_SIZE - 2, eos_token_id=CLIP_VOCAB_SIZE - 1, pad_token_id=1))
    text.save_pretrained(folder / "text_encoder")
    write_clip_tokenizer(folder / "tokenizer")
    tok = CLIPTokenizer.from_pretrained(folder / "tokenizer", local_files_only=True)
    if len(tok) != CLIP_VOCAB_SIZE:
        raise RuntimeError(f"tokenizer has {len(tok)} tokens, CLIP has {CLIP_VOCAB_SIZE}")
    DDPMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", num_train_timesteps=1000,
                  clip_sample=False, steps_offset=1).save_pretrained(folder / "scheduler")
    (folder / "model_index.json").write_text(json.dumps({
        "_class_name": "StableDiffusionPipeline", "_diffusers_version": "0.31.0",
        "unet": ["diffusers", "UNet2DConditionModel"], "vae": ["diffusers", "AutoencoderKL"],
        "text_encoder": ["transformers", "CLIPTextModel"], "tokenizer": ["transformers", "CLIPTokenizer"],
        "scheduler": ["diffusers", "DDPMScheduler"], "safety_checker": [None, None],
        "feature_extractor": [None, None], "requires_safety_checker": False}, indent=1))
    return folder


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m trainer.tiny",
        description="Write a tiny Stable Diffusion model (diffusers folder, real architectures at toy width, "
                    "built offline in seconds) to try the whole trainer on CPU: pass it as --pretrained-model "
                    "with --resolution 64.")
    parser.add_argument("out_dir", nargs="?", default="outputs/tiny-sd", help="folder to write (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random weights (default: %(default)s)")
    args = parser.parse_args(argv)
    out = build_tiny_sd(args.out_dir, seed=args.seed)
    print(f"wrote a tiny SD model to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
