"""Shared test fixtures: paths to ../shared (and the `needs_shared` marker), small-thread torch for the 2-core CI."""
from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
FIXTURES = SHARED / "fixtures"
OFFICIAL = SHARED / "data" / "official"

TESTS = Path(__file__).resolve().parent

sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(TESTS))  # shared helpers: `from helpers.unet_fixtures import ...`, `webui_stub`
torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


NO_SHARED = f"needs ../shared beside the checkout (fixtures, the paper's files, test photos); {SHARED} is missing"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests marked `needs_shared` (or asking for `shared_dir`) are skipped, with the reason, without ../shared."""
    if SHARED.is_dir():
        return
    skip = pytest.mark.skip(reason=NO_SHARED)
    for item in items:
        if item.get_closest_marker("needs_shared") or "shared_dir" in getattr(item, "fixturenames", ()):
            item.add_marker(skip)


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    """../shared; tests that ask for it are `needs_shared` tests."""
    return SHARED

# The ComfyUI stand-in's fixtures (`comfy`, `patcher`) for tests/comfy.
pytest_plugins = ["comfy_stub.fixture"]
