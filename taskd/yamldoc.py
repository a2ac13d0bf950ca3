"""YAML text -> plain data plus the line of every key path, with ${VAR} expansion. Pure."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import yaml

KeyPath = tuple[str | int, ...]

# libyaml's parser when PyYAML was built with it (the wheels are): ten times faster on big files.
_COMPOSER: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_STR = "tag:yaml.org,2002:str"
_COLLECTIONS = frozenset({"tag:yaml.org,2002:map", "tag:yaml.org,2002:seq"})

MAX_ALIAS_EXPANSION = 100_000
"""How many values aliases may repeat in one file: far more than any real configuration
repeats, and far fewer than a "billion laughs" document (nested aliases) would expand to."""


class _AliasLoop(Exception):
    """An alias inside the node it refers to (`x: &a [*a]`): the value would never end."""

    def __init__(self, line: int) -> None:
        super().__init__(line)
        self.line = line


class _AliasBomb(Exception):
    """Aliases expanded to more values than MAX_ALIAS_EXPANSION."""

    def __init__(self, line: int) -> None:
        super().__init__(line)
        self.line = line


@dataclass
class Document:
    """One parsed YAML file: its data, the line of every key path, and its problems so far."""

    file: str
    data: Any
    lines: dict[KeyPath, int]
    problems: list[tuple[int, str]] = field(default_factory=list)
    _seen: set[int] = field(default_factory=set, repr=False)  # the nodes converted once
    _open: set[int] = field(default_factory=set, repr=False)  # the containers being converted
    _repeated: int = 0  # values converted again through an alias

    def line_of(self, path: Sequence[str | int]) -> int:
        """The line of `path`, or of its nearest ancestor that has one."""
        key = tuple(path)
        while key:
            if key in self.lines:
                return self.lines[key]
            key = key[:-1]
        return self.lines.get((), 1)

    def problem(self, path: Sequence[str | int], message: str) -> None:
        where = format_path(path)
        self.problems.append((self.line_of(path), f"{where}: {message}" if where else message))

    def messages(self) -> list[str]:
        return [f"{self.file}:{line}: {text}" for line, text in sorted(self.problems, key=lambda p: p[0])]


_NAME = re.compile(r"credential:[A-Za-z0-9_.-]+|[A-Za-z_][A-Za-z0-9_]*")
CREDENTIAL = "credential:"
"""`${credential:NAME}`: a systemd credential's content ($CREDENTIALS_DIRECTORY/NAME), looked up
in `env` under that name by whoever supplies it (the config loader)."""


def format_path(path: Sequence[str | int]) -> str:
    """('tasks', 2, 'schedule') -> 'tasks[2].schedule'."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


def parse_document(file: str, text: str, env: Mapping[str, str]) -> Document:
    """Parse YAML text into plain data, recording the line of every key path; never raises."""
    doc = Document(file, None, {})
    try:
        node = yaml.compose(text, Loader=_COMPOSER)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else 1
        column = f" (column {mark.column + 1})" if mark else ""
        what = "; ".join(p for p in (exc.context, exc.problem) if p)
        if exc.context_mark is not None and mark is not None and exc.context_mark.line != mark.line:
            what += f" (the construct began at line {exc.context_mark.line + 1})"
        doc.problems.append((line, f"YAML syntax error{column}: {what}"))
        return doc
    except yaml.YAMLError as exc:
        doc.problems.append((1, f"YAML error: {exc}"))
        return doc
    if node is None:
        doc.problems.append((1, "the file is empty; expected a mapping such as 'tasks:' and 'pipelines:'"))
        return doc
    loader = yaml.SafeLoader("")
    try:
        doc.data = _convert(node, (), doc, loader, env)
    except _AliasBomb as exc:
        doc.data = None
        doc.problems.append(
            (exc.line, f"aliases expand to more than {MAX_ALIAS_EXPANSION} values; nested aliases are refused")
        )
    except _AliasLoop as exc:
        doc.data = None
        doc.problems.append((exc.line, "an alias refers to the node that contains it; its value would never end"))
    except RecursionError:  # a merge key (`<<`) that reaches its own mapping, or nesting past Python's limit
        doc.data = None
        doc.problems.append((1, "the document nests too deep, or a merge key (<<) refers to its own mapping"))
    except yaml.MarkedYAMLError as exc:  # an unknown tag, a bad merge key (`<<`), a bad value
        doc.data = None
        mark = exc.problem_mark or exc.context_mark
        what = "; ".join(p for p in (exc.context, exc.problem) if p)
        doc.problems.append((mark.line + 1 if mark else 1, f"YAML error: {what}"))
    return doc


def _convert(node: yaml.Node, path: KeyPath, doc: Document, loader: yaml.SafeLoader, env: Mapping[str, str]) -> Any:
    doc.lines.setdefault(path, node.start_mark.line + 1)
    if id(node) in doc._seen:  # reached again through an alias
        doc._repeated += 1
        if doc._repeated > MAX_ALIAS_EXPANSION:
            raise _AliasBomb(node.start_mark.line + 1)
    else:
        doc._seen.add(id(node))
    if isinstance(node, yaml.CollectionNode):
        if id(node) in doc._open:
            raise _AliasLoop(node.start_mark.line + 1)
        doc._open.add(id(node))
        try:
            return _convert_collection(node, path, doc, loader, env)
        finally:
            doc._open.discard(id(node))
    # Strings are by far the most common scalars and need no constructor.
    value = node.value if node.tag == _STR else loader.construct_object(node, deep=True)
    if isinstance(value, str) and "$" in value:
        expanded = _expand(value, path, doc, env)
        style = node.style if isinstance(node, yaml.ScalarNode) else None
        if expanded != value and not style:  # plain: None from PyYAML's parser, "" from libyaml's
            # An unquoted scalar gets the type its expanded text would have had if written out.
            tag = loader.resolve(yaml.ScalarNode, expanded, (True, False))  # type: ignore[no-untyped-call]
            return loader.construct_object(yaml.ScalarNode(tag, expanded), deep=True)
        return expanded
    return value


def _convert_collection(
    node: yaml.CollectionNode, path: KeyPath, doc: Document, loader: yaml.SafeLoader, env: Mapping[str, str]
) -> Any:
    if node.tag not in _COLLECTIONS:  # `!foo {...}`, `!!python/object:... {...}`, `!!set`: no such thing here
        where = format_path(path) or "top level"
        doc.problems.append((node.start_mark.line + 1, f"{where}: YAML tag {node.tag!r} is not allowed here"))
    if isinstance(node, yaml.MappingNode):
        loader.flatten_mapping(node)
        out: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            key = loader.construct_object(key_node, deep=True)
            line = key_node.start_mark.line + 1
            if not isinstance(key, str):
                hint = ""
                if isinstance(key, bool) and isinstance(key_node, yaml.ScalarNode) and not key_node.style:
                    hint = f" (YAML 1.1 reads {key_node.value} as {key}: quote it, or use another key"
                    hint += ", such as when:)" if key_node.value.lower() == "on" else ")"
                where = format_path(path) or "top level"
                doc.problems.append((line, f"{where}: key {key_node.value if hint else key!r} must be a string{hint}"))
                continue
            if key in out:
                first = doc.lines.get((*path, key))
                where = format_path((*path, key))
                doc.problems.append((line, f"{where}: duplicate key (first given at line {first})"))
                continue
            doc.lines[(*path, key)] = line
            out[key] = _convert(value_node, (*path, key), doc, loader, env)
        return out
    return [_convert(item, (*path, i), doc, loader, env) for i, item in enumerate(node.value)]


def _expand(text: str, path: KeyPath, doc: Document, env: Mapping[str, str]) -> str:
    """`$$` -> `$`; `${VAR}` -> its value; `${VAR:-default}` -> its value, or `default` (itself
    expanded, so defaults nest: `${A:-${B:-x}}`) when VAR is not set; `${credential:NAME}` as VAR."""
    out: list[str] = []
    i = 0
    while True:
        j = text.find("$", i)
        if j < 0:
            out.append(text[i:])
            return "".join(out)
        out.append(text[i:j])
        if text.startswith("$$", j):
            out.append("$")
            i = j + 2
            continue
        if not text.startswith("${", j):
            out.append("$")
            i = j + 1
            continue
        found = _NAME.match(text, j + 2)
        end = _closing_brace(text, found.end()) if found else -1
        if found is None or end < 0 or (end > found.end() and not text.startswith(":-", found.end())):
            doc.problem(path, f"unterminated or malformed ${{...}} in {text!r}; write ${{VAR}} or ${{VAR:-default}}")
            out.append(text[j:])
            return "".join(out)
        name = found.group(0)
        if name in env:
            out.append(env[name])
        elif end > found.end():
            out.append(_expand(text[found.end() + 2 : end], path, doc, env))
        elif name.startswith(CREDENTIAL):
            doc.problem(
                path,
                f"credential {name[len(CREDENTIAL) :]} not found: taskd looks for it in $CREDENTIALS_DIRECTORY"
                " (systemd's LoadCredential=)",
            )
        else:
            doc.problem(
                path,
                f"environment variable {name} is not set; write ${{{name}:-default}} to allow that, "
                f"or $${{{name}}} for a literal ${{{name}}}",
            )
        i = end + 1


def _closing_brace(text: str, start: int) -> int:
    """The index of the `}` closing a `${` whose name ends at `start`, counting nested `${...}`."""
    depth = 1
    i = start
    while i < len(text):
        if text.startswith("${", i):
            depth += 1
            i += 2
            continue
        if text[i] == "}":
            depth -= 1
            if depth == 0:
                return i
        i += 1
    return -1
