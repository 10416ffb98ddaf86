"""The IR's text form reads back: for every example at every stage, parsing the printed IR
gives a kernel that prints the same, has the same ops, attributes and types, verifies, and
(after the last pass) compiles to the same PTX."""
import math
import os

import pytest

from commdsl.backends.ptx import to_llvm, to_ptx
from commdsl.cli import main
from commdsl.compiler import compile_file
from commdsl.diagnostics import CompileError
from commdsl.dims import BinOp, Const, SmCount, Sym
from commdsl.ir import Block, KernelIR
from commdsl.ir_parser import parse_kernel, parse_module
from commdsl.ir_printer import VALUE_ID_ATTRS, attr_text, print_kernel
from commdsl.ir_verifier import verify
from commdsl.passes.manager import PASS_ORDER, get_pass
from commdsl.target import get_target

EXAMPLES = os.path.join(os.path.dirname(__file__), "..", "examples")
CONFIGS = [(name[:-5], {"C": 4} if name == "moe_dispatch.cdsl" else {})
           for name in sorted(os.listdir(EXAMPLES)) if name.endswith(".cdsl")]
CONFIGS += [("fp8_gemm", {"CLUSTER": 2}), ("fp8_gemm", {"BM": 64, "BN": 64})]
TARGET = get_target("sm_90a")


def _stages(kernel: KernelIR):
    """(stage, kernel) after irgen and after each pass; a stage is checked before the next
    pass changes the kernel in place."""
    yield "irgen", kernel
    for name in PASS_ORDER:
        kernel = get_pass(name)(kernel, TARGET)
        yield name, kernel


def _same(a, b) -> bool:
    """Equal and of the same types all the way down (a tuple is no list, 1 is no 1.0)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, float) and math.isnan(a):
        return math.isnan(b) and math.copysign(1, a) == math.copysign(1, b)
    if isinstance(a, dict):
        return list(a) == list(b) and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    return a == b


def _assert_same_kernel(a: KernelIR, b: KernelIR):
    ids: dict[int, int] = {}            # a's value id -> b's

    def same_values(xs, ys, where):
        assert len(xs) == len(ys), where
        for x, y in zip(xs, ys):
            assert x.type == y.type and x.name == y.name, (where, x, y)
            assert ids.setdefault(x.id, y.id) == y.id, (where, x)

    def same_block(x: Block, y: Block, where):
        same_values(x.args, y.args, where)
        assert [o.name for o in x.ops] == [o.name for o in y.ops], where
        for o, p in zip(x.ops, y.ops):
            same_values(o.operands, p.operands, o.name)
            same_values(o.results, p.results, o.name)
            public = {k: v for k, v in o.attrs.items() if v is not None and k[0] != "_"}
            assert _same(public, p.attrs), (o.name, public, p.attrs)
            assert len(o.blocks) == len(p.blocks), o.name
            for ob, pb in zip(o.blocks, p.blocks):
                same_block(ob, pb, o.name)

    assert (a.name, a.grid, a.num_threads, a.shared_bytes) == \
        (b.name, b.grid, b.num_threads, b.shared_bytes)
    same_values(a.tensors, b.tensors, "tensors")
    same_values(a.sizes, b.sizes, "sizes")
    same_block(a.body, b.body, "body")
    attrs = {k: ids[v] if k in VALUE_ID_ATTRS else v for k, v in a.attrs.items()
             if v is not None and k != "span"}
    assert _same(attrs, b.attrs), (attrs, b.attrs)


@pytest.mark.parametrize("example,constants", CONFIGS)
def test_every_stage_reads_back(example, constants):
    result = compile_file(os.path.join(EXAMPLES, f"{example}.cdsl"), constants=constants,
                          emit="ir")
    for kernel in result.ir:
        layouts = False
        for stage, kernel in _stages(kernel):
            layouts |= stage == "tile"
            text = print_kernel(kernel)
            parsed = parse_kernel(text)
            assert print_kernel(parsed) == text, f"{kernel.name} after {stage}"
            _assert_same_kernel(kernel, parsed)
            verify(parsed, require_layouts=layouts)
        assert to_ptx(to_llvm([parsed], TARGET), TARGET) == \
            to_ptx(to_llvm([kernel], TARGET), TARGET), kernel.name


def test_emit_ir_output_reads_back():
    """`commdsl compile --emit ir` prints every kernel of a file; all of them parse."""
    text = compile_file(os.path.join(EXAMPLES, "moe_dispatch.cdsl"), constants={"C": 4},
                        emit="ir").text["ir"]
    kernels = parse_module(text)
    assert len(kernels) == 3
    assert "".join(print_kernel(k) for k in kernels) == text


@pytest.mark.parametrize("value", [
    0, -3, 0.0, -0.0, 1e-05, 3.4028234663852886e38, math.inf, -math.inf, math.nan,
    -math.nan, True, False, None, "", 'say "hi"\n', (), (None, 4), ((1, "a"), ()),
    {"x": 1, "two words": {}}, BinOp("/", Sym("K"), Const(128)),
    BinOp("-", BinOp("cdiv", SmCount(), Const(-2)), BinOp("*", Sym("M"), Sym("N"))),
])
def test_attribute_values_read_back(value):
    text = ("kernel @k() grid(1) {\n"
            f"  const() {{value = {attr_text(value)}}} : f32\n"
            "}\n")
    text = text.replace("const() ", "%0 = const() ")
    op = parse_kernel(text).body.ops[0]
    assert _same(op.attrs["value"], value), (attr_text(value), op.attrs["value"])


def test_values_named_alike_stay_apart():
    """A loop's carried `%sa` is not the tensor `%sa`: the second gets a suffix."""
    text = ("kernel @k(%sa: tensor<f32[M]>, %M: i32) grid(1) {\n"
            "  %0 = const() {value = 0} : i32\n"
            "  %1 = for(%0, %M, %0, %0) : i32 { ^(%k: i32, %sa.1: i32)\n"
            "    %2 = load(%sa, %k) {sizes = [none]} : f32\n"
            "    yield(%sa.1)\n"
            "  }\n"
            "}\n")
    kernel = parse_kernel(text)
    loop = kernel.body.ops[1]
    carried = loop.blocks[0].args[1]
    assert carried.name == "sa" and carried is not kernel.tensors[0]
    assert loop.blocks[0].ops[0].operands[0] is kernel.tensors[0]
    assert print_kernel(kernel) == text


@pytest.mark.parametrize("text,message,col", [
    ("kernel @k() grid(1) {\n  %0 = add(%1, %1) : i32\n}\n", "%1 is used before", 12),
    ("kernel @k() grid(1) {\n  %0 = const() {value = 1} : tile<f32[4], bloked<>>\n}\n",
     "unknown attribute object 'bloked'", 43),
    ("kernel @k() grid(1) {\n  %0 = const() {value = 1 : i32\n}\n", "unexpected ':'", 27),
    ("kernel @k() grid(1) {\n  %0, %1 = const() {value = 1} : i32\n}\n",
     "2 results and 1 result types", 12),
    ("kernel @k() grid(1) {\n  %0 = const() {value = [%0]} : i32\n}\n",
     "%0: a value stands in an attribute only for cluster_varying", 26),
])
def test_errors_point_into_the_ir_text(text, message, col):
    with pytest.raises(CompileError) as e:
        parse_kernel(text, "k.ir")
    assert message in e.value.message
    assert e.value.span.line == 2 and e.value.span.col == col
    assert e.value.render().startswith(f"k.ir:2:{col}: error:")


# ---- commdsl opt ----------------------------------------------------------------------------

def _ir_after(example: str, last: str, constants=None) -> KernelIR:
    kernel = compile_file(os.path.join(EXAMPLES, f"{example}.cdsl"), constants=constants,
                          emit="ir").ir[0]
    for stage, kernel in _stages(kernel):
        if stage == last:
            return kernel


@pytest.mark.parametrize("example,before,passes", [
    ("fp8_gemm", "pipeline", ["tile"]),
    ("requant_t", "tile", ["shared", "replicas"]),
])
def test_opt_runs_passes_on_a_printed_file(tmp_path, capsys, example, before, passes):
    kernel = _ir_after(example, before)
    path = tmp_path / "in.ir"
    path.write_text(print_kernel(kernel))
    for name in passes:
        kernel = get_pass(name)(kernel, TARGET)
    assert main(["opt", str(path), "--passes", ",".join(passes), "-o",
                 str(tmp_path / "out.ir")]) == 0
    assert (tmp_path / "out.ir").read_text() == print_kernel(kernel)
    assert main(["opt", str(path), "--passes", ",".join(passes)]) == 0
    assert capsys.readouterr().out == print_kernel(kernel)


@pytest.mark.parametrize("edit,passes,expected", [
    (None, "tiel", ["in.ir: error: --passes: no pass named 'tiel'", "did you mean 'tile'?"]),
    (("%0 = pid()", "%0 = = pid()"), "legalize",
     ["in.ir:3:8: error: unexpected '='", "    %0 = = pid() {axis = 1} : i32",
      "         ^"]),
    (None, "shared", ["in.ir: error: @act_quant: the IR after pass 'shared' does not verify"]),
])
def test_opt_errors_are_one_message(tmp_path, capsys, edit, passes, expected):
    text = print_kernel(_ir_after("act_quant", "irgen"))
    if edit:
        text = text.replace(*edit)
    (tmp_path / "in.ir").write_text(text)
    assert main(["opt", str(tmp_path / "in.ir"), "--passes", passes]) == 1
    err = capsys.readouterr().err
    for line in expected:
        assert line in err, err
    assert "Traceback" not in err
