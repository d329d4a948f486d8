"""One start rule for every host: the paper's delayed subject conditioning, the same on/off schedule
in the WebUI's session (A1111's rows), Forge's row mapper, the diffusers pipeline and the trainer."""
from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from wplus.generation.schedule import MAX_START_STEPS, Schedule, branch_on, start_step

STARTS = (0, 20, 33.3, 100)
STEPS = (1, 4, 30, 150)


def paper_on(i: int, steps: int, percent: float) -> bool:
    # w_plus_adapter.generate_idnoise: start_embed_step = min(int(ratio / 100 * steps), 30);
    # the branch is off while i <= start_embed_step (so at step 0 even with 0 %)
    return i > min(int(float(percent) / 100 * steps), 30)


def test_rule_is_the_papers_formula_and_cap():
    for steps in (1, 4, 10, 20, 30, 50, 99, 150, 151, 1000):
        for percent in (0, 1, 10, 20, 33.3, 50, 80, 100):
            assert [branch_on(i, steps, percent) for i in range(steps)] == \
                [paper_on(i, steps, percent) for i in range(steps)], (steps, percent)
    assert MAX_START_STEPS == 30 and start_step(50, 200) == 30 and start_step(50, 20) == 10
    assert not branch_on(0, 50, 0) and branch_on(1, 50, 0)  # 0 %: step 0 still belongs to the text
    assert not any(branch_on(0, 1, p) for p in STARTS)  # one step: the branch never runs


def test_schedule_scales_and_passes_on_from_the_first_step():
    s = Schedule(0.7, 50)
    assert [s.scale_at(i, 4) for i in range(4)] == [0.0, 0.0, 0.0, 0.7]
    assert s.scale_at(0, 4, hires=True) == 0.7  # the hires pass keeps its layout's identity
    assert Schedule(0.7, 50, hires_full=False).scale_at(0, 4, hires=True) == 0.0
    assert Schedule(0.5, 100, from_first_step=True).scale_at(0, 10) == 0.5  # ADetailer's face pass


@pytest.fixture(scope="module")
def tiny():
    """A tiny real diffusers UNet (SD1 layout) and an adapter made from it."""
    from helpers.unet_fixtures import tiny_diffusers_unet
    from wplus.branch.adapter import WPlusAdapter

    unet = tiny_diffusers_unet()
    return unet, WPlusAdapter.from_unet(unet).eval()


def webui_schedule(tiny, percent: float, steps: int, forge: bool) -> list[bool]:
    """λ of every sampler step as the WebUI session sets it (A1111: CFG rows per step; Forge: rows per call)."""
    from wplus.branch import rows
    from wplus.webui.session import GenerationSession

    unet, adapter = tiny
    host = dict(rows_per_call=rows.forge_call_rows, follow_dtype=True) if forge else {}
    session = GenerationSession(adapter, torch.randn(1, 18, 512), Schedule(1.0, percent), **host)
    session.attach(unet)
    try:
        return [session.on_step(2, 0 if forge else 1, i, steps) > 0 for i in range(steps)]
    finally:
        session.close()


def diffusers_schedule(tiny, percent: float, steps: int) -> list[bool]:
    """λ of every UNet call of a diffusers pipeline run (negative-first batch, one call per step)."""
    from diffusers import EulerDiscreteScheduler

    from wplus.pipeline.branch import PipelineBranch

    unet, adapter = tiny
    pipe = SimpleNamespace(unet=unet, scheduler=EulerDiscreteScheduler(), do_classifier_free_guidance=True)
    x = torch.randn(2, 4, 8, 8)
    with PipelineBranch(pipe, adapter, torch.randn(18, 512), scale=1.0, start=percent) as branch, torch.no_grad():
        pipe.scheduler.set_timesteps(steps)  # what the pipeline does first; it restarts the count
        unet(x, pipe.scheduler.timesteps[0], encoder_hidden_states=torch.randn(2, 77, 8))  # one real call
        for t in pipe.scheduler.timesteps[1:]:  # then the pipeline's pre-call hook, as at each UNet call
            branch._before_unet(unet, (x, t), {})
        return [scale > 0 for _, scale in branch.trace]


def test_every_host_follows_the_one_rule(tiny):
    for steps in STEPS:
        for percent in STARTS:
            want = [paper_on(i, steps, percent) for i in range(steps)]
            assert webui_schedule(tiny, percent, steps, forge=False) == want, ("A1111", steps, percent)
            assert webui_schedule(tiny, percent, steps, forge=True) == want, ("Forge", steps, percent)
            assert diffusers_schedule(tiny, percent, steps) == want, ("diffusers", steps, percent)

