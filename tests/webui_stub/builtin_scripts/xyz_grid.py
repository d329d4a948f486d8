"""Stand-in for the WebUI's scripts/xyz_grid.py: the module-level `axis_options` list extensions
append to, AxisOption's constructor signature, and a cell loop that copies `p` shallowly, applies
each axis value and calls process_images (as the real script does)."""
from __future__ import annotations

from copy import copy

import modules.scripts as scripts
from modules.processing import process_images


class AxisOption:
    def __init__(self, label, type, apply, format_value=None, confirm=None, cost=0.0, choices=None, prepare=None):
        self.label, self.type, self.apply = label, type, apply
        self.format_value, self.confirm, self.cost = format_value, confirm, cost
        self.choices, self.prepare = choices, prepare


def _apply_field(field):
    def apply(p, x, xs):
        setattr(p, field, x)

    return apply


axis_options = [
    AxisOption("Nothing", str, lambda p, x, xs: None),
    AxisOption("Seed", int, _apply_field("seed")),
    AxisOption("Steps", int, _apply_field("steps")),
]


def find(label: str) -> AxisOption:
    return next(o for o in axis_options if o.label == label)


def run_axis(p, label: str, values: list) -> list:
    """One row of cells: [(value, Processed, cell p)]. Values are converted with the axis type and
    confirmed first, as the real script does."""
    opt = find(label)
    values = [opt.type(v) for v in values]
    if opt.confirm:
        opt.confirm(p, values)
    cells = []
    for value in values:
        pc = copy(p)
        opt.apply(pc, value, values)
        cells.append((value, process_images(pc), pc))
    return cells


class Script(scripts.Script):
    def title(self):
        return "X/Y/Z plot"

    def show(self, is_img2img):
        return True
