"""The work behind `generate`: identity (the core's resolver), pipeline, grid cells, score, PNG.

Order matters for memory: the identity is resolved first (e4e loaded on demand, released after),
then the diffusion pipeline is loaded and only the adapter sits beside it.
"""
from __future__ import annotations

import argparse
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable

from wplus.errors import MissingWeightsError, WPlusError
from wplus.generation.request import Request
from wplus.generation.settings import Settings
from wplus.pipeline.grid import Plan, cells, edits_label


@dataclass
class Result:
    path: Path
    images: list
    text: str
    scores: list = field(default_factory=list)
    lines: list[str] = field(default_factory=list)


@dataclass
class Cells:
    """The images of a run, by grid row, with their parameters texts and scores."""

    rows: dict[int, list] = field(default_factory=dict)
    captions: dict[int, list[str]] = field(default_factory=dict)
    texts: list[str] = field(default_factory=list)
    scores: list = field(default_factory=list)
    images: list = field(default_factory=list)
    first_params: dict | None = None


def check_files(args: argparse.Namespace, settings: Settings, e4e_needed: bool, edits_needed: bool) -> None:
    """Offline, every missing file is named at once, one line each: the base model, the adapter, e4e
    and the edit directions."""
    from wplus.assets import registry
    from wplus.assets.download import downloads_disabled, find_existing
    from wplus.pipeline.load import missing_model_message

    if settings.auto_download and not downloads_disabled():
        return
    from wplus.generation.adapters import DEFAULT_ADAPTER, choose_adapter

    models = settings.models_dir
    default_adapter = args.adapter is None and choose_adapter("", [models]) == DEFAULT_ADAPTER
    keys = (["adapter"] if default_adapter else []) + (["e4e"] if e4e_needed else [])
    entries = [registry.get(k) for k in keys] + (list(registry.direction_files()) if edits_needed else [])
    lines = [registry.missing_message(e, models, "automatic download is disabled")
             for e in entries if find_existing(e, models) is None]
    model = missing_model_message(args.model)
    if model:
        lines.insert(0, model)
    if lines:
        raise MissingWeightsError("\n".join(lines))


def adapter_path(args: argparse.Namespace, settings: Settings) -> Path:
    """--adapter as a file, else a name in the models folder; none: the one choice rule."""
    from wplus.generation.adapters import resolve_adapter_path

    if args.adapter is not None and Path(args.adapter).expanduser().is_file():
        return Path(args.adapter).expanduser()
    if args.adapter is not None and not (settings.models_dir / args.adapter).is_file():
        raise WPlusError(f"--adapter {args.adapter}: no such file (nor in {settings.models_dir})")
    return resolve_adapter_path(args.adapter or "", settings)


def run_generate(args: argparse.Namespace, plan: Plan, request: Request, settings: Settings,
                 e4e_loader: Callable[[], Any] | None = None) -> Result:
    from wplus.generation.adapters import load_adapter_cached
    from wplus.pipeline.load import load_pipeline, pick_device

    device = pick_device(args.device)
    adapter_file = adapter_path(args, settings)  # a missing file fails before anything heavy
    resolver, resolved, reference = _identity(args, request, settings, e4e_loader, str(device))
    scorer = _Scorer(reference) if args.score else None
    adapter, adapter_hash = load_adapter_cached(adapter_file)
    pipe = load_pipeline(args.model, device=device, dtype=args.dtype, scheduler=args.scheduler, vae=args.vae,
                         allow_download=settings.auto_download, original_config=args.original_config)
    info = replace(resolved.info, adapter_name=adapter_file.name, adapter_hash=adapter_hash)
    out = _sample_cells(args, plan, pipe, adapter, resolver, resolved.wplus, info, scorer)
    image, text = _compose(args, plan, out, scorer is not None)
    from wplus.pipeline import output

    path = output.save_png(image, args.output, text)
    return Result(path, out.images, text, out.scores, resolved.notes + _score_lines(plan, out, args))


def _identity(args: argparse.Namespace, request: Request, settings: Settings, e4e_loader: Any, device: str):
    """(resolver, resolved identity, what a score compares with), e4e released before sampling."""
    from wplus.generation.resolve import IdentityResolver

    resolver = IdentityResolver(settings, e4e_loader=e4e_loader, encoder_tag="" if e4e_loader else None,
                                allow_paths=True, device=device)
    try:
        resolved = resolver.resolve(request)
        reference = args.photo if args.photo is not None else resolved.thumbnail
        if args.score and reference is None:
            reference = resolver.render(resolved.wplus)
    finally:
        resolver.release()
    return resolver, resolved, reference


def _sample_cells(args, plan: Plan, pipe: Any, adapter: Any, resolver: Any, w: Any, info: Any, scorer: Any) -> Cells:
    """Every grid cell: the code with the cell's edits, λ, the images and their parameters."""
    from wplus.generation.record import K_SCORE, code_hash, parameters_text, params
    from wplus.pipeline.branch import PipelineBranch
    from wplus.pipeline.sampling import run
    from wplus.pipeline.score import format_scores

    settings, out = _settings(args), Cells()
    grid_cells = cells(plan)
    with PipelineBranch(pipe, adapter, w, scale=plan.scales[0], start=args.start) as branch:
        for k, (i, _, scale, edits) in enumerate(grid_cells):
            code = resolver.edit(w, edits) if edits else w
            branch.set_identity(code)
            branch.scale = scale
            pipe.set_progress_bar_config(desc=f"image {k + 1}/{len(grid_cells)}", leave=False)
            images = run(pipe, settings)
            cell = replace(info, identity_hash=code_hash(code), scale=scale, edits=edits)
            values = {**_base_params(args, images[0]), **params(cell)}
            scores = [scorer(img) for img in images] if scorer else []
            if scores:
                values[K_SCORE] = format_scores(scores)
            out.first_params = out.first_params or dict(values)
            out.texts.append(parameters_text(args.prompt, args.negative_prompt, values))
            out.scores.extend(scores)
            out.rows.setdefault(i, []).extend(images)
            out.captions.setdefault(i, []).extend(s.label() for s in scores)
            out.images.extend(images)
    return out


def _settings(args: argparse.Namespace) -> Any:
    from wplus.pipeline.sampling import Settings as SamplingSettings

    return SamplingSettings(prompt=args.prompt, negative_prompt=args.negative_prompt, steps=args.steps,
                            guidance=args.guidance, seed=args.seed, width=args.width, height=args.height,
                            num_images=args.num_images, freeu=args.freeu)


def _compose(args: argparse.Namespace, plan: Plan, out: Cells, scored: bool) -> tuple[Any, str]:
    """One image, or a labelled grid carrying the first cell's parameters (as the WebUI's grids) with
    every cell's score in cell order."""
    from wplus.generation.record import K_SCORE, parameters_text
    from wplus.pipeline import output
    from wplus.pipeline.score import format_scores

    if len(out.images) == 1:
        return out.images[0], out.texts[0]
    n = args.num_images
    col_labels = [f"lambda {s:g}" + (f" #{m + 1}" if n > 1 else "") for s in plan.scales for m in range(n)]
    row_labels = [edits_label(r).lstrip(", ") for r in plan.edit_rows] if plan.row_axis else []
    rows = sorted(out.rows)
    image = output.grid([out.rows[i] for i in rows], col_labels if len(col_labels) > 1 else [], row_labels,
                        [out.captions[i] for i in rows] if scored else None)
    if len(out.texts) == 1:
        return image, out.texts[0]
    values = dict(out.first_params)
    if out.scores:
        values[K_SCORE] = format_scores(out.scores)
    return image, parameters_text(args.prompt, args.negative_prompt, values)


def _score_lines(plan: Plan, out: Cells, args: argparse.Namespace) -> list[str]:
    lines, n = [], args.num_images
    for k, (_, _, scale, edits) in enumerate(cells(plan)):
        for m, score in enumerate(out.scores[k * n:(k + 1) * n]):
            lines.append(f"image {k + 1}.{m + 1} (λ {scale:g}{edits_label(edits)}): {score.label()}")
    return lines


class _Scorer:
    def __init__(self, reference: Any) -> None:
        from wplus.pipeline.score import face_embedding

        self.reference = face_embedding(reference)
        if self.reference is None:
            raise WPlusError("--score: no face found in the reference to compare with")

    def __call__(self, image: Any):
        from wplus.pipeline.score import identity_score

        return identity_score(image, self.reference)


def _base_params(args: argparse.Namespace, image: Any) -> dict[str, Any]:
    from wplus.pipeline.defaults import SCHEDULERS

    return {"Steps": args.steps, "Sampler": SCHEDULERS[args.scheduler][1],
            "CFG scale": f"{args.guidance:g}", "Seed": args.seed, "Size": f"{image.width}x{image.height}",
            "Model": Path(str(args.model)).stem if Path(str(args.model)).exists() else args.model,
            "FreeU": "s1 0.6, s2 0.4, b1 1.1, b2 1.2" if args.freeu else None}
