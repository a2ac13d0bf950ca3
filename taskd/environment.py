"""The environment a task's processes get: a clean one, never the daemon's own. Pure.

The daemon's environment holds what tasks must not see (the API token, the store's URL, whatever
the unit's EnvironmentFile sets). A child gets only the variables every program expects (PATH,
HOME, the locale, TZ), the names its task lists in `pass_env`, and the task's own `env`; the shell
processor adds the run's TASKD_* variables and the step's `env` on top.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

BASE_NAMES = ("PATH", "HOME", "LANG", "LANGUAGE", "TZ")
BASE_PREFIXES = ("LC_",)
DEFAULT_PATH = "/usr/local/bin:/usr/bin:/bin"


def task_environment(
    daemon: Mapping[str, str], pass_env: Iterable[str] = (), own: Mapping[str, str] | None = None
) -> dict[str, str]:
    """The variables a task's processes start with: the base ones and `pass_env` names taken from
    `daemon` (when set there), then the task's `own` variables."""
    env = {name: value for name, value in daemon.items() if name in BASE_NAMES or name.startswith(BASE_PREFIXES)}
    env.setdefault("PATH", DEFAULT_PATH)
    for name in pass_env:
        if name in daemon:
            env[name] = daemon[name]
    if own:
        env.update(own)
    return env


def env_name(name: str) -> str:
    """A name as part of an environment variable's: `db-backup.nightly` -> `DB_BACKUP_NIGHTLY`."""
    return re.sub(r"[^A-Za-z0-9]", "_", name).upper()
