"""The option schema: each panel option defined once (the API keys, infotext keys, X/Y/Z
overrides, positional order and settings defaults all come from it) and one validation, so a bad
value gets the same message from every entry point. Also the catalog's labels/hints, the adapter
dropdown's choice, the offline causes and the image metadata without local paths."""
from __future__ import annotations

import pytest

from wplus.webui import api, catalog, infotext
from wplus.webui.options import (
    EDITS,
    FIXED_FIELDS,
    OPTION,
    OPTIONS,
    MixMode,
    OptionError,
    PanelArgs,
    Source,
    apply_xyz,
    check_edits,
    edit_option,
    from_values,
    to_values,
)
from wplus.webui.settings import SPECS, ExtensionSettings

NAMES = ["smile", "age"]
LIMITS = {"smile": (-10.0, 10.0), "age": (-5.0, 5.0)}


def test_positional_order_and_fields_are_the_schemas():
    # the order positional API clients rely on: it must not change
    assert FIXED_FIELDS == ("enabled", "source", "reference", "identity", "face_index", "seed", "source2",
                            "reference2", "identity2", "seed2", "mix_mode", "mix", "mix_coarse", "mix_middle",
                            "mix_fine", "scale", "start", "adapter",
                            # appended later (positions above unchanged): several photos, ADetailer's face pass
                            "more_references", "ad_enabled", "ad_scale", "ad_identities")
    assert [f for f in PanelArgs.__dataclass_fields__] == [*FIXED_FIELDS, "edits"]
    assert PanelArgs() == PanelArgs(**{o.name: o.default for o in OPTIONS})
    assert len({o.name for o in OPTIONS}) == len(OPTIONS)


def test_api_keys_and_infotext_keys_come_from_the_schema():
    assert api.KEYS == {"enabled", "reference", "identity", "seed", "face_index", "scale", "lambda", "start",
                        "edits", "mix_with", "mix", "adapter", "adetailer"}
    face_pass = {"Wplus ADetailer", "Wplus ADetailer lambda", "Wplus face identities"}  # written by the face pass
    assert set(infotext.ALL_KEYS) == {"Wplus identity", "Wplus identity hash", "Wplus face", "Wplus lambda",
                                      "Wplus start", "Wplus edits", "Wplus mix", "Wplus adapter",
                                      "Wplus adapter hash"} | face_pass
    schema_keys = {o.infotext_key for o in (*OPTIONS, EDITS) if o.infotext_key}
    assert schema_keys <= set(infotext.ALL_KEYS) and len(schema_keys) == 10
    info = infotext.GenerationInfo("photo", "h", 0.5, 10, "a.bin", "ah", face_index=1, edits={"smile": 1},
                                   mix_label="bob", mix_weights=0.3)
    assert set(infotext.params(info)) == set(infotext.ALL_KEYS) - face_pass


def test_enums_replace_index_lookups():
    args = api.parse({"seed": 3, "mix_with": {"identity": "bob"}, "mix": [0.1, 0.2, 0.3]})
    assert args.source is Source.SEED and args.source2 is Source.SAVED and args.mix_mode is MixMode.PER_GROUP
    assert Source.SAVED == "Saved identity" and str(MixMode.GLOBAL) == "Global"  # what the panel shows
    back = from_values(to_values(args, []), [])
    assert back.source is Source.SEED and back.mix_weights() == (0.1, 0.2, 0.3)
    with pytest.raises(OptionError, match=r"'source' must be one of \['Photo', 'Saved identity', 'Random \(seed\)'\]"):
        from_values(to_values(PanelArgs(source="Webcam"), []), [])


def _positional(name, value):
    values = to_values(PanelArgs(enabled=True, source2=Source.SAVED, identity2="bob"), NAMES)
    if name.startswith("edit:"):
        values[len(FIXED_FIELDS) + NAMES.index(name[5:])] = value
    else:
        values[FIXED_FIELDS.index(name)] = value
    return values


def _message(fn) -> str:
    with pytest.raises(OptionError) as info:
        fn()
    return str(info.value)


# (option, API dict, positional value, infotext entries, X/Y/Z override)
BAD = [
    ("scale", {"scale": 9}, 9.0, {"Wplus lambda": "9"}, 9.0),
    ("scale", {"lambda": "high"}, "high", {"Wplus lambda": "high"}, "high"),
    ("start", {"start": 120}, 120, {"Wplus start": "120"}, 120.0),
    ("face_index", {"face_index": -2}, -2.0, {"Wplus face": "-2"}, None),
    ("face_index", {"face_index": 1.5}, 1.5, {"Wplus face": "1.5"}, None),
    ("mix", {"mix_with": {"identity": "bob"}, "mix": 1.5}, 1.5, {"Wplus mix": "bob@1.5"}, None),
    ("mix_fine", {"mix_with": {"identity": "bob"}, "mix": [0, 0, -1]}, -1.0, {"Wplus mix": "bob@0/0/-1"}, None),
    ("seed", {"seed": -1}, -1, None, None),
    ("adapter", {"adapter": 3}, 3, None, 3),
    ("edit:smile", {"edits": {"smile": 20}}, 20.0, {"Wplus edits": "smile=20"}, 20.0),
]


@pytest.mark.parametrize("name,payload,value,text,axis", BAD, ids=[f"{b[0]}={b[2]}" for b in BAD])
def test_a_bad_value_gets_the_same_error_from_every_entry_point(name, payload, value, text, axis):
    messages = {
        "api": _message(lambda: api.parse(payload, LIMITS)),
        "positional": _message(lambda: from_values(_positional(name, value), NAMES, LIMITS)),
    }
    if text is not None:
        messages["infotext"] = _message(lambda: infotext.panel_from_params(
            {"Wplus identity": "alice", **text}, NAMES, LIMITS))
    if axis is not None:
        messages["xyz"] = _message(lambda: apply_xyz(PanelArgs(), {name: axis}, LIMITS))
    option = edit_option("smile", *LIMITS["smile"]) if name.startswith("edit:") else OPTION[name]
    assert len(set(messages.values())) == 1, messages
    message = messages["api"]
    assert message.startswith(f"W+ Adapter: '{option.key}' must be")
    if option.kind in ("int", "float") and isinstance(value, (int, float)) and float(value).is_integer():
        assert f"{option.minimum:g}" in message and "outside that range" in message


def test_values_at_the_limits_are_accepted_everywhere():
    for option in OPTIONS:
        if option.kind not in ("int", "float"):
            continue
        for limit in (option.minimum, option.maximum):
            if limit is not None:
                assert option.check(limit) == limit and option.from_text(f"{limit:g}") == limit
    assert check_edits({"smile": -10, "unknown": 50}, LIMITS) == {"smile": -10.0, "unknown": 50.0}
    with pytest.raises(OptionError, match="'edits.unknown' must be between -100 and 100"):
        check_edits({"unknown": 101}, LIMITS)
    assert OPTION["scale"].ui_range == (0.0, 2.0) and OPTION["scale"].maximum == 4.0  # slider narrower than λ's limit
    with pytest.raises(OptionError, match="finite"):
        OPTION["scale"].check(float("nan"))


def test_xyz_overrides_go_through_the_schema():
    xyz = apply_xyz(PanelArgs(), {"start": 40.0, "adapter": "b.bin", "edit:smile": 2.0}, LIMITS)
    assert (xyz.enabled, xyz.start, xyz.adapter, xyz.edits) == (True, 40.0, "b.bin", {"smile": 2.0})
    with pytest.raises(OptionError, match="unknown X/Y/Z override 'seed'"):  # an option without an axis
        apply_xyz(PanelArgs(), {"seed": 1})


def test_settings_defaults_are_written_once():
    by_key = {s.key: s.default for s in SPECS}
    plain = ExtensionSettings(models_dir=".")
    read = ExtensionSettings.from_getter(lambda key, default: default, default_models_dir=".")
    for settings in (plain, read):
        assert settings.face_backend == by_key["wplus_face_backend"]
        assert settings.cache_size == by_key["wplus_cache_size"]
        assert settings.unload_encoder is by_key["wplus_unload_encoder"]
        assert settings.auto_download is by_key["wplus_auto_download"]
    assert str(read.models_dir) == "."

    class Opts:
        wplus_models_dir = ""
        wplus_face_backend = "nonsense"

    from_opts = ExtensionSettings.from_opts(Opts(), ext_models=catalog.Path("/ext/models"))
    assert from_opts.models_dir == catalog.Path("/ext/models") and from_opts.face_backend == "auto"
    assert from_opts.adapter_dirs(catalog.Path("/ext/models")) == [catalog.Path("/ext/models")]


def test_download_blocker_names_the_cause(monkeypatch):
    from wplus.errors import MissingWeightsError
    from wplus.generation.resolve import name_download_cause

    for var in ("WPLUS_OFFLINE", "HF_HUB_OFFLINE"):
        monkeypatch.delenv(var, raising=False)
    on = ExtensionSettings(models_dir=".", auto_download=True)
    off = ExtensionSettings(models_dir=".", auto_download=False)
    assert on.download_blocker() == ""
    assert off.download_blocker() == "Settings > W+ Adapter > Download missing W+ weights automatically is off"
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert on.download_blocker() == "the environment variable HF_HUB_OFFLINE=1 is set"
    error = MissingWeightsError("Missing 'x': automatic download is disabled.")
    assert name_download_cause(error, on) is error  # the download module names the variable itself
    assert "Download missing W+ weights automatically is off" in str(name_download_cause(error, off))


def test_offline_message_names_the_variable(tmp_path, monkeypatch):
    from wplus.assets import registry
    from wplus.assets.download import ensure_file
    from wplus.errors import MissingWeightsError

    monkeypatch.delenv("WPLUS_OFFLINE", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(MissingWeightsError, match="disabled by the environment variable HF_HUB_OFFLINE=1"):
        ensure_file(registry.get("adapter"), tmp_path, allow_download=True)


def test_metadata_keeps_file_names_not_folders():
    text = ("W+ Adapter disabled: Missing 'wplus_adapter.bin': automatic download is disabled. Download it from "
            "https://github.com/csxmli2016/w-plus-adapter/releases/download/v1/wplus_adapter.bin and put it in "
            "the folder /home/ann/sd/extensions/sd-webui-wplus/models/ (the file must be "
            "/home/ann/sd/extensions/sd-webui-wplus/models/wplus_adapter.bin). Also 'C:\\Users\\ann\\my pics\\p.png', "
            "~/x/e4e.pt; a mix bob@0.2/0.5/0.8, light left/right.")
    out = infotext.without_local_paths(text)
    assert "/home/ann" not in out and "Users" not in out and "~/" not in out
    assert "https://github.com/csxmli2016/w-plus-adapter/releases/download/v1/wplus_adapter.bin" in out
    assert "the folder models/ (the file must be wplus_adapter.bin)" in out
    assert "'p.png'" in out and "e4e.pt;" in out and "bob@0.2/0.5/0.8, light left/right." in out


def test_direction_labels_hints_and_advanced_copies(tmp_path):
    infos = {d.name: d for d in catalog.direction_catalog(tmp_path)}  # nothing on disk: the registry's
    assert infos["smile"].source == "interfacegan" and not infos["smile"].advanced
    assert infos["latent/smile"].advanced and infos["latent/smile"].label == "Smile (latent)"
    assert infos["emotion_easy"].label == "Calm" and not infos["emotion_easy"].advanced
    assert infos["gender"].label == "Gender" and not infos["gender"].advanced  # one source only
    hint = infos["latent/smile"].hint
    assert "latent" in hint and "'latent/smile'" in hint and "W+ layers 0-7 of 0-17" in hint  # the paper's :8
    assert "all 18 W+ layers" in infos["smile"].hint  # InterFaceGAN
    gs = catalog.DirectionInfo("big_smile", "expression", -10, 10, 0.1, "ganspace", "big_smile", (4, 6))
    assert gs.label == "Big smile" and "GANSpace" in gs.hint and "W+ layers 4-5" in gs.hint
    assert catalog.group_label("age & gender") == "Age & gender"
    assert infos["latent/age"].axis_label == "latent/age"  # X/Y/Z keeps the name as typed


def test_adapter_dropdown_selects_what_exists(tmp_path):
    empty, other, both = (tmp_path / n for n in ("empty", "other", "both"))
    for d in (empty, other, both):
        d.mkdir()
    (other / "mine.safetensors").write_bytes(b"x")
    (both / "mine.safetensors").write_bytes(b"x")
    (both / catalog.DEFAULT_ADAPTER).write_bytes(b"x")
    state = catalog.adapter_choices([empty], missing_note="not on disk yet (will be downloaded)")
    assert state.value == catalog.DEFAULT_ADAPTER and "(will be downloaded)" in state.info
    assert catalog.adapter_choices([other], missing_note="n").value == "mine.safetensors"
    assert catalog.adapter_choices([both], missing_note="n") == catalog.AdapterChoices(
        [catalog.DEFAULT_ADAPTER, "mine.safetensors"], catalog.DEFAULT_ADAPTER, "")
    assert catalog.adapter_choices([both], "mine.safetensors").value == "mine.safetensors"
    assert catalog.adapter_choices([other], "gone.bin").value == "mine.safetensors"


def test_empty_source_is_reported_before_files():
    from wplus.errors import WPlusError
    from wplus.generation.resolve import check_sources

    with pytest.raises(WPlusError, match="no reference photo"):
        check_sources(PanelArgs(enabled=True))
    with pytest.raises(WPlusError, match="choose a saved identity"):
        check_sources(PanelArgs(enabled=True, source=Source.SAVED))
    with pytest.raises(WPlusError, match="no second reference photo"):
        check_sources(PanelArgs(enabled=True, source=Source.SEED, source2=Source.PHOTO))
    check_sources(PanelArgs(enabled=True, source=Source.SEED, source2=Source.SAVED, identity2="bob"))


def test_no_values_at_all_is_off_not_an_error():
    """A request the WebUI serves while it is still starting hands scripts no values: W+ stays off
    (found in the real A1111 and Forge); a short list is still an error."""
    from wplus.webui.options import OptionError, from_values

    assert from_values([], ["smile"]).enabled is False
    with pytest.raises(OptionError, match="passes"):
        from_values([True], ["smile"])
