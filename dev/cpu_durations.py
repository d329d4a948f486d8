"""pytest plugin: CPU seconds per test (setup + call + teardown, all threads of the process), so that
slow spots can be found on a loaded machine where wall-clock durations mean little.

    PYTHONPATH=dev .venv/bin/python -m pytest -p cpu_durations tests ...
Prints the slowest 40 at the end; with WPLUS_CPU_LOG=FILE also appends "seconds<TAB>test id" per test
as it finishes (read while the run goes on)."""
from __future__ import annotations

import os
import time

import pytest

_times: dict[str, float] = {}


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item, nextitem):
    start = time.process_time()
    yield
    spent = time.process_time() - start
    _times[item.nodeid] = spent
    log = os.environ.get("WPLUS_CPU_LOG")
    if log:
        with open(log, "a") as f:
            f.write(f"{spent:.2f}\t{item.nodeid}\n")


def pytest_terminal_summary(terminalreporter):
    total = sum(_times.values())
    terminalreporter.section(f"CPU seconds per test (total {total:.0f} s)")
    for nodeid, spent in sorted(_times.items(), key=lambda kv: -kv[1])[:40]:
        terminalreporter.write_line(f"{spent:8.2f}  {nodeid}")
