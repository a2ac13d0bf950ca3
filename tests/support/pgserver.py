"""A PostgreSQL server of the test's own (initdb in a temp dir, pg_ctl on a free port, run as the
`postgres` user), for tests that stop, restart or cut off the database: the shared server on 5432
is never touched."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

BIN = (
    next(iter(sorted(Path("/usr/lib/postgresql").glob("*/bin"))), None)
    if Path("/usr/lib/postgresql").exists()
    else None
)


class Server:
    def __init__(self, root: Path, port: int) -> None:
        self.root = root
        self.data = root / "data"
        self.port = port
        self.url = f"postgresql://postgres@127.0.0.1:{port}/postgres"

    def _ctl(self, *args: str) -> None:
        assert BIN is not None
        command = [str(BIN / "pg_ctl"), "-D", str(self.data), "-l", str(self.root / "server.log"), *args]
        done = subprocess.run(_as_postgres(command), capture_output=True, text=True, timeout=60)
        if done.returncode != 0:
            raise AssertionError(f"pg_ctl {' '.join(args)} failed: {done.stdout}{done.stderr}")

    def start(self) -> None:
        options = f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off"
        self._ctl("-w", "-o", options, "start")

    def stop(self, mode: str = "fast") -> None:
        self._ctl("-w", "-m", mode, "stop")


def _as_postgres(command: list[str]) -> list[str]:
    return command if os.geteuid() != 0 else ["runuser", "-u", "postgres", "--", *command]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def own_postgres() -> Iterator[Server]:
    """A fresh server, stopped and removed at the end. Skips where PostgreSQL's programs are not
    installed, unless TASKD_REQUIRE_POSTGRES is set (CI), where that fails the test."""
    if BIN is None or not (BIN / "initdb").exists():
        if os.environ.get("TASKD_REQUIRE_POSTGRES"):
            raise AssertionError("initdb and pg_ctl are needed (Debian's postgresql package)")
        pytest.skip("PostgreSQL's initdb is not installed")
    root = Path(tempfile.mkdtemp(prefix="taskd-pg-"))
    if os.geteuid() == 0:
        shutil.chown(root, "postgres", "postgres")
    server = Server(root, _free_port())
    initdb = [str(BIN / "initdb"), "-D", str(server.data), "-U", "postgres", "--auth=trust", "-E", "UTF8"]
    done = subprocess.run(_as_postgres(initdb), capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    server.start()
    try:
        yield server
    finally:
        subprocess.run(
            _as_postgres([str(BIN / "pg_ctl"), "-D", str(server.data), "-m", "immediate", "stop"]),
            capture_output=True,
            timeout=60,
        )
        shutil.rmtree(root, ignore_errors=True)
