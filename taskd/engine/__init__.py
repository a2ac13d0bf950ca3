"""The engine: `Engine` (engine), firing schedules (firing), other nodes (remote), the timer (timer,
the only module importing APScheduler), the registry and its reload diff (registry), pure policies
(policy) and the live run table (runs)."""

from taskd.engine.engine import STOP_WAIT_S, Engine, Load, StopOutcome, TaskState, config_digest
from taskd.engine.firing import FIRE_CHUNK
from taskd.engine.policy import TASK_STATUSES
from taskd.engine.registry import TaskEntry
from taskd.errors import Conflict, Overloaded, UnknownTask

__all__ = [
    "FIRE_CHUNK",
    "STOP_WAIT_S",
    "TASK_STATUSES",
    "Conflict",
    "Engine",
    "Load",
    "Overloaded",
    "StopOutcome",
    "TaskEntry",
    "TaskState",
    "UnknownTask",
    "config_digest",
]
