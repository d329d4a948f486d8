"""The W+ nodes for ComfyUI (category "W+ Adapter"): thin translations of node inputs into core calls.

Types: WPLUS_ADAPTER (a loaded `WPlusAdapter`), WPLUS_IDENTITY (a `wplus.identity.files.Identity`,
one person's W+ code). WPlusAdapterLoader, WPlusIdentityLoader and WPlusApply keep these class
names and inputs: workflows and ComfyUI's API refer to them.
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Iterator

import torch

from wplus.comfy import files
from wplus.comfy.images import from_render, to_pil
from wplus.errors import WPlusError

CATEGORY = "W+ Adapter"
ADAPTER = "WPLUS_ADAPTER"
IDENTITY = "WPLUS_IDENTITY"
#: The attribute sliders of the edit node (any other direction by name in its `edits` text).
COMMON_EDITS = ("age", "smile", "gender", "glasses", "angle_horizontal", "angle_pitch", "eyes_open",
                "emotion_happy", "emotion_sad", "emotion_surprise", "face_shape", "beauty")
EDIT_RANGE = (-10.0, 10.0)
PREVIEW_SIZES = (256, 512, 1024)


def _float(default: float, minimum: float, maximum: float, step: float = 0.01, tooltip: str = "") -> tuple:
    return ("FLOAT", {"default": default, "min": minimum, "max": maximum, "step": step, "tooltip": tooltip})


# --- e4e (StyleGAN) on demand ----------------------------------------------------------------------
def _e4e_loader():
    """Loads e4e from models/wplus/ or the product's folder (tests replace this function)."""
    from wplus.identity.encoder import default_e4e_loader

    return default_e4e_loader(files.models_dir("e4e"))


def _encoder():
    from wplus.identity.encoder import IdentityEncoder, default_encoder_tag

    return IdentityEncoder(_e4e_loader(), encoder_tag=default_encoder_tag(files.models_dir("e4e")))


@contextmanager
def _e4e() -> Iterator[Any]:
    """e4e loaded for one node run, released afterwards (about 1 GB)."""
    encoder = _encoder()
    try:
        yield encoder.e4e
    finally:
        encoder.release()


def _identity(code: torch.Tensor, name: str, source: str, **info: Any):
    from wplus.identity.files import Identity

    return Identity(wplus=code.reshape(18, 512).float().cpu(), name=name, source=source, **info)


# --- the three required nodes ----------------------------------------------------------------------
class WPlusAdapterLoader:
    """Loads a W+ adapter from ComfyUI/models/wplus/ (the official wplus_adapter.bin or a .safetensors)."""

    CATEGORY = CATEGORY
    RETURN_TYPES = (ADAPTER,)
    RETURN_NAMES = ("adapter",)
    FUNCTION = "load"

    @classmethod
    def INPUT_TYPES(cls) -> dict:
        return {"required": {"adapter_name": (files.adapter_names(), {"tooltip": "A file of models/wplus/"})}}

    def load(self, adapter_name: str) -> tuple:
        return (files.load_adapter(adapter_name),)


class WPlusIdentityLoader:
    """A saved identity (models/wplus/identities/; the paper's N.pth codes too)."""

    CATEGORY = CATEGORY
    RETURN_TYPES = (IDENTITY,)
    RETURN_NAMES = ("identity",)
    FUNCTION = "load"

    @classmethod
    def INPUT_TYPES(cls) -> dict:
        return {"required": {"identity": (files.identity_names(), {"tooltip": "A saved identity's name"})}}

    def load(self, identity: str) -> tuple:
        return (files.load_identity(identity),)


class WPlusApply:
    """Puts an identity into every image the model makes: the W+ branch in each cross-attention."""

    CATEGORY = CATEGORY
    RETURN_TYPES = ("MODEL",)
    RETURN_NAMES = ("model",)
    FUNCTION = "apply"

    @classmethod
    def INPUT_TYPES(cls) -> dict:
        return {
            "required": {
                "model": ("MODEL",),
                "adapter": (ADAPTER,),
                "identity": (IDENTITY,),
                "weight": _float(1.0, 0.0, 4.0, 0.05, "λ, the identity's strength (0: the plain model)"),
                "start_at": _float(0.2, 0.0, 1.0, 0.01, "Fraction of the steps the text lays out the image "
                                   "alone (the paper's start; off at step 0 even at 0)"),
                "end_at": _float(1.0, 0.0, 1.0, 0.01, "Fraction of sampling after which the identity stops"),
            },
            "optional": {"attn_mask": ("MASK", {"tooltip": "Where this identity goes (two masks: two people)"})},
        }

    def apply(self, model: Any, adapter: Any, identity: Any, weight: float, start_at: float, end_at: float,
              attn_mask: torch.Tensor | None = None) -> tuple:
        from wplus.comfy.patch import apply_identity

        return (apply_identity(model, adapter, identity.batch(), weight, start_at, end_at, attn_mask),)


# --- identities ------------------------------------------------------------------------------------
class WPlusIdentityFromImage:
    """A person's identity from a photo: face found, aligned and encoded by e4e; a batch of photos of
    one person gives one identity, the mean of their codes."""

    CATEGORY = CATEGORY
    RETURN_TYPES = (IDENTITY, "IMAGE")
    RETURN_NAMES = ("identity", "aligned_face")
    FUNCTION = "encode"

    @classmethod
    def INPUT_TYPES(cls) -> dict:
        return {"required": {
            "image": ("IMAGE",),
            "face_index": ("INT", {"default": -1, "min": -1, "max": 99,
                                   "tooltip": "Which face (left to right, 0 first); -1: the largest"}),
        }}

    def encode(self, image: torch.Tensor, face_index: int) -> tuple:
        from wplus.comfy.images import from_pil

        encoder = _encoder()
        index = None if face_index < 0 else int(face_index)
        identity = encoder.encode_many(to_pil(image), face_index=index, name="photo")
        thumb = identity.thumbnail
        return identity, (from_pil([thumb]) if thumb is not None else torch.zeros(1, 64, 64, 3))


class WPlusIdentityFromSeed:
    """A fictional person: StyleGAN's mapping of a seed, pulled towards the average face."""

    CATEGORY = CATEGORY
    RETURN_TYPES = (IDENTITY,)
    RETURN_NAMES = ("identity",)
    FUNCTION = "make"

    @classmethod
    def INPUT_TYPES(cls) -> dict:
        return {"required": {
            "seed": ("INT", {"default": 0, "min": 0, "max": 0xFFFFFFFF}),
            "truncation": _float(0.7, 0.0, 1.0, 0.05, "1: anything StyleGAN can make; 0.5-0.8: typical faces"),
        }}

    def make(self, seed: int, truncation: float) -> tuple:
        with _e4e() as e4e, torch.no_grad():
            code = e4e.map_seed(int(seed), truncation=float(truncation))
        return (_identity(code, f"seed {seed}", "seed"),)


class WPlusSaveIdentity:
    """Saves an identity to models/wplus/identities/NAME.safetensors (then in WPlusIdentityLoader's list)."""

    CATEGORY = CATEGORY
    RETURN_TYPES = ()
    FUNCTION = "save"
    OUTPUT_NODE = True

    @classmethod
    def INPUT_TYPES(cls) -> dict:
        return {"required": {"identity": (IDENTITY,), "name": ("STRING", {"default": "person"})}}

    def save(self, identity: Any, name: str) -> dict:
        path = files.save_identity(identity, name)
        return {"ui": {"text": [f"saved {path.stem}"]}}


class WPlusMixIdentities:
    """Interpolates identity A towards B: globally, or per StyleGAN layer group (coarse: pose and face
    shape, middle: features, fine: colour and detail)."""

    CATEGORY = CATEGORY
    RETURN_TYPES = (IDENTITY,)
    RETURN_NAMES = ("identity",)
    FUNCTION = "mix"

    @classmethod
    def INPUT_TYPES(cls) -> dict:
        return {"required": {
            "identity_a": (IDENTITY,), "identity_b": (IDENTITY,),
            "mode": (["global", "per layer group"],),
            "weight": _float(0.5, 0.0, 1.0, 0.05, "global: 0 gives A, 1 gives B"),
            "coarse": _float(0.0, 0.0, 1.0, 0.05, "per layer group: layers 0-3"),
            "middle": _float(0.0, 0.0, 1.0, 0.05, "per layer group: layers 4-7"),
            "fine": _float(0.0, 0.0, 1.0, 0.05, "per layer group: layers 8-17"),
        }}

    def mix(self, identity_a: Any, identity_b: Any, mode: str, weight: float, coarse: float, middle: float,
            fine: float) -> tuple:
        from wplus.generation.resolve import mix_codes

        weights = float(weight) if mode == "global" else (float(coarse), float(middle), float(fine))
        code = mix_codes(identity_a.wplus, identity_b.wplus, weights)
        return (_identity(code, f"{identity_a.name} x {identity_b.name}", "mix", thumbnail=identity_a.thumbnail),)


class WPlusEditIdentity:
    """Moves an identity along StyleGAN edit directions: the common attributes as sliders (0: no edit),
    any other direction by name in `edits` ("name=strength; ...")."""

    CATEGORY = CATEGORY
    RETURN_TYPES = (IDENTITY,)
    RETURN_NAMES = ("identity",)
    FUNCTION = "edit"

    @classmethod
    def INPUT_TYPES(cls) -> dict:
        sliders = {name: _float(0.0, *EDIT_RANGE, 0.1) for name in COMMON_EDITS}
        return {"required": {"identity": (IDENTITY,), **sliders,
                             "edits": ("STRING", {"default": "", "tooltip": "more edits: name=strength; ..."})}}

    def edit(self, identity: Any, edits: str = "", **sliders: float) -> tuple:
        from wplus.assets import registry
        from wplus.generation.options import check_edits
        from wplus.stylegan.directions import apply_edits, default_library, parse_edits
        from wplus.stylegan.edit_text import format_edits

        chosen = {name: float(sliders.get(name, 0.0)) for name in COMMON_EDITS}
        chosen.update(parse_edits(edits) if edits.strip() else {})
        chosen = {name: s for name, s in chosen.items() if s}
        if not chosen:
            return (identity,)
        library = default_library(files.models_dir(registry.direction_files()[0].key))
        limits = {name: (library.get(name).minimum, library.get(name).maximum) for name in chosen}
        chosen = check_edits(chosen, limits)  # each direction's own range, as in the WebUI and the CLI
        code = apply_edits(identity.wplus, chosen, library)
        return (_identity(code, identity.name, identity.source, thumbnail=identity.thumbnail,
                          edits=format_edits(chosen), wplus_unedited=identity.wplus),)


class WPlusPreview:
    """StyleGAN's rendering of an identity's W+ code: the face the branch injects."""

    CATEGORY = CATEGORY
    RETURN_TYPES = ("IMAGE",)
    RETURN_NAMES = ("image",)
    FUNCTION = "render"

    @classmethod
    def INPUT_TYPES(cls) -> dict:
        return {"required": {"identity": (IDENTITY,), "size": ([str(s) for s in PREVIEW_SIZES], {"default": "256"})}}

    def render(self, identity: Any, size: str) -> tuple:
        with _e4e() as e4e, torch.no_grad():
            render = e4e.render(identity.batch())
        return (from_render(render, int(size)),)


class WPlusIdentityScore:
    """How close each image's face is to the identity (dlib's face recognition): cosine similarity per
    image (0 where no face is found), and a label with the distance (< 0.6: the same person)."""

    CATEGORY = CATEGORY
    RETURN_TYPES = ("FLOAT", "STRING")
    RETURN_NAMES = ("similarity", "label")
    OUTPUT_IS_LIST = (True, True)
    FUNCTION = "score"
    OUTPUT_NODE = True

    @classmethod
    def INPUT_TYPES(cls) -> dict:
        return {"required": {"images": ("IMAGE",), "identity": (IDENTITY,)}}

    def score(self, images: torch.Tensor, identity: Any) -> dict:
        from wplus.pipeline.score import compare, face_embedding

        reference = identity.thumbnail
        if reference is None:  # no photo behind it (a seed, a mix): StyleGAN's rendering of the code
            with _e4e() as e4e, torch.no_grad():
                reference = to_pil(from_render(e4e.render(identity.batch()), 256))[0]
        ref = face_embedding(reference)
        if ref is None:
            raise WPlusError(f"W+: no face found in the reference of identity {identity.name!r}")
        scores = [compare(face_embedding(img), ref) for img in to_pil(images)]
        similarity = [s.similarity if s.found else 0.0 for s in scores]
        labels = [s.label() for s in scores]
        return {"ui": {"text": labels}, "result": (similarity, labels)}


NODES = (WPlusAdapterLoader, WPlusIdentityLoader, WPlusApply, WPlusIdentityFromImage, WPlusIdentityFromSeed,
         WPlusSaveIdentity, WPlusMixIdentities, WPlusEditIdentity, WPlusPreview, WPlusIdentityScore)
DISPLAY_NAMES = {
    "WPlusAdapterLoader": "W+ Adapter Loader", "WPlusIdentityLoader": "W+ Identity Loader",
    "WPlusApply": "W+ Apply Identity", "WPlusIdentityFromImage": "W+ Identity from Image",
    "WPlusIdentityFromSeed": "W+ Identity from Seed", "WPlusSaveIdentity": "W+ Save Identity",
    "WPlusMixIdentities": "W+ Mix Identities", "WPlusEditIdentity": "W+ Edit Identity",
    "WPlusPreview": "W+ StyleGAN Preview", "WPlusIdentityScore": "W+ Identity Score",
}
NODE_CLASS_MAPPINGS = {cls.__name__: cls for cls in NODES}
NODE_DISPLAY_NAME_MAPPINGS = {name: DISPLAY_NAMES[name] for name in NODE_CLASS_MAPPINGS}
