"""The work behind `python -m wplus generate`: files, identity, pipeline, grid cells, score, PNG.

Order matters for memory: the identity is resolved first (e4e loaded on demand, released after),
then the diffusion pipeline is loaded and only the adapter sits beside it.
"""
from __future__ import annotations

import argparse
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch

from wplus.errors import MissingWeightsError, WPlusError
from wplus.webui import infotext as wi


@dataclass
class Result:
    path: Path
    images: list
    text: str
    scores: list = field(default_factory=list)
    lines: list[str] = field(default_factory=list)


@dataclass
class Person:
    wplus: torch.Tensor  # (1,18,512)
    label: str  # infotext label: name, "photo" or "seed N"
    reference: Any = None  # what the score compares against (photo, thumbnail, rendering)


class _E4E:
    """e4e for this command, loaded at most once and released before sampling."""

    def __init__(self, models: Path, allow_download: bool, loader: Callable[[], Any] | None, device: str | None):
        from wplus.identity.cache import default_cache
        from wplus.identity.encoder import IdentityEncoder, default_e4e_loader, default_encoder_tag

        tag = ""
        if loader is None:
            loader = default_e4e_loader(models, allow_download=allow_download, device=device)
            tag = default_encoder_tag(models)
        self.encoder = IdentityEncoder(loader, cache=default_cache(models), keep_loaded=True, encoder_tag=tag)

    def release(self) -> None:
        self.encoder.release()


def models_dir(args: argparse.Namespace) -> Path:
    from wplus.assets.registry import default_models_dir

    return args.models if args.models is not None else default_models_dir()


def check_files(args: argparse.Namespace, models: Path, e4e_needed: bool) -> None:
    """Offline, every missing weights file is named at once (one message line per file)."""
    from wplus.assets import registry
    from wplus.assets.download import downloads_disabled, find_existing

    if not (args.no_download or downloads_disabled()):
        return
    keys = (["adapter"] if args.adapter is None else []) + (["e4e"] if e4e_needed else [])
    missing = [registry.get(k) for k in keys if find_existing(registry.get(k), models) is None]
    if missing:
        raise MissingWeightsError("\n".join(registry.missing_message(e, models, "automatic download is disabled")
                                            for e in missing))


def adapter_path(args: argparse.Namespace, models: Path) -> Path:
    from wplus.assets import registry
    from wplus.assets.download import ensure_file

    if args.adapter is None:
        return ensure_file(registry.get("adapter"), models, allow_download=not args.no_download)
    for candidate in (Path(args.adapter).expanduser(), models / args.adapter):
        if candidate.is_file():
            return candidate
    raise WPlusError(f"--adapter {args.adapter}: no such file (nor in {models})")


def _person(spec: str | None, photo: Path | None, seed: int | None, face_index: int | None, backend: str,
            e4e: _E4E, models: Path, lines: list[str]) -> Person:
    from wplus.identity.files import identities_dir, load_identity

    if photo is not None:
        if not Path(photo).is_file():
            raise WPlusError(f"--photo {photo}: no such file")
        start, runs = time.perf_counter(), e4e.encoder.encode_count
        ident = e4e.encoder.encode(str(photo), face_index=face_index, backend=backend)
        how = "encoded" if e4e.encoder.encode_count > runs else "from cache"
        lines.append(f"W+ of {photo} {how} in {time.perf_counter() - start:.2f} s (face {ident.face_index}, "
                     f"{len(ident.faces)} found)")
        return Person(ident.batch(dtype=torch.float32), wi.PHOTO_LABEL, str(photo))
    if seed is not None:
        with torch.no_grad():
            w = e4e.encoder.e4e.map_seed(int(seed)).float().cpu().reshape(1, 18, 512)
        return Person(w, f"{wi.SEED_LABEL} {int(seed)}")
    ident = load_identity(spec, identities_dir(models))
    return Person(ident.batch(dtype=torch.float32), ident.name or Path(str(spec)).stem, ident.thumbnail)


def _second(spec: str, args: argparse.Namespace, e4e: _E4E, models: Path, lines: list[str]) -> Person:
    if spec.startswith("seed:"):
        try:
            seed = int(spec[5:])
        except ValueError:
            raise WPlusError(f"--mix-with {spec!r}: seed:N takes an integer") from None
        return _person(None, None, seed, None, args.backend, e4e, models, lines)
    if Path(spec).suffix.lower() in (".jpg", ".jpeg", ".png", ".webp", ".bmp") and Path(spec).is_file():
        return _person(None, Path(spec), None, None, args.backend, e4e, models, lines)
    return _person(spec, None, None, None, args.backend, e4e, models, lines)


def run_generate(args: argparse.Namespace, plan: Any, e4e_loader: Callable[[], Any] | None = None) -> Result:
    from wplus.branch.files import adapter_fingerprint, load_adapter
    from wplus.pipeline import output
    from wplus.pipeline.branch import PipelineBranch
    from wplus.pipeline.cli import cells
    from wplus.pipeline.load import load_pipeline, model_kind, pick_device, pipeline_arch
    from wplus.pipeline.sampling import Settings, run
    from wplus.stylegan.directions import apply_edits, default_library, mix
    from wplus.webui.session import code_hash

    models = models_dir(args)
    allow = not args.no_download
    lines: list[str] = []
    device = pick_device(args.device)
    model_kind(args.model)
    e4e_needed = e4e_loader is None and (args.photo is not None or args.random_identity is not None
                                         or bool(args.mix_with) or (args.score and args.identity is not None))
    check_files(args, models, e4e_needed)
    adapter_file = adapter_path(args, models)  # missing files fail before anything heavy
    edit_names = sorted({n for _, _, _, e in cells(plan) for n in e})
    library = default_library(models, allow_download=allow) if edit_names else None
    for name in edit_names:
        library.get(name)  # unknown names fail now, with suggestions
    e4e = _E4E(models, allow, e4e_loader, str(device))
    try:
        person = _person(args.identity, args.photo, args.random_identity, args.face_index, args.backend, e4e,
                         models, lines)
        w, mix_label = person.wplus, ""
        if args.mix_with:
            other = _second(args.mix_with, args, e4e, models, lines)
            weights = plan.mix
            if isinstance(weights, tuple):
                weights = dict(zip(("coarse", "middle", "fine"), weights))
            w = mix(w, other.wplus, weights)
            mix_label = other.label
        if args.score and person.reference is None:
            person.reference = _render(e4e, w)
    finally:
        e4e.release()
    scorer = _Scorer(person.reference) if args.score else None

    adapter = load_adapter(adapter_file).eval()
    pipe = load_pipeline(args.model, device=device, dtype=args.dtype, scheduler=args.scheduler, vae=args.vae,
                         allow_download=allow, original_config=args.original_config)
    settings = Settings(prompt=args.prompt, negative_prompt=args.negative_prompt, steps=args.steps,
                        guidance=args.guidance, seed=args.seed, width=args.width, height=args.height,
                        num_images=args.num_images, freeu=args.freeu)
    grid_cells = cells(plan)
    rows = {i: [] for i, *_ in grid_cells}
    captions = {i: [] for i, *_ in grid_cells}
    first_params, texts, scores, all_images = None, [], [], []
    adapter_hash = adapter_fingerprint(adapter_file)[:10]
    with PipelineBranch(pipe, adapter, w, scale=plan.scales[0], start=args.start) as branch:
        for k, (i, j, scale, edits) in enumerate(grid_cells):
            code = apply_edits(w, edits, library) if edits else w
            branch.set_identity(code)
            branch.scale = scale
            pipe.set_progress_bar_config(desc=f"image {k + 1}/{len(grid_cells)}", leave=False)
            images = run(pipe, settings)
            info = wi.GenerationInfo(identity_label=person.label, identity_hash=code_hash(code), scale=scale,
                                     start=args.start, adapter_name=adapter_file.name, adapter_hash=adapter_hash,
                                     face_index=args.face_index if args.face_index is not None else -1,
                                     edits=edits, mix_label=mix_label, mix_weights=plan.mix if mix_label else None)
            params = _base_params(args, pipe, images[0], pipeline_arch(pipe))
            params.update(wi.params(info))
            cell_scores = [scorer(img) for img in images] if scorer else []
            if cell_scores:
                params[output.K_SCORE] = " ".join(s.infotext() for s in cell_scores)
                for n, s in enumerate(cell_scores):
                    lines.append(f"image {k + 1}.{n + 1} (λ {scale:g}{_edits_label(edits)}): {s.label()}")
            first_params = first_params or dict(params)
            texts.append(output.infotext(args.prompt, args.negative_prompt, params))
            scores.extend(cell_scores)
            rows[i].extend(images)
            captions[i].extend(s.label() for s in cell_scores)
            all_images.extend(images)
    grid_rows = [rows[i] for i in sorted(rows)]
    if len(all_images) == 1:
        image, text = all_images[0], texts[0]
    else:
        n = args.num_images
        col_labels = [f"lambda {s:g}" + (f" #{m + 1}" if n > 1 else "") for s in plan.scales for m in range(n)]
        row_labels = [_edits_label(r).lstrip(", ") for r in plan.edit_rows] if plan.row_axis else []
        image = output.grid(grid_rows, col_labels if len(col_labels) > 1 else [], row_labels,
                            [captions[i] for i in sorted(captions)] if scorer else None)
        text = texts[0] if len(texts) == 1 else _grid_text(args, first_params, scores)
    path = output.save_png(image, args.output, text)
    return Result(path, all_images, text, scores, lines)


def _render(e4e: _E4E, w: torch.Tensor):
    from wplus.stylegan.e4e import to_pil

    with torch.no_grad():
        return to_pil(e4e.encoder.e4e.render(w.reshape(1, 18, 512)))[0]


class _Scorer:
    def __init__(self, reference: Any) -> None:
        from wplus.pipeline.score import face_embedding

        self.reference = face_embedding(reference)
        if self.reference is None:
            raise WPlusError("--score: no face found in the reference to compare with")

    def __call__(self, image: Any):
        from wplus.pipeline.score import identity_score

        return identity_score(image, self.reference)


def _base_params(args: argparse.Namespace, pipe: Any, image: Any, arch: str) -> dict[str, Any]:
    from wplus.pipeline.defaults import SCHEDULERS

    return {"Steps": args.steps, "Sampler": SCHEDULERS[args.scheduler][1],
            "CFG scale": f"{args.guidance:g}", "Seed": args.seed, "Size": f"{image.width}x{image.height}",
            "Model": Path(str(args.model)).stem if Path(str(args.model)).exists() else args.model,
            "FreeU": "s1 0.6, s2 0.4, b1 1.1, b2 1.2" if args.freeu else None}


def _edits_label(edits: dict[str, float]) -> str:
    return "".join(f", {k}={v:g}" for k, v in edits.items())


def _grid_text(args: argparse.Namespace, first: dict[str, Any], scores: list) -> str:
    """A grid carries the first cell's parameters (as the WebUI's grids), with every cell's score
    in cell order."""
    from wplus.pipeline.output import K_SCORE, infotext

    params = dict(first)
    if scores:
        params[K_SCORE] = " ".join(s.infotext() for s in scores)
    return infotext(args.prompt, args.negative_prompt, params)
