"""Which tasks `GET /tasks` answers with, in which order: one pure function over the registry's
entries, told each entry's values by the caller."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

TASK_SORTS = ("id", "name", "status", "next_run", "priority")
"""What the task list can be sorted by (`-` in front reverses)."""

E = TypeVar("E")


@dataclass(frozen=True)
class TaskQuery:
    """A filtered, sorted, paged slice of the task list."""

    text: str = ""  # a case-insensitive substring of the id or the name
    status: str | None = None
    sort: str = "id"
    descending: bool = False
    limit: int = 100
    offset: int = 0

    def __post_init__(self) -> None:
        if self.sort not in TASK_SORTS:
            raise ValueError(f"sort must be one of {', '.join(TASK_SORTS)}")

    @property
    def needs_status(self) -> bool:
        """Whether every task's status must be known before the page can be chosen."""
        return self.status is not None or self.sort == "status"


def select_tasks(entries: Sequence[E], query: TaskQuery, value: Callable[[E, str], Any]) -> tuple[list[E], int]:
    """The page of `entries` (given in id order) that `query` asks for, and how many match in all.

    `value(entry, field)` tells an entry's id, name, status, next_run or priority; it is asked only
    for what the query needs (by id, only the page is ever looked at). A missing value (a task with
    no next fire) sorts after every value, and first when the order is reversed; ties keep id order.
    """
    needle = query.text.lower()
    if not needle and query.status is None and query.sort == "id":  # the default: no need to look at each
        ordered = entries[::-1] if query.descending else entries
        return list(ordered[query.offset : query.offset + query.limit]), len(entries)
    chosen = [
        entry
        for entry in entries
        if (not needle or needle in value(entry, "id").lower() or needle in value(entry, "name").lower())
        and (query.status is None or value(entry, "status") == query.status)
    ]
    if query.sort == "id":
        ordered = chosen[::-1] if query.descending else chosen
    elif query.sort in ("name", "priority"):
        ordered = sorted(chosen, key=lambda entry: value(entry, query.sort), reverse=query.descending)
    else:
        keyed = [(value(entry, query.sort), entry) for entry in chosen]
        keyed.sort(key=lambda pair: (pair[0] is None, pair[0] or ""), reverse=query.descending)
        ordered = [entry for _, entry in keyed]
    return ordered[query.offset : query.offset + query.limit], len(chosen)
