"""File processors against what the operating system refuses: a full tmpfs, a permission
denied to another user."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
from support.disks import tmpfs
from support.files import ctx
from support.processors import build

from taskd.processor import StepFailed

# -- copy ----------------------------------------------------------------------------------------


@pytest.fixture
def tiny_disk(tmp_path: Path) -> Iterator[Path]:
    """A 1 MiB tmpfs, to fill up for real."""
    with tmpfs(tmp_path / "tiny", "1m") as mount:
        yield mount


async def test_a_full_disk_fails_the_step_and_leaves_nothing_behind(tmp_path: Path, tiny_disk: Path) -> None:
    (tmp_path / "big.bin").write_bytes(os.urandom(3 * 1024 * 1024))
    with pytest.raises(StepFailed, match="no space left on device"):
        await build("copy", source="big.bin", destination=str(tiny_disk / "big.bin")).run(ctx(tmp_path))
    assert list(tiny_disk.iterdir()) == []
    with pytest.raises(StepFailed, match="no space left on device"):
        await build("compress", path="big.bin", algorithm="gzip", destination=str(tiny_disk / "b.gz"), level=0).run(
            ctx(tmp_path)
        )
    assert list(tiny_disk.iterdir()) == []


def test_permission_denied_is_a_clear_step_failure(tmp_path: Path) -> None:
    """Run as `nobody` (root reads everything): the child imports all it needs, then drops privileges."""
    base = Path("/tmp") / f"taskd-perm-{os.getpid()}"
    base.mkdir(mode=0o755, exist_ok=True)
    try:
        secret = base / "secret.txt"
        secret.write_text("root only")
        secret.chmod(0o600)
        script = textwrap.dedent(
            f"""
            import asyncio, os, sys
            sys.path[:0] = [{str(Path(__file__).parents[1] / "unit")!r}, {str(Path(__file__).parents[1])!r}]
            from test_file_processors import build, ctx
            from taskd.processor import StepFailed
            import taskd.processors.files, concurrent.futures.thread, pathlib
            os.setgid(65534); os.setuid(65534)
            copy = build("copy", source={str(secret)!r}, destination="/tmp/never-{os.getpid()}")
            async def main():
                try:
                    await copy.run(ctx(pathlib.Path("/tmp")))
                except StepFailed as exc:
                    print("FAILED:", exc)
            asyncio.run(main())
            """
        )
        result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
        assert "FAILED:" in result.stdout, result.stderr
        assert "permission denied" in result.stdout and "secret.txt" in result.stdout
    finally:
        subprocess.run(["rm", "-rf", str(base)], check=False)


# -- compress ------------------------------------------------------------------------------------


# -- rotate --------------------------------------------------------------------------------------


# -- upload --------------------------------------------------------------------------------------


# -- checks --------------------------------------------------------------------------------------
