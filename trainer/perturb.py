"""Stage II perturbed identities: W+ codes that differ from the true one in identity or attributes.

L_disen asks the prediction outside the face to be the same for the true W+ and for these, so the
identity branch learns to act only on the face. The mix follows the paper's training code:
extrapolate towards/away from a shuffled identity, add a scaled copy, add noise with the batch's
statistics, or move along the paper's edit directions (the 17 `att_direction_scale.pth`
directions scaled by a random strength, or a GANSpace component set to a random target,
via `wplus.stylegan.directions`), alone or as a blend of two. Rows whose identity was dropped stay zero.
"""
from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence

import torch

from wplus.assets.io import load_pickle
from wplus.geometry import WPLUS_SHAPE
from wplus.stylegan.directions import DirectionLibrary

KINDS = ("extrapolate", "scaled_copy", "noise", "direction", "blend")


@dataclass
class DirectionBank:
    """Random edit directions: additive (18,512) vectors and GANSpace `wplus.stylegan.directions.Direction`s."""

    vectors: list = field(default_factory=list)
    ganspace: list = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.vectors or self.ganspace)

    @classmethod
    def from_folder(cls, folder: Optional[str | Path]) -> "DirectionBank":
        """The paper's `w_direction/` folder; empty when None."""
        if folder is None:
            return cls()
        folder = Path(folder)
        vectors = []
        att = folder / "att_direction_scale.pth"
        if att.is_file():
            loaded = load_pickle(att, "edit directions file")
            vectors = [torch.as_tensor(v).float().reshape(WPLUS_SHAPE) for v in loaded]
        library = DirectionLibrary.from_folders(official=folder)
        ganspace = [d for d in library if d.source == "ganspace"]
        if not vectors and not ganspace:
            raise FileNotFoundError(f"{folder}: neither att_direction_scale.pth nor gan_space/ directions found")
        return cls(vectors, ganspace)

    def sample(self, w: torch.Tensor, rng: random.Random, max_strength: float) -> torch.Tensor:
        """One random direction per row of w (B,18,512), as the paper: 60% additive, 40% GANSpace."""
        rows = []
        for row in w:
            strength = rng.uniform(-max_strength, max_strength)
            use_vector = self.vectors and (not self.ganspace or rng.random() > 0.4)
            if use_vector:
                rows.append(rng.choice(self.vectors).to(row) * strength)
            else:
                d = rng.choice(self.ganspace)
                rows.append(d.delta(row[None], strength)[0].to(row))
        return torch.stack(rows)


def choose_kind(rng: random.Random, probs: Sequence[float], have_directions: bool) -> str:
    weights = list(probs) if have_directions else list(probs[:3]) + [0.0, 0.0]
    if sum(weights) <= 0:
        weights = [1.0, 0.0, 0.0, 0.0, 0.0]
    return rng.choices(KINDS, weights=weights)[0]


@torch.no_grad()
def perturb_wplus(w: torch.Tensor, dropped: torch.Tensor, rng: random.Random, gen: torch.Generator,
                  probs: Sequence[float], bank: Optional[DirectionBank] = None,
                  max_strength: float = 60.0, kind: Optional[str] = None,
                  others: Optional[torch.Tensor] = None) -> tuple[torch.Tensor, str]:
    """(B,18,512) true codes (dropped rows already zero) -> perturbed codes and the kind used.

    `others`: other identities (B,18,512) to use instead of shuffling the batch (a batch of one
    has no other identity to shuffle in).
    """
    kind = kind or choose_kind(rng, probs, bool(bank))
    w = w.detach()
    shuffled = others.to(w) if others is not None else w[_derangement(w.shape[0], rng)]
    if kind == "extrapolate":
        out = shuffled + (w - shuffled) * rng.uniform(-40.0, 40.0)
    elif kind == "scaled_copy":
        out = shuffled + w * (rng.randint(-60, 60) / 10.0)
    elif kind == "noise":
        noise = torch.randn(w.shape, generator=gen, dtype=torch.float32).to(w)
        out = shuffled + (noise * w.std() + w.mean()) * (rng.randint(-80, 80) / 10.0)
    elif kind == "direction":
        out = w + bank.sample(w, rng, max_strength)
    elif kind == "blend":
        a = rng.uniform(0.0, 1.0)
        d1, d2 = bank.sample(w, rng, max_strength), bank.sample(w, rng, max_strength)
        out = w + a * d1 + (1 - a) * d2
    else:
        raise ValueError(f"unknown perturbation {kind!r}; one of {KINDS}")
    out = torch.where(dropped.to(w.device)[:, None, None], torch.zeros_like(out), out)
    return out, kind


def _derangement(n: int, rng: random.Random) -> list[int]:
    """A random cyclic permutation (Sattolo): every row gets another row's identity.

    The paper shuffles freely; with small per-GPU batches a row would then often keep its own
    code and that step's L_disen would be zero for it.
    """
    perm = list(range(n))
    for i in range(n - 1, 0, -1):
        j = rng.randrange(i)
        perm[i], perm[j] = perm[j], perm[i]
    return perm
