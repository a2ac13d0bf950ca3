"""The edge of the configuration: reading the main file and the files its `include:` globs match."""

from __future__ import annotations

import glob
from collections.abc import Callable, Mapping
from pathlib import Path

from taskd.config.build import build_config
from taskd.config.model import Config
from taskd.errors import ConfigError
from taskd.processor import ProcessorType
from taskd.processors import registry
from taskd.yamldoc import Document, parse_document


def load_config(
    path: str | Path,
    env: Mapping[str, str],
    kinds: Mapping[str, ProcessorType] | None = None,
    read: Callable[[Path], str] = lambda p: p.read_text(encoding="utf-8"),
) -> Config:
    """Read `path` and the files its `include:` globs match, and validate them together.

    `kinds` defaults to every registered processor type (built-ins and loaded plugins).
    """
    main_path = Path(path)
    display = str(path)
    try:
        text = read(main_path)
    except FileNotFoundError:
        where = main_path.parent.absolute()
        raise ConfigError([f"{display}: config file not found (looked for {main_path.name} in {where})"]) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError([f"{display}: cannot read config file: {exc}"]) from None
    main = parse_document(display, text, env)
    includes: list[Document] = []
    patterns = main.data.get("include") if isinstance(main.data, dict) else None
    seen: set[Path] = {main_path.resolve()}
    if isinstance(patterns, list):
        base = main_path.parent
        for i, pattern in enumerate(patterns):
            if not isinstance(pattern, str):
                continue  # reported by validation as a wrong type
            full = pattern if Path(pattern).is_absolute() else str(base / pattern)
            matches = sorted(glob.glob(full, recursive=True))
            files = [Path(m) for m in matches if Path(m).is_file()]
            if not files:
                main.problem(("include", i), f"pattern {pattern!r} matches no file (looked in {base.resolve()})")
                continue
            for file in files:
                if file.resolve() in seen:
                    continue
                seen.add(file.resolve())
                try:
                    included_text = read(file)
                except (OSError, UnicodeDecodeError) as exc:
                    main.problem(("include", i), f"cannot read {file}: {exc}")
                    continue
                includes.append(parse_document(str(file), included_text, env))
    if kinds is None:
        found = registry()
        return build_config(main_path.absolute(), main, includes, found.types, found.errors)
    return build_config(main_path.absolute(), main, includes, kinds)
