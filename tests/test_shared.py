"""passes/shared.py: every static shared-memory array is planned by the pass, and the limit
holds for all of them together."""
import os

import pytest

from commdsl.backends.ptx.codegen import emit_module
from commdsl.compiler import compile_file, compile_source
from commdsl.diagnostics import CompileError
from commdsl.passes.shared import thread_coords
from commdsl.target import get_target

EXAMPLES = os.path.join(os.path.dirname(__file__), "..", "examples")

TRANSPOSE = """
kernel t(x: f32[M, N], y: out f32[N, M])
  grid(M / R, N / 128)
  warps(8)
{
  let a = load x[pid.0 * R : +R, pid.1 * 128 : +128]
  store y[pid.1 * 128 : +128, pid.0 * R : +R] = transpose(a)
}
"""


def planned(path, **constants):
    out = compile_file(os.path.join(EXAMPLES, path), constants=constants)
    return [op for op in out.ir[0].walk() if "smem_bytes" in op.attrs], out.ptx


def test_every_static_array_is_numbered_and_sized_by_the_pass():
    ops, ptx = planned("requant_t.cdsl")
    assert [(op.name, op.attrs["smem_buffer"]) for op in ops] == [("transpose", 0), ("relayout", 1)]
    for op in ops:
        name = f"requant_t_{op.name}_smem{op.attrs['smem_buffer']}[{op.attrs['smem_bytes']}]"
        assert name in ptx
    assert ops[0].attrs["smem_bytes"] == ops[0].attrs["smem"].bytes


def test_a_reduction_across_warps_has_its_array_planned():
    ops, ptx = planned("weight_quant.cdsl")
    assert [op.name for op in ops] == ["reduce"]
    assert f"weight_quant_reduce_smem0[{ops[0].attrs['smem_bytes']}]" in ptx


def test_a_transpose_alone_is_held_to_the_static_limit():
    with pytest.raises(CompileError, match="65536 bytes of shared memory, more than the 49152"):
        compile_source(TRANSPOSE.replace("R", "128"), emit="llvm")
    compile_source(TRANSPOSE.replace("R", "64"), emit="llvm")          # 32 KiB fits


def test_the_limit_counts_every_array_of_the_kernel():
    two = TRANSPOSE.replace("R", "64").replace(
        "= transpose(a)", "= transpose(a) + transpose(a * 2.0)")
    with pytest.raises(CompileError, match="65536 bytes") as err:
        compile_source(two, emit="llvm")
    assert err.value.span is not None


def test_a_transpose_in_a_loop_waits_for_its_reads_before_the_next_writes():
    """Its array is written again by the loop's next pass: a second barrier after the reads
    (a thread that ran ahead would overwrite what a slower one has yet to read)."""
    top = compile_source(TRANSPOSE.replace("R", "16"), emit="ptx").ptx
    looped = compile_source(TRANSPOSE.replace("R", "16").replace(
        "grid(M / 16, N / 128)", "grid(M / 16)").replace(
        "  let a = load x[pid.0 * 16 : +16, pid.1 * 128 : +128]\n"
        "  store y[pid.1 * 128 : +128, pid.0 * 16 : +16] = transpose(a)\n",
        "  for c in 0 .. N step 128 {\n"
        "    let a = load x[pid.0 * 16 : +16, c : +128]\n"
        "    store y[c : +128, pid.0 * 16 : +16] = transpose(a)\n  }\n"), emit="ptx").ptx
    assert top.count("bar.sync 0;") == 1
    assert looped.count("bar.sync 0;") == 2
    last_read = looped.rindex("ld.shared")
    assert looped.index("bar.sync 0;", last_read) < looped.index("st.global", last_read)


def test_the_pass_plans_each_transpose_access_and_its_address():
    """requant_t (FP8, 128 x 128, 4 warps): 4-byte writes of 4 operand rows each, 16-byte
    reads; all but 2 of the 32 writes and 2 of the 8 reads sit at a constant offset from an
    earlier access in every thread, so only those 4 compute a swizzled address."""
    (op, _), _ = planned("requant_t.cdsl")
    p = op.attrs["smem"]
    assert len(p.writes) == 32 and all(len(g) == 4 for g in p.writes) and p.read_vector == 16
    assert {a for a, _ in p.write_at} == {0, 16} and {a for a, _ in p.read_at} == {0, 4}
    src, dst = op.operands[0].type, op.result.type
    by_slot = thread_coords(src, 128, 32)
    writes = [[(c, r) for r, c in by_slot[g[0]]] for g in p.writes]
    reads = thread_coords(dst, 128, 32)[::p.read_vector]
    for accesses, plan_at in ((writes, p.write_at), (reads, p.read_at)):
        for coords, (anchor, delta) in zip(accesses, plan_at):
            assert [p.address(*c) for c in coords] == [
                p.address(*c) + delta for c in accesses[anchor]]


def test_a_relayout_reads_as_wide_as_the_pass_says():
    """requant_t's scales (f32, 4 consecutive per thread after the relayout): 16-byte reads;
    the backend follows the plan, not its own rule."""
    out = compile_file(os.path.join(EXAMPLES, "requant_t.cdsl"), emit="llvm")
    relayout = next(op for op in out.ir[0].walk() if op.name == "relayout")
    assert relayout.attrs["read_vector"] == 4
    relayout.attrs["read_vector"] = 2
    llvm = str(emit_module(out.ir, get_target("sm_90a")))
    assert "load <2 x i32>, <2 x i32> addrspace(3)*" in llvm
