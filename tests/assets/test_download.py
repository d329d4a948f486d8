"""Downloads against a real HTTP server on 127.0.0.1 (Range support, truncation, bad bytes)."""
from __future__ import annotations

import hashlib
import http.server
import threading
import urllib.error
from dataclasses import replace

import pytest

from wplus.assets import registry
from wplus.assets.download import ensure_file, ensure_many, find_existing, missing_message
from wplus.errors import DownloadError, MissingWeightsError

PAYLOAD = bytes(range(256)) * 4096 + b"tail"  # ~1 MiB, not a multiple of the chunk size
from conftest import OFFICIAL  # noqa: E402


class _Handler(http.server.BaseHTTPRequestHandler):
    files: dict[str, bytes] = {}
    log: list[tuple[str, str | None]] = []
    cut_after: dict[str, int] = {}  # path -> bytes sent before the connection drops (once)

    def do_GET(self):  # noqa: N802 (http.server API)
        rng = self.headers.get("Range")
        self.log.append((self.path, rng))
        body = self.files.get(self.path)
        if body is None:
            self.send_error(404)
            return
        start = 0
        if rng:
            start = int(rng.split("=")[1].split("-")[0])
            if start >= len(body):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(body)}")
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
        else:
            self.send_response(200)
        part = body[start:]
        self.send_header("Content-Length", str(len(part)))
        self.end_headers()
        cut = self.cut_after.pop(self.path, None)
        self.wfile.write(part if cut is None else part[:cut])
        if cut is not None:
            self.wfile.flush()
            self.close_connection = True

    def log_message(self, *args):
        pass


@pytest.fixture()
def server():
    _Handler.files = {"/f.bin": PAYLOAD, "/bad.bin": b"x" * 1000}
    _Handler.log = []
    _Handler.cut_after = {}
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def entry(url: str, sha256: str | None = hashlib.sha256(PAYLOAD).hexdigest(),
          size: int | None = len(PAYLOAD)) -> registry.ModelFile:
    return registry.ModelFile(key="test", filename="sub/f.bin", subdir="w_direction", url=url, sha256=sha256,
                              size=size, description="a test file", purpose="editing")


def test_full_download_with_progress(server, tmp_path):
    seen = []
    e = entry(f"{server}/f.bin")
    path = ensure_file(e, tmp_path, progress=True, callback=lambda done, total: seen.append((done, total)))
    assert path == tmp_path / "w_direction/sub/f.bin" and path.read_bytes() == PAYLOAD
    assert not path.with_name("f.bin.part").exists()
    assert seen[-1] == (len(PAYLOAD), len(PAYLOAD)) and len(seen) >= 2
    assert all(a[0] < b[0] for a, b in zip(seen, seen[1:]))
    other = tmp_path / "again"
    calls = []
    ensure_file(e, other, progress=lambda done, total: calls.append(done))  # a callable as progress
    assert calls[-1] == len(PAYLOAD)
    # present and verified: no second request
    n = len(_Handler.log)
    assert ensure_file(e, tmp_path, allow_download=False) == path and len(_Handler.log) == n


def test_resume_after_truncated_part(server, tmp_path):
    e = entry(f"{server}/f.bin")
    part = tmp_path / "w_direction/sub/f.bin.part"
    part.parent.mkdir(parents=True)
    part.write_bytes(PAYLOAD[:300_000])
    path = ensure_file(e, tmp_path, progress=False)
    assert path.read_bytes() == PAYLOAD
    assert _Handler.log[-1] == ("/f.bin", "bytes=300000-")


def test_dropped_connection_keeps_part_then_resumes(server, tmp_path):
    e = entry(f"{server}/f.bin")
    _Handler.cut_after["/f.bin"] = 100_000
    with pytest.raises(MissingWeightsError, match="f.bin"):
        ensure_file(e, tmp_path, progress=False)
    part = tmp_path / "w_direction/sub/f.bin.part"
    assert part.stat().st_size == 100_000 and not (tmp_path / "w_direction/sub/f.bin").exists()
    assert ensure_file(e, tmp_path, progress=False).read_bytes() == PAYLOAD
    assert _Handler.log[-1][1] == "bytes=100000-"


def test_complete_part_is_finished_without_refetching(server, tmp_path):
    e = entry(f"{server}/f.bin")
    part = tmp_path / "w_direction/sub/f.bin.part"
    part.parent.mkdir(parents=True)
    part.write_bytes(PAYLOAD)
    assert ensure_file(e, tmp_path, progress=False).read_bytes() == PAYLOAD  # server answered 416


def test_hash_mismatch_deletes_and_explains(server, tmp_path):
    e = entry(f"{server}/bad.bin", sha256="0" * 64, size=None)
    with pytest.raises(DownloadError, match=r"sha256 .* != expected 0{64}.*deleted"):
        ensure_file(e, tmp_path, progress=False)
    assert list(tmp_path.iterdir()) == []  # neither the file nor a .part nor the folders made for them stay


def test_existing_file_with_wrong_hash_is_reported(server, tmp_path):
    e = entry(f"{server}/f.bin")
    target = e.path(tmp_path)
    target.parent.mkdir(parents=True)
    target.write_bytes(b"not it")
    with pytest.raises(DownloadError, match="Delete it"):
        ensure_file(e, tmp_path)


def test_offline_gives_one_message_with_file_url_folder(tmp_path, monkeypatch):
    for variable in ("WPLUS_OFFLINE", "HF_HUB_OFFLINE"):  # the message names one when it is set
        monkeypatch.delenv(variable, raising=False)
    e = registry.get("e4e")
    with pytest.raises(MissingWeightsError) as info:
        ensure_file(e, tmp_path, allow_download=False)
    msg = str(info.value)
    assert "e4e_ffhq_encode.pt" in msg and e.url in msg and str(tmp_path.resolve()) in msg
    assert msg == missing_message(e, tmp_path, "automatic download is disabled")
    monkeypatch.setenv("WPLUS_OFFLINE", "1")
    with pytest.raises(MissingWeightsError, match="releases/download/v1/e4e_ffhq_encode.pt"):
        ensure_file(e, tmp_path)


def test_unreachable_server_and_404(server, tmp_path):
    def refuse(request, timeout):
        raise urllib.error.URLError("no network")

    with pytest.raises(MissingWeightsError, match=r"no network.*folder"):
        ensure_file(entry("https://example.invalid/f.bin"), tmp_path, opener=refuse)
    with pytest.raises(DownloadError, match="HTTP 404"):
        ensure_file(entry(f"{server}/nothing.bin"), tmp_path, progress=False)


def test_webui_folder_is_used_when_present(tmp_path):
    det = registry.get("facexlib/detection")
    webui_copy = tmp_path / "GFPGAN" / det.filename
    webui_copy.parent.mkdir()
    webui_copy.write_bytes(b"weights")
    assert find_existing(det, tmp_path) == webui_copy
    assert ensure_file(det, tmp_path, allow_download=False) == webui_copy


def test_registry_is_complete():
    urls = {e.key: e.url for e in registry.REGISTRY.values()}
    assert urls["adapter"] == "https://github.com/csxmli2016/w-plus-adapter/releases/download/v1/wplus_adapter.bin"
    assert urls["e4e"] == "https://github.com/csxmli2016/w-plus-adapter/releases/download/v1/e4e_ffhq_encode.pt"
    assert urls["directions/latent_directions/smile.npy"] == (
        "https://raw.githubusercontent.com/csxmli2016/w-plus-adapter/main/w_direction/latent_directions/smile.npy")
    assert registry.get("facexlib/parsing").url.endswith("/v0.2.2/parsing_parsenet.pth")
    assert {e.purpose for e in registry.select("all")} == {"generation", "encoding", "editing", "faces"}


@pytest.mark.needs_shared
def test_registry_hashes_match_the_official_files(tmp_path):
    sums = dict(reversed(line.split()) for line in (OFFICIAL / "SHA256SUMS").read_text().splitlines() if line.strip())
    for e in registry.direction_files(include_training=True):
        rel = f"w_direction/{e.filename}"
        assert e.sha256 == sums[rel], rel
        assert e.size == (OFFICIAL / rel).stat().st_size
    # the official folder passes ensure_file as a models dir: verified, nothing downloaded
    paths = ensure_many(registry.direction_files(), OFFICIAL, allow_download=False)
    assert all(p.is_file() for p in paths)


def test_served_registry_entry_end_to_end(server, tmp_path):
    """A registry entry pointed at the local server: download, verify, and a second call is local."""
    e = replace(entry(f"{server}/f.bin"), key="directions/x", filename="latent_directions/x.npy")
    assert ensure_many([e], tmp_path, progress=False)[0].read_bytes() == PAYLOAD
