"""No function in the package is hard to read: radon grades each one's cyclomatic complexity, and
none may grade D or worse (more than 20 paths). Split a function that grows past that."""

from __future__ import annotations

from pathlib import Path

from radon.complexity import cc_rank, cc_visit

PACKAGE = Path(__file__).resolve().parents[2] / "taskd"


def test_no_function_grades_d_or_worse() -> None:
    graded = [
        (f"{path.relative_to(PACKAGE.parent)}:{block.lineno} {block.name}", cc_rank(block.complexity))
        for path in sorted(PACKAGE.rglob("*.py"))
        for block in cc_visit(path.read_text())
    ]
    assert len(graded) > 500  # every module was read
    assert [(name, rank) for name, rank in graded if rank not in "ABC"] == []
