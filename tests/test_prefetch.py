"""passes/prefetch.py on small kernels: what `pipeline(2)` without 'via tma' loads issues an
iteration ahead, what stays, its meaning on the interpreter, and its errors. The MoE
dispatch's use of it is tested in test_moe.py."""
import pytest
import torch

from commdsl import interpreter
from commdsl.compiler import compile_source
from commdsl.diagnostics import CompileError
from commdsl.passes import PASS_ORDER, get_pass
from commdsl.runtime.ptxas import assemble
from commdsl.target import get_target

# Rows of x gathered by idx, plus y's own row: y is written by the loop, so its load stays.
GATHER = """
kernel gather(x: f32[N, 256], idx: i32[M], y: out f32[M, 256])
  grid(4)
{
  for w in pid.0 .. M step 4 pipeline(2) {
    store y[w, 0 : +256] = load x[load idx[w], 0 : +256] + load y[w, 0 : +256]
  }
}
"""


def after_prefetch(source):
    kir = compile_source(source, emit="ir").ir[0]
    for name in PASS_ORDER:
        kir = get_pass(name)(kir, get_target("sm_90a"))
        if name == "prefetch":
            return kir


def test_loads_move_a_step_ahead_with_their_index_load():
    kir = after_prefetch(GATHER)
    loop = next(op for op in kir.body.ops if op.name == "for")
    before = kir.body.ops[:kir.body.ops.index(loop)]
    body = loop.blocks[0]
    iv, row = body.args
    assert "pipeline" not in {k for k, v in loop.attrs.items() if v is not None}
    # the first step's: idx[lo], then x's row, both on only where hi - lo > 0
    first = [op for op in before if op.name == "load"]
    assert [op.operands[0].name for op in first] == ["idx", "x"]
    assert first[1].operands[1] is first[0].result and loop.operands[3] is first[1].result
    guard0 = next(op for op in before if op.result is first[0].operands[-1])
    assert guard0.name == "sub" and guard0.operands == [loop.operands[1], loop.operands[0]]
    # in the loop: idx[w + 4] and x's row for it, issued before this step's math and store
    names = [op.name for op in body.ops]
    assert names[:2] == ["add", "sub"] and body.ops[0].operands == [iv, loop.operands[2]]
    ahead = [op for op in body.ops if op.attrs.get("guard")]
    assert [op.operands[0].name for op in ahead] == ["idx", "x"]
    assert all(op.operands[-1] is body.ops[1].result for op in ahead)
    assert ahead[0].operands[1] is body.ops[0].result                   # idx[w + 4]
    assert ahead[1].operands[1] is ahead[0].result                      # loaded once
    assert body.ops[-1].operands == [ahead[1].result]                   # yielded
    # y's load stays in its step, unguarded; the sum adds the carried row
    stays = [op for op in body.ops if op.name == "load" and not op.attrs.get("guard")]
    assert [op.operands[0].name for op in stays] == ["y"] and stays[0].operands[1] is iv
    add = next(op for op in body.ops if op.name == "add" and op.operands[0] is row)
    assert add.operands[1] is stays[0].result


@pytest.mark.parametrize("m", [0, 3, 9])        # 0: no program has a step; 3: one has none
def test_prefetched_loop_computes_the_same(m):
    g = torch.Generator().manual_seed(m)
    x = torch.randn(7, 256, generator=g)
    idx = torch.randint(0, 7, (m,), generator=g, dtype=torch.int32)
    y0 = torch.randn(m, 256, generator=g)
    outs = []
    for kir in (compile_source(GATHER, emit="ir").ir[0], after_prefetch(GATHER)):
        y = y0.clone()
        interpreter.run(kir, {"x": x, "idx": idx, "y": y}, {"N": 7, "M": m})
        outs.append(y)
    assert torch.equal(outs[0], outs[1])
    assert torch.equal(outs[1], x[idx.long()] + y0)


def test_guarded_loads_assemble():
    ptx = compile_source(GATHER).ptx
    assert "setp.gt.s32" in ptx
    report = assemble(ptx, arch="sm_90a", entry="gather").report
    assert report.spill_stores_bytes == 0 and report.spill_loads_bytes == 0


def compile_error(source) -> CompileError:
    with pytest.raises(CompileError) as e:
        compile_source(source, "k.cdsl")
    assert e.value.span is not None and "help:" in e.value.render()
    return e.value


def test_more_stages_need_tma():
    source = GATHER.replace("pipeline(2)", "pipeline(3)")
    err = compile_error(source)
    assert "prefetches one iteration ahead: write pipeline(2)" in err.message
    line = source.splitlines()[err.span.line - 1]
    assert line[err.span.col - 1:].startswith("pipeline(3)")


@pytest.mark.parametrize("source", [
    # Each load's index is the value the previous step loaded.
    """kernel chase(x: i32[N], y: out i32[N]) grid(1) {
      let j = load x[0]
      for w in 0 .. N pipeline(2) {
        j = load x[j]
        store y[w] = j
      }
    }""",
    # Step w + 2's get must come after step w's wait (an acquire).
    """kernel waits(x: sym f32[N, 256], f: sym i32[W], y: out f32[N, 256]) sms(2) {
      for w in pid.0 .. N step 2 pipeline(2) {
        wait f[w % W] >= epoch
        store y[w, 0 : +256] = get peer(0).x[w, 0 : +256]
      }
    }"""])
def test_a_loop_with_nothing_to_issue_ahead(source):
    err = compile_error(source)
    assert "finds no load or get" in err.message and "carries" in err.hint
    assert source.splitlines()[err.span.line - 1].strip().startswith("for w")
