"""Paths of the WebUI install (a temporary folder in tests)."""
import os
import tempfile

script_path = os.environ.get("WEBUI_STUB_ROOT") or tempfile.mkdtemp(prefix="webui_stub_")
models_path = os.path.join(script_path, "models")
data_path = script_path
extensions_dir = os.path.join(script_path, "extensions")
