"""The dashboard's modules type-check: each opens with `// @ts-check`, and TypeScript's checker
(`tsc -p taskd/dashboard/jsconfig.json`, strict, no output) finds nothing in their JSDoc types.

tsc is TASKD_TSC, else `tsc` on PATH; without one the check is skipped, unless TASKD_REQUIRE_TSC
is set (CI), where a missing tsc fails."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "taskd" / "dashboard"


def test_every_module_asks_to_be_checked() -> None:
    modules = sorted(DASHBOARD.glob("*.js"))
    assert modules
    unchecked = [path.name for path in modules if not path.read_text().startswith("// @ts-check\n")]
    assert unchecked == []


def _tsc() -> str:
    tsc = os.environ.get("TASKD_TSC") or shutil.which("tsc")
    if tsc:
        return tsc
    if os.environ.get("TASKD_REQUIRE_TSC"):
        pytest.fail("no tsc: set TASKD_TSC or put tsc on PATH (npm install --prefix DIR typescript@5)")
    pytest.skip("no tsc (set TASKD_TSC, or npm install --prefix DIR typescript@5)")


def test_the_modules_type_check() -> None:
    done = subprocess.run(
        [_tsc(), "-p", str(DASHBOARD / "jsconfig.json"), "--pretty", "false"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    errors = [line for line in done.stdout.splitlines() if "error TS" in line]
    assert (done.returncode, errors) == (0, []), done.stdout + done.stderr
