"""The shape of W+ and how its layers are grouped: the one place these numbers are written.

W+ is StyleGAN2-FFHQ's (1024 px) latent with one 512-wide style vector per synthesis input, 18 in
all. Two different groupings of those 18 layers are in use, so they carry different names:

- `TOKEN_GROUPS`: the W+ adapter's projection, one identity token per group [0:4], [4:8], [8:12],
  [12:18] (the paper's split);
- `STYLE_GROUPS`: StyleGAN's coarse / middle / fine styles (pose and face shape / features / colour
  and detail), used by identity mixing.
"""
from __future__ import annotations

NUM_STYLES = 18
STYLE_DIM = 512
WPLUS_SHAPE: tuple[int, int] = (NUM_STYLES, STYLE_DIM)

TOKEN_GROUPS: tuple[tuple[int, int], ...] = ((0, 4), (4, 8), (8, 12), (12, 18))
NUM_TOKENS = len(TOKEN_GROUPS)

STYLE_GROUPS: dict[str, range] = {"coarse": range(0, 4), "middle": range(4, 8), "fine": range(8, 18)}
