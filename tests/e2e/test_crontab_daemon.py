"""A crontab imported and run by a real daemon: `@reboot` runs once at start-up, `%` feeds the job's
standard input, SHELL and the crontab's variables reach the command, and `$` is left for the shell."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from conftest import Daemon, wait_for
from support.cli import taskd

CRONTAB = r"""# imported by the test
GREETING=hello from cron
@reboot echo "booted $GREETING" >> "$OUT/boot.txt"
SHELL=/bin/bash
0 3 * * * [[ -n "$BASH_VERSION" ]] && echo bash >> "$OUT/shell.txt"
SHELL=/bin/sh
0 4 * * * cat > "$OUT/stdin.txt"%first line%second \% line
0 5 * * * echo "$HOME-$PATH" > "$OUT/env.txt"
"""


def test_an_imported_crontab_runs_as_cron_would(daemon_factory: Callable[..., Daemon], tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (tmp_path / "crontab").write_text(CRONTAB.replace("$OUT", str(out)))
    made = taskd("import-crontab", "crontab", cwd=tmp_path)
    assert made.returncode == 0 and made.stderr == "", made.stderr
    config = made.stdout.replace(
        "tasks:\n", "api: {listen: '127.0.0.1:{port}'}\nstore: {path: ./var/taskd.db}\ntasks:\n", 1
    )
    daemon = daemon_factory(config).start()
    wait_for(lambda: (out / "boot.txt").exists(), what="the @reboot job")
    assert (out / "boot.txt").read_text() == "booted hello from cron\n"
    (startup,) = daemon.runs("echo-3")
    assert startup["trigger"] == "startup"
    for task in ("job-5", "cat-7", "echo-8"):
        assert daemon.wait_run(daemon.start_task(task))["state"] == "completed"
    assert (out / "shell.txt").read_text() == "bash\n"
    assert (out / "stdin.txt").read_text() == "first line\nsecond % line\n"
    home_path = (out / "env.txt").read_text().strip()
    assert home_path.endswith("-/usr/bin:/bin")  # cron's PATH; $HOME for the shell to expand, not taskd
    assert daemon.stop() == 0
    daemon.start()  # @reboot: once at each start
    wait_for(lambda: (out / "boot.txt").read_text().count("booted") == 2, what="the second start's run")
    assert daemon.stop() == 0
