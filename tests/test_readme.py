"""The README's Python blocks run as written, in order, in one namespace (as a reader pastes them).

A block whose last lines are ``# ...`` comments after its code shows its
output there; the test compares what the block printed with them.
"""

from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path

import pytest

README = Path(__file__).parent.parent / "README.md"

#: Blocks that cannot run on their own here, found by a line they contain, with the reason. Keep it tiny.
NOT_STANDALONE = {
    "partitions=4,": "starts four Ray workers (the ray extra and a cluster); tests/test_distributed.py runs it",
    "# needs a PostgreSQL server": "needs a running PostgreSQL server; tests/test_postgres.py runs the connectors",
}


def python_blocks(text: str) -> list[tuple[int, str]]:
    """``(line number, code)`` of every fenced ```python block of ``text``."""
    blocks, lines, start = [], text.splitlines(), None
    for i, line in enumerate(lines, 1):
        if start is None and line.strip() == "```python":
            start, body = i, []
        elif start is not None and line.strip() == "```":
            blocks.append((start, "\n".join(body) + "\n"))
            start = None
        elif start is not None:
            body.append(line)
    return blocks


def expected_output(code: str) -> list[str] | None:
    """The trailing ``# `` comment lines after a block's last line of code, or None."""
    lines = code.rstrip().splitlines()
    tail = []
    while lines and lines[-1].startswith("# "):
        tail.append(lines.pop()[2:])
    return tail[::-1] or None


def skip_reason(code: str) -> str | None:
    return next((why for marker, why in NOT_STANDALONE.items() if marker in code), None)


BLOCKS = python_blocks(README.read_text(encoding="utf-8"))


def test_the_readme_has_python_blocks_and_every_skip_matches_one():
    assert BLOCKS
    for marker in NOT_STANDALONE:
        assert any(marker in code for _, code in BLOCKS), f"NOT_STANDALONE entry matches no block: {marker!r}"


def test_expected_output_reads_trailing_comments():
    assert expected_output("x = 1\nprint(x)\n# 1\n") == ["1"]
    assert expected_output("# a heading comment\nx = 1\n") is None


def test_quickstart_defines_its_input_and_prints_its_result():
    first = BLOCKS[0][1]
    assert "batch =" in first and "print(" in first and expected_output(first)


@pytest.mark.slow
def test_readme_python_blocks_run_in_order(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # blocks that write files write them here
    namespace: dict = {"__name__": "__readme__"}
    ran = 0
    for line, code in BLOCKS:
        if skip_reason(code):
            continue
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            try:
                exec(compile(code, f"README.md:{line}", "exec"), namespace)
            except Exception as exc:  # name the block, keep the cause
                raise AssertionError(f"README.md block at line {line} failed: {type(exc).__name__}: {exc}") from exc
        want = expected_output(code)
        if want is not None:
            got = [re.sub(r"\s+$", "", s) for s in out.getvalue().splitlines()]
            assert got == want, f"README.md block at line {line} printed {got}, the README shows {want}"
        ran += 1
    assert ran >= len(BLOCKS) - len(NOT_STANDALONE)
