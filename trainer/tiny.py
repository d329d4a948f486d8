"""A tiny Stable Diffusion model in diffusers layout, built offline from configs (tests, benchmarks,
smoke-testing a training setup in seconds): `python -m trainer.tiny OUT_DIR [--sdxl]`.

Real architectures at toy width: the SD1-style UNet of the reference fixture (its weights when
`../shared/fixtures/reference_sd15` is present), a 4-level AutoencoderKL (8x downsampling like SD),
a 2-layer CLIPTextModel and the real CLIP BPE tokenizer (49408 tokens) when open_clip's vocabulary is
installed, else a byte-level CLIP tokenizer made here (514 tokens; `tiny_model.json` in the folder and
the command's output say which). `--sdxl` builds the SDXL shape instead (the sdxl fixture's UNet
config with text_time conditioning, two text encoders). Beside the model it writes
`wplus_adapter.safetensors` (a fresh adapter for this UNet, residual weights copied from its own
attention, as training starts) and `identity.safetensors` (a random W+ code), so `python -m wplus
generate` runs on it with no downloads. The folder appears whole or not at all.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import sys
from pathlib import Path
from typing import Optional

import torch
from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
from safetensors.torch import load_file
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from wplus.assets.atomic import new_folders
from wplus.assets.checkpoint import diffusers_loading, open_clip_bpe_path, write_byte_tokenizer, write_clip_tokenizer
from wplus.errors import WPlusError

INFO_FILE = "tiny_model.json"
TOKENIZERS = {
    "clip-bpe": "CLIP's BPE tokenizer (open_clip's vocabulary, 49408 tokens)",
    "bytes": "a byte-level CLIP tokenizer made by trainer.tiny (514 tokens, no merges), because CLIP's BPE "
             "vocabulary (the open-clip-torch package) is not installed",
}
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
    kind, vocab = write_tokenizers(folder, {"tokenizer": "<|endoftext|>"})
    text = CLIPTextModel(CLIPTextConfig(
        vocab_size=vocab, hidden_size=context, intermediate_size=2 * context, num_hidden_layers=2,
        num_attention_heads=2, max_position_embeddings=77, hidden_act="quick_gelu",
        bos_token_id=vocab - 2, eos_token_id=vocab - 1, pad_token_id=1))
    text.save_pretrained(folder / "text_encoder")
    DDPMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", num_train_timesteps=1000,
                  clip_sample=False, steps_offset=1).save_pretrained(folder / "scheduler")
    (folder / "model_index.json").write_text(json.dumps({
        "_class_name": "StableDiffusionPipeline", "_diffusers_version": "0.31.0",
        "unet": ["diffusers", "UNet2DConditionModel"], "vae": ["diffusers", "AutoencoderKL"],
        "text_encoder": ["transformers", "CLIPTextModel"], "tokenizer": ["transformers", "CLIPTokenizer"],
        "scheduler": ["diffusers", "DDPMScheduler"], "safety_checker": [None, None],
        "feature_extractor": [None, None], "requires_safety_checker": False}, indent=1))
    _record(folder, kind)
    return folder


def build_tiny_sdxl(folder: str | Path, fixture: Optional[Path] = FIXTURE.with_name("reference_sdxl"),
                    seed: int = 0) -> Path:
    """An SDXL-shaped diffusers folder: text_time conditioning, two CLIP text encoders (16 + 24 = 40)."""
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection
    folder = Path(folder)
    torch.manual_seed(seed)
    if fixture is not None and (fixture / "config.json").is_file():
        cfg = json.loads((fixture / "config.json").read_text())["diffusers_unet"]
    else:
        cfg = dict(TINY_UNET, cross_attention_dim=40, attention_head_dim=4)
    cfg.update(addition_embed_type="text_time", addition_time_embed_dim=8,
               projection_class_embeddings_input_dim=24 + 6 * 8)
    UNet2DConditionModel(**cfg).save_pretrained(folder / "unet")
    AutoencoderKL(block_out_channels=[8, 16, 16, 16], down_block_types=["DownEncoderBlock2D"] * 4,
                  up_block_types=["UpDecoderBlock2D"] * 4, norm_num_groups=8, layers_per_block=1,
                  latent_channels=4, sample_size=64).save_pretrained(folder / "vae")
    kind, vocab = write_tokenizers(folder, {"tokenizer": "<|endoftext|>", "tokenizer_2": "!"})
    common = dict(vocab_size=vocab, intermediate_size=32, num_hidden_layers=2, num_attention_heads=2,
                  max_position_embeddings=77, bos_token_id=vocab - 2, eos_token_id=vocab - 1)
    CLIPTextModel(CLIPTextConfig(hidden_size=16, hidden_act="quick_gelu", pad_token_id=1, **common)
                  ).save_pretrained(folder / "text_encoder")
    CLIPTextModelWithProjection(CLIPTextConfig(hidden_size=24, projection_dim=24, hidden_act="gelu", pad_token_id=0,
                                               **common)).save_pretrained(folder / "text_encoder_2")
    DDPMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012, steps_offset=1,
                  clip_sample=False).save_pretrained(folder / "scheduler")
    (folder / "model_index.json").write_text(json.dumps({
        "_class_name": "StableDiffusionXLPipeline", "_diffusers_version": "0.31.0",
        "unet": ["diffusers", "UNet2DConditionModel"], "vae": ["diffusers", "AutoencoderKL"],
        "text_encoder": ["transformers", "CLIPTextModel"], "tokenizer": ["transformers", "CLIPTokenizer"],
        "text_encoder_2": ["transformers", "CLIPTextModelWithProjection"],
        "tokenizer_2": ["transformers", "CLIPTokenizer"], "scheduler": ["diffusers", "DDPMScheduler"],
        "force_zeros_for_empty_prompt": True}, indent=1))
    _record(folder, kind)
    return folder


def write_tokenizers(folder: Path, pads: dict[str, str]) -> tuple[str, int]:
    """Write a CLIP tokenizer into each `folder/<sub>` (sub -> pad token): CLIP's BPE one when its
    vocabulary is installed, else the byte-level one. Returns (TOKENIZERS key, vocabulary size)."""
    kind = "clip-bpe" if open_clip_bpe_path() is not None else "bytes"
    for sub, pad in pads.items():
        (write_clip_tokenizer if kind == "clip-bpe" else write_byte_tokenizer)(folder / sub, pad_token=pad)
    return kind, len(CLIPTokenizer.from_pretrained(folder / next(iter(pads)), local_files_only=True))


def _record(folder: Path, kind: str) -> None:
    (folder / INFO_FILE).write_text(json.dumps({"tokenizer": kind, "about": TOKENIZERS[kind]}, indent=1) + "\n")


def write_tiny(out: str | Path, sdxl: bool = False, seed: int = 0) -> tuple[Path, Path, Path, str]:
    """Build the whole tiny model (+ adapter and identity) in a hidden folder beside `out`, then rename
    it to `out` in one step: on any failure (or Ctrl-C) nothing is left. `out` must be new or empty.
    Returns (folder, adapter file, identity file, TOKENIZERS key)."""
    out = Path(out)
    if out.exists() and not (out.is_dir() and not any(out.iterdir())):
        raise WPlusError(f"{out} already exists{' and is not empty' if out.is_dir() else ' (a file)'}: "
                         "give a new folder for the tiny model (nothing was written).")
    tmp = out.with_name(f".{out.name}.partial-{os.getpid()}")
    with new_folders(out.parent):
        try:
            (build_tiny_sdxl if sdxl else build_tiny_sd)(tmp, seed=seed)
            write_tiny_extras(tmp, seed=seed)
            if out.is_dir():
                out.rmdir()
            os.replace(tmp, out)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    kind = json.loads((out / INFO_FILE).read_text())["tokenizer"]
    return out, out / "wplus_adapter.safetensors", out / "identity.safetensors", kind


def write_tiny_extras(folder: str | Path, seed: int = 0) -> tuple[Path, Path]:
    """A fresh W+ adapter for the folder's UNet and a random identity: what `wplus generate` needs."""
    from diffusers import UNet2DConditionModel

    from wplus.branch.adapter import WPlusAdapter
    from wplus.branch.files import save_adapter
    from wplus.identity.files import Identity, save_identity
    folder = Path(folder)
    unet = UNet2DConditionModel.from_pretrained(folder / "unet", local_files_only=True, **diffusers_loading())
    adapter = save_adapter(WPlusAdapter.from_unet(unet), folder / "wplus_adapter.safetensors")
    w = torch.randn(18, 512, generator=torch.Generator().manual_seed(seed))
    identity = save_identity(Identity(w, name="tiny", source="random"), path=folder / "identity.safetensors")
    return adapter, identity


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m trainer.tiny",
        description="Write a tiny Stable Diffusion model (diffusers folder, real architectures at toy width, "
                    "built offline in seconds) to try the whole trainer on CPU: pass it as --pretrained-model "
                    "with --resolution 64. Also writes wplus_adapter.safetensors and identity.safetensors for "
                    "`python -m wplus generate`.")
    parser.add_argument("out_dir", nargs="?", default=None, help="folder to write (default: outputs/tiny-sd[xl])")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random weights (default: %(default)s)")
    parser.add_argument("--sdxl", action="store_true", help="the SDXL shape (two text encoders, text_time)")
    args = parser.parse_args(argv)
    out_dir = args.out_dir or ("outputs/tiny-sdxl" if args.sdxl else "outputs/tiny-sd")
    try:
        out, adapter, identity, kind = write_tiny(out_dir, sdxl=args.sdxl, seed=args.seed)
    except (OSError, WPlusError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("trainer.tiny: interrupted (Ctrl-C); nothing was written.", file=sys.stderr)
        return 128 + signal.SIGINT
    print(f"wrote a tiny {'SDXL' if args.sdxl else 'SD'} model to {out} (+ {adapter.name}, {identity.name}); "
          f"tokenizer: {TOKENIZERS[kind]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
