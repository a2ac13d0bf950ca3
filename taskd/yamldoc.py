"""YAML text -> plain data plus the line of every key path, with ${VAR} expansion. Pure."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import yaml

KeyPath = tuple[str | int, ...]

_STR = "tag:yaml.org,2002:str"
_MERGE = "tag:yaml.org,2002:merge"
_COLLECTIONS = frozenset({"tag:yaml.org,2002:map", "tag:yaml.org,2002:seq"})

MAX_ALIAS_EXPANSION = 100_000
"""How many values aliases may repeat in one file: far more than any real configuration
repeats, and far fewer than a "billion laughs" document (nested aliases) would expand to."""


class _PythonParser(yaml.reader.Reader, yaml.scanner.Scanner, yaml.parser.Parser):
    def __init__(self, stream: str) -> None:
        yaml.reader.Reader.__init__(self, stream)
        yaml.scanner.Scanner.__init__(self)
        yaml.parser.Parser.__init__(self)


# libyaml's parser when PyYAML was built with it (the wheels are): ten times faster on big files.
_PARSER: Any = getattr(yaml.cyaml, "CParser", None) if yaml.__with_libyaml__ else _PythonParser
_N = TypeVar("_N", bound=yaml.Node)


class _Loader(yaml.composer.Composer, _PARSER, yaml.constructor.SafeConstructor, yaml.resolver.Resolver):  # type: ignore[misc]
    """PyYAML's safe loader, composing a light tree: one mark per line, shared by the nodes that
    start on it (a node's marks otherwise take most of the tree), and the items of the top-level
    lists (`tasks:`, `pipelines:`) handed to `early` as each is composed, while no anchor was
    seen: what it returns (their data) stands in for their nodes, so the tree of a file of many
    tasks is never whole. Notes whether an alias was met (without, each node is reached once)."""

    def __init__(self, stream: str, early: Callable[[KeyPath, int, yaml.Node], yaml.Node] | None = None) -> None:
        _PARSER.__init__(self, stream)
        yaml.composer.Composer.__init__(self)
        yaml.constructor.SafeConstructor.__init__(self)
        yaml.resolver.Resolver.__init__(self)
        self.aliased = False
        self.irregular = False
        """A top-level key given twice, or a merge key (`<<`) at the top level: the items converted
        early might not be those the file's data holds."""
        self._early = early
        self._mark = _LineMark("", -1, 0)
        self._depth = 0
        self.root_line = 1
        self._top_keys: set[str] = set()
        self._list_key: tuple[str, int] | None = None  # the top-level key (and its line) of the list composed next

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node | None:
        if self.check_event(yaml.AliasEvent):
            self.aliased = True
        if self._depth == 0:
            self.root_line = self.peek_event().start_mark.line + 1
        if self._depth == 1:
            self._list_key = None
            if isinstance(index, yaml.ScalarNode):  # the value of a top-level key
                self._top_level(index)
        self._depth += 1
        try:
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def _top_level(self, key: yaml.ScalarNode) -> None:
        if key.tag == _MERGE or (key.tag == _STR and key.value in self._top_keys):
            self.irregular = True
        if key.tag == _STR:
            self._top_keys.add(key.value)
            self._list_key = (key.value, _line(key))

    def compose_scalar_node(self, anchor: Any) -> yaml.ScalarNode:
        return self._light(super().compose_scalar_node(anchor))

    def compose_sequence_node(self, anchor: Any) -> yaml.SequenceNode:
        top, self._list_key = (self._list_key if self._depth == 2 else None), None
        start = self.get_event()
        tag = start.tag
        if tag is None or tag == "!":
            tag = self.resolve(yaml.SequenceNode, None, start.implicit)  # type: ignore[no-untyped-call]
        node = yaml.SequenceNode(tag, [], start.start_mark, None, flow_style=start.flow_style)
        if anchor is not None:
            self.anchors[anchor] = node
        index = 0
        while not self.check_event(yaml.SequenceEndEvent):
            item = self.compose_node(node, index)
            assert item is not None  # an event of a node follows, else the parser raised
            if top is not None and self._early is not None and not self.anchors:
                item = self._early((top[0], index), top[1], item)  # nothing can refer to it: no anchor so far
            node.value.append(item)
            index += 1
        node.end_mark = self.get_event().end_mark
        return self._light(node)

    def compose_mapping_node(self, anchor: Any) -> yaml.MappingNode:
        self._list_key = None
        return self._light(super().compose_mapping_node(anchor))

    def _light(self, node: _N) -> _N:
        mark = node.start_mark
        if mark.line != self._mark.line:  # nodes are composed in order: a line's are one after another
            self._mark = _LineMark(mark.name, mark.line, mark.column)
        node.start_mark = node.end_mark = self._mark
        return node


class _Converted(yaml.Node):
    """An item converted as it was composed: its data, and its lines already recorded."""

    def __init__(self, data: Any, node: yaml.Node) -> None:
        super().__init__("", data, node.start_mark, node.end_mark)


class _LineMark:
    """Where a node starts, as far as the messages tell: the file and the line (and the column of
    the line's first node)."""

    __slots__ = ("column", "line", "name", "number")
    index = 0
    buffer = None
    pointer = None

    def __init__(self, name: str, line: int, column: int) -> None:
        self.name = name
        self.line = line
        self.column = column
        self.number = line + 1
        """The 1-based line: one int for every node and key path on the line."""

    def get_snippet(self) -> None:
        return None

    def __str__(self) -> str:
        return f'  in "{self.name}", line {self.line + 1}, column {self.column + 1}'


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
    _strings: dict[str, str] = field(default_factory=dict, repr=False)  # one object per distinct text
    composing: bool = field(default=False, repr=False)
    """Converting an item as it is composed: it holds no alias, and its nodes go once converted."""
    irregular: bool = field(default=False, repr=False)
    release: bool = field(default=False, repr=False)
    """Whether each node is reached once (no alias), so that the tree can be let go of as it is
    converted: the tree and the data it becomes are not whole at once."""

    def shared(self, text: str) -> str:
        """`text`, as the one object every equal string of this document is (the same pipeline
        name, schedule or key in thousands of tasks is kept once)."""
        return self._strings.setdefault(text, text)

    def converted(self) -> None:
        """Forget what only the conversion needed."""
        self._seen = set()
        self._open = set()
        self._strings = {}

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
    try:
        doc = _parse(file, text, env, early=True)
    except _Fallback:  # an item that cannot convert: again, the plain way, for the same messages
        return _parse(file, text, env, early=False)
    if doc.irregular:  # what was converted early may not be what the data holds: again, the plain way
        doc = _parse(file, text, env, early=False)
    return doc


class _Fallback(Exception):
    """Converting an item early failed (a tag no constructor knows, nesting too deep)."""


def _parse(file: str, text: str, env: Mapping[str, str], early: bool) -> Document:
    doc = Document(file, None, {})

    def convert_early(path: KeyPath, key_line: int, node: yaml.Node) -> yaml.Node:
        doc.lines.setdefault((), loader.root_line)
        if key_line != loader.root_line:
            doc.lines.setdefault(path[:1], key_line)
        doc.composing = True
        try:
            return _Converted(_convert(node, path, doc, loader, env, _line(node), key_line), node)
        except Exception as exc:
            raise _Fallback() from exc
        finally:
            doc.composing = False

    loader = _Loader(text, convert_early if early else None)
    try:
        node = _compose(loader, doc)
        if node is not None:
            doc.release = not loader.aliased
            doc.irregular = loader.irregular and early
            _convert_document(node, doc, loader, env)
    finally:
        loader.dispose()  # its parser's states refer to it: freed now rather than by the next collection
        doc.converted()
    return doc


def _compose(loader: _Loader, doc: Document) -> yaml.Node | None:
    """The document's tree, or None with the reason in `doc` (and nothing of what was converted early)."""
    try:
        node = loader.get_single_node()
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else 1
        column = f" (column {mark.column + 1})" if mark else ""
        what = "; ".join(p for p in (exc.context, exc.problem) if p)
        if exc.context_mark is not None and mark is not None and exc.context_mark.line != mark.line:
            what += f" (the construct began at line {exc.context_mark.line + 1})"
        doc.lines, doc.problems = {}, [(line, f"YAML syntax error{column}: {what}")]
        return None
    except yaml.YAMLError as exc:
        doc.lines, doc.problems = {}, [(1, f"YAML error: {exc}")]
        return None
    if node is None:
        doc.problems.append((1, "the file is empty; expected a mapping such as 'tasks:' and 'pipelines:'"))
    return node


def _convert_document(node: yaml.Node, doc: Document, loader: _Loader, env: Mapping[str, str]) -> None:
    try:
        doc.data = _convert(node, (), doc, loader, env, _line(node), 0)
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


def _construct(loader: yaml.SafeLoader, node: yaml.Node) -> Any:
    """A scalar's value, through the loader's constructors; the loader keeps no node."""
    try:
        return loader.construct_object(node, deep=True)
    finally:
        loader.constructed_objects.clear()


def _line(node: yaml.Node) -> int:
    mark = node.start_mark
    return mark.number if isinstance(mark, _LineMark) else mark.line + 1


def _convert(
    node: yaml.Node,
    path: KeyPath,
    doc: Document,
    loader: yaml.SafeLoader,
    env: Mapping[str, str],
    line: int,
    parent: int,
) -> Any:
    """`node` as plain data. `line` is the line of `path` (of its key, in a mapping), recorded
    unless it is its parent's (`line_of` finds that one): a flow mapping's keys take no entry."""
    if isinstance(node, _Converted):
        return node.value
    if line != parent:
        doc.lines.setdefault(path, line)
    if doc.composing:
        if isinstance(node, yaml.CollectionNode):
            return _convert_collection(node, path, doc, loader, env, line)
        return _convert_scalar(node, path, doc, loader, env)
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
            return _convert_collection(node, path, doc, loader, env, line)
        finally:
            doc._open.discard(id(node))
    return _convert_scalar(node, path, doc, loader, env)


def _convert_scalar(
    node: yaml.Node, path: KeyPath, doc: Document, loader: yaml.SafeLoader, env: Mapping[str, str]
) -> Any:
    # Strings are by far the most common scalars and need no constructor.
    value = doc.shared(node.value) if node.tag == _STR else _construct(loader, node)
    if isinstance(value, str) and "$" in value:
        expanded = _expand(value, path, doc, env)
        style = node.style if isinstance(node, yaml.ScalarNode) else None
        if expanded != value and not style:  # plain: None from PyYAML's parser, "" from libyaml's
            # An unquoted scalar gets the type its expanded text would have had if written out.
            tag = loader.resolve(yaml.ScalarNode, expanded, (True, False))  # type: ignore[no-untyped-call]
            return _construct(loader, yaml.ScalarNode(tag, expanded))
        return expanded
    return value


def _convert_collection(
    node: yaml.CollectionNode, path: KeyPath, doc: Document, loader: yaml.SafeLoader, env: Mapping[str, str], line: int
) -> Any:
    if node.tag not in _COLLECTIONS:  # `!foo {...}`, `!!python/object:... {...}`, `!!set`: no such thing here
        where = format_path(path) or "top level"
        doc.problems.append((node.start_mark.line + 1, f"{where}: YAML tag {node.tag!r} is not allowed here"))
    if isinstance(node, yaml.MappingNode):
        loader.flatten_mapping(node)
        out: dict[Any, Any] = {}
        pairs = node.value
        for j, (key_node, value_node) in enumerate(pairs):
            if doc.release:
                pairs[j] = _DONE
            key = doc.shared(key_node.value) if key_node.tag == _STR else _construct(loader, key_node)
            key_line = _line(key_node)
            if not isinstance(key, str):
                hint = ""
                if isinstance(key, bool) and isinstance(key_node, yaml.ScalarNode) and not key_node.style:
                    hint = f" (YAML 1.1 reads {key_node.value} as {key}: quote it, or use another key"
                    hint += ", such as when:)" if key_node.value.lower() == "on" else ")"
                where = format_path(path) or "top level"
                doc.problems.append(
                    (key_line, f"{where}: key {key_node.value if hint else key!r} must be a string{hint}")
                )
                continue
            if key in out:
                first = doc.line_of((*path, key))
                where = format_path((*path, key))
                doc.problems.append((key_line, f"{where}: duplicate key (first given at line {first})"))
                continue
            out[key] = _convert(value_node, (*path, key), doc, loader, env, key_line, line)
        return out
    items = node.value
    out_items = []
    for i, item in enumerate(items):
        if doc.release:
            items[i] = None
        out_items.append(_convert(item, (*path, i), doc, loader, env, _line(item), line))
    return out_items


_DONE = (None, None)
"""A converted pair of a mapping node, once let go of."""


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
