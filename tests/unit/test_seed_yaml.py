"""The seed's configuration style, as its task module documents it, runs as written and again:
`task.debug`, `task.log_task_execution`, a `send_alert` with only `condition` and `message`, and a
copy -> compress -> upload backup whose products keep the same names on every run."""

from __future__ import annotations

import tarfile
from collections.abc import Awaitable, Callable
from pathlib import Path

from conftest import Api
from support.seed import SEED


async def test_the_seed_backup_runs_three_times_in_a_row(
    api_factory: Callable[..., Awaitable[Api]], tmp_path: Path
) -> None:
    api = await api_factory(SEED)
    base = Path(api.engine.config.path).parent
    data = base / "data"
    data.mkdir()
    for number in (1, 2, 3):
        (data / "report.txt").write_text(f"version {number}\n")
        run = await api.wait_run(await api.start_task("data_backup"))
        assert run["state"] == "completed", (number, run["error"])
        steps = run["attempt_list"][0]["steps"]
        assert [s["state"] for s in steps] == ["completed", "completed", "completed", "skipped"]
        with tarfile.open(base / "remote" / "backup.tar.gz") as archive:
            member = archive.extractfile("backup/report.txt")
            assert member is not None and member.read() == f"version {number}\n".encode()
    assert sorted(p.name for p in (base / "remote").iterdir()) == ["backup.tar.gz"]
