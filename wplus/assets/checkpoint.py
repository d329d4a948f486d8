"""A Stable Diffusion base model from a diffusers folder or a single-file WebUI checkpoint, fully offline
(the diffusers pipeline and the trainer both load through here).

Single files (`.safetensors`/`.ckpt`, the WebUI's own format) are converted with diffusers' ldm
converters; the UNet/VAE configs come from the original ldm/sgm YAML (ours in
`wplus/assets/model_configs/<arch>.yaml` or `--original-config`), text-encoder configs are read off the
checkpoint's tensor shapes, and the CLIP tokenizer comes from `--tokenizer` or is built from
open_clip's BPE vocabulary (same merges as OpenAI CLIP), so nothing is fetched from the hub.
"""
from __future__ import annotations

import gzip
import importlib.util
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import torch
import yaml
from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
from diffusers.loaders import single_file_utils as sfu
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

from wplus.assets.io import SAFETENSORS, load_pickle, read_safetensors, sniff
from wplus.errors import WPlusError

MODEL_CONFIGS = Path(__file__).resolve().parent / "model_configs"
CLIP_VOCAB_SIZE = 49408
_BPE_FILE = "bpe_simple_vocab_16e6.txt.gz"


@dataclass
class BaseModel:
    """Everything frozen that a training step needs."""

    unet: Any
    vae: Any
    text_encoders: list
    tokenizers: list
    scheduler: Any
    arch: str
    extra: dict = field(default_factory=dict)

    @property
    def is_sdxl(self) -> bool:
        return self.arch == "sdxl"

    def encode_prompt(self, texts: list[str], size: int) -> tuple[torch.Tensor, Optional[dict]]:
        """Prompts -> (context (B,77,D), SDXL added_cond_kwargs or None)."""
        device = self.unet.device
        hidden, pooled = [], None
        for tok, enc in zip(self.tokenizers, self.text_encoders):
            ids = tok(texts, padding="max_length", max_length=tok.model_max_length, truncation=True,
                      return_tensors="pt").input_ids.to(device)
            if self.is_sdxl:
                out = enc(ids, output_hidden_states=True)
                hidden.append(out.hidden_states[-2])
                if hasattr(out, "text_embeds"):
                    pooled = out.text_embeds
            else:
                hidden.append(enc(ids)[0])
        context = torch.cat(hidden, dim=-1).to(self.unet.dtype)
        if not self.is_sdxl:
            return context, None
        time_ids = torch.tensor([size, size, 0, 0, size, size], device=device, dtype=context.dtype)
        return context, {"text_embeds": pooled.to(context.dtype),
                         "time_ids": time_ids.expand(len(texts), 6)}


# ----------------------------------------------------------------------------- tokenizer
def open_clip_bpe_path() -> Optional[Path]:
    """open_clip's BPE vocabulary file, located without importing open_clip (it needs torchvision)."""
    spec = importlib.util.find_spec("open_clip")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(list(spec.submodule_search_locations)[0]) / _BPE_FILE
    return path if path.is_file() else None


def write_clip_tokenizer(folder: str | Path, bpe_path: Optional[str | Path] = None,
                         pad_token: str = "<|endoftext|>") -> Path:
    """Write vocab.json + merges.txt (+ configs) of the CLIP BPE tokenizer from the BPE merges file.

    The vocabulary is CLIP's: 256 byte symbols, the same with '</w>', one token per merge (the first
    48894 merges), then the two specials: 49408 tokens in all.
    """
    bpe_path = Path(bpe_path) if bpe_path else open_clip_bpe_path()
    if bpe_path is None:
        raise FileNotFoundError(f"no CLIP BPE vocabulary is installed (open_clip's {_BPE_FILE})")
    lines = gzip.open(bpe_path, "rt", encoding="utf-8").read().split("\n")
    merges = [tuple(m.split()) for m in lines[1:49152 - 256 - 2 + 1]]
    symbols = list(_bytes_to_unicode().values())
    vocab = symbols + [s + "</w>" for s in symbols] + ["".join(m) for m in merges]
    return _write_tokenizer(folder, vocab, merges, pad_token)


def write_byte_tokenizer(folder: str | Path, pad_token: str = "<|endoftext|>") -> Path:
    """A CLIPTokenizer with CLIP's byte alphabet and no merges (514 tokens: every word is spelled byte
    by byte), made here without any vocabulary file: for tiny test models when CLIP's BPE
    vocabulary is not installed. Not for real models (their text encoders expect CLIP's tokens)."""
    symbols = list(_bytes_to_unicode().values())
    return _write_tokenizer(folder, symbols + [s + "</w>" for s in symbols], [], pad_token)


def _write_tokenizer(folder: str | Path, vocab: list[str], merges: list[tuple], pad_token: str) -> Path:
    vocab = vocab + ["<|startoftext|>", "<|endoftext|>"]
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(vocab)}, ensure_ascii=False),
                                       encoding="utf-8")
    (folder / "merges.txt").write_text("#version: 0.2\n" + "".join(" ".join(m) + "\n" for m in merges),
                                       encoding="utf-8")
    (folder / "tokenizer_config.json").write_text(json.dumps({
        "model_max_length": 77, "bos_token": "<|startoftext|>", "eos_token": "<|endoftext|>",
        "unk_token": "<|endoftext|>", "pad_token": pad_token, "do_lower_case": True,
        "tokenizer_class": "CLIPTokenizer"}))
    (folder / "special_tokens_map.json").write_text(json.dumps({
        "bos_token": "<|startoftext|>", "eos_token": "<|endoftext|>", "unk_token": "<|endoftext|>",
        "pad_token": pad_token}))
    return folder


def _bytes_to_unicode() -> dict[int, str]:
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + \
        list(range(ord("®"), ord("ÿ") + 1))
    cs, n = bs[:], 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, (chr(c) for c in cs)))


def load_tokenizer(folder: Optional[str], cache_dir: Path, pad_token: str = "<|endoftext|>"):
    if folder is None:
        folder = str(cache_dir / ("clip_tokenizer" + ("_pad_excl" if pad_token == "!" else "")))
        if not (Path(folder) / "vocab.json").is_file():
            try:
                write_clip_tokenizer(folder, pad_token=pad_token)
            except FileNotFoundError as exc:
                raise FileNotFoundError(
                    f"{exc}: pass --tokenizer FOLDER (a CLIP tokenizer: vocab.json + merges.txt, e.g. the "
                    "tokenizer/ folder of any SD1.5 diffusers model), or install only the vocabulary's package "
                    "with `pip install --no-deps open-clip-torch` (--no-deps keeps your torch)") from None
    tok = CLIPTokenizer.from_pretrained(folder, local_files_only=True)
    if len(tok) != CLIP_VOCAB_SIZE:
        raise ValueError(f"{folder}: a CLIP tokenizer has {CLIP_VOCAB_SIZE} tokens, this one {len(tok)}")
    return tok


# ----------------------------------------------------------------------------- loading
def load_base_model(path: str, *, arch: str = "auto", original_config: Optional[str] = None,
                    tokenizer: Optional[str] = None, cache_dir: Optional[Path] = None,
                    prediction_type: Optional[str] = None) -> BaseModel:
    """A diffusers folder or a single-file checkpoint -> BaseModel (fp32, CPU, eval, frozen)."""
    p = Path(path)
    if p.is_dir():
        model = _load_diffusers_folder(p)
    elif p.is_file():
        model = _load_single_file(p, arch, original_config, tokenizer, cache_dir or p.parent)
    else:
        raise FileNotFoundError(f"base model {path} not found (a diffusers folder or a .safetensors/.ckpt)")
    if prediction_type:
        model.scheduler.register_to_config(prediction_type=prediction_type)
    for m in [model.unet, model.vae, *model.text_encoders]:
        m.requires_grad_(False)
        m.eval()
    return model


def diffusers_loading() -> dict[str, Any]:
    """Keyword arguments for diffusers' `from_pretrained`: without `accelerate` installed (a plain
    `pip install`), low-memory loading is off, said here rather than warned about at every load."""
    return {"low_cpu_mem_usage": importlib.util.find_spec("accelerate") is not None}


def _load_diffusers_folder(p: Path) -> BaseModel:
    for sub in ("unet", "vae", "text_encoder", "tokenizer", "scheduler"):
        if not (p / sub).is_dir():
            raise FileNotFoundError(f"{p} is not a diffusers model folder: {sub}/ is missing")
    kw = {"local_files_only": True}
    unet = UNet2DConditionModel.from_pretrained(p, subfolder="unet", **kw, **diffusers_loading())
    vae = AutoencoderKL.from_pretrained(p, subfolder="vae", **kw, **diffusers_loading())
    encoders = [CLIPTextModel.from_pretrained(p, subfolder="text_encoder", **kw)]
    tokenizers = [CLIPTokenizer.from_pretrained(p, subfolder="tokenizer", **kw)]
    arch = "sd1"
    if (p / "text_encoder_2").is_dir():
        encoders.append(CLIPTextModelWithProjection.from_pretrained(p, subfolder="text_encoder_2", **kw))
        tokenizers.append(CLIPTokenizer.from_pretrained(p, subfolder="tokenizer_2", **kw))
        arch = "sdxl"
    elif unet.config.cross_attention_dim == 1024:
        arch = "sd2"
    scheduler = DDPMScheduler.from_pretrained(p, subfolder="scheduler", **kw)
    return BaseModel(unet, vae, encoders, tokenizers, scheduler, arch)


def read_checkpoint(path: Path) -> dict[str, torch.Tensor]:
    """A Stable Diffusion checkpoint's state dict (.safetensors or a weights-only pickle, by content)."""
    hint = ("Convert it to .safetensors (e.g. with the WebUI's checkpoint merger, 'safetensors' format) "
            "or use a diffusers folder.")
    try:
        if sniff(path) == SAFETENSORS:
            return read_safetensors(path, "Stable Diffusion checkpoint")[0]
        sd = load_pickle(path, "Stable Diffusion checkpoint")
    except WPlusError as exc:  # pickles with code objects (old Lightning callbacks), corrupt files
        raise ValueError(f"{exc} {hint}") from None
    while isinstance(sd, dict) and "state_dict" in sd and isinstance(sd["state_dict"], dict):
        sd = sd["state_dict"]
    return sd


def detect_arch(sd: dict) -> str:
    if any(k.startswith("conditioner.embedders.1.") for k in sd):
        return "sdxl"
    if any(k.startswith("cond_stage_model.model.") for k in sd):
        return "sd2"
    if any(k.startswith("cond_stage_model.transformer.") for k in sd):
        return "sd1"
    raise ValueError("not a Stable Diffusion checkpoint: no text encoder weights "
                     "(cond_stage_model.* / conditioner.embedders.*) found")


def _load_single_file(p: Path, arch: str, original_config: Optional[str], tokenizer: Optional[str],
                      cache_dir: Path) -> BaseModel:
    sd = read_checkpoint(p)
    if not any(k.startswith("model.diffusion_model.") for k in sd):
        raise ValueError(f"{p}: no UNet weights (model.diffusion_model.*): not a full SD checkpoint")
    arch = detect_arch(sd) if arch == "auto" else arch
    ocfg_path = Path(original_config) if original_config else MODEL_CONFIGS / f"{arch}.yaml"
    ocfg = yaml.safe_load(ocfg_path.read_text())
    unet_cfg = sfu.create_unet_diffusers_config_from_ldm(ocfg, sd)
    if arch == "sd2":
        unet_cfg["upcast_attention"] = True  # SD2.1 overflows in fp16 attention otherwise
    if arch == "sdxl":
        unet_cfg.update(addition_embed_type="text_time", addition_time_embed_dim=256)
        adm = ocfg["model"]["params"]["network_config"]["params"].get("adm_in_channels")
        unet_cfg["projection_class_embeddings_input_dim"] = adm
    unet = UNet2DConditionModel(**unet_cfg)
    _load_strict(unet, sfu.convert_ldm_unet_checkpoint(sd, unet.config), "UNet")
    vae_cfg = sfu.create_vae_diffusers_config_from_ldm(ocfg, sd)
    vae = AutoencoderKL(**vae_cfg)
    _load_strict(vae, sfu.convert_ldm_vae_checkpoint(sd, vae.config), "VAE")
    encoders, tokenizers = _single_file_text(sd, arch, tokenizer, cache_dir)
    scheduler = DDPMScheduler(**_scheduler_config(ocfg))
    return BaseModel(unet, vae, encoders, tokenizers, scheduler, arch)


def _load_strict(model: torch.nn.Module, sd: dict, what: str) -> None:
    missing, unexpected = model.load_state_dict(sd, strict=False)
    if missing or unexpected:
        raise ValueError(f"{what} weights do not fit the config: missing {missing[:5]}, "
                         f"unexpected {unexpected[:5]} — check --original-config / --arch")


def _scheduler_config(ocfg: dict) -> dict:
    params = ocfg["model"]["params"]
    return {
        "num_train_timesteps": int(params.get("timesteps", 1000)),
        "beta_start": float(params.get("linear_start", 0.00085)),
        "beta_end": float(params.get("linear_end", 0.012)),
        "beta_schedule": "scaled_linear",
        "prediction_type": "v_prediction" if params.get("parameterization") == "v" else "epsilon",
        "clip_sample": False,
        "steps_offset": 1,
    }


def _single_file_text(sd: dict, arch: str, tokenizer: Optional[str], cache_dir: Path
                      ) -> tuple[list, list]:
    if arch == "sd1":
        tsd = sfu.convert_ldm_clip_checkpoint(sd)
        enc = _clip_from_state(CLIPTextModel, tsd, "quick_gelu")
        return [enc], [load_tokenizer(tokenizer, cache_dir)]
    if arch == "sd2":
        enc = _open_clip_text(CLIPTextModel, sd, "cond_stage_model.model.")
        return [enc], [load_tokenizer(tokenizer, cache_dir, pad_token="!")]
    tsd = sfu.convert_ldm_clip_checkpoint(sd, remove_prefix="conditioner.embedders.0.transformer.")
    enc1 = _clip_from_state(CLIPTextModel, tsd, "quick_gelu")
    enc2 = _open_clip_text(CLIPTextModelWithProjection, sd, "conditioner.embedders.1.model.")
    return [enc1, enc2], [load_tokenizer(tokenizer, cache_dir), load_tokenizer(tokenizer, cache_dir, "!")]


def _bare_clip_keys(tsd: dict) -> dict:
    """Text-model keys without the `text_model.` prefix (transformers 5 dropped it from
    CLIPTextModel, kept it in CLIPTextModelWithProjection; converters give either)."""
    return {k.removeprefix("text_model."): v for k, v in tsd.items()}


def _in_layout(model: torch.nn.Module, tsd: dict) -> dict:
    """`tsd` keyed the way this transformers version's `model` names its parameters."""
    prefixed = any(k.startswith("text_model.") for k in model.state_dict())
    return {("text_model." + k if prefixed and not k.startswith("text_projection") else k): v
            for k, v in _bare_clip_keys(tsd).items()}


def _clip_config(tsd: dict, act: str, projection: bool = False):
    tsd = _bare_clip_keys(tsd)
    vocab, hidden = tsd["embeddings.token_embedding.weight"].shape
    layers = 1 + max(int(m.group(1)) for k in tsd if (m := re.match(r"encoder\.layers\.(\d+)\.", k)))
    cfg = CLIPTextConfig(
        vocab_size=vocab, hidden_size=hidden, num_hidden_layers=layers,
        num_attention_heads=max(1, hidden // 64),
        intermediate_size=tsd["encoder.layers.0.mlp.fc1.weight"].shape[0],
        max_position_embeddings=tsd["embeddings.position_embedding.weight"].shape[0],
        hidden_act=act, projection_dim=tsd["text_projection.weight"].shape[0] if projection else 512,
        bos_token_id=vocab - 2, eos_token_id=vocab - 1, pad_token_id=1 if act == "quick_gelu" else 0,
    )
    return cfg


def _clip_from_state(cls, tsd: dict, act: str):
    tsd = {k: v for k, v in tsd.items() if not k.endswith("position_ids")}
    model = cls(_clip_config(tsd, act, projection="text_projection.weight" in tsd))
    _load_strict(model, _in_layout(model, tsd), "text encoder")
    return model


def _open_clip_text(cls, sd: dict, prefix: str):
    """OpenCLIP text tower -> transformers CLIP text model (SD2: penultimate layer = 23 layers)."""

    hidden = sd[prefix + "token_embedding.weight"].shape[1]

    class _Width:  # the converter splits in_proj by this width when text_projection is absent
        class config:  # diffusers < 0.32 reads projection_dim, later releases hidden_size
            projection_dim = hidden
            hidden_size = hidden
    tsd = sfu.convert_open_clip_checkpoint(_Width, sd, prefix=prefix)
    tsd = {k: v for k, v in tsd.items() if not k.endswith("position_ids")}
    if cls.__name__ == "CLIPTextModel":
        tsd.pop("text_projection.weight", None)
    model = cls(_clip_config(tsd, "gelu", projection=cls.__name__ != "CLIPTextModel"))
    _load_strict(model, _in_layout(model, tsd), "OpenCLIP text encoder")
    return model
