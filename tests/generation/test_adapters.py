"""One adapter choice rule for the panel, the API, the command line and the nodes."""
from __future__ import annotations

import pytest

from wplus.errors import MissingWeightsError
from wplus.generation.adapters import DEFAULT_ADAPTER, choose_adapter, resolve_adapter_path
from wplus.generation.settings import Settings


def test_no_name_takes_the_default_when_on_disk_else_the_file_that_is(tmp_path, monkeypatch):
    monkeypatch.delenv("WPLUS_OFFLINE", raising=False)
    settings = Settings(tmp_path, auto_download=False, downloads_off="downloads are off in this test")
    (tmp_path / "my_adapter.safetensors").write_bytes(b"x")
    (tmp_path / "e4e_ffhq_encode.pt").write_bytes(b"x")  # not an adapter, though its suffix could be
    assert choose_adapter("", [tmp_path]) == "my_adapter.safetensors"
    assert resolve_adapter_path("", settings) == tmp_path / "my_adapter.safetensors"  # the API with no key
    (tmp_path / DEFAULT_ADAPTER).write_bytes(b"x")
    assert resolve_adapter_path("", settings) == tmp_path / DEFAULT_ADAPTER
    assert resolve_adapter_path("my_adapter.safetensors", settings) == tmp_path / "my_adapter.safetensors"


def test_names_not_paths_and_a_missing_default_says_why(tmp_path, monkeypatch):
    monkeypatch.delenv("WPLUS_OFFLINE", raising=False)
    settings = Settings(tmp_path / "models", auto_download=False, downloads_off="downloads are off in this test")
    outside = tmp_path / "outside.safetensors"
    outside.write_bytes(b"x")
    with pytest.raises(MissingWeightsError, match="'outside.safetensors' not found"):
        resolve_adapter_path(str(outside), settings)  # a path is a name: only its file name is looked for
    with pytest.raises(MissingWeightsError, match="downloads are off in this test"):
        resolve_adapter_path("", settings)


def test_saved_identities_are_names_for_the_webui_and_paths_for_the_cli(tmp_path):
    """The WebUI, its API and the nodes resolve names in the identities folder only; a path is
    refused with a message that does not say whether it exists. The command line takes paths."""
    import torch

    from wplus.errors import WPlusError
    from wplus.generation.options import Source
    from wplus.generation.request import Request
    from wplus.generation.resolve import IdentityResolver
    from wplus.identity.files import Identity, save_identity

    code = torch.randn(18, 512)
    outside = save_identity(Identity(wplus=code, name="eve"), "eve", folder=tmp_path / "elsewhere")
    settings = Settings(tmp_path / "models", auto_download=False)
    request = Request(enabled=True, source=Source.SAVED, identity=str(outside))
    messages = []
    for name in (str(outside), str(tmp_path / "no-such.safetensors"), "../elsewhere/eve"):
        with pytest.raises(WPlusError) as info:
            IdentityResolver(settings).resolve(Request(enabled=True, source=Source.SAVED, identity=name))
        messages.append(str(info.value))
    assert all("not accepted" in m and "not found" not in m for m in messages)  # existing or not: alike
    resolved = IdentityResolver(settings, allow_paths=True).resolve(request)
    assert torch.equal(resolved.wplus[0], code) and resolved.info.identity_label == "eve"
