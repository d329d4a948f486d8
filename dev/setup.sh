#!/usr/bin/env bash
# Creates .venv with everything the tests need (CPU, offline apart from PyPI). Idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/pip install -q --upgrade pip 2>&1 | grep -v '^WARNING: Location' || true
.venv/bin/pip install -q torch==2.13.0 2>&1 | grep -v '^WARNING: Location' || true
.venv/bin/pip install -q torch==2.13.0 -r dev/requirements.txt 2>&1 | grep -v '^WARNING: Location' || true
# The real `ldm` package (the WebUI's UNet) and the CLIP BPE vocabulary; their declared deps would pull CUDA torch.
.venv/bin/pip install -q --no-deps stable-diffusion-sdkit==2.1.5 open-clip-torch==3.3.0 2>&1 | grep -v '^WARNING: Location' || true
.venv/bin/python -c "import torch, ldm, dlib, diffusers, gradio; print('env ok: torch', torch.__version__)"
