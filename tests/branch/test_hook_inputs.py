"""Bad tokens, bad λ and interrupted attachments: refused when set (never mid-forward), nothing left
behind. A tiny diffusers UNet with random weights, so this runs without ../shared on every stack."""
from __future__ import annotations

import numpy as np
import pytest
import torch

import wplus
from helpers.unet_fixtures import hook_count, tiny_diffusers_unet
from wplus.errors import WPlusError


@pytest.fixture(scope="module")
def unet():
    return tiny_diffusers_unet()


@pytest.fixture()
def adapter(unet):
    return wplus.WPlusAdapter.from_unet(unet)


def run(unet, n: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(1)
    x = torch.randn(n, 4, 8, 8, generator=g)
    return unet(x, torch.full((n,), 10), torch.randn(n, 3, 8, generator=g)).sample


def tokens(adapter, n: int) -> torch.Tensor:
    with torch.no_grad():
        return adapter.project(torch.randn(n, 18, 512, generator=torch.Generator().manual_seed(2)))


def test_interrupt_during_attach_leaves_no_hooks(unet, adapter, monkeypatch):
    from wplus.branch.layers import cross_attention_layers

    target = cross_attention_layers(unet)[1].to_out[0]
    real = type(target).register_forward_pre_hook

    def interrupted(self, *a, **k):
        if self is target:
            raise KeyboardInterrupt
        return real(self, *a, **k)

    monkeypatch.setattr(type(target), "register_forward_pre_hook", interrupted)
    with pytest.raises(KeyboardInterrupt):
        wplus.attach(unet, adapter)
    monkeypatch.undo()
    assert hook_count(unet) == 0
    assert not wplus.detach_all(unet)
    with wplus.attach(unet, adapter) as handle:  # and it attaches cleanly afterwards
        assert handle.attached and hook_count(unet) > 0
    assert hook_count(unet) == 0


@pytest.mark.parametrize("bad, message", [
    (lambda t: t.tolist(), "must be a torch tensor .* got a list"),
    (lambda t: t.numpy(), "must be a torch tensor .* got a ndarray"),
    (lambda t: t.index_fill(0, torch.tensor([0]), float("nan")), "finite"),
    (lambda t: t.index_fill(0, torch.tensor([1]), float("inf")), "finite"),
    (lambda t: torch.cat([t, t[:, :1]], dim=1), r"must be \(N,4,8\); got \(2, 5, 8\)"),
    (lambda t: t[:, :, :4], r"must be \(N,4,8\); got \(2, 4, 4\)"),
    (lambda t: t[:0], r"got \(0, 4, 8\)"),
    (lambda t: t.long(), "finite float values; got torch.int64"),
])
def test_bad_tokens_are_refused_when_set(unet, adapter, bad, message):
    with wplus.attach(unet, adapter) as handle:
        with pytest.raises(WPlusError, match=message):
            handle.tokens = bad(tokens(adapter, 2))
        with pytest.raises(WPlusError, match=message):
            handle.set_bank(bad(tokens(adapter, 2)))


@pytest.mark.parametrize("bad", ["0.6", None, float("nan"), float("inf"), -float("inf"), [0.5], True])
def test_bad_scale_is_refused_when_set(unet, adapter, bad):
    with wplus.attach(unet, adapter) as handle:
        with pytest.raises(WPlusError, match="scale λ must be a"):
            handle.scale = bad
        assert handle.scale == 1.0


def test_numeric_scales_are_accepted(unet, adapter):
    with wplus.attach(unet, adapter) as handle:
        for value, expected in ((np.float32(0.25), 0.25), (torch.tensor(0.5), 0.5), (1, 1.0), (0.0, 0.0)):
            handle.scale = value
            assert handle.scale == expected and isinstance(handle.scale, float)


@torch.no_grad()
def test_token_rows_that_do_not_fit_the_batch_are_refused_before_the_unet_runs(unet, adapter):
    calls = []
    hook = unet.conv_in.register_forward_pre_hook(lambda m, a: calls.append(1))
    try:
        with wplus.attach(unet, adapter) as handle:
            handle.tokens = tokens(adapter, 7)
            with pytest.raises(WPlusError, match="given for 7 rows but the UNet was called with 6"):
                run(unet, 6)
            assert calls == []  # refused in the UNet's pre-hook: nothing computed
            handle.tokens = tokens(adapter, 6)
            run(unet, 6)  # the right count works
            handle.reset_rows()
            run(unet, 3), run(unet, 3)  # and so do even chunks of it
    finally:
        hook.remove()
