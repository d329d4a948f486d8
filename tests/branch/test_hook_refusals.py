"""The Python API refuses clearly: `wplus.attach` with something that is no adapter or no UNet gives a
WPlusError (as a CLI user gets), and a failed identity change never leaves the previous identity
running silently. A tiny diffusers UNet with random weights: runs without ../shared on every stack."""
from __future__ import annotations

import pytest
import torch
from torch import nn

import wplus
from helpers.unet_fixtures import hook_count, tiny_diffusers_unet
from wplus.errors import AdapterFormatError, IncompatibleModelError, WPlusError


@pytest.fixture(scope="module")
def unet():
    return tiny_diffusers_unet()


@pytest.fixture()
def adapter(unet):
    torch.manual_seed(3)
    adapter = wplus.WPlusAdapter.from_unet(unet)
    with torch.no_grad():
        for p in adapter.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return adapter


def run(unet) -> torch.Tensor:
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        x, context = torch.randn(1, 4, 8, 8, generator=g), torch.randn(1, 3, 8, generator=g)
        return unet(x, torch.full((1,), 10), context).sample


def tokens(adapter, seed: int) -> torch.Tensor:
    with torch.no_grad():
        return adapter.project(torch.randn(1, 18, 512, generator=torch.Generator().manual_seed(seed)))


@pytest.mark.parametrize("bad", [torch.zeros(1, 4, 8, dtype=torch.int64), torch.full((1, 4, 8), float("nan")),
                                 torch.zeros(1, 3, 8), "tokens"])
def test_a_failed_set_after_a_good_identity_refuses_to_run(unet, adapter, bad):
    plain = run(unet)
    with wplus.attach(unet, adapter) as handle:
        handle.scale = 1.0
        handle.tokens = tokens(adapter, 1)
        first = run(unet)
        with pytest.raises(WPlusError, match="identity tokens must be"):
            handle.tokens = bad
        with pytest.raises(WPlusError, match=r"W\+: the last identity tokens could not be set \(WPlusError: "
                                             r"identity tokens must be .*previous identity is no longer used"):
            run(unet)
        handle.tokens = tokens(adapter, 2)  # a good set runs again, with the new identity
        second = run(unet)
        assert not torch.allclose(first, second)
        handle.tokens = tokens(adapter, 1)
        assert torch.equal(run(unet), first)
        with pytest.raises(WPlusError):
            handle.tokens = bad
        handle.tokens = None  # or none at all: the plain UNet, on purpose
        assert torch.equal(run(unet), plain) and not torch.equal(first, plain)


def test_a_failure_while_computing_the_tokens_drops_the_previous_identity(unet, adapter):
    with wplus.attach(unet, adapter) as handle:
        handle.scale = 1.0
        handle.set_bank(tokens(adapter, 1))
        run(unet)

        def projection_fails():
            raise RuntimeError("CUDA out of memory")

        with pytest.raises(RuntimeError, match="out of memory"):
            handle.set_bank_from(projection_fails)
        with pytest.raises(WPlusError, match=r"could not be set \(RuntimeError: CUDA out of memory\)"):
            run(unet)
        handle.set_bank_from(lambda: tokens(adapter, 1))
        assert run(unet).shape == (1, 4, 8, 8)


def test_pipeline_branch_set_identity_failure_is_not_silent(unet, adapter):
    """PipelineBranch.set_identity: a bad W+ code after a good one stops the branch from running stale."""
    from wplus.pipeline.branch import PipelineBranch

    branch = object.__new__(PipelineBranch)  # only the identity part: no pipeline needed
    branch.adapter, branch._handle, branch._index = adapter, wplus.attach(unet, adapter), {}
    try:
        branch._handle.scale = 1.0
        branch.set_identity(torch.randn(18, 512))
        run(unet)
        with pytest.raises(WPlusError, match="NaN or infinite"):
            branch.set_identity(torch.full((18, 512), float("nan")))
        with pytest.raises(WPlusError, match="could not be set"):
            run(unet)
    finally:
        branch._handle.remove()


def test_attach_refuses_what_is_no_adapter(unet, adapter, tmp_path):
    with pytest.raises(AdapterFormatError) as info:
        wplus.attach(unet, "not an adapter")
    assert str(info.value) == ("wplus.attach: no adapter file at 'not an adapter'. Pass a WPlusAdapter "
                               "(wplus.load_adapter(path)) or the path of an adapter file (our .safetensors or the "
                               "official wplus_adapter.bin).")
    with pytest.raises(WPlusError, match=r"the adapter must be a WPlusAdapter .* got a dict\.$"):
        wplus.attach(unet, {"w_proj": {}})
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(AdapterFormatError, match="notes.txt is not a readable W\\+ adapter"):
        wplus.attach(unet, tmp_path / "notes.txt")
    assert hook_count(unet) == 0


def test_attach_loads_an_adapter_file_given_by_path(unet, adapter, tmp_path):
    path = wplus.save_adapter(adapter, tmp_path / "a.safetensors")
    with wplus.attach(unet, str(path)) as handle:
        assert handle.attached and isinstance(handle.adapter, wplus.WPlusAdapter)
        assert torch.equal(handle.adapter.proj.norm.weight, adapter.proj.norm.weight)
    assert hook_count(unet) == 0


def test_attach_refuses_what_is_no_unet(adapter, unet):
    with pytest.raises(IncompatibleModelError) as info:
        wplus.attach(nn.Linear(4, 4), adapter)
    assert str(info.value) == (
        "Linear has no cross-attention layers in input/output (down/up) blocks: the W+ adapter works with the "
        "UNet of SD1.x, SD2.x and SDXL models (the ldm/sgm UNetModel of the WebUI and Forge, or a diffusers "
        "UNet2DConditionModel)")

    class Pipe(nn.Module):
        def __init__(self):
            super().__init__()
            self.unet = unet

    with pytest.raises(IncompatibleModelError, match=r"^Pipe \(a pipeline\? pass its \.unet\) has no"):
        wplus.attach(Pipe(), adapter)
    with pytest.raises(IncompatibleModelError, match="must be a UNet .* got a str"):
        wplus.attach("unet", adapter)
    assert hook_count(unet) == 0
