"""Who is asking, and whether their role lets them: named bearer tokens with roles, what each
route needs, and which requests the audit trail records. No I/O here: `app` applies it."""

from __future__ import annotations

import collections
import hmac
from dataclasses import dataclass

from taskd.config.schema import ROLES, ApiSection

ADMIN_NAME = "admin"
"""The name `api.token` goes by: it is an admin token."""


@dataclass(frozen=True)
class Caller:
    """Who sent a request: the token's name and role (no tokens configured: nameless, admin)."""

    name: str | None
    role: str

    def may(self, role: str) -> bool:
        return ROLES.index(self.role) >= ROLES.index(role)


NOBODY = Caller(None, "admin")
"""The caller when no token is configured: the API is open to whoever reaches it."""


@dataclass(frozen=True)
class Action:
    """A route that changes something: the role it needs and its name in the audit trail."""

    role: str
    name: str
    what: str  # as a refusal says it: "starting a task needs the operator role"


ACTIONS: dict[tuple[str, str], Action] = {
    ("POST", "/task/{id}/_start"): Action("operator", "start", "starting a task"),
    ("POST", "/task/{id}/_stop"): Action("operator", "stop", "stopping a task's runs"),
    ("POST", "/run/{run_id}/_stop"): Action("operator", "stop", "stopping a run"),
    ("POST", "/run/{run_id}/_rerun"): Action("operator", "rerun", "running a run again"),
    ("DELETE", "/task/{id}"): Action("admin", "delete", "deleting a task"),
    ("POST", "/_reload"): Action("admin", "reload", "reloading the configuration"),
    ("POST", "/nodes/{name}/_drain"): Action("admin", "drain", "draining a node"),
}
"""Every route that is not a read. A read (GET, HEAD) needs the viewer role."""

AUDIT_ACTIONS = ("start", "stop", "rerun", "delete", "reload", "drain", "sign_in_failed", "forbidden")


def action_of(method: str, route: str | None) -> Action | None:
    """What a request does: an action, or None for a read. A method that changes something on a
    route not listed needs the admin role (nothing is writable by default)."""
    if route is not None and (method, route) in ACTIONS:
        return ACTIONS[(method, route)]
    if method in ("GET", "HEAD", "OPTIONS"):
        return None
    return Action("admin", method.lower(), f"{method} {route}")


class Access:
    """The configured tokens; `caller` tells who a request's Authorization header names."""

    def __init__(self, tokens: list[tuple[str, str, str]]) -> None:
        self._tokens = [(name, token.encode(), role) for name, token, role in tokens]

    @classmethod
    def of(cls, api: ApiSection) -> Access:
        """The tokens of an api section whose token files were read (`api.token` is admin)."""
        tokens = [(ADMIN_NAME, api.token, "admin")] if api.token else []
        tokens += [(entry.name, entry.token, entry.role) for entry in api.tokens if entry.token]
        return cls(tokens)

    @property
    def enabled(self) -> bool:
        return bool(self._tokens)

    def replace(self, other: Access) -> list[str]:
        """Take `other`'s tokens (a reload: a removed token stops working at once); answer the
        names whose token or role changed, came or went. Turning tokens on or off altogether
        needs a restart (the listener's safety check and the OpenAPI document depend on it)."""
        before = {name: (token, role) for name, token, role in self._tokens}
        after = {name: (token, role) for name, token, role in other._tokens}
        self._tokens = list(other._tokens)
        return sorted(name for name in before.keys() | after.keys() if before.get(name) != after.get(name))

    def caller(self, authorization: str) -> Caller | None:
        """The caller a header names, or None when it names no token. Every token is compared,
        in constant time, whichever matches: the time taken tells nothing of which or how close."""
        if not self._tokens:
            return NOBODY
        scheme, _, supplied = authorization.partition(" ")
        # Bytes that are not UTF-8 arrive as surrogates: kept as they are, they simply do not match.
        given = supplied.strip().encode("utf-8", "surrogateescape")
        found: Caller | None = None
        for name, token, role in self._tokens:
            if hmac.compare_digest(given, token) and found is None:
                found = Caller(name, role)
        return found if scheme.lower() == "bearer" else None


class Throttle:
    """Refused sign-ins recorded at most once a minute per remote address; the ones between are
    counted and told with the next one recorded. A flood of wrong tokens cannot fill the store."""

    def __init__(self, window_s: float = 60.0, size: int = 4096) -> None:
        self.window_s = window_s
        self.size = size
        self._seen: collections.OrderedDict[str, tuple[float, int]] = collections.OrderedDict()

    def admit(self, key: str, now: float) -> int | None:
        """None: counted, not recorded. Else record it, with this many folded in since the last."""
        seen = self._seen.get(key)
        if seen is not None and now - seen[0] < self.window_s:
            self._seen[key] = (seen[0], seen[1] + 1)
            return None
        self._seen[key] = (now, 0)
        self._seen.move_to_end(key)
        while len(self._seen) > self.size:
            self._seen.popitem(last=False)
        return 0 if seen is None else seen[1]
