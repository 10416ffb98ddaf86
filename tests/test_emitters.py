"""The PTX backend's emitter table: every op that can reach it has an emitter, and one that
has none for the target is a compile error at the op's source."""
import os
import re

import pytest

from commdsl.backends.ptx.codegen import emit_module
from commdsl.backends.ptx.emitters import EMITTERS, GENERIC, emits, lookup
from commdsl.compiler import compile_file
from commdsl.diagnostics import CompileError
from commdsl.ir import Builder, ScalarType
from commdsl.ops import OPS
from commdsl.target import get_target

EXAMPLES = os.path.join(os.path.dirname(__file__), "..", "examples")
LOWERED_BY_PASSES = {"tiles"}        # passes/schedule.py turns it into loops over pid


def test_every_op_has_an_emitter_for_sm_90a():
    target = get_target("sm_90a")
    missing = sorted(n for n in set(OPS) - LOWERED_BY_PASSES if lookup(n, target) is None)
    assert not missing, f"ops without a PTX emitter for sm_90a: {missing}"


def test_hopper_only_ops_are_not_emitted_for_other_targets():
    assert lookup("mma_issue", get_target("sm_90")) is None
    assert lookup("add", get_target("sm_80")) is EMITTERS[("add", GENERIC)]


def test_an_emitter_is_registered_once():
    with pytest.raises(ValueError, match="'add' has two PTX emitters for ptx"):
        emits("add")(lambda cg, op: None)


def test_an_op_without_an_emitter_for_the_target_is_a_compile_error():
    kernel = compile_file(os.path.join(EXAMPLES, "fp8_gemm.cdsl"), emit="llvm").ir[0]
    with pytest.raises(CompileError) as err:
        emit_module([kernel], get_target("sm_80"))
    m = re.fullmatch(r"'(\w+)' has no PTX emitter for sm_80", err.value.message)
    assert m, err.value.message
    op = next(op for op in kernel.walk() if op.name == m.group(1))
    assert err.value.span == op.loc and err.value.span is not None
    assert "sm_90a" in err.value.hint


def test_an_op_no_target_emits_is_a_compile_error():
    kernel = compile_file(os.path.join(EXAMPLES, "copy_nc.cdsl"), emit="llvm").ir[0]
    Builder(kernel.body).op("frobnicate", [], [ScalarType("i32")])
    with pytest.raises(CompileError, match="'frobnicate' has no PTX emitter for sm_90a") as err:
        emit_module([kernel], get_target("sm_90a"))
    assert "lowered" in err.value.hint
