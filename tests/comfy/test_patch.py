"""The W+ attn2 replace patch in ComfyUI's transformer blocks (the stand-in, tests/comfy_stub): parity
with the paper's fixture per UNet call, the plain model untouched, the schedule, masks, composition."""
from __future__ import annotations

import copy

import pytest
import torch
from comfy_stub.fixture import run_unet

import wplus

pytestmark = pytest.mark.needs_shared  # the reference fixtures
TOL = 1e-4


def _apply(model, weight=0.6, start_at=0.0, end_at=1.0, codes=None, mask=None):
    from wplus.comfy.patch import apply_identity

    io = model.model.reference.io
    adapter = wplus.load_adapter(model.model.reference.adapter_path)
    codes = io["wplus"][io["ids"]] if codes is None else codes
    return apply_identity(model, adapter, codes, weight, start_at, end_at, mask)


def test_eps_matches_the_paper_per_unet_call(patcher):
    io = patcher.model.reference.io
    plain = run_unet(patcher)
    torch.testing.assert_close(plain, io["eps_ldm_no_adapter"], atol=TOL, rtol=0)
    for weight in (0.6, 1.0):
        torch.testing.assert_close(run_unet(_apply(patcher, weight)), io[f"eps_scale_{weight}"], atol=TOL, rtol=0)
    assert (io["eps_scale_1.0"] - io["eps_scale_0.0"]).abs().max() > 100 * TOL


def test_uncond_first_chunks_give_the_identity_to_the_cond_rows_only(patcher):
    """ComfyUI's usual batch is [uncond, cond] (cond_or_uncond [1, 0]): the same rows, swapped."""
    io, ref = patcher.model.reference.io, patcher.model.reference
    from comfy.ldm.modules.diffusionmodules.openaimodel import unet_forward

    model = _apply(patcher)
    to = dict(model.model_options["transformer_options"], cond_or_uncond=[1, 0])
    swap = torch.cat([torch.arange(3, 6), torch.arange(3)])
    with torch.no_grad():
        eps = unet_forward(ref.unet, io["x"][swap], io["timesteps"][swap], ref.context[swap], to)
    torch.testing.assert_close(eps, io["eps_scale_0.6"][swap], atol=TOL, rtol=0)


def test_weight_zero_and_the_original_model_stay_plain(patcher):
    plain = run_unet(patcher)
    zero = _apply(patcher, weight=0.0)
    assert zero.model_options == {"transformer_options": {}} and zero.model is patcher.model
    assert torch.equal(run_unet(zero), plain)
    patched = _apply(patcher, 1.0)
    assert patcher.model_options == {"transformer_options": {}}  # only the clone carries the patches
    assert len(patched.model_options["transformer_options"]["patches_replace"]["attn2"]) == 16
    assert not any(m._forward_pre_hooks or m._forward_hooks for m in patcher.model.diffusion_model.modules())
    assert torch.equal(run_unet(patcher), plain)  # a plain run after a W+ run


def test_sd15_layer_places_follow_the_adapter_order(patcher):
    from comfy.ldm.modules import attention

    from wplus.comfy.layers import layer_places

    keys = [p.key for p in layer_places(patcher.model.diffusion_model)]
    assert keys == [("input", i) for i in (1, 2, 4, 5, 7, 8)] + [("output", i) for i in range(3, 12)] + [("middle", 0)]
    attention.CALLS.clear()
    run_unet(_apply(patcher))
    called = [(block, index) for block, index, _ in attention.CALLS]
    assert called == [(("input", i), 0) for i in (1, 2, 4, 5, 7, 8)] + [(("middle", 0), 0)] + \
        [(("output", i), 0) for i in range(3, 12)]


def _schedule(model, steps):
    from comfy.samplers import karras_free_schedule

    return karras_free_schedule(model.get_model_object("model_sampling"), steps)


def test_start_at_follows_the_paper_rule_on_the_sampler_steps(patcher):
    """10 steps, start_at 0.2: off at step indices 0..2 (int(20/100 · 10) = 2), on from step 3."""
    schedule = _schedule(patcher, 10)
    model = _apply(patcher, 1.0, start_at=0.2)
    plain = run_unet(patcher)
    for step in range(10):
        sigma = schedule[step].reshape(1).expand(6)
        eps = run_unet(model, sigmas=sigma, sample_sigmas=schedule)
        assert torch.equal(eps, plain) == (step <= 2), step
    off_at_zero = _apply(patcher, 1.0, start_at=0.0)
    assert torch.equal(run_unet(off_at_zero, sigmas=schedule[0].reshape(1), sample_sigmas=schedule), plain)
    assert not torch.equal(run_unet(off_at_zero, sigmas=schedule[1].reshape(1), sample_sigmas=schedule), plain)


def test_end_at_turns_the_branch_off_below_its_sigma(patcher):
    schedule = _schedule(patcher, 10)
    sampling = patcher.get_model_object("model_sampling")
    cut = sampling.percent_to_sigma(0.6)
    model = _apply(patcher, 1.0, start_at=0.0, end_at=0.6)
    plain = run_unet(patcher)
    for step in range(1, 10):
        eps = run_unet(model, sigmas=schedule[step].reshape(1), sample_sigmas=schedule)
        assert torch.equal(eps, plain) == bool(schedule[step] < cut), step


def test_without_a_schedule_start_at_is_a_sigma():
    from wplus.comfy.schedule import Window

    window = Window(0.3, sigma_start=5.0, sigma_end=0.5)
    assert [window.active({"sigmas": torch.tensor([s])}) for s in (9.0, 5.0, 1.0, 0.4)] == [False, True, True, False]


def test_a_mask_limits_the_identity_to_its_region(patcher):
    plain, full = run_unet(patcher), run_unet(_apply(patcher, 1.0))
    torch.testing.assert_close(run_unet(_apply(patcher, 1.0, mask=torch.ones(1, 64, 64))), full, atol=1e-6, rtol=0)
    assert torch.equal(run_unet(_apply(patcher, 1.0, mask=torch.zeros(64, 64))), plain)
    left = torch.zeros(1, 64, 64)
    left[..., :32] = 1
    half = run_unet(_apply(patcher, 1.0, mask=left))
    assert not torch.equal(half, plain) and not torch.allclose(half, full, atol=TOL)


def test_two_identities_with_two_masks_chain(patcher):
    io = patcher.model.reference.io
    left, right = torch.zeros(1, 64, 64), torch.zeros(1, 64, 64)
    left[..., :32], right[..., 32:] = 1, 1
    one = _apply(patcher, 1.0, codes=io["wplus"][:1], mask=left)
    both = _apply(one, 1.0, codes=io["wplus"][1:], mask=right)
    patches = both.model_options["transformer_options"]["patches_replace"]["attn2"]
    assert all(p.inner is not None and p.inner.inner is None for p in patches.values())
    assert not torch.equal(run_unet(both), run_unet(one))


class _ImagePromptPatch:
    """An IPAdapter-style patch written to ComfyUI_IPAdapter_plus's protocol: attention + callbacks, `.add`."""

    def __init__(self, callback, **kwargs):
        self.callback, self.kwargs = [callback], [kwargs]

    def add(self, callback, **kwargs):
        self.callback.append(callback)
        self.kwargs.append(kwargs)

    def __call__(self, q, k, v, extra_options):
        from comfy.ldm.modules.attention import optimized_attention

        out = optimized_attention(q, k, v, extra_options["n_heads"])
        for callback, kwargs in zip(self.callback, self.kwargs):
            out = out + callback(out, q, k, v, extra_options, **kwargs)
        return out


def _image_prompt(out, q, k, v, extra_options, weight=1.0, **kwargs):
    return weight * torch.tanh(q)  # any input-dependent term: it must reach the output in both orders


def _apply_image_prompt(model):
    """What IPAdapter_plus does on SD1.5: keys (block, id); .add on whatever object holds a key already."""
    model = model.clone()
    ids = [("input", i) for i in (1, 2, 4, 5, 7, 8)] + [("output", i) for i in range(3, 12)] + [("middle", 1)]
    for key in ids:
        to = model.model_options["transformer_options"].copy()
        to["patches_replace"] = dict(to.get("patches_replace", {}))
        to["patches_replace"]["attn2"] = dict(to["patches_replace"].get("attn2", {}))
        if key in to["patches_replace"]["attn2"]:
            to["patches_replace"]["attn2"][key].add(_image_prompt, weight=0.5, sigma_start=1e9, sigma_end=0.0)
        else:
            to["patches_replace"]["attn2"][key] = _ImagePromptPatch(_image_prompt, weight=0.5, sigma_start=1e9,
                                                                     sigma_end=0.0)
            model.model_options["transformer_options"] = to
    return model


def test_composes_with_an_ip_adapter_patch_in_both_orders(patcher):
    sigmas = {"sigmas": torch.tensor([1.0])}
    plain, wplus_only = run_unet(patcher, **sigmas), run_unet(_apply(patcher, 1.0), **sigmas)
    ip_only = run_unet(_apply_image_prompt(patcher), **sigmas)
    ip_then_w = run_unet(_apply(_apply_image_prompt(patcher), 1.0), **sigmas)
    w_then_ip = run_unet(_apply_image_prompt(_apply(patcher, 1.0)), **sigmas)
    torch.testing.assert_close(w_then_ip, ip_then_w, atol=1e-5, rtol=0)
    for other in (plain, wplus_only, ip_only):
        assert not torch.allclose(ip_then_w, other, atol=TOL)


def test_clones_share_the_branch_not_a_copy_of_the_adapter(patcher):
    model = _apply(patcher, 1.0)
    twin = model.clone()
    a = model.model_options["transformer_options"]["patches_replace"]["attn2"][("input", 1)]
    b = twin.model_options["transformer_options"]["patches_replace"]["attn2"][("input", 1)]
    assert a is not b and a.branch is b.branch
    b.add(_image_prompt)
    assert not a.callbacks  # the chain is the clone's own
    assert copy.deepcopy(a).branch is a.branch


def test_branch_computes_in_the_activations_dtype(patcher):
    from wplus.comfy.patch import IdentityBranch
    from wplus.comfy.schedule import Window

    adapter = wplus.load_adapter(patcher.model.reference.adapter_path)
    branch = IdentityBranch(adapter, patcher.model.reference.io["wplus"][:1], 1.0, Window(0.0, 1e9, 0.0))
    h = torch.randn(4, 16, adapter.specs[0].query_dim)
    options = {"cond_or_uncond": [1, 0], "n_heads": 2}  # the fixture UNet's head count
    out32 = branch.apply(h, 0, options)
    out16 = branch.apply(h.bfloat16(), 0, options)
    assert out16.dtype == torch.bfloat16 and {k[1] for k in branch._layers} == {torch.float32, torch.bfloat16}
    torch.testing.assert_close(out16.float(), out32, atol=0.1, rtol=0.05)
    assert len(branch._layers) == 2
    branch.apply(h, 0, options)
    assert len(branch._layers) == 2  # keys/values once per (layer, dtype, device)


def test_incompatible_adapter_is_refused_with_both_families(patcher):
    from wplus.branch.adapter import WPlusAdapter
    from wplus.branch.layers import LayerSpec
    from wplus.comfy.patch import apply_identity
    from wplus.errors import IncompatibleModelError

    sdxl_like = WPlusAdapter([LayerSpec(64, 2048, 2)] * 70, 2048)
    with pytest.raises(IncompatibleModelError, match="SDXL .* but the loaded model is"):
        apply_identity(patcher, sdxl_like, torch.zeros(1, 18, 512), 1.0, 0.0, 1.0)


def test_identities_must_be_one_or_one_per_image(patcher):
    from wplus.errors import WPlusError

    with pytest.raises(WPlusError, match="2 identities for a batch of 3 images"):
        run_unet(_apply(patcher, 1.0, codes=patcher.model.reference.io["wplus"]))
