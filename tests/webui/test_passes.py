"""The face-pass rules (wplus.webui.passes) and their API / infotext forms, without the WebUI."""
from __future__ import annotations

import pytest

from wplus.webui import api, infotext, passes
from wplus.webui.options import SAME_SCALE, PanelArgs, apply_xyz, from_values, to_values


def test_identity_per_face_rule():
    names = passes.parse_identity_list("alice, bob")
    assert names == passes.parse_identity_list("alice|bob") == passes.parse_identity_list(" alice ;bob ")
    assert [passes.identity_for_face(names, j) for j in range(3)] == ["alice", "bob", None]  # beyond: no W+
    assert passes.identity_for_face([], 5) == passes.PANEL_IDENTITY  # empty: every face the panel's identity
    assert [passes.identity_for_face(["*", "-", "bob"], j) for j in range(3)] == [passes.PANEL_IDENTITY, None, "bob"]


def test_face_number_from_adetailers_seed_offset():
    assert passes.face_number(inner_seed=105, outer_seed=103, passes_before=7, same_seed=False) == 2
    assert passes.face_number(103, 103, 4, same_seed=True) == 4  # same seed for every tab: count passes
    assert passes.face_number(None, 103, 1, False) == 1 and passes.face_number(5000, 1, 3, False) == 3


def test_make_eligible_adds_our_stem_for_one_generation_only():
    data = {}
    undo = passes.make_eligible(data)
    assert data["ad_script_names"] == passes.AD_DEFAULT_SCRIPT_NAMES + ",wplus_script"
    undo()
    assert "ad_script_names" not in data
    data = {"ad_script_names": "wildcards"}
    undo = passes.make_eligible(data)
    assert data["ad_script_names"] == "wildcards,wplus_script"
    undo()
    assert data == {"ad_script_names": "wildcards"}
    assert passes.make_eligible({"ad_script_names": "x, wplus_script"}) is None  # listed by the user
    assert passes.make_eligible({"ad_only_selected_scripts": False}) is None  # ADetailer runs every script
    data = {}
    undo = passes.make_eligible(data)
    data["ad_script_names"] = "mine"  # changed meanwhile (Settings saved): keep the user's value
    undo()
    assert data == {"ad_script_names": "mine"}


def test_api_adetailer_and_several_photos():
    args = api.parse({"identity": "alice", "adetailer": {"scale": 0.5, "identities": ["alice", "bob"]}})
    assert (args.ad_enabled, args.ad_scale, args.ad_identities) == (True, 0.5, "alice, bob")
    assert args.face_pass_scale() == 0.5
    default = api.parse({"identity": "alice", "scale": 0.8})
    assert default.ad_enabled and default.ad_scale == SAME_SCALE and default.face_pass_scale() == 0.8
    assert not api.parse({"identity": "alice", "adetailer": False}).ad_enabled
    photos = api.parse({"reference": ["aGVsbG8=", "d29ybGQ="]})
    assert photos.reference == ["aGVsbG8=", "d29ybGQ="]
    for bad, msg in (({"adetailer": {"scale": 9}}, "between -1 and 4"), ({"adetailer": {"faces": 1}}, "unknown key"),
                     ({"adetailer": {"identities": [1]}}, "or a list of names"),
                     ({"adetailer": "yes"}, "true/false or a dict"), ({"reference": []}, "list of them")):
        with pytest.raises(api.ApiArgsError, match=msg):
            api.parse({"identity": "alice", **bad} if "reference" not in bad else bad)


def test_panel_values_infotext_and_xyz_carry_the_face_pass():
    args = PanelArgs(enabled=True, source="Saved identity", identity="alice", ad_scale=0.6, ad_identities="bob, alice")
    assert from_values(to_values(args, []), []) == args
    pasted = infotext.panel_from_params({infotext.K_LAMBDA: "1", infotext.K_AD_LAMBDA: "0.6",
                                         infotext.K_AD_IDENTITIES: "bob; alice"}, [])
    assert (pasted.ad_enabled, pasted.ad_scale, pasted.ad_identities) == (True, 0.6, "bob, alice")
    same = infotext.panel_from_params({infotext.K_LAMBDA: "0.8", infotext.K_AD_LAMBDA: "0.8"}, [])
    assert same.ad_scale == SAME_SCALE  # written as the panel's λ: keeps following it
    assert not infotext.panel_from_params({infotext.K_LAMBDA: "1", infotext.K_AD: "off"}, []).ad_enabled
    cell = apply_xyz(PanelArgs(), {"ad_scale": 0.3, "ad_identities": "alice|bob"})
    assert cell.enabled and cell.ad_scale == 0.3 and passes.parse_identity_list(cell.ad_identities) == ["alice", "bob"]
