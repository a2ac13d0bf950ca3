"""The edge of the configuration: reading the main file and the files its `include:` globs match."""

from __future__ import annotations

import glob
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import replace
from pathlib import Path

from taskd.config.build import build_config
from taskd.config.model import Config
from taskd.config.schema import ApiSection
from taskd.errors import ConfigError
from taskd.processor import ProcessorType
from taskd.processors import registry
from taskd.redact import MASK, Redactor
from taskd.yamldoc import CREDENTIAL, Document, format_path, parse_document


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
    env = _Environ(env, read)
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
    _default_token_file(main, env.credential_path(TOKEN_CREDENTIAL))
    try:
        if kinds is None:
            found = registry()
            config = build_config(main_path.absolute(), main, includes, found.types, found.errors)
        else:
            config = build_config(main_path.absolute(), main, includes, kinds)
    except ConfigError as exc:
        raise ConfigError([_unquoted(problem, env.secrets) for problem in exc.problems]) from None
    api = _tokens_read(config.api, config.resolve, main, read)
    tokens = {entry.token for entry in api.tokens if entry.token} | ({api.token} if api.token else set())
    return replace(config, api=api, secrets=frozenset(env.secrets | tokens))


def load_api(
    path: str | Path, env: Mapping[str, str], read: Callable[[Path], str] = lambda p: p.read_text(encoding="utf-8")
) -> ApiSection | None:
    """The main file's `api:` section alone (its token read from `token_file` or the credential),
    for the command line to find the daemon when the rest of the configuration has errors (a
    `taskd reload` of a broken file must reach the daemon to hear them). None when even that
    cannot be read."""
    main_path = Path(path)
    try:
        environ = _Environ(env, read)
        main = parse_document(str(path), read(main_path), environ)
        if not isinstance(main.data, dict) or any(
            text == "api" or text.startswith(("api.", "api:")) for _, text in main.problems
        ):
            return None  # the YAML cannot be read, or its api: section itself has problems
        _default_token_file(main, environ.credential_path(TOKEN_CREDENTIAL))
        raw = main.data.get("api", {})
        api = ApiSection.model_validate(raw if raw is not None else {})
        api = _tokens_read(api, lambda name: (main_path.parent / Path(name).expanduser()).resolve(), main, read)
    except Exception:  # whatever is wrong, load_config says it; here there is no api section to use
        return None
    return api


def _unquoted(problem: str, secrets: set[str]) -> str:
    """A configuration error as shown: a message may quote a value, never a credential's, nor a
    word of one, in any case (a validator may have upper-cased it or parsed one word of it)."""
    if not secrets:
        return problem
    pieces = {piece for value in secrets for piece in (value, *value.split()) if len(piece) >= 4}
    shown = Redactor(secrets).text(problem)
    for piece in sorted(pieces, key=len, reverse=True):
        shown = re.sub(re.escape(piece), MASK, shown, flags=re.IGNORECASE)
    return shown


TOKEN_CREDENTIAL = "api-token"
"""The systemd credential taskd (and its CLI) take the API token from when the config names none."""


def _default_token_file(main: Document, credential: Path | None) -> None:
    """Under systemd with `LoadCredential=api-token:...`, the credential is the token unless the
    config gives one itself."""
    if credential is None or not isinstance(main.data, dict):
        return
    api = main.data.setdefault("api", {})
    if isinstance(api, dict) and not api.get("token") and not api.get("token_file"):
        api["token_file"] = str(credential)


def _tokens_read(
    api: ApiSection, resolve: Callable[[str], Path], main: Document, read: Callable[[Path], str]
) -> ApiSection:
    """The api section with every token read from its file, and no token given twice (which
    would leave the name and role a request is recorded with to chance)."""
    token = api.token
    if api.token_file:
        token = _read_token(resolve(api.token_file), main, read, ("api", "token_file"))
    entries = tuple(
        entry.model_copy(
            update={"token": _read_token(resolve(entry.token_file), main, read, ("api", "tokens", i, "token_file"))}
        )
        if entry.token_file
        else entry
        for i, entry in enumerate(api.tokens)
    )
    seen: dict[str, str] = {} if token is None else {token: "admin"}
    for i, entry in enumerate(entries):
        if entry.token is not None and entry.token in seen:
            where = f"{main.file}:{main.line_of(('api', 'tokens', i))}: api.tokens[{i}]"
            raise ConfigError([f"{where}: token {entry.name!r} is the same as token {seen[entry.token]!r}"])
        if entry.token is not None:
            seen[entry.token] = entry.name
    return api.model_copy(update={"token": token, "tokens": entries})


def _read_token(path: Path, main: Document, read: Callable[[Path], str], key: tuple[str | int, ...]) -> str:
    where = f"{main.file}:{main.line_of(key)}: {format_path(key)}"
    try:
        token = read(path).strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError([f"{where}: cannot read {path}: {exc}"]) from None
    if not token:
        raise ConfigError([f"{where}: {path} is empty"])
    if any(c.isspace() for c in token):
        raise ConfigError([f"{where}: the token in {path} holds whitespace; a bearer token cannot"])
    return token


class _Environ(Mapping[str, str]):
    """The environment as ${...} in the config sees it: the process's variables, and
    `credential:NAME` for a systemd credential's content, noted as a secret once read."""

    def __init__(self, env: Mapping[str, str], read: Callable[[Path], str]) -> None:
        self._env = env
        self._read = read
        self.secrets: set[str] = set()

    def credential_path(self, name: str) -> Path | None:
        directory = self._env.get("CREDENTIALS_DIRECTORY")
        if not directory or "/" in name or name in (".", ".."):
            return None
        path = Path(directory) / name
        return path if path.is_file() else None

    def __getitem__(self, name: str) -> str:
        if not name.startswith(CREDENTIAL):
            return self._env[name]
        path = self.credential_path(name[len(CREDENTIAL) :])
        if path is None:
            raise KeyError(name)
        try:
            value = self._read(path).rstrip("\n")
        except (OSError, UnicodeDecodeError):
            raise KeyError(name) from None
        if value:
            self.secrets.add(value)
        return value

    def __contains__(self, name: object) -> bool:
        if isinstance(name, str) and name.startswith(CREDENTIAL):
            return self.credential_path(name[len(CREDENTIAL) :]) is not None
        return name in self._env

    def __iter__(self) -> Iterator[str]:
        return iter(self._env)

    def __len__(self) -> int:
        return len(self._env)
