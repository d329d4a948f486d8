#!/usr/bin/env bash
# Debian's chromium for the browser tests (tests/webui/test_browser.py: Playwright drives the system
# browser; it downloads none). Idempotent: does nothing when chromium is on PATH. Installs with apt-get
# as root (CI); otherwise says how, and the browser tests skip with that reason.
set -euo pipefail
if command -v chromium >/dev/null || command -v chromium-browser >/dev/null; then
  exit 0
fi
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
  echo "note: chromium is not installed (as root: apt-get install -y chromium); the browser tests will skip" >&2
  exit 0
fi
export DEBIAN_FRONTEND=noninteractive
apt-get install -y -q chromium >/dev/null || { apt-get update -q >/dev/null && apt-get install -y -q chromium >/dev/null; }
chromium --version
