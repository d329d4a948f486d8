"""The real W+ script in the Forge stand-in (tests/forge_stub, written from Forge's source) against
the real ldm UNet: rows from each call's cond_or_uncond in every layout Forge makes, delayed start,
hires fix, bit-identical when off, no hook left after errors."""
from __future__ import annotations

import copy

import pytest
import torch
from forge_stub.fixture import installed
from forge_stub.recorder import Recorder, expected_output

from helpers.gradio3 import needs_gradio
from webui_stub.fixture import FIX, WebUI, hooks_on, identity_code, make_models_dir

needs_gradio()  # the stand-in builds the panel with gradio 3

LONG_PROMPT = " ".join(f"word{i}" for i in range(90))  # 154 tokens against 77: one call, context repeated
PERSON1 = dict(enabled=True, source="Saved identity", identity="person1")


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    if not FIX.is_dir():
        pytest.skip("../shared fixtures are not beside the checkout")
    root = tmp_path_factory.mktemp("wplus_forge")
    with installed(root / "webui"):
        yield WebUI(make_models_dir(root / "models"))


@pytest.fixture(autouse=True)
def clean(env):
    from modules import shared

    model, data = shared.sd_model, dict(shared.opts.data)
    shared.state.reset()
    yield
    shared.sd_model = model
    model.set_max_rows(None)
    shared.opts.data.clear()
    shared.opts.data.update(data)
    shared.state.reset()
    assert hooks_on(env.unet) == 0, "a W+ hook outlived its generation"


def adapter():
    import wplus

    return wplus.load_adapter(str(FIX / "wplus_adapter.bin")).eval()


def run_recorded(env, wplus_args, **kwargs):
    rec = Recorder(env.unet)
    try:
        res, p = env.generate(wplus=wplus_args, **kwargs)
    finally:
        rec.close()
    return res, p, rec.calls


def check_calls(calls, unet, w_id, scale, start):
    """Every recorded UNet call equals the core's output for its chunks' rows; returns (#on, #off)."""
    ad = adapter()
    on = off = 0
    for call in calls:
        want, branch = expected_output(unet, ad, w_id, call, scale, start)
        torch.testing.assert_close(call.out, want, atol=2e-5, rtol=1e-4)
        if branch:
            on += 1
            with torch.no_grad():
                plain = unet(call.x, call.t, context=call.ctx)
            assert (plain - call.out).abs().max() > 1e-4, "the branch had no effect on a call where it was on"
        else:
            off += 1
    return on, off


# layout -> (generation kwargs, cond_or_uncond of the first step's calls, as Forge makes them)
LAYOUTS = {
    "cfg7": (dict(), [[1, 0]]),
    "batch2_count2": (dict(batch_size=2, n_iter=2), [[1, 0]]),
    "cfg1": (dict(batch_size=2, cfg_scale=1.0), [[0]]),
    "and_prompt": (dict(prompt="a man AND a red hat:0.7", batch_size=2), [[1, 0, 0]]),
    "low_memory": (dict(batch_size=2, max_rows=2), [[1], [0]]),
    "and_low_memory": (dict(prompt="a man AND a hat", max_rows=2), [[1], [0, 0]]),
    "lengths_differ": (dict(negative_prompt=LONG_PROMPT, batch_size=2), [[1, 0]]),
    "ngms": (dict(s_min_uncond=100.0, batch_size=2), [[1, 0]]),
    "skip_early_cfg": (dict(override_settings={"skip_early_cond": 0.5}), [[0]]),
}


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_rows_follow_forge_cond_or_uncond(env, layout):
    from modules import shared

    kwargs, first_step = copy.deepcopy(LAYOUTS[layout])
    shared.sd_model.set_max_rows(kwargs.pop("max_rows", None))
    res, p, calls = run_recorded(env, dict(PERSON1, scale=0.8, start=20.0), steps=4, **kwargs)
    assert not p.comments, p.comments
    assert [c.cond_or_uncond for c in calls if c.step == 0][:len(first_step)] == first_step
    on, off = check_calls(calls, env.unet, identity_code(1), 0.8, 20.0)
    assert on and off
    if layout == "ngms":  # every other step without the uncond
        assert [c.cond_or_uncond for c in calls] == [[1, 0], [0], [1, 0], [0]]
    if layout == "skip_early_cfg":
        assert [c.cond_or_uncond for c in calls] == [[0], [0], [0], [1, 0]]
    if layout == "batch2_count2":
        assert len(res.images) == 4 and {c.x.shape[0] for c in calls} == {4}


def test_delayed_start_and_lambda_per_step(env):
    _, _, calls = run_recorded(env, dict(PERSON1, start=50.0, scale=0.6), steps=8)
    assert check_calls(calls, env.unet, identity_code(1), 0.6, 50.0) == (3, 5)  # off while step <= 0.5 * 8


def test_hires_pass_keeps_identity_from_its_first_step(env):
    for hr_cfg, marks in ((7.0, [1, 0]), (1.0, [0])):  # Forge's API defaults hr_cfg to 1: cond rows only
        _, p, calls = run_recorded(env, dict(PERSON1, start=40.0), enable_hr=True, hr_second_pass_steps=3,
                                   denoising_strength=0.7, batch_size=2, hr_cfg=hr_cfg)
        assert not p.comments, p.comments
        hires = [c for c in calls if c.hires]
        assert hires and hires[0].x.shape[-1] == 16 and {tuple(c.cond_or_uncond) for c in hires} == {tuple(marks)}
        assert all(check_calls([c], env.unet, identity_code(1), 1.0, 40.0) == (1, 0) for c in hires)
        assert check_calls(calls, env.unet, identity_code(1), 1.0, 40.0)[1] == 3  # first pass: steps 0..2


def test_img2img_rows(env):
    init = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(3))
    res, p, calls = run_recorded(env, dict(PERSON1, start=0.0), tab="img2img", init_latent=init,
                                 denoising_strength=0.6, batch_size=2)
    assert not p.comments and calls
    first = sum(c.step == 0 for c in calls)  # start 0: step 0 belongs to the text (the paper's rule)
    assert first and check_calls(calls, env.unet, identity_code(1), 1.0, 0.0) == (len(calls) - first, first)


def test_disabled_is_bit_identical(env):
    from modules import txt2img

    plain, _ = env.generate(batch_size=2)
    p_noscripts = env.processing(batch_size=2)
    p_noscripts.scripts = None
    no_scripts = txt2img.run(p_noscripts)
    with_wplus, _ = env.generate(wplus=dict(PERSON1), batch_size=2)
    off, _ = env.generate(wplus=dict(PERSON1, enabled=False), batch_size=2)
    zero, _ = env.generate(wplus=dict(PERSON1, scale=0.0), batch_size=2)
    for a, b, c, d in zip(plain.images, no_scripts.images, off.images, zero.images):
        assert torch.equal(a, b) and torch.equal(a, c) and torch.equal(a, d)
    assert not torch.equal(plain.images[0], with_wplus.images[0])
    assert "Wplus lambda: 1," in with_wplus.infotexts[0]


def test_exception_during_sampling_leaves_no_hooks(env):
    from modules import txt2img

    calls = []

    def boom(module, args):
        calls.append(1)
        if len(calls) == 3:
            raise RuntimeError("out of memory (simulated)")

    h = env.unet.register_forward_pre_hook(boom)
    try:
        with pytest.raises(RuntimeError, match="simulated"):
            txt2img.run(env.processing(wplus=dict(PERSON1)))
        assert hooks_on(env.unet) == 1  # only `boom`: closing(p) detached W+
    finally:
        h.remove()


def test_unet_call_without_cond_or_uncond_is_refused(env):
    from modules import shared

    patcher = shared.sd_model.forge_objects_after_applying_lora.unet
    original = patcher.model.apply_model

    def forgetful(x, sigma, c_crossattn, transformer_options, control=None):
        return original(x, sigma, c_crossattn, {}, control)

    patcher.model.apply_model = forgetful
    try:
        from modules import txt2img

        with pytest.raises(Exception, match="cond_or_uncond"):
            txt2img.run(env.processing(wplus=dict(PERSON1, start=0.0)))
    finally:
        del patcher.model.apply_model
    assert patcher.model.apply_model == original


def test_xyz_over_lambda(env):
    xyz = env.module("xyz_grid.py")
    cells = xyz.run_axis(env.processing(wplus=dict(PERSON1)), "[W+] Identity strength (λ)", ["0", "0.5"])
    p_ref = env.processing()
    p_ref.scripts = None
    from modules import txt2img

    assert torch.equal(cells[0][1].images[0], txt2img.run(p_ref).images[0])
    assert "Wplus lambda: 0.5" in cells[1][1].infotexts[0]
    assert not torch.equal(cells[0][1].images[0], cells[1][1].images[0])


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


def test_transformer_denoiser_is_refused_with_a_warning(env):
    from modules import shared

    patcher = shared.sd_model.forge_objects.unet
    unet = patcher.model.diffusion_model
    patcher.model.diffusion_model = torch.nn.Linear(4, 4)  # Forge's Flux/SD3: a transformer, no UNet blocks
    try:
        p = env.processing(wplus=dict(PERSON1))
        p.scripts.process(p)  # where the session would start; no sampling needed
    finally:
        patcher.model.diffusion_model = unet
    assert any("no UNet the adapter can attach to" in c for c in p.comments), p.comments
    assert "Wplus lambda" not in p.extra_generation_params
