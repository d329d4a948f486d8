"""The delayed start (the paper's delayed subject conditioning), capped like the paper's pipeline."""
from __future__ import annotations

from wplus.branch import rows


def _paper_on(i: int, steps: int, percent: float) -> bool:
    # w_plus_adapter.generate_idnoise: start_embed_step = int(ratio / 100 * steps), at most 30;
    # wplus_pipeline: the branch is off while i <= start_embed_step (we keep it on at 0 %: no delay)
    start_embed_step = min(int(float(percent) / 100 * steps), 30)
    return i > start_embed_step


def test_start_follows_the_papers_formula_and_cap():
    for steps in (1, 10, 20, 30, 50, 99, 150, 151, 1000):
        for percent in (1, 10, 20, 33, 50, 80, 100):
            got = [rows.branch_on(i, steps, percent / 100) for i in range(steps)]
            assert got == [_paper_on(i, steps, percent) for i in range(steps)], (steps, percent)


def test_start_is_capped_at_30_steps():
    assert rows.MAX_START_STEPS == 30
    # 200 steps at 50 %: without the cap the identity would wait 100 steps; the paper waits 30
    assert not rows.branch_on(30, 200, 0.5) and rows.branch_on(31, 200, 0.5)
    assert rows.start_step(200, 0.5) == 30 and rows.start_step(20, 0.5) == 10
    assert rows.branch_on(31, 1000, 1.0)  # even "100 %" turns it on after step 30
    assert all(rows.branch_on(i, 50, 0.0) for i in range(50))  # 0 %: on from the first step
