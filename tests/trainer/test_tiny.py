"""`python -m trainer.tiny` right after a plain `pip install .`: without CLIP's BPE vocabulary (no
open-clip-torch) it makes its own byte-level tokenizer and says so; the folder appears whole or not at
all; its messages never name a flag it does not have."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from conftest import ROOT


def _env(extra_path: str = "") -> dict:
    path = os.pathsep.join(p for p in (extra_path, str(ROOT)) if p)
    return dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", PYTHONPATH=path)


def test_without_the_bpe_vocabulary_it_makes_its_own_tokenizer(tmp_path):
    """A stand-in `open_clip` package without its vocabulary file comes first on the path: the lookup
    fails as after `pip install .` (no open-clip-torch), in a real `python -m trainer.tiny` run."""
    fake = tmp_path / "fake"
    (fake / "open_clip").mkdir(parents=True)
    (fake / "open_clip" / "__init__.py").write_text("")
    work = tmp_path / "work"
    work.mkdir()
    r = subprocess.run([sys.executable, "-m", "trainer.tiny", "tiny"], cwd=work, env=_env(str(fake)),
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    assert "tokenizer: a byte-level CLIP tokenizer made by trainer.tiny (514 tokens" in r.stdout
    assert "--tokenizer" not in r.stdout + r.stderr and "Traceback" not in r.stderr
    out = work / "tiny"
    assert sorted(p.name for p in work.iterdir()) == ["tiny"]  # no partial folder beside it
    assert json.loads((out / "tiny_model.json").read_text())["tokenizer"] == "bytes"
    from transformers import CLIPTokenizer

    from wplus.assets.checkpoint import load_base_model
    tok = CLIPTokenizer.from_pretrained(out / "tokenizer", local_files_only=True)
    assert len(tok) == 514 and json.loads((out / "text_encoder" / "config.json").read_text())["vocab_size"] == 514
    ids = tok(["a photo of a person"]).input_ids[0]
    assert ids[0] == 512 and ids[-1] == 513 and len(ids) == 2 + len("aphotoofaperson")  # byte by byte
    base = load_base_model(str(out))
    context, extra = base.encode_prompt(["a photo of a person"], 64)
    assert tuple(context.shape) == (1, 77, 32) and extra is None and bool(context.isfinite().all())
    assert (out / "wplus_adapter.safetensors").is_file() and (out / "identity.safetensors").is_file()


def _last_line(capsys) -> str:
    """The last line on stderr (diffusers draws progress bars there while saving)."""
    return capsys.readouterr().err.strip().splitlines()[-1]


@pytest.fixture()
def no_vocabulary(monkeypatch):
    import trainer.tiny
    monkeypatch.setattr(trainer.tiny, "open_clip_bpe_path", lambda: None)
    return trainer.tiny


def test_a_failure_leaves_nothing(tmp_path, monkeypatch, capsys, no_vocabulary):
    def full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(no_vocabulary, "write_tiny_extras", full)
    assert no_vocabulary.main([str(tmp_path / "new" / "tiny")]) == 2
    assert _last_line(capsys) == "error: [Errno 28] No space left on device"
    assert list(tmp_path.iterdir()) == []  # neither the model, nor its partial copy, nor new/


def test_ctrl_c_leaves_nothing(tmp_path, monkeypatch, capsys, no_vocabulary):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(no_vocabulary, "write_tiny_extras", interrupted)
    (tmp_path / "tiny").mkdir()  # an empty folder may be given: it stays as it was
    assert no_vocabulary.main([str(tmp_path / "tiny")]) == 130
    assert _last_line(capsys) == "trainer.tiny: interrupted (Ctrl-C); nothing was written."
    assert [p.name for p in tmp_path.iterdir()] == ["tiny"] and list((tmp_path / "tiny").iterdir()) == []


def test_an_existing_folder_is_not_overwritten(tmp_path, capsys, no_vocabulary):
    (tmp_path / "tiny").mkdir()
    (tmp_path / "tiny" / "mine.txt").write_text("keep")
    assert no_vocabulary.main([str(tmp_path / "tiny")]) == 2
    assert _last_line(capsys) == (f"error: {tmp_path / 'tiny'} already exists and is not empty: give a "
                                  "new folder for the tiny model (nothing was written).")
    assert [p.name for p in (tmp_path / "tiny").iterdir()] == ["mine.txt"]


def test_the_trainer_names_its_own_tokenizer_option(tmp_path, monkeypatch):
    """train.py has --tokenizer (for single-file checkpoints); the advice to install open_clip keeps torch."""
    import wplus.assets.checkpoint as checkpoint
    monkeypatch.setattr(checkpoint, "open_clip_bpe_path", lambda: None)
    with pytest.raises(FileNotFoundError) as info:
        checkpoint.load_tokenizer(None, tmp_path)
    text = str(info.value)
    assert text.startswith("no CLIP BPE vocabulary is installed (open_clip's bpe_simple_vocab_16e6.txt.gz): "
                           "pass --tokenizer FOLDER")
    assert "`pip install --no-deps open-clip-torch` (--no-deps keeps your torch)" in text
    from trainer.config import parse_config
    assert parse_config(["--tokenizer", str(tmp_path)]).tokenizer == str(tmp_path)  # the option exists
