"""What one `generate` run makes: λ values × edit combinations, one image (or several) per cell."""
from __future__ import annotations

import itertools
from dataclasses import dataclass, field


@dataclass
class Plan:
    """The checked grid: λ across the columns, one list-valued edit down the rows."""

    scales: list[float]
    edit_rows: list[dict[str, float]] = field(default_factory=lambda: [{}])
    row_axis: str = ""  # the list-valued edit's name, if any
    fixed_edits: dict[str, float] = field(default_factory=dict)
    mix: float | tuple[float, float, float] = 0.5

    def edit_names(self) -> list[str]:
        return sorted({name for _, _, _, edits in cells(self) for name in edits})


def cells(plan: Plan) -> list[tuple[int, int, float, dict[str, float]]]:
    """(row, column, λ, edits) of every grid cell, rows = edit values, columns = λ values."""
    return [(i, j, scale, {**plan.fixed_edits, **row})
            for (i, row), (j, scale) in itertools.product(enumerate(plan.edit_rows), enumerate(plan.scales))]


def edits_label(edits: dict[str, float]) -> str:
    return "".join(f", {k}={v:g}" for k, v in edits.items())
