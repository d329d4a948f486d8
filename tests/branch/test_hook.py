"""Hook behaviour: exact off-switch, clean removal, per-row tokens, host attention variants, dtypes."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import wplus
from helpers.unet_fixtures import diffusers_unet, hook_count, identity_tokens, ldm_unet
from wplus.errors import IncompatibleModelError, WPlusError

# torch, the `ldm` UNet and wplus.branch only: the same in every test environment (dev/test.sh runs them once)
STACK_INDEPENDENT = pytest.mark.stack_independent


@pytest.fixture(scope="module")
def ref(shared_dir):
    return ldm_unet("sd15")


@pytest.fixture()
def adapter(ref):
    return wplus.load_adapter(ref.adapter_path)


@STACK_INDEPENDENT
@torch.no_grad()
def test_scale_zero_and_removed_are_bit_identical(ref, adapter):
    plain = ref.run(ref.context)
    assert hook_count(ref.unet) == 0
    handle = wplus.attach(ref.unet, adapter)
    handle.tokens = identity_tokens(adapter, ref.io)
    handle.scale = 0.0
    assert torch.equal(ref.run(ref.context), plain)
    handle.scale = 1.0
    assert not torch.equal(ref.run(ref.context), plain)
    handle.remove()
    assert torch.equal(ref.run(ref.context), plain)
    assert hook_count(ref.unet) == 0


@STACK_INDEPENDENT
@torch.no_grad()
def test_attach_cycles_and_double_attach_leave_no_hooks(ref, adapter):
    tokens = identity_tokens(adapter, ref.io)
    for _ in range(3):
        first = wplus.attach(ref.unet, adapter)
        second = wplus.attach(ref.unet, adapter)  # replaces the first
        assert not first.attached and second.attached
        second.tokens = tokens
        once = ref.run(ref.context)
        first.remove()  # harmless
        assert torch.equal(ref.run(ref.context), once)
        second.remove()
        second.remove()
        assert hook_count(ref.unet) == 0
    assert not wplus.detach_all(ref.unet)


@STACK_INDEPENDENT
@torch.no_grad()
def test_exception_inside_unet_leaves_no_hooks(ref, adapter):
    with pytest.raises(RuntimeError):
        with wplus.attach(ref.unet, adapter) as handle:
            handle.tokens = identity_tokens(adapter, ref.io)
            ref.unet(ref.io["x"], ref.io["timesteps"], context=torch.zeros(6, 77, 5))  # wrong width
    assert hook_count(ref.unet) == 0


@STACK_INDEPENDENT
@torch.no_grad()
def test_stale_attachment_is_removed_by_detach_all(ref, adapter):
    plain = ref.run(ref.context)
    wplus.attach(ref.unet, adapter).tokens = identity_tokens(adapter, ref.io)  # never removed
    assert wplus.detach_all(ref.unet)
    assert torch.equal(ref.run(ref.context), plain) and hook_count(ref.unet) == 0


@STACK_INDEPENDENT
@torch.no_grad()
def test_rows_get_their_own_tokens_and_chunks_line_up(ref, adapter):
    """Chunked UNet calls (WebUI with batch_cond_uncond off) equal one full-batch call."""
    io, ctx = ref.io, ref.context
    with wplus.attach(ref.unet, adapter) as handle:
        handle.tokens = identity_tokens(adapter, io)
        full = ref.run(ctx)
        handle.reset_rows()
        chunks = [ref.unet(io["x"][a:a + 2], io["timesteps"][a:a + 2], context=ctx[a:a + 2]) for a in (0, 2, 4)]
        torch.testing.assert_close(torch.cat(chunks), full, atol=1e-5, rtol=0)
        # A bank (identity, zero) with a row index gives the same as explicit per-row tokens.
        bank = torch.cat([adapter.project(io["wplus"]), adapter.zero_tokens()])
        handle.set_bank(bank)
        handle.row_index = torch.cat([io["ids"].long(), torch.full((3,), 2)])
        torch.testing.assert_close(ref.run(ctx), full, atol=1e-6, rtol=0)
        # Uncond rows really see the zero-W+ tokens: giving them the identity changes their output.
        handle.row_index = torch.cat([io["ids"].long(), io["ids"].long()])
        swapped = ref.run(ctx)
        torch.testing.assert_close(swapped[:3], full[:3], atol=1e-6, rtol=0)
        assert (swapped[3:] - full[3:]).abs().max() > 1e-3


@STACK_INDEPENDENT
@torch.no_grad()
def test_broadcast_and_wrong_row_count(ref, adapter):
    io = ref.io
    with wplus.attach(ref.unet, adapter) as handle:
        handle.tokens = adapter.project(io["wplus"][:1])
        one = ref.run(ref.context)
        handle.tokens = adapter.project(io["wplus"][:1]).expand(6, -1, -1)
        torch.testing.assert_close(ref.run(ref.context), one, atol=1e-6, rtol=0)
        handle.tokens = adapter.project(io["wplus"])  # 2 rows for a 6-row batch
        with pytest.raises(WPlusError, match="6 batch rows"):
            ref.run(ref.context)
        with pytest.raises(WPlusError, match="2-row token bank"):
            handle.row_index = torch.tensor([0, 1, 2])
        with pytest.raises(WPlusError, match=r"\(N,4,32\)"):
            handle.tokens = torch.zeros(2, 4, 7)


@STACK_INDEPENDENT
def test_identity_keys_values_computed_once_per_generation(ref, adapter):
    calls = []
    hooks = [layer.to_k_wplus.register_forward_hook(lambda *a: calls.append(1)) for layer in adapter.layers]
    with torch.no_grad(), wplus.attach(ref.unet, adapter) as handle:
        handle.tokens = identity_tokens(adapter, ref.io)
        for _ in range(4):  # four sampler steps
            handle.reset_rows()
            ref.run(ref.context)
    for h in hooks:
        h.remove()
    assert len(calls) == len(adapter.layers)


@STACK_INDEPENDENT
@torch.no_grad()
def test_sdp_patched_attention_gives_the_same_result(ref, adapter, monkeypatch):
    """The WebUI replaces CrossAttention.forward (SDP, xformers, ...); the branch must not care."""
    from ldm.modules.attention import CrossAttention

    def sdp_forward(self, x, context=None, mask=None):
        context = x if context is None else context
        q, k, v = self.to_q(x), self.to_k(context), self.to_v(context)
        b, n, _ = q.shape
        q, k, v = (t.reshape(b, -1, self.heads, t.shape[-1] // self.heads).transpose(1, 2) for t in (q, k, v))
        out = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, n, -1)
        return self.to_out(out)

    with wplus.attach(ref.unet, adapter) as handle:
        handle.tokens = identity_tokens(adapter, ref.io)
        handle.scale = 0.6
        plain_attention = ref.run(ref.context)
        monkeypatch.setattr(CrossAttention, "forward", sdp_forward)
        torch.testing.assert_close(ref.run(ref.context), plain_attention, atol=1e-5, rtol=0)
    torch.testing.assert_close(plain_attention, ref.io["eps_scale_0.6"], atol=1e-4, rtol=0)


@pytest.mark.needs_shared
def test_wrong_family_is_refused_with_both_names():
    sdxl = diffusers_unet("sdxl")
    adapter = wplus.load_adapter(ldm_unet("sd15").adapter_path)
    with pytest.raises(IncompatibleModelError, match=r"16 cross-attention layers.*28 cross-attention layers"):
        wplus.attach(sdxl.unet, adapter)
    assert hook_count(sdxl.unet) == 0


@pytest.mark.needs_shared
def test_fp16_unet_on_cpu_runs_branch_in_fp32():
    ref = diffusers_unet("sd15")
    unet = ref.unet.half()
    adapter = wplus.load_adapter(ref.adapter_path)
    tokens = identity_tokens(adapter, ref.io)
    with torch.no_grad(), wplus.attach(unet, adapter) as handle:
        handle.tokens = tokens
        assert adapter.proj.norm.weight.dtype == torch.float32  # CPU fallback
        out = unet(ref.io["x"].half(), ref.io["timesteps"], encoder_hidden_states=ref.context.half()).sample
    assert out.dtype == torch.float16 and torch.isfinite(out).all()
    torch.testing.assert_close(out.float(), ref.io["eps_scale_1.0"], atol=5e-2, rtol=0)


@pytest.mark.needs_shared
def test_branch_follows_unet_dtype_and_trains_with_cast_false():
    """bf16 UNet: adapter cast to bf16; cast=False keeps fp32 master weights and gradients flow."""
    ref = diffusers_unet("sd15")
    adapter = wplus.WPlusAdapter.from_unet(ref.unet)
    w = ref.io["wplus"][ref.io["ids"].long()]
    with wplus.attach(ref.unet, adapter, cast=False) as handle:
        handle.tokens = torch.cat([adapter.project(w), adapter.zero_tokens(3)])
        ref.run(ref.context).square().mean().backward()
    assert adapter.proj.proj_0.weight.grad is not None and adapter.layers[0].to_q_wplus.weight.grad.abs().sum() > 0
    assert ref.unet.conv_in.weight.grad is not None  # the host graph is intact
    unet_bf16 = ref.unet.to(torch.bfloat16)
    with torch.no_grad(), wplus.attach(unet_bf16, adapter) as handle:
        assert adapter.proj.norm.weight.dtype == torch.bfloat16
        handle.tokens = adapter.zero_tokens(6)
        out = unet_bf16(ref.io["x"].bfloat16(), ref.io["timesteps"],
                        encoder_hidden_states=ref.context.bfloat16()).sample
    assert out.dtype == torch.bfloat16 and torch.isfinite(out.float()).all()


@pytest.mark.needs_shared
def test_from_unet_initialises_from_layer_projections():
    ref = ldm_unet("sd15")
    adapter = wplus.WPlusAdapter.from_unet(ref.unet)
    attn = wplus.branch.layers.cross_attention_layers(ref.unet)[5]
    assert torch.equal(adapter.layers[5].to_q_wplus.weight, attn.to_q.weight)
    assert torch.equal(adapter.layers[5].to_k_wplus.weight, attn.to_k.weight)
    assert torch.equal(adapter.layers[5].to_v_wplus.weight, attn.to_v.weight)


@pytest.mark.needs_shared
def test_no_grad_pass_does_not_cut_gradients_of_a_later_pass():
    """Trainer pattern: a no-grad prediction, then the graded one, with the same tokens."""
    ref = diffusers_unet("sd15")
    adapter = wplus.WPlusAdapter.from_unet(ref.unet)
    w = ref.io["wplus"][ref.io["ids"].long()]
    with wplus.attach(ref.unet, adapter, cast=False) as handle:
        handle.tokens = torch.cat([adapter.project(w), adapter.zero_tokens(3)])
        with torch.no_grad():
            ref.run(ref.context)
        ref.run(ref.context).square().mean().backward()
    assert adapter.proj.proj_3.weight.grad is not None and adapter.proj.proj_3.weight.grad.abs().sum() > 0


@torch.no_grad()
def test_rows_read_from_each_call_follow_forge_chunks_and_dtype():
    """A host that says each call's rows (Forge's cond_or_uncond, uncond chunk first) gets the same
    output as explicit per-row tokens; a call without them is refused; the branch follows the
    activations' dtype when the host casts the UNet after attaching (follow_dtype)."""
    from wplus.branch.rows import forge_call_rows

    ref = ldm_unet("sd15")
    adapter = wplus.load_adapter(ref.adapter_path)
    io, ctx = ref.io, ref.context
    tok = adapter.project(io["wplus"][:1])
    x = torch.cat([io["x"][3:], io["x"][:3]])  # Forge's order: the uncond chunk, then the cond chunk
    t, c = torch.cat([io["timesteps"][3:], io["timesteps"][:3]]), torch.cat([ctx[3:], ctx[:3]])
    with wplus.attach(ref.unet, adapter) as handle:
        handle.tokens = torch.cat([adapter.zero_tokens(3), tok.expand(3, -1, -1)])
        want = ref.unet(x, t, context=c)
        handle.set_bank(torch.cat([tok, adapter.zero_tokens()]))
        handle.row_source = forge_call_rows
        got = ref.unet(x, t, context=c, transformer_options={"cond_or_uncond": [1, 0]})
        torch.testing.assert_close(got, want, atol=1e-6, rtol=0)
        assert (ref.unet(x, t, context=c, transformer_options={"cond_or_uncond": [0, 1]}) - want).abs().max() > 1e-3
        with pytest.raises(WPlusError, match="cond_or_uncond"):
            ref.unet(x, t, context=c)
        with pytest.raises(WPlusError, match="equal"):
            ref.unet(x[:5], t[:5], context=c[:5], transformer_options={"cond_or_uncond": [1, 0]})
    dref = diffusers_unet("sd15")
    adapter = wplus.load_adapter(dref.adapter_path)
    with wplus.attach(dref.unet, adapter, follow_dtype=True) as handle:
        handle.tokens = identity_tokens(adapter, dref.io)
        assert adapter.proj.norm.weight.dtype == torch.float32
        unet = dref.unet.to(torch.bfloat16)  # the host casts its model at sampling time
        out = unet(dref.io["x"].bfloat16(), dref.io["timesteps"], encoder_hidden_states=dref.context.bfloat16()).sample
        assert adapter.layers[0].to_q_wplus.weight.dtype == torch.bfloat16 and out.dtype == torch.bfloat16
    torch.testing.assert_close(out.float(), dref.io["eps_scale_1.0"], atol=0.1, rtol=0)
