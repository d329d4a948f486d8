#!/usr/bin/env bash
# Creates .venv-gradio4 with Forge's UI pins for tests/webui/test_ui_gradio4.py and the browser test under gradio 4
# (the gradio 3 venv skips the former). Idempotent. Run: bash dev/setup_gradio4.sh && .venv-gradio4/bin/python -m pytest -q tests/webui/test_ui_gradio4.py
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv-gradio4/bin/python ] || python3 -m venv .venv-gradio4
.venv-gradio4/bin/pip install -q torch==2.13.0 2>&1 | grep -v '^WARNING: Location' || true
.venv-gradio4/bin/pip install -q torch==2.13.0 -r dev/requirements-gradio4.txt 2>&1 | grep -v '^WARNING: Location' || true
# The real `ldm` package (the stand-ins' UNet); its declared deps would pull CUDA torch.
.venv-gradio4/bin/pip install -q --no-deps stable-diffusion-sdkit==2.1.5 2>&1 | grep -v '^WARNING: Location' || true
bash dev/chromium.sh  # the browser tests
.venv-gradio4/bin/python -c "import torch, ldm, gradio, playwright; assert gradio.__version__ == '4.40.0'; print('gradio4 env ok: torch', torch.__version__)"
