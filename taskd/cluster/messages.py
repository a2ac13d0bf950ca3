"""What nodes tell each other: typed messages, encoded as JSON for the wire and checked on receipt.

A message names its sender's incarnation (a node that restarts is a new sender). Fields a newer
node adds are ignored by an older one; a message that is not JSON, names no known kind or lacks
a field is refused with `MessageError`, so a bad payload can only be logged and dropped.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any, ClassVar

from pydantic import ConfigDict, TypeAdapter, ValidationError

from taskd.errors import TaskdError


class MessageError(TaskdError, ValueError):
    """A control message that cannot be read."""


@dataclass(frozen=True)
class StopRuns:
    """Stop the task's active runs held by the node that hears it (only `run_id`, when given)."""

    kind: ClassVar[str] = "stop"
    __pydantic_config__: ClassVar[ConfigDict] = ConfigDict(strict=True)
    task_id: str
    reason: str
    run_id: str | None = None


@dataclass(frozen=True)
class DropTask:
    """The task was deleted: stop its runs and take it out of the registry, with its tombstone."""

    kind: ClassVar[str] = "delete"
    __pydantic_config__: ClassVar[ConfigDict] = ConfigDict(strict=True)
    task_id: str
    definition_hash: str


@dataclass(frozen=True)
class StartRun:
    """Node `to` should start a manual run (its placement excludes the node that was asked)."""

    kind: ClassVar[str] = "start"
    __pydantic_config__: ClassVar[ConfigDict] = ConfigDict(strict=True)
    request: str
    to: str
    task_id: str
    params: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Started:
    """The answer to `StartRun`: the run started, or why not."""

    kind: ClassVar[str] = "started"
    __pydantic_config__: ClassVar[ConfigDict] = ConfigDict(strict=True)
    request: str
    run_id: str | None = None
    state: str | None = None
    error: str | None = None
    reason: str | None = None


@dataclass(frozen=True)
class DrainNode:
    """Node `to` should drain: fire nothing more, finish its runs and exit."""

    kind: ClassVar[str] = "drain"
    __pydantic_config__: ClassVar[ConfigDict] = ConfigDict(strict=True)
    to: str


Message = StopRuns | DropTask | StartRun | Started | DrainNode
KINDS: dict[str, type[Message]] = {kind.kind: kind for kind in (StopRuns, DropTask, StartRun, Started, DrainNode)}
_ADAPTERS: dict[str, TypeAdapter[Any]] = {name: TypeAdapter(kind) for name, kind in KINDS.items()}


@dataclass(frozen=True)
class Envelope:
    """A message as it arrived, with the incarnation of the node that sent it."""

    sender: str
    message: Message


def encode(sender: str, message: Message) -> str:
    return json.dumps({"op": message.kind, "from": sender, **dataclasses.asdict(message)}, default=str)


def decode(payload: str | bytes) -> Envelope:
    """The message in `payload`, checked field by field; MessageError when it cannot be read."""
    try:
        data = json.loads(payload)
    except ValueError as exc:
        raise MessageError(f"not JSON: {exc}") from None
    if not isinstance(data, dict):
        raise MessageError("not a JSON object")
    sender, kind = data.pop("from", None), data.pop("op", None)
    if not isinstance(sender, str) or not sender:
        raise MessageError("no sender ('from')")
    adapter = _ADAPTERS.get(kind) if isinstance(kind, str) else None
    if adapter is None:
        raise MessageError(f"unknown kind of message ('op': {kind!r})")
    try:
        message = adapter.validate_json(payload)  # JSON mode: an object may stand for the dataclass
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or kind}: {e['msg']}" for e in exc.errors())
        raise MessageError(f"{kind!r} message: {problems}") from None
    return Envelope(sender, message)
