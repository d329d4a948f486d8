"""The real W+ script beside a stand-in of ADetailer (tests/webui_stub/extensions/adetailer): the
batch-count-2 regression, the face pass with its own λ and one identity per face, eligibility in
ADetailer's script filter, and nothing left on the UNet."""
from __future__ import annotations

import pytest
import torch

from helpers.gradio3 import needs_gradio
from webui_stub.fixture import FIX, WebUI, hooks_on, identity_code, installed, make_models_dir
from webui_stub.recorder import Recorder, expected_output

needs_gradio()  # the stand-in builds the panel with gradio 3

PERSON1 = dict(enabled=True, source="Saved identity", identity="person1")


@pytest.fixture(scope="module")
def env(tmp_path_factory, shared_dir):
    root = tmp_path_factory.mktemp("wplus_adetailer")
    with installed(root / "webui"):
        yield WebUI(make_models_dir(root / "models"), with_adetailer=True)


@pytest.fixture(autouse=True)
def clean(env):
    from modules import shared

    stand_in = env.module("!adetailer.py").ADetailerStandIn
    model, data = shared.sd_model, dict(shared.opts.data)
    shared.state.reset()
    stand_in.passes.clear()
    yield stand_in
    shared.sd_model = model
    assert "ad_script_names" not in shared.opts.data, "the W+ stem was left in ADetailer's script list"
    shared.opts.data.clear()
    shared.opts.data.update(data)
    assert hooks_on(env.unet) == 0, "a W+ hook outlived its generation"


def test_panel_shows_the_face_pass_group_with_adetailer(env):
    script = env.script()
    wanted = script.elem_id("ad_accordion")
    group = [b for b in env.blocks["txt2img"].blocks.values() if getattr(b, "elem_id", None) == wanted]
    assert len(group) == 1 and group[0].visible is True


def adapter():
    import wplus

    return wplus.load_adapter(str(FIX / "wplus_adapter.bin")).eval()


def generate(env, wplus, faces=0, ad=True, **kwargs):
    from modules import txt2img

    p = env.processing(wplus=wplus, **{"steps": 4, **kwargs})
    ad_script = env.runners["txt2img"].script("ADetailer")
    args = list(p.script_args)
    args[ad_script.args_from:ad_script.args_to] = [ad, faces]
    p.script_args = tuple(args)
    rec = Recorder(env.unet)
    try:
        res = txt2img.run(p)
    finally:
        rec.close()
    return res, p, rec.calls


def assert_calls(calls, w_id, scale, start):
    """Each call equals the core's output for that identity; returns how many had the branch on."""
    ad, on = adapter(), 0
    for call in calls:
        want, branch = expected_output(env_unet(call), ad, w_id, call, scale, start)
        torch.testing.assert_close(call.out, want, atol=2e-5, rtol=1e-4)
        on += branch
    return on


def env_unet(call):
    from modules import shared

    return shared.sd_model.model.diffusion_model


def test_batch_count_2_keeps_the_branch_on_every_image(env):
    """Regression: ADetailer calls postprocess() then process() on shallow copies of p; the second
    image used to be sampled without the branch (the copy closed the shared session) while its
    infotext still named the identity — even with nothing detected."""
    res, p, calls = generate(env, dict(PERSON1), faces=0, n_iter=2)
    assert not p.comments, p.comments
    assert {c.p for c in calls} == {p}
    assert len(calls) == 8  # 4 steps per image, cond and uncond rows in one call
    per_image = [calls[:4], calls[4:]]
    assert [assert_calls(image, identity_code(1), 1.0, 20.0) for image in per_image] == [3, 3]
    plain, _, _ = generate(env, dict(enabled=False), faces=0, n_iter=2)
    for with_wplus, without in zip(res.images, plain.images):
        assert (with_wplus - without).abs().max() > 1e-4, "an image was generated without the branch"
    assert all("Wplus identity: person1" in t for t in res.infotexts)


def test_face_pass_own_lambda_and_one_identity_per_face(env, clean):
    res, p, calls = generate(env, dict(PERSON1, scale=1.0, start=20.0, ad_scale=0.5, ad_identities="person2, person1"),
                             faces=3, batch_size=2)
    assert not p.comments, p.comments
    assert len(clean.passes) == 6  # 2 images x 3 faces
    outer = [c for c in calls if c.p is p]
    assert assert_calls(outer, identity_code(1), 1.0, 20.0) == 3
    for image, face, inner in clean.passes:
        inner_calls = [c for c in calls if c.p is inner]
        assert inner_calls and all(c.n_rows == 2 for c in inner_calls)
        if face < 2:  # person2, person1 in ADetailer's order, from the pass's first step, λ 0.5
            assert assert_calls(inner_calls, identity_code(2 if face == 0 else 1), 0.5, None) == len(inner_calls)
        else:  # a face beyond the list: no W+
            assert assert_calls(inner_calls, identity_code(1), 0.0, None) == 0
        assert inner._wplus_face_pass == ("person2", "person1", "skip")[face]
        assert inner.seed == p.all_seeds[image] + face
    for text in res.infotexts:
        assert "Wplus ADetailer lambda: 0.5" in text and "Wplus face identities: person2; person1" in text


def test_face_pass_default_is_the_panels_identity_and_lambda(env, clean):
    res, p, calls = generate(env, dict(PERSON1, scale=0.8, edits={}), faces=2)
    for _, _, inner in clean.passes:
        assert assert_calls([c for c in calls if c.p is inner], identity_code(1), 0.8, None) > 0
    assert "Wplus ADetailer lambda: 0.8" in res.infotexts[0] and "Wplus face identities" not in res.infotexts[0]


def test_face_pass_off_and_script_eligibility(env, clean):
    from modules import shared

    res, p, calls = generate(env, dict(PERSON1, ad_enabled=False), faces=1)
    (_, _, inner), = clean.passes
    assert "wplus_script" not in {s.filename.rsplit("/", 1)[-1][:-3] for s in inner.scripts.alwayson_scripts}
    assert assert_calls([c for c in calls if c.p is inner], identity_code(1), 0.0, None) == 0
    assert "Wplus ADetailer: off" in res.infotexts[0] and not p.comments
    clean.passes.clear()
    generate(env, dict(PERSON1), faces=1)  # on: our stem is in the filter's list for this generation only
    (_, _, inner), = clean.passes
    assert any(s.filename.endswith("wplus_script.py") for s in inner.scripts.alwayson_scripts)
    # a user's own list is kept, with ours appended only while generating
    shared.opts.data["ad_script_names"] = "wildcards"
    clean.passes.clear()
    generate(env, dict(PERSON1), faces=1)
    assert shared.opts.data["ad_script_names"] == "wildcards"
    assert any(s.filename.endswith("wplus_script.py") for s in clean.passes[0][2].scripts.alwayson_scripts)
    del shared.opts.data["ad_script_names"]


def test_face_pass_without_our_script_says_so(env, clean, monkeypatch):
    """ADetailer that still filters W+ out (e.g. another version): the image says the face pass
    ran without W+, and the generation's own branch is not used there either."""
    original = clean.script_filter

    def drop_wplus(p):
        runner, args = original(p)
        runner.alwayson_scripts = [s for s in runner.alwayson_scripts if not s.filename.endswith("wplus_script.py")]
        return runner, args

    monkeypatch.setattr(clean, "script_filter", staticmethod(drop_wplus))
    res, p, calls = generate(env, dict(PERSON1), faces=1)
    (_, _, inner), = clean.passes
    assert assert_calls([c for c in calls if c.p is inner], identity_code(1), 0.0, None) == 0
    assert any("ADetailer's face pass ran without W+" in c for c in p.comments), p.comments


def test_unknown_face_identity_is_reported(env, clean):
    res, p, _ = generate(env, dict(PERSON1, ad_identities="nobody"), faces=1)
    assert any("face 1 ran without W+" in c and "nobody" in c for c in p.comments), p.comments


def test_disabled_with_adetailer_is_the_plain_model(env, clean):
    res, p, calls = generate(env, dict(enabled=False), faces=2, n_iter=2)
    assert calls and assert_calls(calls, identity_code(1), 0.0, None) == 0
    assert not any(k.startswith("Wplus") for k in p.extra_generation_params)
