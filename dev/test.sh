#!/usr/bin/env bash
# README's test command (and what CI runs): builds each test environment from scratch if missing, then
#   (a) the WebUI v1.10.1 stack (.venv): ruff, then the core and the WebUI glue;
#   (b) current releases (.venv-current): the core, the pipeline, the trainer and the ComfyUI nodes (gradio-3 tests
#       skip, saying why),
#       less the tests marked stack_independent (same torch and ldm as in (a): run once, in (a));
#   (c) Forge's UI pins (.venv-gradio4): the panel under gradio 4.40, also in a browser.
set -euo pipefail
cd "$(dirname "$0")/.."
bash dev/setup.sh webui && .venv/bin/ruff check . && .venv/bin/python -m pytest -q tests --ignore=tests/trainer
bash dev/setup.sh current && .venv-current/bin/python -m pytest -q tests -m "not stack_independent"
bash dev/setup_gradio4.sh && .venv-gradio4/bin/python -m pytest -q tests/webui/test_ui_gradio4.py tests/webui/test_browser.py
