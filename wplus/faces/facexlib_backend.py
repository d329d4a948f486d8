"""facexlib face backend: RetinaFace (ResNet-50) 5-point detection and ParseNet face parsing.

facexlib is the WebUI's own face library (GFPGAN/CodeFormer use it), but it needs torchvision and
OpenCV, so everything here imports lazily and fails with one actionable message. Weights are looked
up where the WebUI's face restorers leave them (models/GFPGAN, models/Codeformer, models/facexlib,
facexlib's package folder) before `wplus.assets.download.ensure_file` fetches them into our models folder.
We build the networks ourselves and load the weights with `weights_only=True` instead of calling
facexlib's init helpers (which download on their own and unpickle freely).
"""
from __future__ import annotations

import importlib
import importlib.util
import os
import threading
import warnings
from functools import lru_cache
from pathlib import Path

import numpy as np
from PIL import Image

from wplus.assets import download, registry
from wplus.assets.io import load_pickle
from wplus.errors import MissingWeightsError, WPlusError
from wplus.faces import views
from wplus.faces.image import NormalizedImage

NAME = "facexlib"
HOLDS_TORCH_MODELS = True  # prepare_reference releases them after use unless told otherwise
DETECTOR_KEY = "facexlib/detection"
PARSER_KEY = "facexlib/parsing"
#: RetinaFace finds faces from about this width (detection pixels).
RETINA_MIN_FACE_PX = 20
#: One RetinaFace pass covers at most this many pixels (a 1024 x 1024 tile); all passes together
#: at most DETECT_TOTAL_PIXELS.
DETECT_VIEW_PIXELS = 1024 * 1024
DETECT_TOTAL_PIXELS = 16 * 1024 * 1024
#: Landmarks are re-detected on the working pixels around each face, reduced only for faces wider
#: than this (RetinaFace's points are precise to a fraction of the face, not of the photo).
REFINE_FACE_PX = 400
#: RetinaFace confidence threshold (the WebUI's face restoration uses 0.97; 0.9 keeps smaller faces).
CONF_THRESHOLD = 0.9
PARSE_SIZE = 512
_INSTALL = "pip install facexlib (it also needs torchvision and opencv-python)"
_lock = threading.Lock()


def _import(module: str):
    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise WPlusError(
            f"The facexlib face backend is not available ({e}). Install it with: {_INSTALL}; "
            "or use backend='dlib', which works offline.") from e


def importable() -> bool:
    try:
        return importlib.util.find_spec("facexlib") is not None
    except (ImportError, ValueError):
        return False


def available() -> bool:
    """Installed and its detector weights already on disk (what backend='auto' needs)."""
    if not importable():
        return False
    try:
        return weights_path(DETECTOR_KEY, allow_download=False) is not None
    except (MissingWeightsError, WPlusError):
        return False


def search_dirs() -> list[Path]:
    """Where facexlib weights usually are: `$WPLUS_FACEXLIB_DIR`, the WebUI's
    models/{facexlib,GFPGAN,Codeformer} (when this extension sits in <webui>/extensions/), and
    facexlib's own default download folder."""
    dirs = [Path(os.environ["WPLUS_FACEXLIB_DIR"])] if os.environ.get("WPLUS_FACEXLIB_DIR") else []
    if registry.EXTENSION_DIR.parent.name == "extensions":
        webui_models = registry.EXTENSION_DIR.parent.parent / "models"
        dirs += [webui_models / sub for sub in ("facexlib", "GFPGAN", "Codeformer")]
    try:
        spec = importlib.util.find_spec("facexlib")
    except (ImportError, ValueError):
        spec = None
    for root in (spec.submodule_search_locations or []) if spec else []:
        dirs.append(Path(root) / "weights")
    return dirs


def weights_path(key: str, allow_download: bool = True) -> Path:
    """Local path of a registry file (`facexlib/detection`, `facexlib/parsing`), fetched if allowed."""
    return download.ensure_file(registry.get(key), allow_download=allow_download, search_dirs=search_dirs())


def _device() -> str:
    import torch
    return "cuda" if torch.cuda.is_available() else "cpu"


def _load_state(path: Path) -> dict:
    state = load_pickle(str(path))
    if isinstance(state, dict) and "params" in state and isinstance(state["params"], dict):
        state = state["params"]
    return {k[7:] if k.startswith("module.") else k: v for k, v in state.items()}


@lru_cache(maxsize=1)
def _detector(device: str):
    retinaface = _import("facexlib.detection.retinaface")
    net = retinaface.RetinaFace(network_name="resnet50", half=False, device=device)
    return _with_weights(net, DETECTOR_KEY, "a RetinaFace ResNet-50", device)


@lru_cache(maxsize=1)
def _parser(device: str):
    parsenet = _import("facexlib.parsing.parsenet")
    net = parsenet.ParseNet(in_size=PARSE_SIZE, out_size=PARSE_SIZE, parsing_ch=19)
    return _with_weights(net, PARSER_KEY, "a facexlib ParseNet", device)


def _with_weights(net, key: str, what: str, device: str):
    path = weights_path(key)
    try:
        net.load_state_dict(_load_state(path), strict=True)
    except (RuntimeError, KeyError, ValueError) as e:
        raise MissingWeightsError(f"{path} is not {what} checkpoint ({e}); delete it "
                                  "so the right file can be downloaded.") from e
    return net.eval().to(device)


def release() -> None:
    """Drop the networks (RetinaFace ~110 MB, ParseNet ~85 MB) so nothing is held while sampling."""
    _detector.cache_clear()
    _parser.cache_clear()
    try:
        import torch
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    except ImportError:
        pass


def _run(net, view: views.View) -> list[tuple[np.ndarray, float, np.ndarray]]:
    """(box, score, 5 points) in working pixels from one detection copy."""
    import torch

    bgr = np.ascontiguousarray(view.pixels[..., ::-1])  # facexlib follows OpenCV: BGR
    with torch.no_grad():
        rows = np.asarray(net.detect_faces(bgr, CONF_THRESHOLD), dtype=np.float64).reshape(-1, 15)
    return [(view.box_to_working(r[0:4]), float(r[4]), view.points_to_working(r[5:15].reshape(5, 2)))
            for r in rows]


def _refine(net, work: Image.Image, box: np.ndarray, found: tuple) -> tuple:
    """Re-detect one face on the working pixels around it; its landmarks come from there."""
    side = max(box[2] - box[0], box[3] - box[1])
    pad = 0.5 * side
    region = (max(0, int(box[0] - pad)), max(0, int(box[1] - pad)),
              min(work.width, int(np.ceil(box[2] + pad))), min(work.height, int(np.ceil(box[3] + pad))))
    scale = min(1.0, REFINE_FACE_PX / max(side, 1.0))
    again = _run(net, views.make_view(work, scale, region))
    best = max(again, key=lambda f: views.iou(f[0], box), default=None)
    return best if best is not None and views.iou(best[0], box) > 0.3 else found


def detect(norm: NormalizedImage) -> list:
    """Faces in a normalised image: boxes and 5 landmarks in original-image pixels."""
    from wplus.faces.detect import Face

    net = _detector(_device())
    work = norm.image
    with _lock:
        found = []
        copies = views.detection_views(norm, RETINA_MIN_FACE_PX, DETECT_VIEW_PIXELS, DETECT_TOTAL_PIXELS)
        for view in copies:
            found += [(box, score, (lm, view.scale)) for box, score, lm in _run(net, view)]
        faces = []
        for box, score, (lm, scale) in views.merge(found):
            if scale < 1.0 - 1e-6:  # seen on a reduced copy: landmarks from the face's own pixels
                box, score, lm = _refine(net, work, box, (box, score, lm))
            faces.append(Face(tuple(views.box_to_original(norm, box)), norm.to_original(lm), score, NAME))
    return faces


def parse_labels(aligned: Image.Image) -> np.ndarray:
    """ParseNet class map (512, 512) of an aligned face (CelebAMask-HQ classes, ParseNet order)."""
    import torch

    device = _device()
    net = _parser(device)
    rgb = aligned.convert("RGB").resize((PARSE_SIZE, PARSE_SIZE), Image.Resampling.BILINEAR)
    x = torch.from_numpy(np.asarray(rgb, dtype=np.float32) / 255.0).permute(2, 0, 1)[None]
    x = ((x - 0.5) / 0.5).to(device)
    with _lock, torch.no_grad():
        logits = net(x)[0]
    return logits.argmax(dim=1)[0].cpu().numpy()


def parse_mask(aligned: Image.Image) -> np.ndarray | None:
    """Face mask (size, size) in [0, 1] from the parser; None (landmark mask used) if no weights."""
    from wplus.faces.mask import parsing_mask

    try:
        labels = parse_labels(aligned)
    except MissingWeightsError as e:
        warnings.warn(f"Face parser unavailable, using the landmark mask instead: {e}", stacklevel=2)
        return None
    return parsing_mask(labels, "parsenet", size=aligned.width)
