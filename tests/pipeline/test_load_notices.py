"""What `python -m wplus generate` prints besides its own lines (issue 18): no note about image processors
falling back without torchvision (no pipeline here runs one), no float32 cast warning when nothing is cast."""
from __future__ import annotations

import logging

import torch

from wplus.pipeline.load import _moved, quiet_image_processor_fallback


def test_the_image_processor_fallback_note_is_dropped_and_nothing_else(caplog):
    quiet_image_processor_fallback()
    quiet_image_processor_fallback()  # once is enough: one filter
    log = logging.getLogger("transformers.utils.import_utils")
    assert len(log.filters) == 1
    with caplog.at_level(logging.WARNING, logger="transformers.utils.import_utils"):
        log.warning("`CLIPImageProcessor` requires torchvision (not installed); falling back to "
                    "`CLIPImageProcessorPil` for backward compatibility.")
        log.warning("something else went wrong")
    assert [r.getMessage() for r in caplog.records] == ["something else went wrong"]


class _Pipe:
    def __init__(self, dtype):
        self.components = {"unet": torch.nn.Linear(2, 2).to(dtype), "tokenizer": object(), "safety_checker": None}
        self.calls = []

    def to(self, **kw):
        self.calls.append(kw)
        return self


def test_the_pipeline_is_cast_only_when_a_module_has_another_dtype():
    cpu = torch.device("cpu")
    same = _Pipe(torch.float32)
    assert _moved(same, cpu, torch.float32).calls == [{"device": cpu}]
    other = _Pipe(torch.float32)
    assert _moved(other, cpu, torch.float16).calls == [{"device": cpu, "dtype": torch.float16}]
