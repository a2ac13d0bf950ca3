"""Config loading: the model, ${VAR} expansion, includes, and errors naming file, line and key."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pydantic
import pytest

from taskd.config import Config, load_config
from taskd.durations import format_duration, parse_duration
from taskd.errors import ConfigError, DurationError

PIPELINE = """
pipelines:
  - name: p
    processors:
      - shell: {command: "true"}
"""


@pytest.fixture(autouse=True)
def _in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Run from the config's directory so messages name files as an operator would type them."""
    monkeypatch.chdir(tmp_path)


def write(directory: Path, name: str, text: str) -> Path:
    path = directory / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def load(tmp_path: Path, text: str, env: dict[str, str] | None = None, **files: str) -> Config:
    """Write `text` as taskd.yml (and `files`, `a__b` meaning `a/b.yml`) and load it."""
    for name, body in files.items():
        write(tmp_path, name.replace("__", "/") + ".yml", body)
    write(tmp_path, "taskd.yml", text)
    return load_config(Path("taskd.yml"), env or {})


def problems(tmp_path: Path, text: str, env: dict[str, str] | None = None, **files: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load(tmp_path, text, env, **files)
    return list(info.value.problems)


def D(text: str) -> str:
    return textwrap.dedent(text).lstrip("\n")


def only(found: list[str]) -> str:
    assert len(found) == 1, found
    return found[0]


def test_a_full_config_loads_with_defaults_and_overrides(tmp_path: Path) -> None:
    config = load(
        tmp_path,
        D("""
        task:
          time_zone: Europe/Berlin
          max_concurrent_tasks: 3
          shutdown_timeout: 1h30m
        store: {path: data/t.db}
        tasks:
          - id: backup
            name: Daily Data Backup
            schedule: "0 2 * * *"
            pipeline: p
            timeout: 30m
            retry_count: 3
            concurrency: queue
            misfire: run_once
            priority: 5
            params: {target: /srv/data, tags: [a, b]}
          - id: manual
            enabled: false
            pipeline: p
            time_zone: America/New_York
            retry: {count: 2, backoff: 5s, max_backoff: 1m, jitter: true}
        """)
        + PIPELINE,
    )
    assert config.task.time_zone == "Europe/Berlin"
    assert config.task.max_concurrent_tasks == 3
    assert config.task.shutdown_timeout == 5400
    assert config.api.listen == "127.0.0.1:8080" and config.api.token is None
    assert Path(config.store_location) == (tmp_path / "data" / "t.db").resolve()
    backup, manual = config.tasks
    assert backup.timeout == 1800 and backup.retry.count == 3 and backup.retry.backoff == 10
    assert backup.concurrency == "queue" and backup.misfire == "run_once" and backup.priority == 5
    assert config.zone_for(backup) == "Europe/Berlin"
    assert manual.display_name == "manual" and not manual.enabled and manual.schedule is None
    assert config.zone_for(manual) == "America/New_York"
    assert manual.retry.jitter and manual.retry.max_backoff == 60
    assert config.pipelines["p"].processors[0].type == "shell"
    assert config.schedule_for(manual) is None


def test_config_objects_are_immutable(tmp_path: Path) -> None:
    config = load(tmp_path, "tasks:\n  - {id: t, pipeline: p, params: {a: [1, 2]}}\n" + PIPELINE)
    task = config.tasks[0]
    with pytest.raises(pydantic.ValidationError):
        task.enabled = False  # type: ignore[misc]
    with pytest.raises(TypeError):
        task.params["a"] = 3  # type: ignore[index]
    assert task.params["a"] == (1, 2)
    with pytest.raises(TypeError):
        config.pipelines["q"] = config.pipelines["p"]  # type: ignore[index]


def test_definition_hash_follows_the_task_and_its_pipeline(tmp_path: Path) -> None:
    """The hash that tombstones compare changes when the task or its pipeline changes, not otherwise."""
    base = "tasks:\n  - {id: t, pipeline: p, params: {a: [1]}}\n"
    first = load(tmp_path, base + PIPELINE)
    same = load(tmp_path, "# a comment\n" + base + PIPELINE)
    edited = load(tmp_path, base.replace("[1]", "[2]") + PIPELINE)
    other_pipeline = load(tmp_path, base + PIPELINE.replace('"true"', '"false"'))
    digest = first.definition_hash(first.tasks[0])
    assert digest == same.definition_hash(same.tasks[0])
    assert digest != edited.definition_hash(edited.tasks[0])
    assert digest != other_pipeline.definition_hash(other_pipeline.tasks[0])


def test_environment_variables_expand_with_defaults_and_types(tmp_path: Path) -> None:
    config = load(
        tmp_path,
        D("""
        task:
          max_concurrent_tasks: ${SLOTS:-7}
        api: {token: "${TOKEN:-}", listen: "127.0.0.1:${PORT}"}
        tasks:
          - {id: t, pipeline: p, params: {price: "$$5", host: "${HOST}"}}
          - id: u
            pipeline: p
            enabled: ${ENABLED:-true}
            priority: ${PRIO:-2}
        """)
        + PIPELINE,
        env={"PORT": "9999", "HOST": "db.local"},
    )
    # Unquoted scalars take the type their expansion would have had if written out.
    assert config.task.max_concurrent_tasks == 7
    assert config.api.token is None
    assert config.api.listen == "127.0.0.1:9999"
    assert config.tasks[0].params == {"price": "$5", "host": "db.local"}
    assert config.tasks[1].enabled is True and config.tasks[1].priority == 2


@pytest.mark.parametrize(
    ("value", "env", "expected"),
    [
        ("${A:-${B:-x}}/y", {}, "x/y"),
        ("${A:-${B:-x}}/y", {"B": "b"}, "b/y"),
        ("${A:-${B:-x}}/y", {"A": "a", "B": "b"}, "a/y"),
        ("${A:-}", {}, ""),
        ("cost $$${A:-5} and $", {}, "cost $5 and $"),
        ("${A:-{braces}}", {}, "{braces}"),
    ],
)
def test_defaults_nest_like_a_shell(tmp_path: Path, value: str, env: dict[str, str], expected: str) -> None:
    config = load(tmp_path, f"tasks:\n  - {{id: t, pipeline: p, params: {{v: '{value}'}}}}\n" + PIPELINE, env=env)
    assert config.tasks[0].params["v"] == expected


@pytest.mark.parametrize("value", ["${A:-${B:-x}", "${A", "${A:x}", "${1A}"])
def test_malformed_expansions_are_errors(tmp_path: Path, value: str) -> None:
    found = problems(tmp_path, f"api:\n  token: '{value}'\n")
    assert only(found).startswith("taskd.yml:2: api.token: unterminated or malformed ${...}")


def test_quoted_expansion_stays_a_string(tmp_path: Path) -> None:
    found = problems(tmp_path, 'task:\n  max_concurrent_tasks: "${SLOTS:-7}"\n')
    assert only(found).startswith("taskd.yml:2: task.max_concurrent_tasks: expected a whole number, got string '7'")


def test_missing_environment_variable(tmp_path: Path) -> None:
    found = problems(tmp_path, "api:\n  token: ${API_TOKEN}\n")
    assert only(found).startswith("taskd.yml:2: api.token: environment variable API_TOKEN is not set")


def test_unknown_key_with_suggestion(tmp_path: Path) -> None:
    found = problems(tmp_path, 'tasks:\n  - id: t\n    pipeline: p\n    schedul: "* * * * *"\n' + PIPELINE)
    message = only(found)
    assert message.startswith("taskd.yml:4: tasks[0].schedul: unknown key 'schedul' (did you mean 'schedule'?)")
    assert "allowed keys: id, name, enabled, schedule" in message


def test_unknown_top_level_key(tmp_path: Path) -> None:
    found = problems(tmp_path, "task: {}\npipline: []\n")
    assert only(found).startswith("taskd.yml:2: pipline: unknown key 'pipline' (did you mean 'pipelines'?)")


def test_wrong_type(tmp_path: Path) -> None:
    found = problems(tmp_path, 'tasks:\n  - id: t\n    pipeline: p\n    enabled: "yes"\n' + PIPELINE)
    assert only(found) == "taskd.yml:4: tasks[0].enabled: expected true or false, got string 'yes'"


def test_yaml_booleans_where_a_string_belongs_get_a_hint(tmp_path: Path) -> None:
    found = problems(tmp_path, "tasks:\n  - id: off\n    pipeline: p\n" + PIPELINE)
    assert only(found).startswith("taskd.yml:2: tasks[0].id: expected a string, got boolean false (YAML reads")


def test_wrong_type_for_a_section(tmp_path: Path) -> None:
    found = problems(tmp_path, "task: [1, 2]\n")
    assert only(found) == "taskd.yml:1: task: expected a mapping (key: value), got a list"


def test_out_of_range_number(tmp_path: Path) -> None:
    found = problems(tmp_path, "task:\n  max_concurrent_tasks: 0\n")
    assert only(found) == "taskd.yml:2: task.max_concurrent_tasks: must be >= 1, got 0"


def test_bad_duration(tmp_path: Path) -> None:
    found = problems(tmp_path, "tasks:\n  - id: t\n    pipeline: p\n    timeout: 5 minutes\n" + PIPELINE)
    message = only(found)
    assert message.startswith("taskd.yml:4: tasks[0].timeout: invalid duration '5 minutes'")
    assert '"1h30m"' in message


def test_bad_cron_expression(tmp_path: Path) -> None:
    found = problems(tmp_path, 'tasks:\n  - id: t\n    pipeline: p\n    schedule: "61 * * * *"\n' + PIPELINE)
    assert only(found) == (
        "taskd.yml:4: tasks[0].schedule: invalid cron expression '61 * * * *': minute 61 out of range 0-59"
    )


def test_bad_time_zone(tmp_path: Path) -> None:
    found = problems(tmp_path, "task:\n  time_zone: Europe/Berln\n")
    message = only(found)
    assert message.startswith("taskd.yml:2: task.time_zone: unknown time zone 'Europe/Berln'")
    assert "did you mean 'Europe/Berlin'?" in message


def test_task_time_zone_is_checked_too(tmp_path: Path) -> None:
    found = problems(tmp_path, "tasks:\n  - id: t\n    pipeline: p\n    time_zone: Nowhere/City\n" + PIPELINE)
    assert only(found).startswith("taskd.yml:4: tasks[0].time_zone: unknown time zone 'Nowhere/City'")


def test_task_referencing_a_missing_pipeline(tmp_path: Path) -> None:
    found = problems(tmp_path, "tasks:\n  - id: t\n    pipeline: q\n" + PIPELINE)
    assert only(found) == "taskd.yml:3: tasks[0].pipeline: unknown pipeline 'q'; defined pipelines: p"


def test_unknown_processor_type(tmp_path: Path) -> None:
    found = problems(tmp_path, "pipelines:\n  - name: p\n    processors:\n      - shel: {command: x}\n")
    message = only(found)
    assert message.startswith("taskd.yml:4: pipelines[0].processors[0].shel: unknown processor type 'shel'")
    assert "(did you mean 'shell'?)" in message and "available: " in message


def test_unknown_processor_option(tmp_path: Path) -> None:
    found = problems(
        tmp_path,
        "pipelines:\n  - name: p\n    processors:\n      - shell:\n          command: x\n          comand: y\n",
    )
    message = only(found)
    assert message.startswith("taskd.yml:6: pipelines[0].processors[0].shell.comand: unknown key 'comand'")
    assert "did you mean 'command'?" in message


def test_processor_entry_must_be_a_single_key_map(tmp_path: Path) -> None:
    found = problems(tmp_path, "pipelines:\n  - name: p\n    processors:\n      - {shell: {command: x}, log: {}}\n")
    assert only(found).startswith("taskd.yml:4: pipelines[0].processors[0]: each processor is a single-key mapping")


def test_duplicate_task_id_across_files(tmp_path: Path) -> None:
    found = problems(
        tmp_path,
        'include: ["pipelines/*.yml"]\ntasks:\n  - {id: t, pipeline: p}\n',
        pipelines__more="# more\ntasks:\n  - {id: t, pipeline: p}\n" + PIPELINE,
    )
    assert only(found) == "pipelines/more.yml:3: tasks[0].id: duplicate task id 't' (also at taskd.yml:3)"


def test_duplicate_pipeline_name(tmp_path: Path) -> None:
    found = problems(tmp_path, PIPELINE.lstrip() + "  - name: p\n    processors: [{log: {message: hi}}]\n")
    assert only(found).startswith("taskd.yml:5: pipelines[1].name: duplicate pipeline name 'p' (also at ")


def test_include_glob_matching_nothing(tmp_path: Path) -> None:
    found = problems(tmp_path, 'include:\n  - "pipelines/*.yml"\n  - "nothing/*.yml"\n', pipelines__a=PIPELINE)
    assert only(found).startswith("taskd.yml:3: include[1]: pattern 'nothing/*.yml' matches no file")


def test_included_files_take_only_tasks_and_pipelines(tmp_path: Path) -> None:
    found = problems(tmp_path, 'include: ["extra.yml"]\n', extra="api: {}\n" + PIPELINE)
    assert only(found).startswith("extra.yml:1: api: unknown key 'api'; allowed keys: tasks, pipelines")


def test_yaml_syntax_error_has_line_and_column(tmp_path: Path) -> None:
    found = problems(tmp_path, "task:\n  time_zone: UTC\n  max_concurrent_tasks: [1\n")
    message = only(found)
    assert message.startswith("taskd.yml:4: YAML syntax error (column 1):")
    assert "began at line 3" in message


def test_yaml_bad_indentation(tmp_path: Path) -> None:
    found = problems(tmp_path, "task:\n  time_zone: UTC\n max_concurrent_tasks: 3\n")
    assert only(found).startswith("taskd.yml:3: YAML syntax error (column 2):")


def test_empty_file(tmp_path: Path) -> None:
    found = problems(tmp_path, "# nothing but a comment\n")
    assert only(found) == "taskd.yml:1: the file is empty; expected a mapping such as 'tasks:' and 'pipelines:'"


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "nope.yml", {})


def test_duplicate_yaml_key(tmp_path: Path) -> None:
    found = problems(tmp_path, "task:\n  time_zone: UTC\n  time_zone: Europe/Berlin\n")
    assert only(found) == "taskd.yml:3: task.time_zone: duplicate key (first given at line 2)"


def test_required_key_missing(tmp_path: Path) -> None:
    found = problems(tmp_path, "tasks:\n  - id: t\n    schedule: '@daily'\n" + PIPELINE)
    assert only(found) == "taskd.yml:2: tasks[0].pipeline: required key is missing"


def test_conflicting_retry_count(tmp_path: Path) -> None:
    found = problems(
        tmp_path, "tasks:\n  - id: t\n    pipeline: p\n    retry_count: 3\n    retry: {count: 2}\n" + PIPELINE
    )
    assert only(found).startswith("taskd.yml:2: tasks[0]: retry_count (3) and retry.count (2) disagree")


def test_bad_task_id(tmp_path: Path) -> None:
    found = problems(tmp_path, "tasks:\n  - id: 'has space'\n    pipeline: p\n" + PIPELINE)
    assert only(found).startswith("taskd.yml:2: tasks[0].id: string 'has space' is not a valid identifier")


def test_bad_listen_address(tmp_path: Path) -> None:
    found = problems(tmp_path, "api:\n  listen: localhost\n")
    assert only(found).startswith("taskd.yml:2: api.listen: listen must be host:port")


def test_all_errors_of_all_files_are_reported_in_one_pass(tmp_path: Path) -> None:
    found = problems(
        tmp_path,
        D("""
        task:
          time_zone: Nowhere/City
          max_concurrent_tasks: -1
        include: ["pipelines/*.yml"]
        tasks:
          - id: a
            schedul: "* * * * *"
            pipeline: p
          - id: b
            schedule: "* * * * 8"
            pipeline: missing
          - id: a
            pipeline: p
        """),
        pipelines__x=PIPELINE + "      - bogus: {}\n",
        pipelines__y="tasks: [",
    )
    joined = "\n".join(found)
    assert len(found) == 8, joined
    assert "YAML syntax error" in joined
    for fragment in [
        "taskd.yml:2: task.time_zone",
        "taskd.yml:3: task.max_concurrent_tasks",
        "taskd.yml:7: tasks[0].schedul",
        "taskd.yml:10: tasks[1].schedule",
        "taskd.yml:11: tasks[1].pipeline: unknown pipeline 'missing'",
        "taskd.yml:12: tasks[2].id: duplicate task id 'a'",
        "pipelines/x.yml:6: pipelines[0].processors[1].bogus: unknown processor type",
        "pipelines/y.yml:",
    ]:
        assert fragment in joined


def test_the_bundled_config_is_valid() -> None:
    root = Path(__file__).resolve().parents[2]
    config = load_config(root / "taskd.yml", {})
    assert {t.id for t in config.tasks} == {"health_check", "self_ping", "data_backup", "log_rotation"}
    assert all(config.schedule_for(t) is not None for t in config.tasks)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [(90, 90.0), (1.5, 1.5), ("90", 90.0), ("90s", 90.0), ("5m", 300.0), ("1h30m", 5400.0), ("250ms", 0.25),
     ("2d", 172800.0), ("1w", 604800.0), ("1h 30m", 5400.0), ("0", 0.0)],
)  # fmt: skip
def test_durations(text: object, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "5 minutes", "-5s", "1x", "m5", True, None, [1], "nan", "inf", "1h30"])
def test_bad_durations(text: object) -> None:
    with pytest.raises(DurationError):
        parse_duration(text)


def test_format_duration_round_trips() -> None:
    for seconds in (0.25, 5, 90, 5400, 90061):
        assert parse_duration(format_duration(seconds)) == seconds


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "tasks:\n  - id: a\n    pipeline: !include other.yml\n",
            "taskd.yml:3: YAML error: could not determine a constructor for the tag '!include'",
        ),
        (
            "base: &b [1, 2]\ntasks:\n  - <<: *b\n    id: a\n",
            "YAML error: while constructing a mapping; expected a mapping for merging",
        ),
        ("x: &r [*r]\n", "taskd.yml:1: an alias refers to the node that contains it"),
        (
            "".join(
                f"{name}: &{name} [" + ",".join([f"*{prev}" if prev else "lol"] * 9) + "]\n"
                for prev, name in zip(["", *"abcdefgh"], "abcdefghi", strict=True)
            ),
            "aliases expand to more than 100000 values",
        ),
        (
            "task: !!python/object:os.system {a: 1}\n",
            "taskd.yml:1: task: YAML tag 'tag:yaml.org,2002:python/object:os.system' is not allowed here",
        ),
        ("tasks: !foo []\n", "taskd.yml:1: tasks: YAML tag '!foo' is not allowed here"),
        ("tasks: !!set {a}\n", "taskd.yml:1: tasks: YAML tag 'tag:yaml.org,2002:set' is not allowed here"),
    ],
    ids=["unknown-tag", "bad-merge-key", "self-alias", "alias-bomb", "python-object", "own-tag", "set"],
)
def test_yaml_no_loader_can_build_is_an_error_with_its_line(tmp_path: Path, text: str, expected: str) -> None:
    found = problems(tmp_path, text)
    assert any(expected in message for message in found), found


def test_the_token_comes_from_token_file_or_the_api_token_credential(tmp_path: Path) -> None:
    write(tmp_path, "token.txt", "from-a-file\n")
    config = load(tmp_path, "api: {token_file: token.txt}\n" + PIPELINE)
    assert config.api.token == "from-a-file" and "from-a-file" in config.secrets
    creds = tmp_path / "creds"
    creds.mkdir()
    (creds / "api-token").write_text("from-a-credential\n")
    env = {"CREDENTIALS_DIRECTORY": str(creds)}
    assert load(tmp_path, "api: {token: ''}\n" + PIPELINE, env).api.token == "from-a-credential"
    assert load(tmp_path, "api: {token: given}\n" + PIPELINE, env).api.token == "given"
    assert load(tmp_path, PIPELINE, env).api.token == "from-a-credential"


def test_token_file_errors_name_file_line_and_key(tmp_path: Path) -> None:
    write(tmp_path, "empty.txt", "\n")
    found = only(problems(tmp_path, "store: {path: x.db}\napi: {token_file: empty.txt}\n" + PIPELINE))
    assert found.startswith("taskd.yml:2: api.token_file") and "is empty" in found
    assert "cannot read" in only(problems(tmp_path, "api: {token_file: nowhere.txt}\n" + PIPELINE))
    both = only(problems(tmp_path, "api: {token: a, token_file: b}\n" + PIPELINE))
    assert "not both" in both


def test_a_credential_reference_expands_and_is_a_secret(tmp_path: Path) -> None:
    creds = tmp_path / "creds"
    creds.mkdir()
    (creds / "db-password").write_text("pa55-w0rd\n")
    text = "tasks:\n  - {id: t, pipeline: p, params: {password: '${credential:db-password}'}}\n" + PIPELINE
    config = load(tmp_path, text, {"CREDENTIALS_DIRECTORY": str(creds)})
    assert config.tasks[0].params["password"] == "pa55-w0rd" and "pa55-w0rd" in config.secrets
    missing = only(problems(tmp_path, text.replace("db-password", "absent"), {"CREDENTIALS_DIRECTORY": str(creds)}))
    assert ":2:" in missing and "credential absent not found" in missing


def test_task_environment_keeps_only_the_base_variables_pass_env_and_its_own() -> None:
    from taskd.environment import task_environment

    daemon = {"PATH": "/bin", "HOME": "/root", "LC_ALL": "C", "TASKD_TOKEN": "x", "DB_URL": "y", "KEEP": "k"}
    env = task_environment(daemon, ["KEEP", "ABSENT"], {"OWN": "o"})
    assert env == {"PATH": "/bin", "HOME": "/root", "LC_ALL": "C", "KEEP": "k", "OWN": "o"}
    assert task_environment({})["PATH"]


def test_a_config_error_never_quotes_a_credential(tmp_path: Path) -> None:
    creds = tmp_path / "creds"
    creds.mkdir()
    (creds / "dbpass").write_text("Sup3r-Secr3t-value\n")
    text = "tasks:\n  - {id: t, pipeline: p, schedule: '${credential:dbpass}'}\n" + PIPELINE
    found = only(problems(tmp_path, text, {"CREDENTIALS_DIRECTORY": str(creds)}))
    assert "schedule" in found and "Sup3r-Secr3t-value" not in found and "***" in found
    (creds / "phrase").write_text("correct horse battery staple\n")
    words = problems(tmp_path, text.replace("dbpass", "phrase"), {"CREDENTIALS_DIRECTORY": str(creds)})
    assert not any(word in " ".join(words) for word in ("correct", "horse", "battery", "staple")), words
    http = "{http: {url: 'http://x', method: '${credential:dbpass}'}}"
    method = f"tasks: []\npipelines:\n  - {{name: p, processors: [{http}]}}\n"
    upper = " ".join(problems(tmp_path, method, {"CREDENTIALS_DIRECTORY": str(creds)}))
    assert "SUP3R-SECR3T-VALUE" not in upper.upper().replace("***", ""), upper


def test_a_task_hash_from_before_alerts_is_unchanged(tmp_path: Path) -> None:
    """Tombstones hold hashes taken before `alerts`, `expect` and `retry.permanent_exit_codes`
    existed: a task that does not set them hashes as it did (the value from that release)."""
    config = load(
        tmp_path,
        'tasks:\n  - {id: t, pipeline: p, schedule: "0 3 * * *", retry: {count: 2}, params: {a: [1]}}\n'
        "pipelines:\n  - {name: p, processors: [{log: {message: hi}}]}\n",
    )
    assert config.definition_hash(config.tasks[0]) == "0f95b225b8b1ef2c"


def test_alert_routes_expectations_and_permanent_exit_codes(tmp_path: Path) -> None:
    config = load(
        tmp_path,
        D("""
        api: {public_url: "https://taskd.example:8080/"}
        alerts:
          repeat_interval: 2h
          channels:
            - webhook: {url: "https://hooks.example/T0/B0/x", format: slack}
            - email: {host: smtp.example, to: [ops@example.com]}
        tasks:
          - {id: a, pipeline: p}
          - {id: quiet, pipeline: p, alerts: false}
          - id: own
            pipeline: p
            alerts: {channels: [{log: true}], repeat_interval: 10m}
            expect: {success_within: 26h}
            retry: {count: 3, permanent_exit_codes: [2, 64]}
        """)
        + PIPELINE,
    )
    from taskd.alerts import route_for

    a, quiet, own = config.tasks
    assert config.api.public_url == "https://taskd.example:8080"
    default = route_for(config.alerts, a)
    assert default is not None and default.repeat_s == 7200 and [k for k, _ in default.channels] == ["webhook", "email"]
    assert default.channels[1][1].sender.startswith("taskd@")
    assert route_for(config.alerts, quiet) is None
    mine = route_for(config.alerts, own)
    assert mine is not None and mine.repeat_s == 600 and [k for k, _ in mine.channels] == ["log"]
    assert own.expect is not None and own.expect.success_within == 26 * 3600
    assert own.retry.permanent_exit_codes == (2, 64)


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("alerts: {channels: [{webhook: 'http://h/x', log: true}]}\n", "exactly one of webhook, email, log"),
        ("alerts: {channels: [{webhook: 'not a url'}]}\n", "alerts.channels[0].webhook.url: must be an http"),
        ("alerts: {channels: [{webhook: {urll: 'http://h/x'}}]}\n", "alerts.channels[0].webhook.urll: unknown key"),
        ("alerts: {channels: [{webhook: {url: 'http://h/x', format: xml}}]}\n", "alerts.channels[0].webhook.format"),
        ("alerts: {channels: [{log: {level: loud}}]}\n", "alerts.channels[0].log.level"),
        ("alerts: {repeat_interval: 0}\n", "alerts.repeat_interval"),
        ("api: {public_url: taskd.example}\n", "public_url must start with http"),
        ("tasks:\n  - {id: t, pipeline: p, expect: {success_within: soon}}\n", "tasks[0].expect.success_within"),
        ("tasks:\n  - {id: t, pipeline: p, retry: {permanent_exit_codes: [0]}}\n", "permanent_exit_codes"),
        ("tasks:\n  - {id: t, pipeline: p, alerts: {channel: []}}\n", "alerts.channel"),
    ],
)
def test_bad_alert_settings_name_the_key(tmp_path: Path, text: str, fragment: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load(tmp_path, text + PIPELINE)
    assert fragment in str(caught.value) and "taskd.yml:" in str(caught.value)


def test_the_api_section_alone_is_read_when_the_rest_has_errors(tmp_path: Path) -> None:
    from taskd.config.load import load_api

    path = write(tmp_path, "taskd.yml", "api: {listen: '127.0.0.1:9999', token: abc-token}\ntasks:\n  - {id: t}\n")
    with pytest.raises(ConfigError):
        load_config(path, {})
    api = load_api(path, {})
    assert api is not None and (api.listen, api.token) == ("127.0.0.1:9999", "abc-token")
    (tmp_path / "token").write_text("from-a-file\n")
    write(tmp_path, "taskd.yml", "api: {token_file: token}\ntasks: [oops]\n")
    assert load_api(path, {}).token == "from-a-file"  # type: ignore[union-attr]
    write(tmp_path, "taskd.yml", "api: {listen: '${UNSET_FOR_TEST}'}\ntasks: []\n")
    assert load_api(path, {}) is None  # the api: section itself has a problem
    write(tmp_path, "taskd.yml", "api: {listen: '127.0.0.1:1'}\ntasks: [\n")
    assert load_api(path, {}) is None  # the YAML cannot be read
