"""A corpus of malformed model files, written at test time (nothing big is committed).

Each maker takes a folder and returns the path of one crafted file: adapter files, e4e checkpoints
and identity files broken in the ways that real downloads, other tools and hostile files break them.
`ADAPTER_CASES`, `E4E_CASES` and `IDENTITY_CASES` map a case name to (maker, regex the error must match).
"""
from __future__ import annotations

import json
import pickle
import struct
import zipfile
from pathlib import Path
from typing import Callable

import torch
from safetensors.torch import save_file

from helpers.e4e_fill import filled_state_dict, manifest_of
from wplus.branch.adapter import WPlusAdapter
from wplus.branch.layers import LayerSpec
from wplus.stylegan.encoder import Encoder4Editing, EncoderConfig
from wplus.stylegan.generator import Generator, GeneratorConfig

LONG_NAME = "x" * 5000
TINY_GEN = GeneratorConfig(size=32, style_dim=32, n_mlp=2, channels=(32, 32, 16, 16))
TINY_ENC = EncoderConfig(style_count=8, style_dim=32, widths=(16, 24, 32, 48), units=(1, 2, 1, 1))


# --- building blocks -------------------------------------------------------------------------


def tiny_adapter(layers: int = 2, inner: int = 16, context: int = 8) -> WPlusAdapter:
    torch.manual_seed(0)
    adapter = WPlusAdapter([LayerSpec(inner, context, 2)] * layers, context)
    for p in adapter.parameters():
        torch.nn.init.normal_(p, std=0.02)
    return adapter


def official_state() -> dict:
    """{"w_proj": {...}, "wplus_adapter": {...}} of the tiny adapter, the release layout."""
    return {k: dict(v) for k, v in tiny_adapter().official_state_dict().items()}


def safetensors_state() -> tuple[dict, dict]:
    """(tensors, metadata) of the tiny adapter in our safetensors layout."""
    adapter = tiny_adapter()
    tensors = {f"proj.{k}": v.contiguous() for k, v in adapter.proj.state_dict().items()}
    tensors.update({f"layers.{k}": v.contiguous() for k, v in adapter.layers.state_dict().items()})
    meta = {"format": "wplus-adapter", "format_version": "1", "arch": "custom", "context_dim": "8",
            "num_layers": "2", "num_tokens": "4"}
    return tensors, meta


def raw_safetensors(path: Path, header: dict, payload: bytes) -> Path:
    """A safetensors file written byte by byte (for dtypes no library will write)."""
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    path.write_bytes(struct.pack("<Q", len(text)) + text + payload)
    return path


def corrupt_crc(path: Path) -> Path:
    """Flip one byte inside the first tensor record of a torch zip archive (its CRC no longer fits)."""
    data = bytearray(path.read_bytes())
    with zipfile.ZipFile(path) as archive:
        info = next(i for i in archive.infolist() if "/data/" in i.filename)
    name_len, extra_len = struct.unpack("<HH", data[info.header_offset + 26: info.header_offset + 30])
    data[info.header_offset + 30 + name_len + extra_len] ^= 0xFF
    path.write_bytes(bytes(data))
    return path


def code_pickle(path: Path, payload: dict) -> Path:
    """A pickle that needs more than weights to load (it names a Python callable)."""
    with open(path, "wb") as f:
        pickle.dump({**payload, "callback": print}, f, protocol=2)
    return path


def tiny_e4e_checkpoint() -> dict:
    m = manifest_of({"encoder": Encoder4Editing(TINY_ENC), "decoder": Generator(TINY_GEN)})
    return {"state_dict": filled_state_dict(m["state_dict"], m["prelu_keys"]),
            "latent_avg": 0.1 * torch.randn(8, 32, generator=torch.Generator().manual_seed(1)),
            "opts": {"encoder_type": "Encoder4Editing", "stylegan_size": 32}}


def _saved(path: Path, obj) -> Path:
    torch.save(obj, path)
    return path


# --- adapter files ---------------------------------------------------------------------------


def _official_with(change: Callable[[dict], None], name: str = "adapter.bin"):
    def make(folder: Path) -> Path:
        state = official_state()
        change(state)
        return _saved(folder / name, state)
    return make


def _ours_with(change: Callable[[dict], None]):
    def make(folder: Path) -> Path:
        tensors, meta = safetensors_state()
        change(tensors)
        path = folder / "adapter.safetensors"
        save_file(tensors, str(path), metadata=meta)
        return path
    return make


def _set(part: str, key, value):
    def change(state: dict) -> None:
        state[part][key] = value
    return change


def _all(dtype):
    def change(state: dict) -> None:
        for part in state.values():
            for k, v in part.items():
                part[k] = (v * 100).to(dtype)
    return change


def _nan(state: dict) -> None:
    state["wplus_adapter"]["1.to_k_wplus.weight"][0, 0] = float("nan")


def _rekey(new_key):
    def change(state: dict) -> None:
        state["wplus_adapter"][new_key] = state["wplus_adapter"].pop("1.to_q_wplus.weight")
    return change


def _adapter_f6(folder: Path) -> Path:
    tensors, meta = safetensors_state()
    header, payload, offset = {"__metadata__": meta}, b"", 0
    for key, t in tensors.items():
        raw = t.float().numpy().tobytes()
        header[key] = {"dtype": "F32", "shape": list(t.shape), "data_offsets": [offset, offset + len(raw)]}
        payload += raw
        offset += len(raw)
    key = "layers.0.to_q_wplus.weight"
    n = tensors[key].numel() * 3 // 4  # 6 bits per value
    header[key] = {"dtype": "F6_E2M3", "shape": list(tensors[key].shape), "data_offsets": [offset, offset + n]}
    return raw_safetensors(folder / "adapter.safetensors", header, payload + b"\0" * n)


def _adapter_bad_crc(folder: Path) -> Path:
    return corrupt_crc(_saved(folder / "adapter.bin", official_state()))


def _adapter_code(folder: Path) -> Path:
    return code_pickle(folder / "adapter.bin", official_state())


def _adapter_long_path(folder: Path) -> Path:
    return folder / LONG_NAME / "adapter.bin"


NOT_PLAIN = r"refused: it is not plain weights"

ADAPTER_CASES: dict[str, tuple[Callable[[Path], Path], str]] = {
    "nan_weight_bin": (_official_with(_nan), r"'wplus_adapter.1.to_k_wplus.weight' holds NaN"),
    "nan_weight_safetensors": (_ours_with(lambda t: t["proj.norm.bias"].fill_(float("inf"))),
                               r"'proj.norm.bias' holds NaN or infinite"),
    "all_int64": (_official_with(_all(torch.int64)), r"holds int64 values"),
    "all_bool": (_ours_with(lambda t: t.update({k: v > 0 for k, v in t.items()})), r"holds bool values"),
    "fp8": (_official_with(_all(torch.float8_e4m3fn)), r"holds float8_e4m3fn values"),
    "bad_crc": (_adapter_bad_crc, r"damaged: the checksum"),
    "stride0_view_40000": (_official_with(_set("wplus_adapter", "1.to_q_wplus.weight",
                                               torch.zeros(1).expand(40000, 40000))),
                           r"claims shape \(40000, 40000\).*not plain weights"),
    "int_key": (_official_with(_rekey(1)), r"key 1 of wplus_adapter is a int"),
    "tuple_key": (_official_with(_rekey(("1", "to_q"))), r"key \('1', 'to_q'\) of wplus_adapter is a tuple"),
    "zero_d_tensor": (_official_with(_set("wplus_adapter", "1.to_q_wplus.weight", torch.tensor(0.5))),
                      r"layer 0 has shapes q\(\)"),
    "zero_d_norm": (_official_with(_set("w_proj", "norm.weight", torch.tensor(1.0))),
                    r"norm.weight has shape \(\)"),
    "list_for_tensor": (_official_with(_set("w_proj", "norm.weight", [1.0] * 8)),
                        r"'w_proj.norm.weight' should be a tensor but is a list"),
    "string_for_tensor": (_official_with(_set("wplus_adapter", "1.to_v_wplus.weight", "weights")),
                          r"should be a tensor but is a str"),
    "none_for_tensor": (_official_with(_set("wplus_adapter", "1.to_v_wplus.weight", None)),
                        r"should be a tensor but is a NoneType"),
    "wplus_adapter_list": (_official_with(lambda s: s.update(wplus_adapter=list(s["wplus_adapter"].values()))),
                           r"wplus_adapter should be a dict of tensors but is a list"),
    "w_proj_tensor": (_official_with(lambda s: s.update(w_proj=torch.zeros(8))),
                      r"w_proj should be a dict of tensors but is a Tensor"),
    "meta_device": (_official_with(_set("w_proj", "norm.bias", torch.empty(8, device="meta"))),
                    r"'w_proj.norm.bias' is stored on the 'meta' device"),
    "sparse": (_official_with(_set("w_proj", "norm.bias", torch.ones(8).to_sparse())),
               r"'w_proj.norm.bias' is a sparse_coo tensor"),
    "wrong_projection_width": (_official_with(_set("w_proj", "proj_3.weight", torch.zeros(8, 2048))),
                               r"projection 'proj_3.weight' has shape \(8, 2048\), expected \(8, 3072\)"),
    "unknown_dtype_f6": (_adapter_f6, r"F6_E2M3|tensor type|not a readable safetensors"),
    "code_pickle": (_adapter_code, NOT_PLAIN),
    "long_path": (_adapter_long_path, r"path is too long"),
}


# --- e4e checkpoints -------------------------------------------------------------------------


def _e4e_with(change: Callable[[dict], None], name: str = "e4e.pt"):
    def make(folder: Path) -> Path:
        ckpt = tiny_e4e_checkpoint()
        change(ckpt)
        return _saved(folder / name, ckpt)
    return make


def _e4e_weight(value_of: Callable[[torch.Tensor], torch.Tensor], key: str = "encoder.styles.0.linear.weight"):
    def change(ckpt: dict) -> None:
        ckpt["state_dict"][key] = value_of(ckpt["state_dict"][key])
    return change


def _e4e_f6(folder: Path) -> Path:
    ckpt = tiny_e4e_checkpoint()
    tensors = {**ckpt["state_dict"], "latent_avg": ckpt["latent_avg"]}
    header, payload, offset = {"__metadata__": {"format": "wplus-e4e", "version": "1"}}, b"", 0
    for key, t in tensors.items():
        dtype = "I64" if t.dtype == torch.int64 else "F32"
        raw = t.numpy().tobytes() if dtype == "I64" else t.float().numpy().tobytes()
        n = len(raw) * 3 // 16 if key == "encoder.styles.0.linear.weight" else len(raw)
        header[key] = {"dtype": "F6_E2M3" if n != len(raw) else dtype, "shape": list(t.shape),
                       "data_offsets": [offset, offset + n]}
        payload += raw[:n]
        offset += n
    return raw_safetensors(folder / "e4e.safetensors", header, payload)


def _e4e_opts_not_dict(folder: Path) -> Path:
    from wplus.stylegan.e4e_files import save_e4e_safetensors

    path = save_e4e_safetensors(tiny_e4e_checkpoint(), folder / "e4e.safetensors")
    tensors, meta = {}, {}
    from safetensors import safe_open
    with safe_open(str(path), framework="pt") as f:
        meta = dict(f.metadata())
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    save_file(tensors, str(path), metadata={**meta, "opts": json.dumps([1, 2, 3])})
    return path


E4E_CASES: dict[str, tuple[Callable[[Path], Path], str]] = {
    "nan_latent_avg": (_e4e_with(lambda c: c["latent_avg"].__setitem__((0, 0), float("nan"))),
                       r"'latent_avg' holds NaN"),
    "empty_latent_avg": (_e4e_with(lambda c: c.update(latent_avg=torch.zeros(0))),
                         r"latent_avg has shape \(0,\), expected \(8, 32\)"),
    "int64_weights": (_e4e_with(_e4e_weight(lambda t: (t * 100).long())),
                      r"'encoder.styles.0.linear.weight' holds int64 values"),
    "meta_device": (_e4e_with(_e4e_weight(lambda t: torch.empty(t.shape, device="meta"))),
                    r"'encoder.styles.0.linear.weight' is stored on the 'meta' device"),
    "unknown_dtype_f6": (_e4e_f6, r"F6_E2M3|tensor type|not a readable safetensors"),
    "bad_crc": (lambda d: corrupt_crc(_saved(d / "e4e.pt", tiny_e4e_checkpoint())), r"damaged: the checksum"),
    "code_pickle": (lambda d: code_pickle(d / "e4e.pt", tiny_e4e_checkpoint()), NOT_PLAIN),
    "long_path": (lambda d: d / LONG_NAME / "e4e.pt", r"path is too long"),
}
#: Files that open but whose weights are refused when first used (fetching a part).
E4E_USE_CASES: dict[str, tuple[Callable[[Path], Path], str]] = {
    "nan_weight": (_e4e_with(_e4e_weight(lambda t: t.index_fill(0, torch.tensor([1]), float("inf")))),
                   r"'encoder.styles.0.linear.weight' holds NaN or infinite"),
    "stride0_view": (_e4e_with(_e4e_weight(lambda t: torch.zeros(1).expand(t.shape))),
                     r"'encoder.styles.0.linear.weight' claims shape"),
}
#: Files that are odd but valid: they must load (and give the right answer).
E4E_GOOD_CASES: dict[str, Callable[[Path], Path]] = {
    "opts_not_dict_pt": _e4e_with(lambda c: c.update(opts=["not", "a", "dict"])),
    "opts_not_dict_safetensors": _e4e_opts_not_dict,
    "safetensors_named_pt": lambda d: __import__("wplus.stylegan.e4e_files", fromlist=["x"]).save_e4e_safetensors(
        tiny_e4e_checkpoint(), d / "e4e_ffhq_encode.pt"),
}


# --- identity files --------------------------------------------------------------------------


def identity_code() -> torch.Tensor:
    return torch.randn(18, 512, generator=torch.Generator().manual_seed(7))


def _identity_st(meta: dict | None = None, wplus=None, name: str = "someone.safetensors"):
    def make(folder: Path) -> Path:
        path = folder / name
        save_file({"wplus": identity_code() if wplus is None else wplus()}, str(path),
                  metadata={"format": "wplus-identity", "version": "1", **(meta or {})})
        return path
    return make


def _identity_pt(value: Callable[[], object], name: str = "7.pth"):
    return lambda folder: _saved(folder / name, value())


IDENTITY_CASES: dict[str, tuple[Callable[[Path], Path], str]] = {
    "fp8": (_identity_st(wplus=lambda: identity_code().to(torch.float8_e4m3fn)), r"holds float8_e4m3fn values"),
    "fp8_pth": (_identity_pt(lambda: identity_code()[None].to(torch.float8_e5m2)), r"holds float8_e5m2 values"),
    "sparse": (_identity_pt(lambda: identity_code().to_sparse()), r"is a sparse_coo tensor"),
    "meta": (_identity_pt(lambda: torch.empty(1, 18, 512, device="meta")), r"stored on the 'meta' device"),
    "nan": (_identity_pt(lambda: identity_code().index_fill(0, torch.tensor([3]), float("nan"))), r"NaN"),
    "int64": (_identity_pt(lambda: (identity_code() * 10).long()), r"holds int64 values"),
    "stride0_view": (_identity_pt(lambda: torch.zeros(1).expand(18, 512)), r"claims shape \(18, 512\)"),
    "code_pickle": (lambda d: code_pickle(d / "7.pth", {"wplus": identity_code()}), NOT_PLAIN),
    "bad_crc": (lambda d: corrupt_crc(_saved(d / "7.pth", identity_code()[None])), r"damaged: the checksum"),
    "long_path": (lambda d: d / LONG_NAME / "7.pth", r"path is too long"),
}
#: Odd but valid identity files: they load, with the odd metadata read as absent.
IDENTITY_GOOD_CASES: dict[str, Callable[[Path], Path]] = {
    "face_index_double_minus": _identity_st({"face_index": "--1"}),
    "faces_deeply_nested": _identity_st({"faces": "[" * 200_000 + "]" * 200_000}),
    "faces_not_a_list": _identity_st({"faces": json.dumps({"index": 0})}),
    "safetensors_named_pth": _identity_st(name="someone.pth"),
    "pickle_named_safetensors": _identity_pt(lambda: identity_code()[None], name="someone.safetensors"),
}
