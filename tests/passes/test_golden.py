"""Golden tests: each pass run alone on a small IR kernel, its printed output checked.

To add a case, write tests/passes/PASS/CASE.ir: a few ops of IR text (trim what
`commdsl compile k.cdsl --emit llvm -o /dev/null --print-after PREVIOUS_PASS` prints) with
`// RUN: PASS [TARGET]` (sm_90a unless named) and either `// CHECK...:` lines that assert
what the pass decided (a qualifier, a vector width, a layout, the ops it made or removed) or
`// ERROR: text` for an input it must reject. The directives are filecheck.py's. The input
must verify as the pass manager would find it, and so must the output. To see what a case
prints: `commdsl opt tests/passes/PASS/CASE.ir --passes PASS`.
"""
from pathlib import Path

import pytest

from commdsl.diagnostics import CompileError
from commdsl.ir_parser import parse_kernel
from commdsl.ir_printer import print_kernel
from commdsl.ir_verifier import IRVerifyError, verify
from commdsl.passes.manager import PASS_ORDER, get_pass
from commdsl.target import DEFAULT_TARGET, get_target
from filecheck import match, parse_test

HERE = Path(__file__).parent
CASES = sorted(HERE.glob("*/*.ir"))
MIN_CASES = 3
PASSES = list(PASS_ORDER)


def _layouts_assigned(pass_index: int) -> bool:
    """Whether the pass manager checks layouts after the pass at `pass_index`."""
    return pass_index >= PASSES.index("tile")


@pytest.mark.parametrize("path", CASES, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_golden(path: Path):
    test = parse_test(path.read_text())
    name, *rest = test.run
    assert name == path.parent.name, f"{path.name} runs '{name}' but sits in {path.parent.name}/"
    target = get_target(rest[0] if rest else DEFAULT_TARGET)
    at = PASSES.index(name)
    kernel = parse_kernel(test.source)
    verify(kernel, require_layouts=at > 0 and _layouts_assigned(at - 1))
    if test.error is not None:
        with pytest.raises((CompileError, IRVerifyError)) as err:
            verify(get_pass(name)(kernel, target), require_layouts=_layouts_assigned(at))
        message = getattr(err.value, "message", str(err.value))
        assert test.error in message, f"expected error '{test.error}', got: {message}"
        return
    kernel = get_pass(name)(kernel, target)
    verify(kernel, require_layouts=_layouts_assigned(at))
    match(test.checks, print_kernel(kernel))


def test_every_pass_has_golden_cases():
    counts = {name: 0 for name in PASS_ORDER}
    for path in CASES:
        assert path.parent.name in counts, f"{path.parent.name}/ is not a pass in PASS_ORDER"
        counts[path.parent.name] += 1
    assert {n: c for n, c in counts.items() if c < MIN_CASES} == {}
