"""Shared by diagnostics tests: compile a source that must fail, and check that a message
points at the right place (file:line:col, the source line, a caret under the mistake)."""
import pytest

from commdsl.compiler import compile_source
from commdsl.diagnostics import CompileError


def compile_error(source: str) -> str:
    """The rendered message of the CompileError that compiling `source` as k.cdsl raises."""
    with pytest.raises(CompileError) as e:
        compile_source(source, "k.cdsl")
    return str(e.value)


def points_at(text: str, source: str, line: int, under: str, kind: str = "error") -> None:
    """`text` has a `kind` (error or note) at `line`, at the column where `under` starts,
    followed by that source line and a caret under `under`."""
    col = source.splitlines()[line - 1].index(under) + 1
    lines = text.splitlines()
    at = next((i for i, s in enumerate(lines) if s.startswith(f"k.cdsl:{line}:{col}: {kind}:")),
              None)
    assert at is not None, text
    start = lines[at + 2].index("^")
    assert lines[at + 1][start:start + len(under)] == under, text
