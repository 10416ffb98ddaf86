"""docs/tutorial.md stays true: its ```cdsl blocks compile to PTX for sm_90a, and its
```python blocks run in order in one namespace on the CPU interpreter, their asserts
checking each step's kernel against torch."""
import os
import re

import pytest

from commdsl.compiler import compile_source

ROOT = os.path.join(os.path.dirname(__file__), "..")
DOC = os.path.join(ROOT, "docs", "tutorial.md")


def blocks(language: str) -> list[tuple[int, str]]:
    text = open(DOC).read()
    return [(text[:m.start()].count("\n") + 1, m.group(1))
            for m in re.finditer(rf"^```{language}\n(.*?)^```$", text, re.S | re.M)]


@pytest.mark.parametrize("line,source", blocks("cdsl"), ids=lambda v: str(v)[:12])
def test_kernel_compiles(line, source):
    assert compile_source(source, f"tutorial.md:{line}", target="sm_90a").ptx


def test_python_steps_run_on_the_interpreter(monkeypatch):
    steps = blocks("python")
    assert len(steps) >= 5
    monkeypatch.chdir(ROOT)
    monkeypatch.setenv("COMMDSL_INTERPRET", "1")
    namespace: dict = {}
    for line, code in steps:
        exec(compile(code, f"tutorial.md:{line}", "exec"), namespace)
