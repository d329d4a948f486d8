#!/usr/bin/env bash
# Creates one test environment (CPU, offline apart from PyPI). Idempotent.
#   bash dev/setup.sh webui     .venv          the WebUI v1.10.1 stack (dev/requirements-webui.txt)
#   bash dev/setup.sh current   .venv-current  current releases (dev/requirements-current.txt)
set -euo pipefail
cd "$(dirname "$0")/.."
case "${1:-webui}" in
  webui) venv=.venv; reqs=dev/requirements-webui.txt; clip=2.20.0; check="import gradio" ;;
  current) venv=.venv-current; reqs=dev/requirements-current.txt; clip=3.3.0; check="import transformers" ;;
  *) echo "usage: bash dev/setup.sh [webui|current]" >&2; exit 2 ;;
esac
quiet() { "$@" 2>&1 | grep -v -e '^WARNING: Location' -e 'is ignored: it is neither a file nor a directory' || true; }
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
quiet "$venv/bin/pip" install -q --upgrade pip
# torch first and pinned (a local CPU wheel on the CI machine); passed again so nothing upgrades it.
quiet "$venv/bin/pip" install -q torch==2.13.0
quiet "$venv/bin/pip" install -q torch==2.13.0 -r "$reqs"
# The real `ldm` package (the WebUI's UNet) and the CLIP BPE vocabulary; their declared deps would pull CUDA torch.
quiet "$venv/bin/pip" install -q --no-deps stable-diffusion-sdkit==2.1.5 "open-clip-torch==$clip"
if [ "$venv" = .venv ]; then bash dev/chromium.sh; fi  # the browser tests (the WebUI stack only)
"$venv/bin/python" -c "import torch, numpy, PIL, ldm, dlib, diffusers; $check; print('env ok (${1:-webui}): torch', torch.__version__, 'numpy', numpy.__version__, 'Pillow', PIL.__version__)"
