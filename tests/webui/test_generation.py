"""The real W+ script driven by the WebUI stand-in against the real ldm UNet (fixture weights):
row layout of every CFG variant, delayed start, bit-identical when off, cleanup on errors."""
from __future__ import annotations

import copy

import pytest
import torch

from helpers.gradio3 import needs_gradio
from webui_stub.fixture import FIX, WebUI, hooks_on, identity_code, installed, make_models_dir, tiny_unet
from webui_stub.recorder import Recorder, expected_output

needs_gradio()  # the WebUI stand-in builds the panel with gradio 3

LONG_PROMPT = " ".join(f"word{i}" for i in range(90))  # two 77-token chunks: lengths differ
PERSON1 = dict(enabled=True, source="Saved identity", identity="person1")


@pytest.fixture(scope="module")
def env(tmp_path_factory, shared_dir):
    root = tmp_path_factory.mktemp("wplus_webui")
    with installed(root / "webui"):
        yield WebUI(make_models_dir(root / "models"))


@pytest.fixture(autouse=True)
def clean(env):
    from modules import shared

    model, data = shared.sd_model, dict(shared.opts.data)
    shared.state.reset()
    yield
    shared.sd_model = model
    shared.opts.data.clear()
    shared.opts.data.update(data)
    shared.state.reset()
    assert hooks_on(env.unet) == 0, "a W+ hook outlived its generation"


def adapter():
    import wplus

    return wplus.load_adapter(str(FIX / "wplus_adapter.bin")).eval()


def run_recorded(env, wplus_args, unet=None, **kwargs):
    rec = Recorder(unet if unet is not None else env.unet)
    try:
        res, p = env.generate(wplus=wplus_args, **kwargs)
    finally:
        rec.close()
    return res, p, rec.calls


def check_calls(calls, unet, w_id, scale, start, hires_full=True):
    """Every recorded UNet call equals the core's output for its rows; returns (#on, #off)."""
    ad = adapter()
    on = off = 0
    for call in calls:
        want, branch = expected_output(unet, ad, w_id, call, scale, start, hires_full)
        torch.testing.assert_close(call.out, want, atol=2e-5, rtol=1e-4)
        if branch:
            on += 1
            with torch.no_grad():
                plain = unet(call.x, call.t, context=call.ctx)
            assert (plain - call.out).abs().max() > 1e-4, "the branch had no effect on a call where it was on"
        else:
            off += 1
    return on, off


LAYOUTS = {
    "default": dict(),
    "batch2_count2": dict(batch_size=2, n_iter=2),
    "and_prompt": dict(prompt="a man AND a red hat:0.7", batch_size=2),
    "chunked": dict(batch_size=2, override_settings={"batch_cond_uncond": False}),
    "lengths_differ": dict(negative_prompt=LONG_PROMPT, batch_size=2),
    "lengths_differ_chunked": dict(prompt=LONG_PROMPT + " AND a hat", override_settings={"batch_cond_uncond": False}),
    "padded": dict(negative_prompt=LONG_PROMPT, override_settings={"pad_cond_uncond": True}),
    "ngms": dict(s_min_uncond=100.0, batch_size=2),
    "skip_early_cfg": dict(override_settings={"skip_early_cond": 0.5}),
}


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_rows_follow_webui_cfg_layout(env, layout):
    kwargs = dict(steps=4, **copy.deepcopy(LAYOUTS[layout]))
    res, p, calls = run_recorded(env, dict(PERSON1, scale=0.8, start=20.0), **kwargs)
    assert not p.comments, p.comments
    on, off = check_calls(calls, env.unet, identity_code(1), 0.8, 20.0)
    assert on and off
    steps = {c.step for c in calls if c.offset == 0}
    assert steps == set(range(4))  # one CFG step per sampler step
    if layout == "chunked":
        assert {c.x.shape[0] for c in calls} == {2}
    if layout == "ngms":
        assert any(c.n_rows > c.x.shape[0] + c.offset for c in calls), "NGMS never skipped the uncond rows"
    if layout == "and_prompt":
        assert calls[0].n_cond == 4 and calls[0].n_rows == 6


def test_delayed_start_off_until_step_fraction(env):
    _, _, calls = run_recorded(env, dict(PERSON1, start=50.0), steps=8)
    on, off = check_calls(calls, env.unet, identity_code(1), 1.0, 50.0)
    assert [c.step for c in calls if c.step <= 4] == [0, 1, 2, 3, 4]  # off while step <= 0.5 * 8
    assert (on, off) == (3, 5)
    _, _, calls = run_recorded(env, dict(PERSON1, start=0.0))
    assert check_calls(calls, env.unet, identity_code(1), 1.0, 0.0) == (5, 1)  # start 0: step 0 is the text's


def test_hires_pass_keeps_identity_from_its_first_step(env):
    _, p, calls = run_recorded(env, dict(PERSON1, start=40.0), enable_hr=True, hr_second_pass_steps=4,
                               denoising_strength=0.7, batch_size=2)
    hires = [c for c in calls if c.hires]
    assert hires and hires[0].x.shape[-1] == 16
    on, off = check_calls(calls, env.unet, identity_code(1), 1.0, 40.0)
    assert all(check_calls([c], env.unet, identity_code(1), 1.0, 40.0) == (1, 0) for c in hires)
    assert off == 3  # first pass: steps 0..2 (<= 0.4 * 6)


def test_hires_checkpoint_switch_reattaches(env):
    from modules.sd_models import FakeSDModel

    unet2 = tiny_unet()
    with torch.no_grad():
        for prm in unet2.parameters():
            prm.mul_(1.01)
    hr_model = FakeSDModel(unet2, context_dim=32, name="tiny-b")
    rec2 = Recorder(unet2)
    try:
        res, p, calls = run_recorded(env, dict(PERSON1), enable_hr=True, hr_second_pass_steps=3,
                                     hr_checkpoint_model=hr_model)
    finally:
        rec2.close()
    assert not p.comments
    assert check_calls(rec2.calls, unet2, identity_code(1), 1.0, 20.0) == (len(rec2.calls), 0)
    assert hooks_on(unet2) == 0


def test_img2img_and_instruct_pix2pix_rows(env):
    from modules import shared

    init = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(3))
    _, p, calls = run_recorded(env, dict(PERSON1), tab="img2img", init_latent=init, denoising_strength=0.8)
    assert check_calls(calls, env.unet, identity_code(1), 1.0, 20.0)[0] > 0
    shared.sd_model.cond_stage_key = "edit"
    try:
        _, p, calls = run_recorded(env, dict(PERSON1), tab="img2img", init_latent=init, image_cfg_scale=1.5,
                                   batch_size=2)
    finally:
        shared.sd_model.cond_stage_key = "txt"
    assert calls[0].n_rows == 6 and calls[0].n_cond == 2  # cond, uncond with image, uncond without
    assert check_calls(calls, env.unet, identity_code(1), 1.0, 20.0)[0] > 0


def test_disabled_is_bit_identical(env):
    plain, _ = env.generate(batch_size=2)
    p_noscripts = env.processing(batch_size=2)
    p_noscripts.scripts = None
    from modules import txt2img

    no_scripts = txt2img.run(p_noscripts)
    with_wplus, _ = env.generate(wplus=dict(PERSON1), batch_size=2)
    after, p = env.generate(wplus=dict(PERSON1, enabled=False), batch_size=2)
    zero, _ = env.generate(wplus=dict(PERSON1, scale=0.0), batch_size=2)
    for a, b, c, d in zip(plain.images, no_scripts.images, after.images, zero.images):
        assert torch.equal(a, b) and torch.equal(a, c) and torch.equal(a, d)
    assert not torch.equal(plain.images[0], with_wplus.images[0])
    assert "Wplus lambda" not in after.infotexts[0] and not p.comments


def test_exception_during_sampling_leaves_no_hooks(env):
    from modules import processing, txt2img

    calls = []

    def boom(module, args):
        calls.append(1)
        if len(calls) == 4:
            raise RuntimeError("CUDA out of memory (simulated)")

    h = env.unet.register_forward_pre_hook(boom)
    try:
        with pytest.raises(RuntimeError, match="simulated"):
            txt2img.run(env.processing(wplus=dict(PERSON1)))
        assert hooks_on(env.unet) == 1  # only `boom`: closing(p) detached W+ although postprocess never ran
        calls.clear()
        with pytest.raises(RuntimeError, match="simulated"):
            processing.process_images(env.processing(wplus=dict(PERSON1)))  # no closing(): hooks stay...
        assert hooks_on(env.unet) > 1
    finally:
        h.remove()
    plain, _ = env.generate()  # ...until the next generation starts, which removes them first
    assert hooks_on(env.unet) == 0
    p_ref = env.processing()
    p_ref.scripts = None
    assert torch.equal(plain.images[0], txt2img.run(p_ref).images[0])


def test_interrupt_ends_cleanly(env):
    from modules import script_callbacks, shared

    def interrupt(params):
        if params.denoiser.step == 2:
            shared.state.interrupted = True

    script_callbacks.on_cfg_denoiser(interrupt)
    try:
        res, p = env.generate(wplus=dict(PERSON1), n_iter=2)
    finally:
        script_callbacks.remove_callback("cfg_denoiser", interrupt)
    assert len(res.images) == 1 and "Wplus lambda" in res.infotexts[0]
    assert hooks_on(env.unet) == 0


def test_incompatible_model_is_disabled_with_a_warning(env):
    from modules import shared, txt2img
    from modules.sd_models import FakeSDModel

    other = tiny_unet(context_dim=64)
    shared.sd_model = FakeSDModel(other, context_dim=64, name="wide-context")
    res, p = env.generate(wplus=dict(PERSON1))
    ref = env.processing()
    ref.scripts = None
    assert any("W+ Adapter disabled" in c and "adapter" in c for c in p.comments), p.comments
    assert "W+ Adapter disabled" in res.comments
    assert torch.equal(res.images[0], txt2img.run(ref).images[0])
    assert hooks_on(other) == 0 and "Wplus lambda" not in res.infotexts[0]


def test_refiner_disables_branch_with_a_warning(env):
    from modules import shared, txt2img
    from modules.sd_models import FakeSDModel

    base, refiner_unet = shared.sd_model, tiny_unet()
    refiner = FakeSDModel(refiner_unet, context_dim=32, name="refiner")
    kw = dict(refiner_checkpoint="refiner", refiner_switch_at=0.5, refiner_model=refiner)
    res, p = env.generate(wplus=dict(PERSON1), **kw)
    assert any("refiner" in c for c in p.comments), p.comments
    assert "Refiner: refiner" in res.infotexts[0] and "Wplus lambda" not in res.infotexts[0]
    assert hooks_on(refiner_unet) == 0
    shared.sd_model = base
    ref = env.processing(**kw)
    ref.scripts = None
    assert torch.equal(res.images[0], txt2img.run(ref).images[0])


def test_missing_identity_warns_and_generates_plain(env):
    res, p = env.generate(wplus=dict(enabled=True, source="Saved identity", identity="nobody"))
    assert any("nobody" in c for c in p.comments), p.comments
    assert "Wplus lambda" not in res.infotexts[0]
    res, p = env.generate(wplus=dict(enabled=True, source="Photo"))
    assert any("no reference photo" in c for c in p.comments)


def test_sdxl_checkpoint_with_the_sd15_adapter_is_refused(env):
    from modules import shared
    from modules.sd_models import FakeSDModel

    from helpers.unet_fixtures import sgm_shaped_unet
    from wplus.branch.layers import cross_attention_layers

    sdxl = sgm_shaped_unet().unet
    shared.sd_model = FakeSDModel(sdxl, context_dim=cross_attention_layers(sdxl)[0].to_k.in_features, kind="sdxl")
    p = env.processing(wplus=dict(PERSON1))
    script = env.script()
    script.process(p, *p.script_args[script.args_from:script.args_to])
    assert any("W+ Adapter disabled" in c and "checkpoint is SDXL" in c for c in p.comments), p.comments
    assert "Wplus warning" in p.extra_generation_params and "Wplus lambda" not in p.extra_generation_params
    assert hooks_on(sdxl) == 0 and getattr(p, "_wplus_session", None) is None


def test_failed_xyz_cell_hooks_are_removed_even_after_a_model_switch(env):
    """xyz_grid catches a cell's exception and never closes that cell's copy of p."""
    from modules import processing, shared
    from modules.sd_models import FakeSDModel

    def boom(module, args):
        raise RuntimeError("cell failed (simulated)")

    h = env.unet.output_blocks[-1].register_forward_pre_hook(boom)
    try:
        with pytest.raises(RuntimeError, match="simulated"):
            processing.process_images(env.processing(wplus=dict(PERSON1)))
    finally:
        h.remove()
    assert hooks_on(env.unet) > 0
    other = tiny_unet()
    shared.sd_model = FakeSDModel(other, context_dim=32, name="tiny-other")
    env.generate(wplus=dict(PERSON1))
    assert hooks_on(env.unet) == 0 and hooks_on(other) == 0
