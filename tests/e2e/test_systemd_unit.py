"""The shipped systemd unit: well formed for systemd itself, hardened, and consistent with the
install layout the README gives (a venv in /opt/taskd, config in /etc/taskd, state in
$STATE_DIRECTORY)."""

from __future__ import annotations

import configparser
import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
UNIT = ROOT / "config" / "taskd.service"
ANALYZE = shutil.which("systemd-analyze")
needs_analyze = pytest.mark.skipif(
    ANALYZE is None, reason="systemd-analyze is missing (Debian: apt-get install systemd; .ci/run installs it)"
)


def service() -> configparser.SectionProxy:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read(UNIT)
    return parser["Service"]


def test_the_unit_runs_the_venv_on_etc_taskd_and_keeps_state_in_its_state_directory() -> None:
    unit = service()
    assert unit["Type"] == "notify" and int(unit["WatchdogSec"]) > 0
    assert unit["ExecStart"] == "/opt/taskd/bin/taskd run -c /etc/taskd/taskd.yml"
    # No ExecStartPre: a failing one is an ordinary failure to systemd, restarted every RestartSec
    # forever; `taskd run` itself exits 2 on a bad configuration.
    assert "ExecStartPre" not in unit
    assert unit["ExecReload"] == "/opt/taskd/bin/taskd reload -c /etc/taskd/taskd.yml"
    assert unit["StateDirectory"] == "taskd" and unit["WorkingDirectory"] == "/var/lib/taskd"
    assert unit["ProtectSystem"] == "strict" and "ReadWritePaths" not in unit
    # A configuration error (exit 2) is not fixed by restarting.
    assert unit["Restart"] == "on-failure" and unit["RestartPreventExitStatus"] == "2"
    # The token is a credential (no task sees it), and descriptors are plenty for slow clients.
    assert unit["LoadCredential"] == "api-token:/etc/taskd/token"
    assert int(unit["LimitNOFILE"]) >= 65536


@needs_analyze
def test_systemd_analyze_verify_accepts_the_unit(tmp_path: Path) -> None:
    """The paths the unit names are created under a temp root and the unit pointed at them."""
    taskd = tmp_path / "opt" / "taskd" / "bin" / "taskd"
    taskd.parent.mkdir(parents=True)
    taskd.write_text("#!/bin/sh\n")
    taskd.chmod(0o755)
    (tmp_path / "etc" / "taskd").mkdir(parents=True)
    text = UNIT.read_text().replace("/opt/taskd", str(tmp_path / "opt" / "taskd"))
    text = text.replace("/etc/taskd", str(tmp_path / "etc" / "taskd"))
    copy = tmp_path / "taskd.service"
    copy.write_text(text)
    result = subprocess.run([str(ANALYZE), "verify", str(copy)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    # verify only warns about unknown keys and bad values: any word from it is a defect.
    assert result.stderr.strip() == "" and result.stdout.strip() == ""


@needs_analyze
def test_systemd_analyze_security_rates_the_unit_2_5_or_better() -> None:
    result = subprocess.run(
        [str(ANALYZE), "security", "--offline=true", str(UNIT)], capture_output=True, text=True, timeout=60
    )
    found = re.search(r"Overall exposure level for taskd\.service: ([\d.]+)", result.stdout + result.stderr)
    assert found, result.stdout + result.stderr
    assert float(found.group(1)) <= 2.5, result.stdout
    for setting in ("SystemCallFilter", "CapabilityBoundingSet", "PrivateUsers", "RestrictAddressFamilies"):
        assert setting in service(), setting
