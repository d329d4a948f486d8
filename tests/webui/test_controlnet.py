"""W+ beside stand-ins of what the ControlNet extension (Mikubill/sd-webui-controlnet v1.1.455) does
to the UNet, written from reading its `scripts/hook.py` and `scripts/ipadapter/plugable_ipadapter.py`:
it replaces the UNet's `forward` on the instance (the module's `__call__`, and so our pre-hooks,
still run); its IP-Adapter replaces each cross-attention's `forward` with one that adds the
image-prompt term to the attention output and then calls `self.to_out(...)`. Rows stay mapped, both
effects are present, our hooks are gone afterwards and theirs untouched; a patch that hides our
seam (no `to_out[0]` call) or re-batches rows is reported under the image instead of generating
wrongly."""
from __future__ import annotations

import types

import pytest
import torch
import torch.nn.functional as F

from helpers.gradio3 import needs_gradio
from webui_stub.fixture import FIX, WebUI, hooks_on, identity_code, installed, make_models_dir
from webui_stub.recorder import Recorder, expected_output

needs_gradio()  # the stand-in builds the panel with gradio 3

PERSON1 = dict(enabled=True, source="Saved identity", identity="person1", start=0.0)


@pytest.fixture(scope="module")
def env(tmp_path_factory, shared_dir):
    root = tmp_path_factory.mktemp("wplus_controlnet")
    with installed(root / "webui"):
        yield WebUI(make_models_dir(root / "models"))


def cross_attentions(unet):
    from wplus.branch.layers import cross_attention_layers

    return cross_attention_layers(unet)


def text_attention(attn, x, context):
    b, n, c = x.shape
    heads = attn.heads
    q, k, v = (t.view(b, -1, heads, c // heads).transpose(1, 2)
               for t in (attn.to_q(x), attn.to_k(context), attn.to_v(context)))
    return F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, -1, c), q


class Patched:
    """Replace each cross-attention's `forward` (as ControlNet's IP-Adapter does) and restore it."""

    def __init__(self, unet, forward):
        self.attns = cross_attentions(unet)
        self.saved = [a.forward for a in self.attns]
        self.forward = forward

    def __enter__(self):
        for a in self.attns:
            a.forward = types.MethodType(self.forward, a)
        return self

    def __exit__(self, *exc):
        for a, f in zip(self.attns, self.saved):
            a.forward = f


def ip_adapter_forward(attn, x, context=None, **kw):
    """IP-Adapter's shape: text attention + an image-prompt term, then `to_out`."""
    h, q = text_attention(attn, x, context if context is not None else x)
    ip = 0.3 * torch.tanh(h.flip(-1))  # stands in for softmax(q k_ip^T) v_ip
    return attn.to_out(h + ip)


def hidden_seam_forward(attn, x, context=None, **kw):
    """An attention replacement that applies the output projection itself (no `to_out[0]` call)."""
    h, _ = text_attention(attn, x, context if context is not None else x)
    lin = attn.to_out[0]
    return attn.to_out[1](F.linear(h, lin.weight, lin.bias))


def rebatching_forward(attn, x, context=None, **kw):
    """Runs the output projection on a doubled batch (a reference pass folded into one call)."""
    h, _ = text_attention(attn, x, context if context is not None else x)
    return attn.to_out(torch.cat([h, h]))[: x.shape[0]]


def run(env, wplus, **kwargs):
    rec = Recorder(env.unet)
    try:
        res, p = env.generate(wplus=wplus, **{"steps": 4, **kwargs})
    finally:
        rec.close()
    assert hooks_on(env.unet) == 0, "a W+ hook outlived its generation"
    return res, p, rec.calls


def test_controlnet_style_unet_forward_replacement_keeps_rows(env):
    """ControlNet swaps `unet.forward` on the instance and adds control residuals; `__call__` still
    runs our pre-hooks, so every call's rows map to identity / zero-W+ as without it."""
    unet = env.unet
    original = unet.forward
    calls_through = []

    def forward_with_control(self, x, timesteps=None, context=None, **kw):
        calls_through.append(x.shape[0])
        return original(x, timesteps, context=context, **kw) + 0.01  # a control contribution

    unet.forward = types.MethodType(forward_with_control, unet)
    try:
        res, p, calls = run(env, dict(PERSON1), batch_size=2)
        plain, _, _ = run(env, dict(enabled=False), batch_size=2)
    finally:
        del unet.forward
    assert calls_through and not p.comments, p.comments
    import wplus

    ad = wplus.load_adapter(str(FIX / "wplus_adapter.bin")).eval()
    for call in calls:  # recompute each call through the same replaced forward
        unet.forward = types.MethodType(forward_with_control, unet)
        try:
            want, on = expected_output(unet, ad, identity_code(1), call, 1.0, 0.0)
        finally:
            del unet.forward
        assert on == (call.step > 0)  # start 0: the paper's rule leaves step 0 to the text
        assert torch.allclose(call.out, want, atol=2e-5, rtol=1e-4)
    assert (res.images[0] - plain.images[0]).abs().max() > 1e-4


def test_ip_adapter_attention_patch_composes_and_is_left_alone(env):
    """The W+ query reads the attention output after IP-Adapter added its term (h + ip): both
    effects are present, and IP-Adapter's forward is still in place after our hooks are gone."""
    with Patched(env.unet, ip_adapter_forward) as patch:
        res, p, calls = run(env, dict(PERSON1))
        off, _, _ = run(env, dict(enabled=False))
        assert all(a.forward.__func__ is ip_adapter_forward for a in patch.attns)  # theirs untouched
    plain, _, _ = run(env, dict(enabled=False))
    assert not p.comments, p.comments
    assert (res.images[0] - off.images[0]).abs().max() > 1e-4  # W+ changes the image with IP-Adapter on
    assert (off.images[0] - plain.images[0]).abs().max() > 1e-4  # and IP-Adapter's term is there
    import wplus

    ad = wplus.load_adapter(str(FIX / "wplus_adapter.bin")).eval()
    with Patched(env.unet, ip_adapter_forward):
        for call in calls:
            want, _ = expected_output(env.unet, ad, identity_code(1), call, 1.0, 0.0)
            torch.testing.assert_close(call.out, want, atol=2e-5, rtol=1e-4)


def test_hidden_seam_is_reported_not_silent(env):
    with Patched(env.unet, hidden_seam_forward):
        res, p, _ = run(env, dict(PERSON1))
        off, _, _ = run(env, dict(enabled=False))
    assert torch.equal(res.images[0], off.images[0])  # the branch could not act ...
    text = " ".join(p.comments)
    assert "reached 0 of" in text and "to_out" in text, p.comments  # ... and the image says so
    assert "Wplus warning" in p.extra_generation_params


def test_rebatched_rows_are_left_out_and_reported(env):
    with Patched(env.unet, rebatching_forward):
        res, p, _ = run(env, dict(PERSON1))
    assert any("batch layout" in c for c in p.comments), p.comments
