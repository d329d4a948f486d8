"""One generation with the W+ branch, for hosts that run their own CFG loop (the WebUI).

`prepare()` turns panel values into the identity code (encoded or loaded, edited, mixed) and the
adapter; `GenerationSession` attaches the branch to a UNet, sets the bank [identity, zero-W+]
once, and at every sampler step maps the host's CFG rows onto it (AUTOMATIC1111's layout) or lets
each UNet call say its rows (`rows_per_call`: Forge's layout), and applies the delayed start.
Nothing here imports the WebUI.
"""
from __future__ import annotations

import hashlib
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from wplus.assets.fingerprint import stat_key
from wplus.branch import rows
from wplus.errors import MissingWeightsError, WPlusError
from wplus.geometry import STYLE_GROUPS, WPLUS_SHAPE
from wplus.webui.catalog import DEFAULT_ADAPTER, find_adapter
from wplus.webui.infotext import GenerationInfo, source_label
from wplus.webui.options import PanelArgs, Source
from wplus.webui.settings import ExtensionSettings

# --- identity ------------------------------------------------------------------------------------


@dataclass
class ResolvedIdentity:
    wplus: torch.Tensor  # (1,18,512) float32 on CPU, edits and mixing applied
    info: GenerationInfo
    thumbnail: Any = None  # the aligned face, when encoded from a photo
    sources: list = field(default_factory=list)  # one entry per photo when several were averaged


def code_hash(w: torch.Tensor) -> str:
    """Short content hash of a W+ code (what the infotext records as the identity)."""
    data = w.detach().to(torch.float32).cpu().contiguous().numpy().tobytes()
    return hashlib.sha256(data).hexdigest()[:10]


class IdentityResolver:
    """Panel values -> W+ code, with e4e loaded on demand and the content-hash cache shared
    between generations (one resolver per models folder lives in the script)."""

    def __init__(self, settings: ExtensionSettings, e4e_loader: Callable[[], Any] | None = None,
                 encoder_tag: str | None = None):
        from wplus.identity.cache import default_cache
        from wplus.identity.encoder import IdentityEncoder, default_e4e_loader, default_encoder_tag

        self.settings = settings
        folder = settings.models_dir
        loader = e4e_loader or default_e4e_loader(folder, allow_download=settings.auto_download)
        tag = encoder_tag if encoder_tag is not None else default_encoder_tag(folder)
        cache = default_cache(folder, max_items=max(1, settings.cache_size))
        cache.max_items = max(1, settings.cache_size)
        self.encoder = IdentityEncoder(loader, cache=cache, keep_loaded=not settings.unload_encoder, encoder_tag=tag)
        self._lock = threading.Lock()

    def resolve(self, args: PanelArgs) -> ResolvedIdentity:
        with self._lock:
            try:
                return self._resolve(args)
            except MissingWeightsError as e:
                raise name_download_cause(e, self.settings) from e
            finally:
                if self.settings.unload_encoder:
                    self.encoder.release()

    def preview(self, args: PanelArgs) -> tuple[ResolvedIdentity, Any]:
        """(identity, StyleGAN rendering of its code as a PIL image), loading e4e once for both."""
        from wplus.stylegan.e4e import to_pil

        with self._lock:  # the panel's buttons run beside generations: never release e4e mid-use
            keep, self.encoder.keep_loaded = self.encoder.keep_loaded, True
            try:
                resolved = self._resolve(args)
                with torch.no_grad():
                    image = self.encoder.e4e.render(resolved.wplus.reshape(1, *WPLUS_SHAPE))
                return resolved, to_pil(image)[0]
            finally:
                self.encoder.keep_loaded = keep
                if self.settings.unload_encoder:
                    self.encoder.release()

    def _resolve(self, args: PanelArgs) -> ResolvedIdentity:
        check_sources(args)
        w, thumb, sources = self._one(args.source, [args.reference, *reference_list(args.more_references)],
                                      args.identity, args.seed, args.face_index)
        mix_label, weights = "", None
        if args.source2 != Source.NONE:
            w2, _, _ = self._one(args.source2, args.reference2, args.identity2, args.seed2, -1)
            weights = args.mix_weights()
            w = _mix(w, w2, weights)
            mix_label = source_label(args.source2, args.identity2, args.seed2)
        edits = args.active_edits()
        if edits:
            w = self._edit(w, edits)
        info = GenerationInfo(
            identity_label=source_label(args.source, args.identity, args.seed), identity_hash=code_hash(w),
            scale=args.scale, start=args.start, adapter_name="", adapter_hash="", face_index=args.face_index,
            edits=edits, mix_label=mix_label, mix_weights=weights,
        )
        return ResolvedIdentity(w.float().cpu(), info, thumb, sources)

    def _one(self, source: str, reference: Any, identity: str, seed: int, face_index: int):
        """(1,18,512) code, thumbnail and sources of one identity source; several photos give their mean."""
        from wplus.identity.files import identities_dir, load_identity
        from wplus.webui.api import decode_image

        if source == Source.SAVED:
            ident = load_identity(identity, identities_dir(self.settings.models_dir))
            return ident.batch(dtype=torch.float32), ident.thumbnail, ident.sources
        if source == Source.SEED:
            with torch.no_grad():
                w = self.encoder.e4e.map_seed(int(seed))
            return w.float().cpu().reshape(1, *WPLUS_SHAPE), None, []
        images = [decode_image(r) for r in reference_list(reference)]
        if not images:
            raise WPlusError("W+: no reference photo. Upload a photo of the person, choose a saved identity, "
                             "or disable the W+ Adapter.")
        index = None if face_index is None or face_index < 0 else int(face_index)
        ident = self.encoder.encode_many(images, face_index=index, backend=self.settings.face_backend)
        return ident.batch(dtype=torch.float32), ident.thumbnail, ident.sources

    def _edit(self, w: torch.Tensor, edits: dict[str, float]) -> torch.Tensor:
        from wplus.stylegan.directions import apply_edits, default_library

        library = default_library(self.settings.models_dir, allow_download=self.settings.auto_download)
        return apply_edits(w, edits, library)


def check_sources(args: PanelArgs) -> None:
    """What the user can fix in the panel, checked before any file is looked for: an empty source."""
    if args.source == Source.PHOTO and args.reference is None and not reference_list(args.more_references):
        raise WPlusError("W+: no reference photo. Upload a photo of the person, choose a saved identity, "
                         "or disable the W+ Adapter.")
    if args.source == Source.SAVED and not args.identity:
        raise WPlusError("W+: choose a saved identity (or switch the source to Photo)")
    if args.source2 == Source.PHOTO and args.reference2 is None:
        raise WPlusError("W+: no second reference photo. Upload one, or set the second identity to None.")
    if args.source2 == Source.SAVED and not args.identity2:
        raise WPlusError("W+: choose the second saved identity (or set the second identity to None)")


def name_download_cause(error: MissingWeightsError, settings: ExtensionSettings) -> MissingWeightsError:
    """The missing-file message, naming what kept the file from downloading: the download module
    names an offline environment variable itself; the setting only the WebUI knows."""
    if settings.auto_download:
        return error
    return MissingWeightsError(f"{error} (Downloads are off: {settings.download_blocker()}.)")


def reference_list(reference: Any) -> list:
    """The photos of one identity source: one photo, a list of them (API), or uploaded files
    (gradio's File gives objects with the temp file's path in `.name`); empty entries dropped."""
    items = list(reference) if isinstance(reference, (list, tuple)) else [reference]
    out = []
    for item in items:
        if isinstance(item, (list, tuple)):
            out += reference_list(item)
        elif item is None or (isinstance(item, str) and not item):
            continue
        elif not isinstance(item, (str, bytes, bytearray)) and isinstance(getattr(item, "name", None), str) \
                and os.path.isfile(item.name):
            out.append(Path(item.name).read_bytes())
        else:
            out.append(item)
    return out


def _mix(w1: torch.Tensor, w2: torch.Tensor, weights) -> torch.Tensor:
    from wplus.stylegan.directions import mix

    if isinstance(weights, tuple):
        weights = dict(zip(STYLE_GROUPS, weights))  # (coarse, middle, fine)
    return mix(w1, w2, weights)


# --- adapter -------------------------------------------------------------------------------------

_adapters: dict[tuple[str, int, int], tuple[nn.Module, str]] = {}
_adapters_lock = threading.Lock()


def resolve_adapter_path(name: str, settings: ExtensionSettings, extra_dirs: list[Path] = ()) -> Path:
    """The adapter file: found in the models folders, else (default adapter only) downloaded."""
    from wplus.assets import registry
    from wplus.assets.download import ensure_file, missing_message

    dirs = [settings.models_dir, *extra_dirs]
    found = find_adapter(name, dirs)
    if found is not None:
        return found
    entry = registry.get("adapter")
    if os.path.basename(name or DEFAULT_ADAPTER) != entry.filename:
        raise MissingWeightsError(f"W+: adapter file {name!r} not found in {', '.join(str(d) for d in dirs)}. "
                                  "Press the refresh button next to the adapter list and pick an existing file.")
    cause = settings.download_blocker()
    if cause:
        raise MissingWeightsError(missing_message(entry, settings.models_dir,
                                                  f"automatic download is disabled: {cause}"))
    return ensure_file(entry, settings.models_dir, allow_download=True)


def load_adapter_cached(path: Path) -> tuple[nn.Module, str]:
    """(adapter, short file hash), loaded once per file version; `attach` moves it to the UNet's
    device/dtype, where it stays for the next generation."""
    from wplus.branch.files import adapter_fingerprint, load_adapter

    key = stat_key(path)
    with _adapters_lock:
        if key not in _adapters:
            for old in [k for k in _adapters if k[0] == key[0]]:
                del _adapters[old]
            _adapters[key] = (load_adapter(str(path)).eval(), adapter_fingerprint(path)[:10])
        return _adapters[key]


# --- the branch during sampling ------------------------------------------------------------------


@dataclass
class BranchPlan:
    scale: float
    start: float  # fraction of the sampling steps
    hires_full: bool = True  # the hires-fix pass keeps the branch on from its first step


@dataclass
class GenerationSession:
    """The branch for one `process_images` call: attach, per-step rows/scale, close."""

    adapter: nn.Module
    wplus: torch.Tensor  # (1,18,512)
    plan: BranchPlan
    device: Any = None  # where the host runs the UNet; its weights may sit elsewhere (WebUI --medvram)
    dtype: Any = None  # the UNet's compute dtype, when its weights are stored in another (Forge fp8/GGUF)
    rows_per_call: Callable[[int, dict], Any] | None = None  # bank rows read from each UNet call (Forge)
    follow_dtype: bool = False  # run the branch in the activations' dtype at every call (Forge)
    handle: Any = None
    closed: bool = False
    steps_seen: list[tuple[int, float]] = field(default_factory=list)  # (step, scale) for diagnostics
    owner_id: int | None = None  # id() of the one processing object this session belongs to
    owner: Any = field(default=None, repr=False)  # that object while the session is open
    nested: bool = False  # a pass inside another generation (ADetailer's face pass)
    request: Any = None  # the panel values it was made from (X/Y/Z applied)
    face_passes: dict[int, int] = field(default_factory=dict)  # image index -> ADetailer passes seen
    children: list["GenerationSession"] = field(default_factory=list)  # sessions of nested passes
    cleanups: list[Callable[[], None]] = field(default_factory=list)  # run once on close
    reported: set = field(default_factory=set)  # problems already told to the user
    _index_cache: dict = field(default_factory=dict)

    def host_options(self) -> dict[str, Any]:
        """How this host runs the UNet (device, dtype, rows per call), for sessions of nested passes."""
        return dict(device=self.device, dtype=self.dtype, rows_per_call=self.rows_per_call,
                    follow_dtype=self.follow_dtype)

    def own(self, p: Any) -> None:
        """Bind to `p`: shallow copies of `p` see the session but do not own it."""
        self.owner_id, self.owner = id(p), p

    def owned_by(self, p: Any) -> bool:
        return self.owner_id is not None and self.owner_id == id(p)

    def attach(self, unet: nn.Module) -> None:
        """Attach to `unet` (raises IncompatibleModelError); a no-op when already attached there."""
        from wplus.branch.hook import attach

        if self.closed:
            raise WPlusError("W+: this generation's branch is already closed")
        if self.handle is not None and self.handle.unet is unet and self.handle.attached:
            return
        self.detach()
        handle = attach(unet, self.adapter, device=self.device, dtype=self.dtype,
                        follow_dtype=self.follow_dtype)  # attach drops any stale attachment
        try:
            weight = self.adapter.proj.norm.weight
            with torch.no_grad():
                codes = torch.cat([self.wplus, torch.zeros_like(self.wplus)]).to(weight.device, weight.dtype)
                handle.set_bank(self.adapter.project(codes))
        except Exception:
            handle.remove()
            raise
        handle.scale = 0.0  # off until the first step says otherwise
        handle.row_source = self.rows_per_call
        self._index_cache.clear()
        self.handle = handle

    def on_step(self, n_rows: int, n_cond: int, step: int, total_steps: int, hires: bool = False) -> float:
        """Before the UNet calls of one sampler step: rows -> bank rows (unless each call says its
        rows), λ or 0 (delayed start)."""
        handle = self.handle
        if handle is None or not handle.attached:
            return 0.0
        if self.rows_per_call is None:
            key = (n_rows, n_cond)
            index = self._index_cache.get(key)
            if index is None:
                index = self._index_cache[key] = rows.cfg_row_index(n_rows, n_cond)
            handle.row_index = index
            handle.reset_rows()
        on = (hires and self.plan.hires_full) or rows.branch_on(step, total_steps, self.plan.start)
        handle.scale = float(self.plan.scale) if on else 0.0
        self.steps_seen.append((step, handle.scale))
        return handle.scale

    def detach(self) -> None:
        if self.handle is not None:
            self.handle.remove()
            self.handle = None

    def close(self) -> None:
        for child in self.children:
            child.close()
        self.children.clear()
        self.detach()
        self.closed = True
        self.owner = None
        while self.cleanups:
            try:
                self.cleanups.pop()()
            except Exception:  # a cleanup must not keep the others from running
                pass

    def reopen(self, p: Any) -> None:
        """Closed before its processing object `p` finished sampling (another extension called the
        script's postprocess on it): take it up again rather than sample without the branch."""
        self.closed = False
        self.own(p)

    def fork(self, p: Any) -> "GenerationSession":
        """A session with the same code, adapter and plan for a copy of this session's `p` that
        is sampled on its own; closed with this one at the latest."""
        child = GenerationSession(self.adapter, self.wplus, self.plan, request=self.request, **self.host_options())
        child.own(p)
        self.children.append(child)
        return child


def unet_of(sd_model: Any) -> nn.Module | None:
    """The denoiser network of a WebUI-style model object (`sd_model.model.diffusion_model`, or
    Forge's `sd_model.forge_objects.unet.model.diffusion_model`)."""
    from wplus.webui import forge

    if forge.is_forge(sd_model):
        return forge.unet_of(sd_model)
    model = getattr(sd_model, "model", None)
    return getattr(model, "diffusion_model", None)
