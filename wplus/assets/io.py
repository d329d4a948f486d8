"""Read weight files safely: torch pickles (weights only) and safetensors, chosen by their content.

Every loader of a model file (adapter, e4e, identities, directions, face backends, the trainer)
goes through here, so each gets the same protections and the same plain-language errors:
- the format is sniffed from the first bytes, not the suffix (a safetensors file named `.bin`);
- pickles load with `weights_only=True` only; one that needs more is *refused* (it is not plain
  weights) and the message never suggests unpickling it anyway;
- zip archives have their CRCs checked (torch's reader does not: a damaged download loads silently);
- `check_weights` refuses what a state dict must not hold before anything is built from it:
  non-string keys, non-tensors, sparse / meta / non-CPU tensors, integer, bool or fp8 dtypes,
  views claiming more elements than their storage holds (a 2 kB file "of" 40000×40000), NaN or inf.

The WebUI replaces `torch.load` with its own checker (modules/safe.py), which refuses archives
written by current torch (their `.format_version` entry) and returns None. `weights_only=True`
already gives the same protection, so we call torch's own loader directly.
"""
from __future__ import annotations

import errno
import os
import re
import struct
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Callable

import torch
import torch.serialization

from wplus.errors import WPlusError

SAFETENSORS, ZIP_PICKLE, LEGACY_PICKLE, UNKNOWN = "safetensors", "zip", "pickle", "unknown"
#: Weight dtypes we compute with; everything else (ints, bool, fp8, complex) is refused.
FLOAT_DTYPES = (torch.float32, torch.float16, torch.bfloat16, torch.float64)
_ZIP_MAGIC = b"PK\x03\x04"
_crc_checked: set[tuple[str, int, int]] = set()  # (path, size, mtime_ns): checked once per process


def short(path: str | os.PathLike, limit: int = 120) -> str:
    """A path as messages show it: long ones cut in the middle."""
    text = str(path)
    return text if len(text) <= limit else f"{text[: limit // 2]}…{text[-limit // 2:]} ({len(text)} characters)"


def is_file(path: str | os.PathLike) -> bool:
    """`Path.is_file()` that answers False (instead of raising) for names the OS cannot look up."""
    try:
        return Path(path).is_file()
    except (OSError, ValueError):
        return False


def existing_file(path: str | os.PathLike, what: str, error: type[WPlusError] = WPlusError,
                  missing: Callable[[str], WPlusError] | None = None, hint: str = "") -> Path:
    """`path` as a Path if it names a readable regular file; else `error` (`missing(message)`, e.g.
    another error class, when nothing is there)."""
    try:
        st = os.stat(path)
    except OSError as exc:
        if exc.errno == errno.ENAMETOOLONG:
            raise error(f"{what}: the path is too long for this system: {short(path)}. "
                        "Use a shorter path (move or rename the file).") from None
        if exc.errno in (errno.ENOENT, errno.ENOTDIR):
            raise (missing or error)(f"{what} not found: {short(path)}.{' ' + hint if hint else ''}") from None
        raise error(f"{what}: cannot open {short(path)}: {exc.strerror or exc}.") from None
    except ValueError as exc:  # embedded NUL byte
        raise error(f"{what}: {short(path)!r} is not a valid path ({exc}).") from None
    if not os.path.isfile(path):
        raise error(f"{what}: {short(path)} is a folder or a special file, not a weights file.")
    if not os.access(path, os.R_OK):
        raise error(f"{what}: {short(path)} is not readable (check its permissions).")
    del st
    return Path(path)


def sniff(path: str | os.PathLike) -> str:
    """SAFETENSORS, ZIP_PICKLE (torch >= 1.6), LEGACY_PICKLE or UNKNOWN, from the first bytes."""
    with open(path, "rb") as f:
        head = f.read(9)
    if head[:4] == _ZIP_MAGIC:
        return ZIP_PICKLE
    if len(head) == 9 and head[8:9] == b"{" and struct.unpack("<Q", head[:8])[0] < (1 << 32):
        return SAFETENSORS  # even when truncated: safetensors then says what is wrong
    if head[:1] == b"\x80":  # pickle protocol 2+ (torch's legacy format)
        return LEGACY_PICKLE
    return UNKNOWN


# --- pickles ---------------------------------------------------------------------------------


def load_pickle(path: str | os.PathLike, what: str = "weights file", error: type[WPlusError] = WPlusError,
                mmap: bool = False, **kwargs: Any) -> Any:
    """`torch.load(path, map_location="cpu", weights_only=True)` bypassing host patches, with the
    zip CRCs checked and every failure turned into `error` naming the file and what is wrong."""
    path = existing_file(path, what, error)
    kind = sniff(path)
    if kind == SAFETENSORS:
        raise error(f"{short(path)} is a safetensors file, not the torch pickle a {what} should be here.")
    if kind == UNKNOWN:
        raise error(f"{short(path)} is not a readable {what}: it is neither a torch file nor safetensors "
                    "(corrupt or incomplete download, or another format). Download or save it again.")
    if kind == ZIP_PICKLE:
        _check_zip(path, what, error)
    kwargs.setdefault("map_location", "cpu")
    kwargs["weights_only"] = True
    # torch >= 2.13 hands any path ending in .safetensors to safetensors: give it the open file instead
    use_mmap = mmap and kind == ZIP_PICKLE and path.suffix.lower() != ".safetensors"
    try:
        if use_mmap:
            return torch.serialization.load(str(path), mmap=True, **kwargs)
        with open(path, "rb") as f:
            return torch.serialization.load(f, **kwargs)
    except Exception as exc:  # pickle, zip and torch errors come in many types
        raise _pickle_error(exc, path, what, error) from None


def _pickle_error(exc: Exception, path: Path, what: str, error: type[WPlusError]) -> WPlusError:
    text = str(exc)
    if "Weights only load failed" in text or "WeightsUnpickler" in text:  # torch's weights-only reader said no
        found = re.search(r"GLOBAL ([\w.]+)", text)
        names = f" (it names the Python object {found[1]})" if found else ""
        return error(f"{short(path)} is refused: it is not plain weights{names}, and loading it as "
                     f"{'an' if what[:1] in 'aeiou' else 'a'} {what} could run code. Use the official release "
                     "file or a .safetensors file.")
    first = _torch_text(text)
    if "weights_only" in first:  # never pass on advice to unpickle without the weights-only guard
        first = ""
    return error(f"{short(path)} is not a readable {what} (corrupt or incomplete download, or another format: "
                 f"{type(exc).__name__}{': ' + first if first else ''}). Download or save it again.")


_TORCH_NOISE = (
    re.compile(r"\s*\(?Could this error message be improved\?.*?(\)|$)"),  # TORCH_CHECK's plea, not ours
    re.compile(r"\[enforce fail at [^\]]*\]\s*\.?\s*"),  # the C++ source location
    re.compile(r"\s*This is an internal miniz error\..*$"),  # its advice is ours already ("download again")
)


def _torch_text(text: str, limit: int = 200) -> str:
    """The first line of a torch/pickle error, without torch's boilerplate, cut at a word (<= limit)."""
    first = text.strip().splitlines()[0] if text.strip() else ""
    for noise in _TORCH_NOISE:
        first = noise.sub("", first)
    first = first.strip().rstrip(".")
    if len(first) > limit:
        first = first[:limit].rsplit(" ", 1)[0] + " …"
    return first


def _check_zip(path: Path, what: str, error: type[WPlusError]) -> None:
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    if key in _crc_checked:
        return
    try:
        with zipfile.ZipFile(path) as archive:
            bad = archive.testzip()
    except (zipfile.BadZipFile, OSError, EOFError, ValueError, NotImplementedError, RuntimeError) as exc:
        raise error(f"{short(path)} is not a readable {what}: the archive is damaged (truncated, corrupt or "
                    f"incomplete download?): {str(exc)[:200]}. Download or save it again.") from None
    if bad is not None:
        raise error(f"{short(path)} is damaged: the checksum of its entry {bad!r} does not match "
                    "(corrupt or incomplete download?). Download or save it again.")
    _crc_checked.add(key)


# --- safetensors -----------------------------------------------------------------------------


Header = dict[str, tuple[str, tuple[int, ...]]]  # key -> (safetensors dtype name, shape)


def safetensors_header(path: str | os.PathLike, what: str = "weights file",
                       error: type[WPlusError] = WPlusError) -> tuple[dict[str, str], Header]:
    """(metadata, {key: (dtype name, shape)}) without reading any tensor."""
    from safetensors import safe_open

    path = existing_file(path, what, error)
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = dict(f.metadata() or {})
            info = {}
            for key in f.keys():
                s = f.get_slice(key)
                info[key] = (str(s.get_dtype()), tuple(int(n) for n in s.get_shape()))
    except Exception as exc:  # SafetensorError, OSError, ValueError... depending on the version
        raise _safetensors_error(exc, path, what, error) from None
    return meta, info


def read_safetensors(path: str | os.PathLike, what: str = "weights file", error: type[WPlusError] = WPlusError,
                     keys: Any = None) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """(tensors, metadata); `keys` (a predicate or a collection) limits which tensors are read."""
    from safetensors import safe_open

    path = existing_file(path, what, error)
    want = keys if callable(keys) or keys is None else (lambda k, _s=set(keys): k in _s)
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = dict(f.metadata() or {})
            tensors = {k: f.get_tensor(k) for k in f.keys() if want is None or want(k)}
    except Exception as exc:
        raise _safetensors_error(exc, path, what, error) from None
    return tensors, meta


def _safetensors_error(exc: Exception, path: Path, what: str, error: type[WPlusError]) -> WPlusError:
    text = _torch_text(str(exc)) or type(exc).__name__
    if "dtype" in text.lower():
        return error(f"{short(path)} stores a tensor type this installation cannot read ({text}); "
                     f"save the {what} again with fp32/fp16/bf16 weights.")
    return error(f"{short(path)} is not a readable safetensors file (corrupt or truncated?): {text}. "
                 f"Download or save the {what} again.")


# --- what a state dict may hold --------------------------------------------------------------


def check_tensor(value: Any, name: str, origin: str, error: type[WPlusError] = WPlusError,
                 floating: bool = True, finite: bool = True) -> torch.Tensor:
    """`value` if it is a plain CPU tensor backed by its own bytes (float, finite), else `error`."""
    if not isinstance(value, torch.Tensor):
        raise error(f"{origin}: '{name}' should be a tensor but is a {type(value).__name__}; "
                    "the file is damaged or not of this kind.")
    if value.layout != torch.strided:
        raise error(f"{origin}: '{name}' is a {str(value.layout).replace('torch.', '')} tensor; "
                    "only plain (dense) weights can be used.")
    if value.device.type != "cpu":
        raise error(f"{origin}: '{name}' is stored on the '{value.device.type}' device and holds no "
                    "data; save the file again from a model with real weights.")
    if floating and value.dtype not in FLOAT_DTYPES:
        raise error(f"{origin}: '{name}' holds {str(value.dtype).replace('torch.', '')} values; "
                    "weights must be float32, float16 or bfloat16.")
    _check_backed(value, name, origin, error)
    if finite and value.dtype in FLOAT_DTYPES and value.numel() and not bool(torch.isfinite(value).all()):
        raise error(f"{origin}: '{name}' holds NaN or infinite values; the file is damaged "
                    f"(or came from a diverged training run). {_damaged_advice(origin, error)}")
    return value


def _damaged_advice(origin: str, error: type[WPlusError]) -> str:
    """What to do about a damaged file: download a known one again, remake an identity, else another copy."""
    from wplus.assets.registry import REGISTRY
    from wplus.errors import IdentityFormatError

    name = Path(origin.split(" (")[0]).name
    known = next((e for e in REGISTRY.values() if Path(e.filename).name == name), None)
    if known is not None:
        return f"Delete it and download {known.filename!r} again from {known.url}."
    if issubclass(error, IdentityFormatError):
        return "Make the identity again from its photo: `python -m wplus invert PHOTO -o NAME`."
    return ("Use an undamaged copy: download it again from where it came from, or export it again from a "
            "training checkpoint taken before the loss diverged.")


def _check_backed(t: torch.Tensor, name: str, origin: str, error: type[WPlusError]) -> None:
    if t.numel() == 0:
        return
    itemsize = t.element_size()
    have = t.untyped_storage().nbytes()
    extent = t.storage_offset() + sum((n - 1) * s for n, s in zip(t.shape, t.stride())) + 1
    if t.numel() * itemsize > have or extent * itemsize > have or min(t.stride(), default=1) < 0:
        raise error(f"{origin}: '{name}' claims shape {tuple(t.shape)} but its file holds only "
                    f"{have} bytes for it (an expanded or overlapping view); refused as not plain weights.")


def check_weights(state: Any, origin: str, error: type[WPlusError] = WPlusError, prefix: str = "",
                  floating: bool = True) -> dict[str, torch.Tensor]:
    """A `{str: tensor}` dict whose every tensor passes `check_tensor`, else `error` naming the key."""
    if not isinstance(state, Mapping):
        raise error(f"{origin}: {prefix.rstrip('.') or 'the file'} should be a dict of tensors but is a "
                    f"{type(state).__name__}; the file is damaged or not of this kind.")
    out = {}
    for key, value in state.items():
        if not isinstance(key, str):
            raise error(f"{origin}: the key {key!r} of {prefix.rstrip('.') or 'the file'} is a "
                        f"{type(key).__name__}, not a name; the file is damaged or not of this kind.")
        out[key] = check_tensor(value, prefix + key, origin, error, floating=floating)
    return out
