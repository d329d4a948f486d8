"""Every file the product needs: where it comes from, how to check it and where it goes.

The paper's files are never committed; they are fetched from upstream (see `wplus.assets.download`) or
read from the user's models folder. Hashes below are of the upstream files (sha256 of the paper's
`w_direction/` as released); `None` means upstream publishes none and we only check the download
completed.
"""
from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path

PAPER_REPO = "https://github.com/csxmli2016/w-plus-adapter"
RELEASE_URL = f"{PAPER_REPO}/releases/download/v1"
RAW_URL = "https://raw.githubusercontent.com/csxmli2016/w-plus-adapter/main"
FACEXLIB_URL = "https://github.com/xinntao/facexlib/releases/download"

DIRECTIONS_SUBDIR = "w_direction"
IDENTITIES_SUBDIR = "identities"
FACEXLIB_SUBDIR = "facexlib"
EXTENSION_DIR = Path(__file__).resolve().parents[2]  # the checkout: wplus/, scripts/, models/ ...
#: Files beside `wplus/` that only a WebUI extension checkout has (a pip install puts `wplus/` in
#: site-packages, where neither exists).
CHECKOUT_MARKERS = ("install.py", "scripts/wplus_script.py")
MODELS_ENV = "WPLUS_MODELS_DIR"
#: How the default models folder is chosen, for --help texts and docs (the rule is `default_models_dir`).
MODELS_DIR_RULE = (f"${MODELS_ENV} if set; else the extension's models/ when running from a WebUI extension "
                   "checkout; else a per-user folder (Linux: $XDG_DATA_HOME/wplus/models or "
                   "~/.local/share/wplus/models, macOS: ~/Library/Application Support/wplus/models, "
                   "Windows: %LOCALAPPDATA%\\wplus\\models)")


@dataclass(frozen=True)
class ModelFile:
    """One downloadable file. `filename` may contain '/' (kept below `subdir`, as upstream)."""

    key: str
    filename: str
    subdir: str
    url: str
    sha256: str | None
    size: int | None
    description: str
    purpose: str  # "generation", "encoding", "editing", "faces", "training"
    alt_subdirs: tuple[str, ...] = ()  # other models/ folders that may already hold it (WebUI's)

    def path(self, models_dir: str | os.PathLike) -> Path:
        return Path(models_dir) / self.subdir / self.filename

    def folder(self, models_dir: str | os.PathLike) -> Path:
        return self.path(models_dir).parent


def _direction(rel: str, sha256: str, size: int, description: str, purpose: str = "editing") -> ModelFile:
    return ModelFile(
        key=f"directions/{rel}",
        filename=rel,
        subdir=DIRECTIONS_SUBDIR,
        url=f"{RAW_URL}/{DIRECTIONS_SUBDIR}/{rel}",
        sha256=sha256,
        size=size,
        description=description,
        purpose=purpose,
    )


# sha256 of each upstream direction file (from the released w_direction/ folder).
_LATENT_SHA256 = {
    "age": "457ac7452a1cfe6e95cfba92518a27eac9cd80f4d474604f4b1da6c32b1fdcc2",
    "angle_horizontal": "7dc839a2489faa70d8a3c44389ab9e3dc6162d607bb3a2133f25896de22322f2",
    "angle_pitch": "1dabe0b4294070dd82066b7dc48569688d6cd281ee48b3897538f35d0bf8b598",
    "beauty": "bcd114ad98c23d5f6d91c742838d2ac90ec283a88796b2c399518a12ba6e07c2",
    "emotion_angry": "6e89d076b4ec1214e3b8aaa7f70dc4bc1fdf2867ab1bf6f161d9a66b38dd12f2",
    "emotion_disgust": "99ded62c36ef8ab84ee97453d3099172fa54b5530c31b5524c1742ee8c71facc",
    "emotion_easy": "8a87c81731a5c08cf2249648005394719e4979a417c8a8171ed261739627d724",
    "emotion_fear": "e7504457b57de3396a250fbacdec69b7041cc641e4d2976bca2ff1e7bfc4c222",
    "emotion_happy": "3b05bfae0fa289a96e5c7d888df2add176a69b7e91816dc5c14361923ae357b7",
    "emotion_sad": "f4ec49ff2ceeaa0a78a53c109ce56cba534d7e9d17f9db7a65e6036208016037",
    "emotion_surprise": "3f77343f67f310bb78f152f3fbd9205f4dbff670c673f73118ddf4a0c76bd82a",
    "eyes_open": "757692bc2ca441da65e2aadb9166f2cd8fe5f195e4932925edd12abbe5912eea",
    "face_shape": "57f9f501eb79bceff3f7306b73d2cd62f3e5402f34d5fd3c9c3292d33b31c185",
    "gender": "e5276a7112f1e238e0433d1f34429a3ec792ea3f41cb58bf9e062c622dd48be8",
    "glasses": "fe22a8e57b345e9410757f6bf79b72e977c11ecda0cac85873edb09ced1d0207",
    "height": "5582f5e67b7bba0625e9fe07fe15e5214186ab6f5b81868b02b16c356572144e",
    "race_black": "e05b4629874f96fe2ba1d05a03b7c5f67fdf3fff1e603426841a767150e8250d",
    "race_white": "2e627c2c9278b1ccf5722a2889e02f1a1c2538bd59466a58c898ff69d2d83468",
    "race_yellow": "969f0be7e80a11396441dd9dcbbd069e5c63e79a1e9b1a83b87fa16c5c571327",
    "smile": "ac46b59d1cd793cab7ba6b8b4dd2e00fb7cf565d130baeaf84165f3ba0f762ad",
    "width": "083c1554041fb87e550d6cc42f38fdb28097b3b293b12420c8577f4caea9a792",
}
_INTERFACEGAN_SHA256 = {
    "age": "50074516b1629707d89b5e43d6b8abd1792212fa3b961a87a11323d6a5222ae0",
    "smile": "817a7e732b59dee9eba862bec8bd7e8373568443bc9f9731a21cf9b0356f0653",
}
_GANSPACE_CSV_SHA256 = "074b88a74c15fcfbce51ba1fa46cdd6485163f6e090d5ab1bf4b4f4617e6fa67"
# The edit names of that ganspace_configs.csv (its first column, in file order; fixed by its sha256),
# so the edits can be listed before the table is downloaded.
GANSPACE_EDITS = (
    "frizzy_hair", "background_blur", "bald", "big_smile", "caricature_smile", "scary_eyes",
    "curly_hair", "dark_bg_shiny_hair", "dark_hair_and_light_pos", "dark_hair", "disgusted", "displeased",
    "eye_openness", "eye_wrinkles", "eyebrow_thickness", "face_roundness", "fearful_eyes", "hairline",
    "happy_frizzy_hair", "happy_elderly_lady", "head_angle_up", "huge_grin", "in_awe", "wide_smile",
    "large_jaw", "light_lr", "lipstick_and_age", "lipstick", "mascara_vs_beard", "nose_length",
    "elderly_woman", "overexposed", "screaming", "short_face", "show_front_teeth", "smile",
    "straight_bowl_cut", "sunlight_in_face", "trimmed_beard", "white_hair", "wrinkles", "boyishness",
)


def _release(key: str, filename: str, description: str, purpose: str) -> ModelFile:
    """A file of the paper's GitHub release (no published hash), kept at the top of the models folder."""
    return ModelFile(key=key, filename=filename, subdir="", url=f"{RELEASE_URL}/{filename}", sha256=None,
                     size=None, description=description, purpose=purpose)


def _facexlib(key: str, filename: str, version: str, description: str) -> ModelFile:
    """facexlib's weights; the WebUI's face restorers keep the same files in models/GFPGAN."""
    return ModelFile(key=key, filename=filename, subdir=FACEXLIB_SUBDIR, url=f"{FACEXLIB_URL}/{version}/{filename}",
                     sha256=None, size=None, description=description, purpose="faces", alt_subdirs=("GFPGAN",))


def _build() -> dict[str, ModelFile]:
    files = [
        _release("adapter", "wplus_adapter.bin", "the W+ adapter for SD1.5 (projection + residual cross-attention)",
                 "generation"),
        _release("e4e", "e4e_ffhq_encode.pt", "the e4e encoder + StyleGAN2 FFHQ generator (photo -> W+, previews)",
                 "encoding"),
        _facexlib("facexlib/detection", "detection_Resnet50_Final.pth", "v0.1.0", "facexlib RetinaFace face detector"),
        _facexlib("facexlib/parsing", "parsing_parsenet.pth", "v0.2.2", "facexlib ParseNet face parser (face mask)"),
    ]
    for name, digest in _LATENT_SHA256.items():
        files.append(_direction(f"latent_directions/{name}.npy", digest, 73856, f"latent direction '{name}'"))
    for name, digest in _INTERFACEGAN_SHA256.items():
        files.append(_direction(f"interfacegan_directions/{name}.pt", digest, 2808, f"InterFaceGAN '{name}'"))
    files.append(_direction(
        "gan_space/ffhq_pca.pt",
        "4d7f9df1c96180d9026b9cb8d04753579fbf385f321a9d0e263641601c5e5d36",
        167562,
        "GANSpace PCA of FFHQ W",
    ))
    # upstream has the table both at the top and in gan_space/ (same bytes); the top one is certain
    files.append(_direction("ganspace_configs.csv", _GANSPACE_CSV_SHA256, 1017, "GANSpace edit table"))
    files.append(_direction(
        "att_direction_scale.pth",
        "abc6fabbe8803f21147e57b4bdc6df0ecfcd9135d3344dcec7d1d8d8c79754a1",
        1147798,
        "17 directions for training-time W+ perturbation",
        purpose="training",
    ))
    return {f.key: f for f in files}


REGISTRY: dict[str, ModelFile] = _build()


def get(key: str) -> ModelFile:
    try:
        return REGISTRY[key]
    except KeyError:
        raise KeyError(f"unknown model file {key!r}; known: {', '.join(sorted(REGISTRY))}") from None


def direction_files(include_training: bool = False) -> list[ModelFile]:
    """The `w_direction/` files the edit sliders need (plus the training set if asked)."""
    return [
        f for f in REGISTRY.values()
        if f.subdir == DIRECTIONS_SUBDIR and (include_training or f.purpose != "training")
    ]


def official_directions() -> list[tuple[str, str, tuple[ModelFile, ...]]]:
    """(source, stem, the files it needs) of every edit the paper's `w_direction/` folder provides.

    Sources as `wplus.stylegan.directions.SOURCES` names them: latent, interfacegan, ganspace."""
    out: list[tuple[str, str, tuple[ModelFile, ...]]] = []
    for entry in direction_files():
        rel = Path(entry.filename)
        if rel.parent.name == "latent_directions":
            out.append(("latent", rel.stem, (entry,)))
        elif rel.parent.name == "interfacegan_directions":
            out.append(("interfacegan", rel.stem, (entry,)))
    ganspace = (REGISTRY["directions/gan_space/ffhq_pca.pt"], REGISTRY["directions/ganspace_configs.csv"])
    out += [("ganspace", name, ganspace) for name in GANSPACE_EDITS]
    return out


def select(what: str) -> list[ModelFile]:
    """Files for a CLI/UI group name: all, adapter, e4e, directions, faces, training."""
    groups = {
        "all": [f for f in REGISTRY.values() if f.purpose != "training"],
        "adapter": [REGISTRY["adapter"]],
        "e4e": [REGISTRY["e4e"]],
        "directions": direction_files(),
        "faces": [f for f in REGISTRY.values() if f.purpose == "faces"],
        "training": [f for f in REGISTRY.values() if f.purpose == "training"],
    }
    if what not in groups:
        raise KeyError(f"unknown file group {what!r}; choose one of {', '.join(groups)}")
    return groups[what]


def missing_message(entry: ModelFile, models_dir: str | os.PathLike | None, reason: str,
                    path: str | os.PathLike | None = None) -> str:
    """The one message for an absent model file: which file, why, where to get it and where it goes
    (`path` when the caller looked somewhere else than the models folder)."""
    home = entry.path(models_dir if models_dir is not None else default_models_dir())
    target = Path(path) if path is not None else home
    blocker = _file_in_the_way(target)
    if blocker is not None:  # "put it in the folder" would name a file
        return (
            f"Missing {entry.filename!r} ({entry.description}): {reason}. The path {target} cannot exist: "
            f"{blocker} is a file, not a folder; check the path. Download it from {entry.url} and put it in "
            f"the folder {home.parent.resolve()}{os.sep} (the file must be {home.resolve()})."
        )
    return (
        f"Missing {entry.filename!r} ({entry.description}): {reason}. "
        f"Download it from {entry.url} and put it in the folder {target.parent.resolve()}{os.sep} "
        f"(the file must be {target.resolve()})."
    )


def _file_in_the_way(path: Path) -> Path | None:
    """The nearest existing folder above `path`, if it is a file instead (then `path` cannot exist)."""
    for parent in path.absolute().parents:
        try:
            if parent.exists():
                return None if parent.is_dir() else parent
        except OSError:  # a name the system cannot look up: the caller's message says enough
            return None
    return None


def default_models_dir() -> Path:
    """Where model files live unless the caller names a folder (the CLI's --models, the WebUI setting).

    `$WPLUS_MODELS_DIR` if set; else the checkout's own `models/` when the code runs from a WebUI
    extension checkout (`is_extension_checkout`); else the per-user data folder (`user_models_dir`),
    so that a pip install never writes into site-packages. Nothing is created here: the folder
    appears when the first file is written into it."""
    env = os.environ.get(MODELS_ENV)
    if env:
        return Path(env).expanduser()
    if is_extension_checkout(EXTENSION_DIR):
        return EXTENSION_DIR / "models"
    return user_models_dir()


def is_extension_checkout(root: str | os.PathLike) -> bool:
    """True when `root` (the folder holding `wplus/`) is a WebUI extension checkout, not site-packages."""
    root = Path(root)
    return (root / "wplus" / "__init__.py").is_file() and all((root / m).is_file() for m in CHECKOUT_MARKERS)


def user_models_dir() -> Path:
    """The per-user data folder for models: XDG on Linux/BSD, Application Support on macOS,
    %LOCALAPPDATA% on Windows (each `.../wplus/models`)."""
    home = Path.home()
    system = _system()
    if system == "windows":
        base = os.environ.get("LOCALAPPDATA")
        root = Path(base) if base else home / "AppData" / "Local"
    elif system == "macos":
        root = home / "Library" / "Application Support"
    else:
        base = os.environ.get("XDG_DATA_HOME", "")
        root = Path(base) if os.path.isabs(base) else home / ".local" / "share"  # XDG: relative = unset
    return root / "wplus" / "models"


def _system() -> str:
    return "windows" if os.name == "nt" else "macos" if sys.platform == "darwin" else "posix"
