"""The op registry (commdsl/ops): every op the compiler makes is declared, and documented."""
import pathlib

import pytest

from commdsl.compiler import compile_file
from commdsl.ir import Block, Builder, KernelIR, ScalarType
from commdsl.ir_verifier import verify
from commdsl.ops import MEMORY, OPS, READS, TRAITS, WRITES, IRVerifyError
from commdsl.passes.manager import PASS_ORDER, get_pass
from commdsl.target import DEFAULT_TARGET, get_target

EXAMPLES = pathlib.Path(__file__).parent.parent / "examples"
# Every example, plus the settings that bring out the ops the defaults leave out.
BUILDS = [(p.name, {"C": 4} if p.stem == "moe_dispatch" else {})
          for p in sorted(EXAMPLES.glob("*.cdsl"))] + [
    ("fp8_gemm.cdsl", {"CLUSTER": 2}),
    ("fp8_gemm.cdsl", {"PROMOTE": 64}),
    ("requant_t.cdsl", {"G": 64, "SF": "ue8m0"}),
]


def _ops_at_every_stage(example: str, constants: dict):
    """(stage, op) for every op of every kernel, before the passes and after each one."""
    target = get_target(DEFAULT_TARGET)
    for kernel in compile_file(str(EXAMPLES / example), emit="ir", constants=constants).ir:
        yield from (("irgen", op) for op in kernel.walk())
        for name in PASS_ORDER:
            kernel = get_pass(name)(kernel, target)
            yield from ((name, op) for op in kernel.walk())


@pytest.mark.parametrize("example,constants", BUILDS)
def test_every_op_of_every_stage_is_declared(example, constants):
    ops = list(_ops_at_every_stage(example, constants))
    assert ops
    undeclared = {f"{op.name} (after {stage})" for stage, op in ops if op.name not in OPS}
    assert not undeclared, f"ops without a declaration in commdsl/ops: {sorted(undeclared)}"


@pytest.mark.parametrize("name", sorted(OPS))
def test_every_declaration_is_documented(name):
    d = OPS[name]
    assert d.syntax.startswith(name + "("), f"{name}: syntax {d.syntax!r}"
    assert d.doc and "\n" not in d.doc, f"{name}: needs a one-line doc"
    assert d.family, f"{name}: declared outside a family module"
    assert d.traits <= set(TRAITS)
    assert all(meaning for meaning in d.attrs.values()), f"{name}: an attribute lacks a meaning"


def test_memory_ops_say_which_way_they_move_data():
    """Passes tell reads from writes by trait (READS / WRITES), so every memory op has one."""
    for name, d in OPS.items():
        directions = {t for t in (READS, WRITES) if d.has(t)}
        assert len(directions) == (1 if d.has(MEMORY) else 0), f"{name}: {sorted(d.traits)}"


def test_unknown_op_fails_verification_by_name():
    block = Block()
    Builder(block).value("frobnicate", [], ScalarType("f32"))
    with pytest.raises(IRVerifyError, match="unknown op 'frobnicate': it has no declaration in "
                                            "commdsl/ops"):
        verify(KernelIR("k", [], [], block))


def test_docs_ir_md_is_generated_from_the_declarations():
    from commdsl.ops.docgen import COMMAND, FAMILIES, generate
    assert {d.family for d in OPS.values()} <= set(FAMILIES), "add the new family to FAMILIES"
    path = pathlib.Path(__file__).parent.parent / "docs" / "ir.md"
    assert path.read_text() == generate(), f"docs/ir.md is stale: run `{COMMAND}`"


ABS = """
kernel k(x: DT[M], y: out f32[M]) grid(M / 128) warps(4) {
  let t = load x[pid.0 * 128 : +128]
  store y[pid.0 * 128 : +128] = FN(t)
}
"""


def test_a_declared_builtin_is_a_function_of_the_language(monkeypatch):
    """Adding an elementwise function is one declaration: irgen routes calls by the registry."""
    from commdsl import irgen
    from commdsl.compiler import compile_source
    from commdsl.ops import ELEMENTWISE, Builtin, declare
    monkeypatch.setattr("commdsl.ops.registry.OPS", dict(OPS))     # undone after the test
    d = declare("cbrt", "cbrt(a) : T", "the cube root", traits=(ELEMENTWISE,),
                builtin=Builtin("cbrt", "cbrt(t)", floats_only=True))
    monkeypatch.setitem(irgen.ELEMENTWISE_BUILTINS, "cbrt", d)
    monkeypatch.setitem(irgen.FUNCTIONS, "cbrt", "cbrt(t)")
    kernel = compile_source(ABS.replace("DT", "bf16").replace("FN", "cbrt"), emit="ir").ir[0]
    (op,) = [op for op in kernel.walk() if op.name == "cbrt"]
    assert op.operands[0].type.dtype == "f32"            # a narrow float computes in f32


def test_builtin_type_rule_is_a_diagnostic():
    from commdsl.compiler import compile_source
    from commdsl.diagnostics import CompileError
    with pytest.raises(CompileError, match="abs takes floats, not i32"):
        compile_source(ABS.replace("DT", "i32").replace("FN", "abs"), emit="ir")
