"""The W+ branch on real diffusers pipelines (tiny SD1 with the fixture UNet and adapter, tiny SDXL):
parity with a re-implementation of the paper's loop, λ = 0 = the plain pipeline, rows, delayed start."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest import FIXTURES, OFFICIAL

pytestmark = pytest.mark.needs_shared  # the fixture adapter/UNet, the paper's photos and directions

ADAPTER = FIXTURES / "reference_sd15" / "wplus_adapter.bin"
PROMPT = "a woman wearing a spacesuit"


@pytest.fixture(scope="module")
def sd_folder(tmp_path_factory):
    from trainer.tiny import build_tiny_sd

    return build_tiny_sd(tmp_path_factory.mktemp("tiny") / "sd")


@pytest.fixture(scope="module")
def pipe(sd_folder):
    from wplus.pipeline.load import load_pipeline

    p = load_pipeline(str(sd_folder), device="cpu")
    p.set_progress_bar_config(disable=True)
    return p


@pytest.fixture(scope="module")
def w1():
    from wplus.identity.files import load_identity

    return load_identity(OFFICIAL / "test_data" / "e4e" / "1.pth").batch(dtype=torch.float32)


def _pixels(img) -> np.ndarray:
    return np.asarray(img).astype(np.int16)


def _run(pipe, steps=30, seed=23, **kw):
    from wplus.pipeline.sampling import Settings, run

    return run(pipe, Settings(prompt=PROMPT, steps=steps, seed=seed, **kw))


def test_defaults_are_the_papers_demo(pipe):
    import wplus.pipeline.load  # noqa: F401  (submodules loaded first must not shadow the API's names)
    import wplus.pipeline.sampling  # noqa: F401
    from wplus.pipeline import attach, defaults, generate

    assert callable(attach) and callable(generate)

    assert type(pipe.scheduler).__name__ == "EulerDiscreteScheduler"
    assert (defaults.DEFAULT_STEPS, defaults.DEFAULT_GUIDANCE, defaults.DEFAULT_SCALE, defaults.DEFAULT_START) == \
        (30, 7.5, 1.0, 20.0)
    assert defaults.NEGATIVE_PROMPT == "monochrome, lowres, bad anatomy, worst quality, low quality"
    assert defaults.FREEU == {"s1": 0.6, "s2": 0.4, "b1": 1.1, "b2": 1.2}


def test_pixel_identical_to_the_papers_loop_and_off_steps(pipe, w1):
    """Our hooks + diffusers' own loop == the paper's processors + its loop (fp32, Euler; 10 steps: the
    parity holds step by step, and 10 keep the delayed start's off steps and the CI time small)."""
    from helpers.paper_pipeline import PaperPipeline
    from wplus.assets.io import load_pickle
    from wplus.pipeline import attach

    with attach(pipe, ADAPTER, w1, scale=1.0, start=20) as branch:
        ours = _run(pipe, steps=10)[0]
    assert [s for _, s in branch.trace] == [0.0] * 3 + [1.0] * 7  # off at i <= int(0.2 * 10) = 2
    plain = _run(pipe, steps=10)[0]
    paper = PaperPipeline(pipe, load_pickle(ADAPTER))
    try:
        theirs = paper.generate(PROMPT, "monochrome, lowres, bad anatomy, worst quality, low quality", w1,
                                scale=1.0, seed=23, steps=10)
    finally:
        paper.restore()
    assert np.array_equal(_pixels(ours), _pixels(theirs))
    assert np.abs(_pixels(ours) - _pixels(plain)).max() > 2  # the identity changes the image


def test_scale_zero_is_exactly_the_plain_pipeline_and_hooks_come_off(pipe, w1):
    from wplus.pipeline import attach

    plain = _run(pipe, steps=6)[0]
    scheduler_attrs = dict(vars(pipe.scheduler))
    with attach(pipe, ADAPTER, w1, scale=0.0, start=0):
        off = _run(pipe, steps=6)[0]
    assert np.array_equal(_pixels(plain), _pixels(off))
    assert not pipe.unet._forward_pre_hooks and "set_timesteps" not in vars(pipe.scheduler)
    assert not any(m._forward_pre_hooks for m in pipe.unet.modules())
    assert set(vars(pipe.scheduler)) == set(scheduler_attrs)
    with pytest.raises(RuntimeError):
        with attach(pipe, ADAPTER, w1):
            raise RuntimeError("boom")
    assert not any(m._forward_pre_hooks for m in pipe.unet.modules())
    assert np.array_equal(_pixels(_run(pipe, steps=6)[0]), _pixels(plain))


def test_rows_negative_first_and_per_image_codes(pipe, w1):
    """diffusers batches [negative, positive]: a swapped layout would give another image; one code per
    image equals generating each image with its own code."""
    from wplus.branch import rows
    from wplus.pipeline import attach

    assert rows.uncond_first_row_index(4, True, 1) == [1, 1, 0, 0]
    assert rows.uncond_first_row_index(4, True, 2) == [2, 2, 0, 1]
    assert rows.uncond_first_row_index(3, False, 1) == [0, 0, 0]
    w2 = w1.flip(1)
    with attach(pipe, ADAPTER, torch.cat([w1, w2]), start=0) as branch:
        both = _run(pipe, steps=4, num_images=2)
        assert branch._handle.row_index == (2, 2, 0, 1)
    with attach(pipe, ADAPTER, w1, start=0):
        one = _run(pipe, steps=4, num_images=2)
    # image 0 has w1 either way (a 2-code projection rounds the last bits differently: ±1 at most)
    assert np.abs(_pixels(both[0]) - _pixels(one[0])).max() <= 1
    assert np.abs(_pixels(both[1]) - _pixels(one[1])).max() > 2
    with attach(pipe, ADAPTER, w1, start=0) as branch:
        branch._index[(2, True)] = [0, 1]  # the WebUI's cond-first order, wrongly applied
        swapped = _run(pipe, steps=4)[0]
        branch._index.clear()
        right = _run(pipe, steps=4)[0]
    assert not np.array_equal(_pixels(swapped), _pixels(right))


def test_bad_inputs_are_clear(pipe, w1):
    from wplus.errors import WPlusError
    from wplus.pipeline import attach

    with pytest.raises(WPlusError, match=r"\(18,512\)"):
        attach(pipe, ADAPTER, torch.zeros(3, 512))
    with pytest.raises(WPlusError, match="NaN"):
        attach(pipe, ADAPTER, torch.full((18, 512), float("nan")))
    with pytest.raises(WPlusError, match="percentage"):
        attach(pipe, ADAPTER, w1, start=150)
    with pytest.raises(WPlusError, match="one code, or one per image"):
        with attach(pipe, ADAPTER, torch.cat([w1] * 3)):
            _run(pipe, steps=2, num_images=2)
    with pytest.raises(WPlusError, match="not a diffusers"):
        attach(object(), ADAPTER, w1)
    assert not any(m._forward_pre_hooks for m in pipe.unet.modules())


def test_sdxl_pipeline_runs_with_the_branch(tmp_path):
    from trainer.tiny import build_tiny_sdxl, write_tiny_extras
    from wplus.identity.files import load_identity
    from wplus.pipeline import attach
    from wplus.pipeline.load import load_pipeline, pipeline_arch

    folder = build_tiny_sdxl(tmp_path / "sdxl")
    adapter, identity = write_tiny_extras(folder)
    pipe = load_pipeline(str(folder), device="cpu")
    pipe.set_progress_bar_config(disable=True)
    assert type(pipe).__name__ == "StableDiffusionXLPipeline" and pipeline_arch(pipe) == "sdxl"
    plain = _run(pipe, steps=3)[0]
    with attach(pipe, adapter, load_identity(identity), scale=0.0):
        zero = _run(pipe, steps=3)[0]
    with attach(pipe, adapter, load_identity(identity), scale=1.0, start=0) as branch:
        on = _run(pipe, steps=3)[0]
    assert branch.trace == [(0, 0.0), (1, 1.0), (2, 1.0)]
    assert np.array_equal(_pixels(plain), _pixels(zero))
    assert not np.array_equal(_pixels(plain), _pixels(on))
