"""Edit directions on the paper's own files, against formulas computed by hand here."""
from __future__ import annotations

import csv

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from conftest import OFFICIAL  # noqa: E402
from wplus.errors import DirectionError, MissingWeightsError
from wplus.stylegan.directions import (
    DirectionLibrary,
    apply_edits,
    layer_alphas,
    mix,
    parse_edits,
    read_ganspace_configs,
)

W_DIR = OFFICIAL / "w_direction"
pytestmark = pytest.mark.needs_shared


@pytest.fixture(scope="module")
def lib() -> DirectionLibrary:
    return DirectionLibrary.from_folders(W_DIR)


@pytest.fixture(scope="module")
def w1() -> torch.Tensor:
    """A real W+ from the paper's e4e (saved on CUDA with requires_grad)."""
    return torch.load(OFFICIAL / "test_data/e4e/1.pth", map_location="cpu", weights_only=True).detach()


@pytest.fixture(scope="module")
def pca() -> dict:
    return torch.load(W_DIR / "gan_space/ffhq_pca.pt", map_location="cpu", weights_only=True)


def test_library_lists_all_paper_directions_with_groups(lib):
    n_latent = len(list((W_DIR / "latent_directions").glob("*.npy")))
    n_csv = len(read_ganspace_configs(W_DIR / "gan_space/ganspace_configs.csv"))
    assert len(lib) == n_latent + 2 + n_csv == 21 + 2 + 42
    assert lib.get("smile").source == "interfacegan"  # the paper's demo default
    assert lib.get("latent/smile").source == "latent"
    assert lib.get("ganspace/smile").source == "ganspace"
    assert lib.get("lipstick").layers == (10, 11) and lib.get("lipstick").component == 34
    assert lib.get("age").group == "age & gender"
    assert lib.get("angle_horizontal").group == "pose"
    assert lib.get("big_smile").group == "expression"
    for d in lib:
        assert d.minimum < d.default == 0.0 < d.maximum
        assert d.minimum <= d.suggested <= d.maximum
        assert d.group in ("expression", "age & gender", "pose", "shape", "hair", "appearance", "lighting", "other")


def test_latent_direction_changes_rows_0_to_7_only_like_the_paper(lib, w1):
    # test_demo.ipynb: id_noise[:, :8] = (id_noise0 + s * direction)[:, :8]
    d = np.load(W_DIR / "latent_directions/glasses.npy")
    expected = w1.double().clone()
    expected[:, :8] = (w1.double() + 1.5 * torch.from_numpy(d))[:, :8]
    out = apply_edits(w1, {"glasses": 1.5}, lib)
    assert out.dtype == torch.float32 and out.shape == (1, 18, 512)
    torch.testing.assert_close(out, expected.float(), rtol=0, atol=1e-6)
    assert torch.equal(out[:, 8:], w1[:, 8:])  # rows 8-17 untouched, bit for bit
    assert (out[:, :8] != w1[:, :8]).any(dim=-1).all()  # every row 0-7 moves
    # a hand-picked coordinate, written out
    assert out[0, 7, 100].item() == pytest.approx(w1[0, 7, 100].item() + 1.5 * d[7, 100], abs=1e-6)
    assert np.abs(d[8:]).max() > 0  # the file has content there: it is the paper's rule that drops it
    for name in lib.names():
        direction = lib.get(name)
        if direction.source == "latent":
            assert direction.layers == (0, 8) and direction.layers_text == "layers 0-7"
        elif direction.source == "interfacegan":
            assert direction.layers == (0, 18) and direction.layers_text == "all 18 layers"


def test_interfacegan_is_broadcast_to_18_layers(lib, w1):
    d = torch.load(W_DIR / "interfacegan_directions/age.pt", map_location="cpu", weights_only=True)
    assert d.shape == (1, 512)
    out = apply_edits(w1[0], {"age": -2.0}, lib)
    assert out.shape == (18, 512)
    for layer in (0, 9, 17):
        torch.testing.assert_close(out[layer], w1[0, layer] - 2.0 * d[0], rtol=0, atol=1e-6)


def test_ganspace_sets_component_coordinate_like_the_paper(lib, w1, pca):
    rows = read_ganspace_configs(W_DIR / "gan_space/ganspace_configs.csv")
    name, comp, first, end, _ = next(r for r in rows if r[0] == "eye_openness")
    assert (comp, first, end) == (54, 7, 8)
    strength = 7.0
    # by hand, e4e/paper: coord measured on layer 0, delta = (s - coord) * comp * std on [first, end)
    v = pca["comp"][comp].reshape(512).double()
    std = pca["std"][comp].double()
    coord = ((w1[0, 0].double() - pca["mean"].reshape(512).double()) @ v) / std
    expected = w1[0].double().clone()
    expected[first:end] += (strength - coord) * v * std
    out = apply_edits(w1, {"eye_openness": strength}, lib)[0]
    torch.testing.assert_close(out.double(), expected, rtol=0, atol=2e-5)
    assert torch.equal(out[:first], w1[0, :first]) and torch.equal(out[end:], w1[0, end:])
    # the shift is (strength - coordinate of layer 0): an edit whose range starts at layer 0 sets it exactly
    def coord_of(layer):
        return (((layer.double() - pca["mean"].reshape(512).double()) @ v) / std).item()
    assert coord_of(out[first]) - coord_of(w1[0, first]) == pytest.approx(strength - coord.item(), abs=1e-3)
    roundness = lib.get("face_roundness")
    assert roundness.layers[0] == 0
    out2 = apply_edits(w1, {"face_roundness": -3.0}, lib)[0]
    v2, std2 = pca["comp"][roundness.component].reshape(512).double(), pca["std"][roundness.component].double()
    coord = ((out2[0].double() - pca["mean"].reshape(512).double()) @ v2) / std2
    assert coord.item() == pytest.approx(-3.0, abs=1e-4)


def test_ganspace_on_a_synthetic_pca_by_hand(tmp_path):
    """Two-number check: mean 0, comp e_0, std 2; w[0,0]=3 -> coord 1.5; strength 4 adds 5 at dim 0."""
    root = tmp_path / "w_direction"
    (root / "gan_space").mkdir(parents=True)
    comp = torch.zeros(2, 1, 512)
    comp[0, 0, 0] = 1.0
    comp[1, 0, 1] = 1.0
    torch.save({"mean": torch.zeros(1, 512), "comp": comp, "std": torch.tensor([2.0, 1.0])},
               root / "gan_space/ffhq_pca.pt")
    (root / "gan_space/ganspace_configs.csv").write_text("thing\t0\t2\t4\t10\n")
    lib = DirectionLibrary.from_folders(root)
    w = torch.zeros(18, 512)
    w[0, 0] = 3.0
    out = apply_edits(w, {"thing": 4.0}, lib)
    expected = w.clone()
    expected[2:4, 0] = 5.0  # (4 - 3/2) * 1 * 2
    assert torch.equal(out, expected)


def test_edits_compose_order_free_and_zero_is_no_edit(lib, w1):
    a = apply_edits(w1, {"smile": 1.0, "gender": -0.5, "lipstick": 12.0}, lib)
    b = apply_edits(w1, {"lipstick": 12.0, "gender": -0.5, "smile": 1.0}, lib)
    assert torch.equal(a, b)
    both = apply_edits(w1, {"smile": 1.0, "gender": -0.5}, lib)
    step = apply_edits(apply_edits(w1, {"smile": 1.0}, lib), {"gender": -0.5}, lib)
    torch.testing.assert_close(both, step, rtol=0, atol=1e-6)
    same = apply_edits(w1, {"smile": 0.0, "lipstick": 0.0}, lib)
    assert torch.equal(same, w1) and same is not w1
    batch = torch.cat([w1, w1 * 0.5])
    out = apply_edits(batch, {"lipstick": 12.0}, lib)
    torch.testing.assert_close(out[1:], apply_edits(w1 * 0.5, {"lipstick": 12.0}, lib))


def test_edit_keeps_dtype_and_bad_input_is_clear(lib, w1):
    half = apply_edits(w1.half(), {"smile": 2.0}, lib)
    assert half.dtype == torch.float16
    with pytest.raises(DirectionError, match="unknown edit direction 'smiel'"):
        apply_edits(w1, {"smiel": 1.0}, lib)
    with pytest.raises(DirectionError, match=r"\(18,512\)"):
        apply_edits(torch.zeros(14, 512), {"smile": 1.0}, lib)
    with pytest.raises(DirectionError, match="finite"):
        apply_edits(w1, {"smile": float("nan")}, lib)
    with pytest.raises(MissingWeightsError, match="does not exist"):
        DirectionLibrary.from_folders("/nonexistent/w_direction")


def test_parse_edits():
    assert parse_edits(["smile=2", "age=-1", "a=0.5,b=-3"]) == {"smile": 2.0, "age": -1.0, "a": 0.5, "b": -3.0}
    with pytest.raises(DirectionError, match="NAME=STRENGTH"):
        parse_edits(["smile"])
    with pytest.raises(DirectionError, match="NAME=STRENGTH"):
        parse_edits(["smile=big"])


def test_user_folder_directions(tmp_path):
    user = tmp_path / "user"
    user.mkdir()
    rng = np.random.default_rng(0)
    np.save(user / "pout.npy", rng.standard_normal((18, 512)))
    torch.save(torch.ones(1, 512), user / "brighter.pt")
    save_file({"dir": torch.full((1, 18, 512), 0.5)}, str(user / "freckles.safetensors"),
              metadata={"group": "appearance", "min": "-3", "max": "3", "suggested": "1"})
    save_file({"dir": torch.ones(512)}, str(user / "jaw.safetensors"), metadata={"layers": "2:5"})
    np.save(user / "bad.npy", np.zeros((3, 3)))
    with pytest.raises(DirectionError, match=r"bad\.npy.*shape"):
        DirectionLibrary.from_folders(W_DIR, user)
    (user / "bad.npy").unlink()
    lib = DirectionLibrary.from_folders(W_DIR, user)
    fr = lib.get("freckles")
    assert (fr.group, fr.minimum, fr.maximum, fr.suggested, fr.source) == ("appearance", -3.0, 3.0, 1.0, "user")
    w = torch.zeros(2, 18, 512)
    out = apply_edits(w, {"pout": 2.0, "brighter": -1.0, "freckles": 1.0}, lib)
    expected = (2.0 * torch.from_numpy(np.load(user / "pout.npy")) - 1.0 + 0.5).float()
    torch.testing.assert_close(out, expected.expand(2, 18, 512), rtol=0, atol=1e-6)
    assert lib.get("pout").group == "other" and lib.get("pout").layers == (0, 18)
    # a file's own layer range (metadata "FIRST:END"): only rows 2-4 move
    jaw = lib.get("jaw")
    assert jaw.layers == (2, 5) and jaw.layers_text == "layers 2-4"
    out = apply_edits(w, {"jaw": 3.0}, lib)
    assert torch.equal(out[:, 2:5], torch.full((2, 3, 512), 3.0))
    assert not out[:, :2].any() and not out[:, 5:].any()
    for bad in ("0-8", "5:5", "0:19", "x:3"):
        save_file({"dir": torch.ones(512)}, str(user / "jaw.safetensors"), metadata={"layers": bad})
        with pytest.raises(DirectionError, match="FIRST:END"):
            DirectionLibrary.from_folders(W_DIR, user)


def test_mix_endpoints_exact_and_layer_groups(w1):
    a = w1[0]
    b = torch.load(OFFICIAL / "test_data/e4e/2.pth", map_location="cpu", weights_only=True).detach()[0]
    assert torch.equal(mix(a, b, 0.0), a) and torch.equal(mix(a, b, 1.0), b)
    half = mix(a, b, 0.25)
    torch.testing.assert_close(half, 0.75 * a + 0.25 * b)
    coarse = mix(a, b, {"coarse": 1.0})  # StyleGAN style mixing: B's coarse layers, A's others
    assert torch.equal(coarse[:4], b[:4]) and torch.equal(coarse[4:], a[4:])
    mid = mix(a, b, {"middle": 0.5, "fine": 1.0})
    assert torch.equal(mid[:4], a[:4]) and torch.equal(mid[8:], b[8:])
    torch.testing.assert_close(mid[4:8], 0.5 * (a[4:8] + b[4:8]))
    batch = mix(a[None].repeat(3, 1, 1), b, 1.0)
    assert batch.shape == (3, 18, 512) and torch.equal(batch[2], b)
    assert layer_alphas({"fine": 1}) == [0.0] * 8 + [1.0] * 10
    with pytest.raises(DirectionError, match="coarse"):
        mix(a, b, {"hair": 1.0})
    with pytest.raises(DirectionError, match="18 weights"):
        mix(a, b, [0.5] * 5)


def test_ganspace_csv_is_what_the_paper_reads():
    rows = list(csv.reader(open(W_DIR / "gan_space/ganspace_configs.csv"), delimiter="\t"))
    parsed = read_ganspace_configs(W_DIR / "gan_space/ganspace_configs.csv")
    assert [r[0] for r in parsed] == [r[0] for r in rows if r]
    assert parsed[0] == ("frizzy_hair", 31, 2, 6, 20.0)


def test_a_direction_with_nan_names_its_file_and_the_next_step(tmp_path):
    import numpy as np

    from wplus.stylegan.directions import DirectionError, DirectionLibrary

    np.save(tmp_path / "bad.npy", np.full((18, 512), np.nan))
    with pytest.raises(DirectionError, match=r"bad\.npy.*NaN or infinite.*download --what directions"):
        DirectionLibrary.from_folders(None, tmp_path)
