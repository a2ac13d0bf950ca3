"""`taskd install-service` in a temporary root: the files of the README's layout with their modes, an
existing configuration kept, the unit running this installation's taskd and accepted by
systemd-analyze verify, --dry-run changing nothing, --uninstall removing what it wrote and keeping
the state."""

from __future__ import annotations

import shutil
import stat
import sys
from pathlib import Path

from support.cli import ROOT, taskd


def _checkout(tmp_path: Path) -> Path:
    source = tmp_path / "src"
    source.mkdir()
    shutil.copy(ROOT / "taskd.yml", source / "taskd.yml")
    shutil.copytree(ROOT / "pipelines", source / "pipelines")
    return source


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_dry_run_says_every_step_and_changes_nothing(tmp_path: Path) -> None:
    source, root = _checkout(tmp_path), tmp_path / "root"
    said = taskd("install-service", "--dry-run", "--root", str(root), "-c", "taskd.yml", cwd=source)
    assert said.returncode == 0, said.stderr
    for step in (
        "would create /etc/taskd/",
        "would write /etc/taskd/taskd.yml (mode 644)",
        "would write /etc/taskd/pipelines/health.yml (mode 644)",
        "would write /etc/taskd/taskd.env (mode 640, group taskd)",
        "would write /etc/taskd/token (mode 600)\n    (a new random token)",
        "would write /etc/systemd/system/taskd.service (mode 644)",
        f"ExecStart={sys.prefix}/bin/taskd run -c /etc/taskd/taskd.yml",
        "useradd --system --home-dir /var/lib/taskd",
        "next: systemctl daemon-reload && systemctl enable --now taskd",
    ):
        assert step in said.stdout, step
    assert not root.exists()


def test_install_keeps_what_exists_and_uninstall_keeps_the_state(tmp_path: Path) -> None:
    source, root = _checkout(tmp_path), tmp_path / "root"
    etc = root / "etc" / "taskd"
    (etc / "pipelines").mkdir(parents=True)
    (etc / "pipelines" / "health.yml").write_text(
        "# the operator's own\n" + (source / "pipelines" / "health.yml").read_text()
    )
    done = taskd("install-service", "--root", str(root), "-c", "taskd.yml", cwd=source)
    assert done.returncode == 0, done.stderr + done.stdout
    assert "/etc/taskd/pipelines/health.yml: exists, kept" in done.stdout
    assert (etc / "pipelines" / "health.yml").read_text().startswith("# the operator's own")
    assert _mode(etc / "token") == 0o600 and len((etc / "token").read_text().strip()) >= 40
    assert _mode(etc / "taskd.env") == 0o640 and _mode(etc / "taskd.yml") == 0o644
    unit = (root / "etc" / "systemd" / "system" / "taskd.service").read_text()
    assert f"ExecStart={sys.prefix}/bin/taskd run -c /etc/taskd/taskd.yml" in unit
    assert f"ExecReload={sys.prefix}/bin/taskd reload -c /etc/taskd/taskd.yml" in unit
    if shutil.which("systemd-analyze"):
        assert "run: " in done.stdout and "verify" in done.stdout
    assert taskd("check", "-c", str(etc / "taskd.yml")).returncode == 0
    again = taskd("install-service", "--root", str(root), "-c", "taskd.yml", cwd=source)
    assert again.returncode == 0 and "/etc/taskd/token: exists, kept" in again.stdout
    state = root / "var" / "lib" / "taskd"
    state.mkdir(parents=True)
    (state / "taskd.db").write_text("history")
    gone = taskd("install-service", "--root", str(root), "--uninstall")
    assert gone.returncode == 0, gone.stderr
    assert sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()) == [
        "etc/taskd/pipelines/health.yml",  # the operator's, not installed: kept
        "var/lib/taskd/taskd.db",
    ]
    assert "kept: /var/lib/taskd" in gone.stdout
    nothing = taskd("install-service", "--root", str(root), "--uninstall")
    assert nothing.returncode == 1 and ".installed is missing" in nothing.stderr


def test_installing_for_real_needs_root(tmp_path: Path, monkeypatch: object) -> None:
    import os

    import pytest

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(os, "geteuid", lambda: 1000)
        refused = taskd("install-service", "-c", str(_checkout(tmp_path) / "taskd.yml"))
    assert refused.returncode == 2 and "run it as root" in refused.stderr
