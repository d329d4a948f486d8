"""Load a diffusers Stable Diffusion pipeline for the W+ branch: a diffusers folder, a single-file WebUI
checkpoint (the trainer's offline converter with its local configs) or a Hugging Face hub id.

SD1.x, SD2.x and SDXL; fp16 on CUDA, fp32 on the CPU. The scheduler is the paper's Euler unless asked.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import torch

from wplus.errors import MissingWeightsError, WPlusError
from wplus.pipeline.defaults import FREEU, SCHEDULERS

CHECKPOINT_SUFFIXES = (".safetensors", ".ckpt")


def pick_device(device: str | None) -> torch.device:
    if device in (None, "", "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if str(device).startswith("cuda") and not torch.cuda.is_available():
        raise WPlusError(f"--device {device}: no CUDA device is available here (use --device cpu)")
    return torch.device(device)


def pick_dtype(device: torch.device, dtype: str | None = None) -> torch.dtype:
    """'auto' = fp16 on CUDA (as the paper's demo), fp32 elsewhere."""
    if dtype in (None, "", "auto"):
        return torch.float16 if device.type == "cuda" else torch.float32
    return {"fp16": torch.float16, "fp32": torch.float32, "bf16": torch.bfloat16}[dtype]


def load_pipeline(model: str, device: str | torch.device | None = None, dtype: str | torch.dtype | None = None,
                  scheduler: str = "euler", vae: str | None = None, allow_download: bool = True,
                  original_config: str | None = None) -> Any:
    """A StableDiffusionPipeline or StableDiffusionXLPipeline on `device`, safety checker off.

    original_config: the ldm/sgm YAML of a single-file checkpoint (default: the trainer's
    `wplus/assets/model_configs/<arch>.yaml` for the standard SD1/SD2/SDXL shapes)."""
    device = device if isinstance(device, torch.device) else pick_device(device)
    dtype = dtype if isinstance(dtype, torch.dtype) else pick_dtype(device, dtype)
    quiet_image_processor_fallback()
    kind = model_kind(model)
    path = Path(model).expanduser()
    if kind == "folder":
        pipe = _from_folder(path)
    elif kind == "file":
        pipe = _from_single_file(path, original_config)
    else:
        pipe = _from_hub(model, allow_download)
    if vae:
        pipe.vae = _load_vae(vae, allow_download)
    if scheduler:
        pipe.scheduler = make_scheduler(scheduler, pipe.scheduler.config)
    pipe.set_progress_bar_config(leave=False)
    return _moved(pipe, device, dtype)


def _moved(pipe: Any, device: torch.device, dtype: torch.dtype) -> Any:
    """The pipeline on `device`, cast to `dtype` only when a module is in another one (diffusers warns
    about modules to keep in float32 on every cast with `to()`, even when there is nothing to cast)."""
    modules = [m for m in pipe.components.values() if isinstance(m, torch.nn.Module)]
    if all(p.dtype == dtype for m in modules for p in m.parameters()):
        return pipe.to(device=device)
    return pipe.to(device=device, dtype=dtype)


_FALLBACK_NOTICE = "requires torchvision (not installed); falling back to"


class _ImageProcessorFallback(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return _FALLBACK_NOTICE not in record.getMessage()


def quiet_image_processor_fallback() -> None:
    """transformers >= 5 without torchvision notes, once per class, that an image processor falls back
    to its PIL version. Importing diffusers' pipelines triggers it, but no pipeline here runs an image
    processor (the safety checker is off): that one note is dropped, every other message stays."""
    log = logging.getLogger("transformers.utils.import_utils")
    if not any(isinstance(f, _ImageProcessorFallback) for f in log.filters):
        log.addFilter(_ImageProcessorFallback())


def model_kind(model: str) -> str:
    """'folder', 'file' or 'hub'; a path that does not exist is an error (checked before heavy work)."""
    path = Path(model).expanduser()
    if path.is_dir():
        return "folder"
    if path.is_file():
        return "file"
    if _looks_like_path(model):
        raise WPlusError(f"--model {model}: no such folder or file (a diffusers folder, a .safetensors/.ckpt "
                         "checkpoint or a Hugging Face model id)")
    return "hub"


def make_scheduler(name: str, config: Any) -> Any:
    import diffusers

    if name not in SCHEDULERS:
        raise WPlusError(f"unknown scheduler {name!r}; choose one of {', '.join(SCHEDULERS)}")
    return getattr(diffusers, SCHEDULERS[name][0]).from_config(config)


def set_freeu(pipe: Any, on: bool) -> None:
    if on:
        pipe.enable_freeu(**FREEU)
    else:
        pipe.disable_freeu()


def pipeline_arch(pipe: Any) -> str:
    if getattr(pipe, "text_encoder_2", None) is not None:
        return "sdxl"
    return "sd2" if pipe.unet.config.cross_attention_dim == 1024 else "sd1"


def _pipeline_class(sdxl: bool):
    from diffusers import StableDiffusionPipeline, StableDiffusionXLPipeline

    return StableDiffusionXLPipeline if sdxl else StableDiffusionPipeline


def _from_folder(path: Path) -> Any:
    if not (path / "model_index.json").is_file():
        raise WPlusError(f"--model {path}: not a diffusers model folder (no model_index.json)")
    sdxl = (path / "text_encoder_2").is_dir()
    kw = {} if sdxl else {"safety_checker": None, "requires_safety_checker": False}
    try:
        return _pipeline_class(sdxl).from_pretrained(str(path), local_files_only=True, **kw, **_loading())
    except (OSError, ValueError) as exc:
        raise WPlusError(f"--model {path}: cannot load this diffusers folder: {exc}") from None


def _from_single_file(path: Path, original_config: str | None = None) -> Any:
    if path.suffix not in CHECKPOINT_SUFFIXES:
        raise WPlusError(f"--model {path}: a single-file checkpoint must be .safetensors or .ckpt")
    from wplus.assets.checkpoint import load_base_model

    try:
        base = load_base_model(str(path), original_config=original_config, cache_dir=tokenizer_cache())
    except (ValueError, FileNotFoundError, KeyError) as exc:
        raise WPlusError(f"--model {path}: {exc}") from None
    cls = _pipeline_class(base.is_sdxl)
    if base.is_sdxl:
        return cls(vae=base.vae, text_encoder=base.text_encoders[0], text_encoder_2=base.text_encoders[1],
                   tokenizer=base.tokenizers[0], tokenizer_2=base.tokenizers[1], unet=base.unet,
                   scheduler=base.scheduler)
    return cls(vae=base.vae, text_encoder=base.text_encoders[0], tokenizer=base.tokenizers[0], unet=base.unet,
               scheduler=base.scheduler, safety_checker=None, feature_extractor=None, requires_safety_checker=False)


def tokenizer_cache() -> Path:
    """Where the CLIP tokenizer of single-file checkpoints is written once ($WPLUS_CACHE or ~/.cache/wplus)."""
    return Path(os.environ.get("WPLUS_CACHE") or Path.home() / ".cache" / "wplus").expanduser()


def _hub_offline(allow_download: bool) -> bool:
    from wplus.assets.download import downloads_disabled

    return not allow_download or downloads_disabled()


def _from_hub(model_id: str, allow_download: bool) -> Any:
    offline = _hub_offline(allow_download)
    try:
        from diffusers import DiffusionPipeline

        kw: dict[str, Any] = {"local_files_only": offline, **_loading()}
        if "xl" not in model_id.lower():
            kw.update(safety_checker=None, requires_safety_checker=False)
        pipe = DiffusionPipeline.from_pretrained(model_id, **kw)
    except Exception as exc:  # hub errors come in many types (offline, 404, gated, proxy)
        raise MissingWeightsError(_hub_message(model_id, offline, exc)) from None
    if pipe.__class__.__name__ not in ("StableDiffusionPipeline", "StableDiffusionXLPipeline"):
        raise WPlusError(f"--model {model_id} is a {pipe.__class__.__name__}; the W+ branch needs a Stable "
                         "Diffusion 1.x/2.x or SDXL text-to-image model")
    return pipe


def _hub_message(model_id: str, offline: bool, exc: Exception) -> str:
    from huggingface_hub.constants import HF_HUB_CACHE

    reason = "downloads are disabled" if offline else f"it could not be downloaded ({type(exc).__name__}: " \
                                                      f"{str(exc).splitlines()[0][:200] if str(exc) else ''})"
    return (f"Missing the base model {model_id!r} (diffusers format, ~4 GB for SD1.5): {reason}. "
            f"Download it from https://huggingface.co/{model_id} (where there is network: "
            f"`hf download {model_id}`) into the Hugging Face cache {HF_HUB_CACHE}{os.sep}, "
            "or pass --model a diffusers folder or a WebUI checkpoint (.safetensors) you already have.")


def missing_model_message(model: str) -> str:
    """Offline: the message for a hub model that is not in the Hugging Face cache ("" otherwise)."""
    if model_kind(model) != "hub":
        return ""
    from huggingface_hub import try_to_load_from_cache

    try:
        cached = try_to_load_from_cache(model, "model_index.json")
    except Exception:  # a malformed id: the loader reports it
        return ""
    if isinstance(cached, str) and os.path.isfile(cached):
        return ""
    return _hub_message(model, True, FileNotFoundError(model))


def _load_vae(vae: str, allow_download: bool) -> Any:
    from diffusers import AutoencoderKL

    path = Path(vae).expanduser()
    try:
        if path.is_dir():
            return AutoencoderKL.from_pretrained(str(path), local_files_only=True, **_loading())
        if path.is_file():
            return AutoencoderKL.from_single_file(str(path))
        return AutoencoderKL.from_pretrained(vae, local_files_only=_hub_offline(allow_download), **_loading())
    except Exception as exc:
        raise MissingWeightsError(f"--vae {vae}: cannot load it ({type(exc).__name__}: {exc})") from None


def _loading() -> dict[str, Any]:
    from wplus.assets.checkpoint import diffusers_loading

    return diffusers_loading()


def _looks_like_path(model: str) -> bool:
    """Hub ids are `owner/name`; anything else that does not exist is a mistyped path."""
    return model.startswith((".", "/", "~")) or "\\" in model or model.endswith(CHECKPOINT_SUFFIXES) \
        or model.count("/") != 1
