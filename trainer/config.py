"""Training configuration: one dataclass, filled from a YAML file, then from command-line flags.

Precedence (later wins): dataclass defaults < `trainer/configs/stage{N}.yaml` (or `--config FILE`)
< flags given on the command line. Every field is a flag (`--learning-rate 1e-4` or
`--learning_rate 1e-4`), and `--help` prints each field's help text and default.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, get_args, get_origin, get_type_hints

import yaml

CONFIG_DIR = Path(__file__).resolve().parent / "configs"

DEFAULT_TEMPLATES = [
    "{}", "a {}", "a photo of a {}", "a cropped photo of a {}", "the photo of a {}",
    "a depiction of a {}", "a close-up photo of a {}", "a good photo of a {}",
    "a photography of a {}", "a cropped photography of a {}", "a close-up photography of a {}",
    "a bright photography of a {}", "a good photography of a {}",
]


def _f(default: Any, help: str, group: str, **kw: Any) -> Any:
    if isinstance(default, list):
        return field(default_factory=lambda d=default: list(d), metadata={"help": help, "group": group, **kw})
    return field(default=default, metadata={"help": help, "group": group, **kw})


@dataclass
class TrainConfig:
    # --- stage and model
    stage: int = _f(1, "Training stage: 1 = aligned faces, trains projection + residual attention; "
                    "2 = in-the-wild images, projection frozen, disentanglement losses.", "stage",
                    choices=[1, 2])
    init: Optional[str] = _f(None, "Adapter weights to start from (our .safetensors or the official "
                             ".bin). Required for Stage II: the Stage I result.", "stage")
    pretrained_model: Optional[str] = _f(None, "Base model: a diffusers folder (unet/, vae/, "
                                         "text_encoder/, tokenizer/, scheduler/) or a single-file WebUI "
                                         "checkpoint (.safetensors/.ckpt).", "model")
    original_config: Optional[str] = _f(None, "For a single-file checkpoint: the original ldm/sgm YAML "
                                        "(v1-inference.yaml ...). Default: wplus/assets/model_configs/<arch>.yaml.",
                                        "model")
    arch: str = _f("auto", "Model family for a single-file checkpoint (auto = detect from its keys).",
                   "model", choices=["auto", "sd1", "sd2", "sdxl"])
    tokenizer: Optional[str] = _f(None, "Folder with a CLIP tokenizer (vocab.json + merges.txt) for a "
                                  "single-file checkpoint. Default: built offline from open_clip's BPE "
                                  "vocabulary when the open_clip package is installed.", "model")
    prediction_type: Optional[str] = _f(None, "Override the noise scheduler's prediction type "
                                        "(epsilon / v_prediction). Default: from the model.", "model")
    # --- data
    manifest: Optional[str] = _f(None, "JSON-lines manifest written by trainer/prepare.py "
                                 "(paths inside are relative to the manifest).", "data")
    resolution: int = _f(512, "Training resolution (square crops, pixels).", "data")
    templates: list = _f(DEFAULT_TEMPLATES, "Stage I prompt templates; '{}' is replaced by --subject.",
                         "data")
    subject: str = _f("face", "Word put into the Stage I prompt templates.", "data")
    caption_prob: float = _f(0.0, "Stage I: probability to use a sample's own caption instead of a "
                             "template (the paper uses templates only: 0).", "data")
    default_caption: str = _f("a person", "Stage II caption for samples without one.", "data")
    i_drop_rate: float = _f(0.05, "Probability to drop the identity alone (all-zero W+).", "data")
    t_drop_rate: float = _f(0.05, "Probability to drop the text alone (empty prompt).", "data")
    ti_drop_rate: float = _f(0.05, "Probability to drop both identity and text.", "data")
    augment: bool = _f(True, "Stage II random rotation/scale/crop that keeps the face in view, and "
                       "colour jitter.", "data")
    aug_scale: list = _f([0.8, 1.2], "Stage II zoom range around the face before cropping.", "data")
    aug_rotate: float = _f(10.0, "Stage II maximum rotation in degrees.", "data")
    aug_color: float = _f(0.2, "Stage II brightness/contrast/saturation jitter.", "data")
    mask_erode: list = _f([0.1, 0.35], "Stage II: erode the face mask with a square of this fraction "
                          "range of the face size (sqrt of its area), as the paper does.", "data")
    mask_blur: list = _f([0.1, 0.2], "Stage II: then blur it with a Gaussian of this fraction range "
                         "of the face size (kernel width), the paper's soft mask edge.", "data")
    mask_background: bool = _f(False, "Stage I: paint the background of the target image white "
                               "(the paper trains on the full aligned face: off).", "data")
    num_workers: int = _f(0, "DataLoader worker processes.", "data")
    # --- optimisation
    output_dir: str = _f("outputs/wplus-train", "Where checkpoints, logs, samples and the exported "
                         "adapter go.", "train")
    seed: int = _f(42, "Seed for data order, augmentation, noise, timesteps and perturbations.",
                   "train")
    max_steps: int = _f(100000, "Optimizer steps to train.", "train")
    train_batch_size: int = _f(16, "Images per GPU per micro-batch.", "train")
    gradient_accumulation_steps: int = _f(1, "Micro-batches per optimizer step.", "train")
    learning_rate: float = _f(1e-4, "AdamW learning rate.", "train")
    weight_decay: float = _f(0.01, "AdamW weight decay.", "train")
    adam_beta1: float = _f(0.9, "AdamW beta1.", "train")
    adam_beta2: float = _f(0.999, "AdamW beta2.", "train")
    adam_epsilon: float = _f(1e-8, "AdamW epsilon.", "train")
    max_grad_norm: float = _f(0.0, "Clip the gradient norm to this (0 = no clipping, as the paper).",
                              "train")
    lr_scheduler: str = _f("constant", "Learning-rate schedule (diffusers.optimization names).",
                           "train", choices=["constant", "constant_with_warmup", "linear", "cosine"])
    lr_warmup_steps: int = _f(0, "Warm-up steps of the learning-rate schedule.", "train")
    mixed_precision: str = _f("no", "Mixed precision of the frozen models and autocast.", "train",
                              choices=["no", "fp16", "bf16"])
    gradient_checkpointing: bool = _f(False, "Recompute UNet activations in backward (saves memory).",
                                      "train")
    overfit_batch: bool = _f(False, "Debug: repeat the first batch with the same noise and timesteps "
                             "every step (L_rec must fall; a sanity check of the wiring).", "train")
    train_scale: float = _f(1.0, "λ of the residual branch during training.", "train")
    # --- Stage II losses and perturbations
    lambda_disen: float = _f(2.0, "Weight of L_disen (prediction outside the face must not depend "
                             "on the identity).", "stage2")
    lambda_preserve: float = _f(1.0, "Weight of L_preserve (prediction close to the model without "
                                "the branch).", "stage2")
    directions: Optional[str] = _f(None, "The paper's w_direction folder (att_direction_scale.pth, "
                                   "gan_space/ffhq_pca.pt, ganspace_configs.csv) for random direction "
                                   "edits. Without it those perturbations fall back to the others.",
                                   "stage2")
    perturb_probs: list = _f([0.45, 0.07, 0.13, 0.15, 0.2], "Stage II perturbation mix: extrapolate "
                             "towards a shuffled identity, add a scaled copy, add noise, one direction "
                             "edit, a blend of two direction edits (the paper's split).", "stage2")
    direction_strength: float = _f(60.0, "Maximum |strength| of a random direction edit.", "stage2")
    # --- checkpoints, logging, validation
    checkpoint_every: int = _f(2000, "Save a resumable checkpoint every N optimizer steps (and on "
                               "exit).", "log")
    checkpoints_keep: int = _f(3, "Keep only the newest N checkpoints (0 = keep all).", "log")
    resume: Optional[str] = _f(None, "Resume from a checkpoint folder, or 'latest' in output_dir.",
                               "log")
    log_every: int = _f(10, "Log losses to TensorBoard every N steps.", "log")
    report_to: str = _f("tensorboard", "Logging backend.", "log", choices=["tensorboard", "none"])
    progress: bool = _f(True, "Show a progress bar with loss and it/s.", "log")
    validation_every: int = _f(0, "Render validation images every N steps (0 = off).", "log")
    validation_prompts: list = _f(["a photo of a face", "a person on the beach, oil painting"],
                                  "Validation prompts.", "log")
    validation_seeds: list = _f([0], "Validation seeds (one image per prompt and seed).", "log")
    validation_identities: list = _f([], "W+ files (.pth/.safetensors) for validation; default: "
                                     "the first sample of the manifest.", "log")
    validation_steps: int = _f(30, "Sampler steps of a validation image.", "log")
    validation_guidance: float = _f(7.5, "Classifier-free guidance of validation images.", "log")
    validation_scale: float = _f(1.0, "λ of validation images.", "log")
    validation_start: float = _f(0.0, "Percent of the steps before the identity is injected in validation images "
                                      "(the hosts' start rule; 0 still leaves step 0 to the text).", "log")
    export_official: bool = _f(False, "Also export the official wplus_adapter.bin layout.", "log")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def validate(self) -> "TrainConfig":
        """Refuse an unusable configuration with a message naming the option; returns self."""
        self._check_inputs()
        self._check_rates()
        self._check_stage_options()
        self._check_sizes()
        return self

    def _check_inputs(self) -> None:
        """The base model, the manifest and the adapter to start from."""
        if self.pretrained_model is None:
            raise ValueError("--pretrained-model is required (a diffusers folder or a .safetensors/.ckpt)")
        if self.manifest is None:
            raise ValueError("--manifest is required (write one with: python trainer/prepare.py)")
        if not Path(self.pretrained_model).exists():
            raise ValueError(f"base model {self.pretrained_model} not found (a diffusers folder or a "
                             ".safetensors/.ckpt file)")
        if not Path(self.manifest).is_file():
            raise ValueError(f"manifest {self.manifest} not found; write one with: python trainer/prepare.py")
        if self.init and not Path(self.init).is_file():
            raise ValueError(f"--init {self.init}: no such adapter file")
        if self.stage == 2 and not self.init and not self.resume:
            raise ValueError("Stage II needs --init STAGE1_WEIGHTS (the Stage I adapter)")

    def _check_rates(self) -> None:
        """The drop and caption probabilities."""
        for name in ("i_drop_rate", "t_drop_rate", "ti_drop_rate", "caption_prob"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be in [0, 1]")
        if self.i_drop_rate + self.t_drop_rate + self.ti_drop_rate > 1.0:
            raise ValueError("i_drop_rate + t_drop_rate + ti_drop_rate must not exceed 1")

    def _check_stage_options(self) -> None:
        """The perturbation mix (Stage II) and the prompt templates (Stage I)."""
        if len(self.perturb_probs) != 5 or min(self.perturb_probs) < 0 or sum(self.perturb_probs) <= 0:
            raise ValueError("perturb_probs needs 5 non-negative weights")
        if self.stage == 1 and not self.templates:
            raise ValueError("--templates needs at least one prompt template")

    def _check_sizes(self) -> None:
        """The augmentation and mask ranges and the resolution."""
        for name in ("aug_scale", "mask_erode", "mask_blur"):
            lo_hi = getattr(self, name)
            if len(lo_hi) != 2 or lo_hi[0] > lo_hi[1] or lo_hi[0] < 0:
                raise ValueError(f"--{name.replace('_', '-')} takes a range: two numbers, low then high")
        if self.resolution % 8:
            raise ValueError("resolution must be a multiple of 8")


def _fields() -> list[dataclasses.Field]:
    return list(dataclasses.fields(TrainConfig))


def _base_type(tp: Any) -> Any:
    if get_origin(tp) is not None and type(None) in get_args(tp):
        return next(a for a in get_args(tp) if a is not type(None))
    return tp


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python trainer/train.py",
        description="Train the W+ adapter (both stages of the paper) on a diffusers or WebUI model. "
        "Settings come from trainer/configs/stage{N}.yaml (or --config), then from these flags.",
        argument_default=argparse.SUPPRESS,
    )
    parser.add_argument("--config", help="YAML file with any of the options below (snake_case keys).")
    hints = get_type_hints(TrainConfig)
    stage_values = {n: load_yaml(CONFIG_DIR / f"stage{n}.yaml") for n in (1, 2)
                    if (CONFIG_DIR / f"stage{n}.yaml").is_file()}
    groups: dict[str, argparse._ArgumentGroup] = {}
    for f in _fields():
        meta = f.metadata
        group = groups.setdefault(meta["group"], parser.add_argument_group(meta["group"]))
        tp = _base_type(hints[f.name])
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        flags = ["--" + f.name.replace("_", "-")]
        if "_" in f.name and tp is not bool:
            flags.append("--" + f.name)  # the paper's scripts spell flags with underscores
        shown = f"default: {default!r}"
        for n, values in stage_values.items():
            if f.name in values and values[f.name] != default and f.name != "stage":
                shown += f"; stage{n}.yaml: {values[f.name]!r}"
        kw: dict[str, Any] = {"dest": f.name, "help": meta["help"] + f" ({shown})"}
        if "choices" in meta:
            kw["choices"] = meta["choices"]
        if tp is bool:
            kw["action"] = argparse.BooleanOptionalAction
        elif tp is list:
            kw["nargs"] = "*"
            kw["type"] = _list_item_type(default)
        else:
            kw["type"] = tp
        group.add_argument(*flags, **kw)
    return parser


def _list_item_type(default: list) -> Any:
    if default and isinstance(default[0], bool):
        return bool
    if default and isinstance(default[0], int):
        return int
    if default and isinstance(default[0], float):
        return float
    return str


def load_yaml(path: str | Path) -> dict:
    data = yaml.safe_load(Path(path).read_text()) or {}
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a mapping of option names to values")
    known = {f.name for f in _fields()}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ValueError(f"{path}: unknown option(s) {unknown}; see python trainer/train.py --help")
    return data


def parse_config(argv: Optional[list[str]] = None) -> TrainConfig:
    """CLI -> TrainConfig: defaults, then the stage YAML or --config, then the given flags."""
    args = vars(build_parser().parse_args(argv))
    config_path = args.pop("config", None)
    stage = args.get("stage", 1)
    values: dict[str, Any] = {}
    if config_path is None:
        default_yaml = CONFIG_DIR / f"stage{stage}.yaml"
        if default_yaml.is_file():
            values.update(load_yaml(default_yaml))
    else:
        values.update(load_yaml(config_path))
    values.update(args)
    return TrainConfig(**values)


def save_config(cfg: TrainConfig, path: Path) -> None:
    path.write_text(json.dumps(cfg.to_dict(), indent=1))
