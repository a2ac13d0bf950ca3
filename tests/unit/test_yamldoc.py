"""The YAML reader converts the items of top-level lists as they are composed (a large file's
whole tree never exists at once), and falls back to converting the whole tree when that could
differ: the answers, messages and lines are the same either way."""

from __future__ import annotations

import pytest

from taskd.yamldoc import _parse, parse_document

ENV = {"HOME_DIR": "/srv", "credential:token": "s3cret"}

TEXTS = {
    "plain": "task: {max_concurrent_tasks: 4}\ntasks:\n  - id: a\n    schedule: '* * * * *'\n  - {id: b}\n"
    "pipelines:\n  - name: p\n    processors: [{shell: {argv: [echo, hi]}}]\n",
    "anchor before the list": "base: &b {pipeline: p}\ntasks:\n  - <<: *b\n    id: a\n  - {<<: *b, id: b}\n",
    "anchor inside the list": "tasks:\n  - &first {id: a, pipeline: p}\n  - *first\n  - {id: c}\n",
    "anchor after the list": "tasks:\n  - {id: a}\npipelines:\n  - &p {name: p}\nextra: *p\n",
    "duplicate top-level list": "tasks:\n  - {id: a}\ntasks:\n  - {id: b}\n",
    "duplicate key in an item": "tasks:\n  - id: a\n    id: b\n",
    "top-level merge key": "defaults: &d {tasks: [{id: z}]}\n<<: *d\ntasks:\n  - {id: a}\n",
    "variables": "tasks:\n  - id: a\n    params: {dir: '${HOME_DIR}/x', token: '${credential:token}'}\n",
    "unknown variable": "tasks:\n  - id: a\n    params: {dir: '${NOPE}'}\n",
    "unknown tag": "tasks:\n  - !python/object {id: a}\n",
    "syntax error in an item": "tasks:\n  - {id: a\n  - {id: b}\n",
    "nested lists": "pipelines:\n  - name: p\n    processors:\n      - shell: {argv: [a, b]}\n"
    "      - sleep: {duration: 1s}\n",
    "empty": "",
    "not a mapping": "- a\n- b\n",
}


@pytest.mark.parametrize("name", TEXTS)
def test_converting_items_as_they_are_composed_changes_nothing(name: str) -> None:
    text = TEXTS[name]
    early = parse_document("taskd.yml", text, ENV)
    whole = _parse("taskd.yml", text, ENV, early=False)
    assert early.data == whole.data
    assert early.messages() == whole.messages()
    for path in whole.lines:
        assert early.line_of(path) == whole.line_of(path), path


def test_many_tasks_keep_the_line_of_each_key() -> None:
    text = "tasks:\n" + "".join(f"  - id: t{i}\n    schedule: '@hourly'\n" for i in range(500))
    doc = parse_document("taskd.yml", text, {})
    assert len(doc.data["tasks"]) == 500 and not doc.messages()
    assert doc.line_of(("tasks", 499, "schedule")) == 2 + 2 * 499 + 1
    assert doc.line_of(("tasks", 0, "id")) == 2
