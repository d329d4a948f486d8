"""The WebUI glue's tests need the WebUI's gradio 3 (test environment (a), dev/requirements-webui.txt).

Under current releases (environment (b)) gradio 3 cannot be installed (it needs numpy<2), so the
tests that build the panel or load the glue scripts are skipped there, with that reason."""
from __future__ import annotations

import importlib.util

import pytest

GRADIO_REASON = ("needs gradio 3 (the WebUI v1.10 stack, dev/requirements-webui.txt); "
                 "not installed in this environment")
HAS_GRADIO = importlib.util.find_spec("gradio") is not None


def needs_gradio() -> None:
    """Skip the calling test module unless gradio is importable."""
    if not HAS_GRADIO:
        pytest.skip(GRADIO_REASON, allow_module_level=True)
