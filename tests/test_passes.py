"""Each pass on small kernels: what it decides, and what it rejects."""
import pytest
import re

from commdsl.backends.ptx.asm import global_access
from commdsl.compiler import compile_source
from commdsl.diagnostics import CompileError
from commdsl.ir import Block, Builder, KernelIR, ScalarType, TileType
from commdsl.ir_verifier import IRVerifyError, verify
from commdsl.layout import Blocked, Sliced, choose_blocked
from commdsl.passes import PassManager
from commdsl.target import get_target

ROWS = """
kernel rows(x: bf16[M, K], y: out e4m3[M, K], s: out f32[M, K / 128])
  grid(K / 128, M / 16)
  warps(8)
{
  let t = load x[pid.1 * 16 : +16, pid.0 * 128 : +128] CACHE
  let sc = max(amax(t, axis = 1), 1e-4) / 448.0
  store y[pid.1 * 16 : +16, pid.0 * 128 : +128] = cast<e4m3>(t / sc[:, None])
  store s[pid.1 * 16 : +16, pid.0] = sc
}
"""


def ops_after(source, divisible=None, target="sm_90a"):
    return [op for op in compile_source(source, emit="llvm", divisible=divisible,
                                        target=target).ir[0].walk()]


def load_op(cache_clause, target="sm_90a"):
    ops = ops_after(ROWS.replace("CACHE", cache_clause), target=target)
    return next(op for op in ops if op.name == "load")


@pytest.mark.parametrize("clause,policy,spelled", [
    ("", {}, "ld.global"),
    ("cache(nc)", {"nc": True}, "ld.global.nc"),
    ("cache(nc, L1 = no_allocate, L2 = 256B)", {"nc": True, "L1": "no_allocate", "L2": "256B"},
     "ld.global.nc.L1::no_allocate.L2::256B"),
    ("cache(cg, nc)", {"operator": "cg", "nc": True}, "ld.global.cg.nc"),
    ("cache(L1 = evict_last, L2 = 128B)", {"L1": "evict_last", "L2": "128B"},
     "ld.global.L1::evict_last.L2::128B"),
    ("cache(volatile, L2 = 64B)", {"volatile": True, "L2": "64B"}, "ld.volatile.global.L2::64B"),
    ("cache(cs)", {"operator": "cs"}, "ld.global.cs"),
])
def test_cache_clause_becomes_a_policy_the_backend_spells(clause, policy, spelled):
    assert load_op(clause).attrs["cache_policy"] == policy
    assert global_access("ld", policy) == spelled


@pytest.mark.parametrize("clause,message", [
    ("cache(volatile, nc)", "'volatile' cannot be combined with 'nc'"),
    ("cache(cg, L1 = evict_first)", "exclude each other"),
    ("cache(L2 = evict_first)", "needs sm_100"),
    ("cache(L1 = keep)", "not an L1 policy"),
    ("cache(wt)", "does not apply to loads"),
    ("cache(ca, cg)", "only one cache operator"),
    ("cache(nc, nc)", "given twice"),
    ("cache(fast)", "unknown cache option"),
    ("cache(L1)", "needs a value"),
])
def test_illegal_cache_clauses(clause, message):
    with pytest.raises(CompileError, match=message) as err:
        load_op(clause)
    assert err.value.span is not None


def test_cache_rules_follow_the_target_features():
    """A target without a feature rejects the clauses that need it; a get's `nc` stays on
    where the target honours it on peer memory (Hopper), else becomes a volatile load."""
    import dataclasses

    from commdsl.passes import cache
    from commdsl.target import L1_EVICTION, L2_PREFETCH, NC_PEER_LOADS
    hopper = get_target("sm_90a")
    older = dataclasses.replace(hopper, features=hopper.features - {L1_EVICTION, L2_PREFETCH})
    load = next(op for op in ops_after(ROWS.replace("CACHE", "")) if op.name == "load")
    for clause, feature in ((("L1", "evict_last"),), L1_EVICTION), ((("L2", "128B"),), L2_PREFETCH):
        load.attrs["cache"] = clause
        assert cache.policy(load, hopper)
        with pytest.raises(CompileError, match=f"sm_90a has no {feature}"):
            cache.policy(load, older)
    kernel = KernelIR("k", [], [], Block())
    assert cache.peer_load_policy(kernel, hopper) == "nc"
    assert NC_PEER_LOADS not in get_target("sm_89").features
    assert cache.peer_load_policy(kernel, get_target("sm_89")) == "volatile"


def test_store_rules_are_checked_on_stores():
    src = ROWS.replace("CACHE", "").replace("store s[pid.1 * 16 : +16, pid.0] =",
                                            "store s[pid.1 * 16 : +16, pid.0] cache(L2 = 256B) =")
    with pytest.raises(CompileError, match="loads only"):
        compile_source(src, emit="llvm")


def test_vector_widths_follow_divisibility():
    ops = ops_after(ROWS.replace("CACHE", ""))
    widths = {(op.name, op.operands[0].name): op.attrs["vec"] for op in ops if "vec" in op.attrs}
    assert widths == {("load", "x"): 8, ("store", "y"): 16, ("store", "s"): 1}


def test_unknown_row_length_gives_scalar_accesses():
    src = "kernel c(x: f32[N, L], y: out f32[N, L]) grid(N) {\n" \
          "  store y[pid.0, 0 : +64] = load x[pid.0, 0 : +64]\n}\n"
    vec = [op.attrs["vec"] for op in ops_after(src, divisible={"L": False}) if "vec" in op.attrs]
    assert vec == [1, 1]
    vec = [op.attrs["vec"] for op in ops_after(src) if "vec" in op.attrs]
    assert vec == [4, 4]                      # 16 bytes of f32 once 16 | L is known


def test_tile_pass_layouts():
    ops = ops_after(ROWS.replace("CACHE", ""))
    load = next(op for op in ops if op.name == "load")
    assert load.result.type.layout == Blocked(spt=(1, 8), tpw=(2, 16), wpc=(8, 1))
    reduce = next(op for op in ops if op.name == "reduce")
    assert reduce.result.type.layout == Sliced(load.result.type.layout, 1)


def test_small_tiles_wrap_threads_onto_copies():
    layout = choose_blocked((1, 128), vec=8, num_warps=4, warp_size=32)
    dims = layout.dims((1, 128))
    assert dims[1].spt * dims[1].tpw == 128 and not dims[1].wraps
    assert dims[0].wraps                      # the other lanes and warps hold copies of row 0


def test_divide_pass_uses_one_reciprocal_per_divisor():
    ops = ops_after(ROWS.replace("CACHE", ""))
    names = [op.name for op in ops]
    assert names.count("recip") == 1 and names.count("fma") == 2
    recip = next(op for op in ops if op.name == "recip")
    assert recip.result.type.shape == (16,)   # taken on the per-row scale, not per element
    divs = [op for op in ops if op.name == "div"]
    assert [d.result.type.shape for d in divs] == [(16,)]   # only sc = amax / 448 is left


def test_print_after_shows_the_ir_after_that_pass():
    seen = []
    compile_source(ROWS.replace("CACHE", ""), emit="llvm", print_after={"cache"},
                   printer=seen.append)
    assert len(seen) == 1 and "IR after cache" in seen[0]
    assert "cache_policy = {}" in seen[0] and "vec =" not in seen[0]


def test_verifier_runs_after_every_pass(monkeypatch):
    import commdsl.passes.manager as manager

    def broken(kernel, target):
        kernel.body.ops.reverse()             # uses before definitions
        return kernel

    real = manager.get_pass
    monkeypatch.setattr(manager, "get_pass", lambda n: broken if n == "vectorize" else real(n))
    kernel = compile_source(ROWS.replace("CACHE", ""), emit="ir").ir[0]
    with pytest.raises(IRVerifyError, match="after pass 'vectorize'"):
        PassManager(get_target("sm_90a")).run(kernel)


def test_verifier_rejects_mismatched_shapes():
    block = Block()
    b = Builder(block)
    one = b.value("const", [], ScalarType("f32"), value=1.0)
    t8 = b.value("splat", [one], TileType("f32", (8,)))
    t4 = b.value("splat", [one], TileType("f32", (4,)))
    b.value("add", [t8, t4], TileType("f32", (8,)))
    with pytest.raises(IRVerifyError, match="operand shapes differ"):
        verify(KernelIR("k", [], [], block))


def test_verifier_rejects_an_elementwise_op_over_two_layouts():
    """Slot by slot, the backend would combine elements of different positions (or zip
    register lists of different lengths): passes/tile.py must have moved one operand."""
    block = Block()
    b = Builder(block)
    one = b.value("const", [], ScalarType("f32"), value=1.0)
    blocked = choose_blocked((16, 64), 4, 4, 32)
    rows = TileType("f32", (16,), Sliced(blocked, 1))
    flat = TileType("f32", (16,), choose_blocked((16,), 4, 4, 32))
    b.value("add", [b.value("splat", [one], rows), b.value("splat", [one], flat)], rows)
    with pytest.raises(IRVerifyError, match="combines tiles held in 2 layouts"):
        verify(KernelIR("k", [], [], block), require_layouts=True)


def test_verifier_rejects_a_loop_carrying_a_tile_in_two_layouts():
    """The backend carries a tile's registers one for one from the init through the
    yield: a yield in another layout would mix elements between threads."""
    from pathlib import Path

    from commdsl.ir_parser import parse_kernel
    from commdsl.passes import get_pass
    text = (Path(__file__).parent / "passes" / "tile" / "yield_in_another_layout_relayouts.ir")
    kernel = get_pass("tile")(parse_kernel(text.read_text()), get_target("sm_90a"))
    verify(kernel, require_layouts=True)
    loop = next(op for op in kernel.walk() if op.name == "for")
    moved = loop.blocks[0].ops[-2]
    assert moved.name == "relayout"                      # the move back before the yield
    loop.blocks[0].ops[-1].operands[0] = moved.operands[0]
    with pytest.raises(IRVerifyError, match="carried value 0 enters as"):
        verify(kernel, require_layouts=True)


def test_fp8_conversion_needs_sm89():
    with pytest.raises(CompileError, match="FP8 conversion needs sm_89"):
        compile_source(ROWS.replace("CACHE", ""), target="sm_80", emit="llvm")


@pytest.mark.parametrize("divisible", [True, False])
def test_f32_rows_assemble(divisible):
    from commdsl.runtime.ptxas import assemble
    src = "kernel c(x: f32[N, L], y: out f32[N, L]) grid(N) {\n" \
          "  store y[pid.0, 0 : +64] = load x[pid.0, 0 : +64]\n}\n"
    ptx = compile_source(src, divisible={"L": divisible}).ptx
    assert assemble(ptx, entry="c").report.spill_stores_bytes == 0


# ---- replicas: per-row work after a reduction split among the row's copies ----------------

def _replica_ir(path, kernel, **constants):
    import os
    from commdsl.compiler import compile_file
    examples = os.path.join(os.path.dirname(__file__), "..", "examples")
    out = compile_file(os.path.join(examples, path), kernel=kernel, constants=constants)
    return out.ir[0], out.ptx


@pytest.mark.parametrize("path,kernel,constants", [
    ("requant_t.cdsl", "requant_t", {}),
    ("requant_t.cdsl", "requant_t", {"SF": "ue8m0"}),
    ("act_quant.cdsl", "act_quant", {"ROWS": 64}),
], ids=["requant_t-f32", "requant_t-ue8m0", "act_quant-rows64"])
def test_replicas_pass_splits_the_per_row_scale_work(path, kernel, constants):
    from commdsl.layout import Blocked, Compact
    from commdsl.runtime.ptxas import assemble
    kir, ptx = _replica_ir(path, kernel, **constants)
    ops = list(kir.walk())
    names = [op.name for op in ops]
    assert "gather_copies" in names
    # the reduce itself makes the compact layout (a reduce-scatter)
    reduce = next(op for op in ops if op.name == "reduce")
    assert isinstance(reduce.operands[0].type.layout, Blocked)
    assert isinstance(reduce.result.type.layout, Compact)
    compact = reduce.result.type.layout
    # the divisions and reciprocals of the scale run on compact values, once per row
    for op in ops:
        if op.name in ("div", "recip") and op.result.type.dtype == "f32" and len(
                op.result.type.shape) == 1:
            assert isinstance(op.result.type.layout, Compact), op
    # every gathered value leaves as the Sliced layout its users had
    for op in ops:
        if op.name == "gather_copies":
            assert op.result.type.layout == compact.parent
    # the scale is stored from the compact value (one element per access)
    scale = next(op for op in ops if op.name == "store" and len(op.operands[-1].type.shape) == 1)
    assert scale.operands[-1].type.layout == compact and scale.attrs["vec"] == 1
    assert "shfl.sync.idx.b32" in ptx
    report = assemble(ptx, arch="sm_90a", entry=kernel).report
    assert report.spill_stores_bytes == 0 and report.spill_loads_bytes == 0
    if kernel == "act_quant":
        hinted = re.findall(r"ld\.global\.nc\.L2::256B\S*", ptx)       # the default XC
        assert hinted and all(h.endswith(".v4.b32") for h in hinted)


def test_replicas_pass_skips_one_row_per_thread():
    """act_quant's default tile gives each thread one row: nothing to split."""
    kir, ptx = _replica_ir("act_quant.cdsl", "act_quant")
    assert not any(op.name in ("compact", "gather_copies") for op in kir.walk())
    assert "shfl.sync.idx" not in ptx


def test_compact_values_only_feed_elementwise_ops_and_stores():
    from commdsl.ir_verifier import IRVerifyError, verify
    kir, _ = _replica_ir("requant_t.cdsl", "requant_t")
    gather = next(op for op in kir.body.ops if op.name == "gather_copies")
    user = next(op for op in kir.body.ops
                if op.name == "expand_dims" and gather.result in op.operands)
    user.operands[0] = gather.operands[0]               # a broadcast of a compact tile
    with pytest.raises(IRVerifyError, match="compact"):
        verify(kir, require_layouts=True)
    kir, _ = _replica_ir("requant_t.cdsl", "requant_t", SF="ue8m0")    # a compact store
    store = next(op for op in kir.body.ops if op.name == "store" and op.attrs["vec"] == 1)
    store.attrs["vec"] = 4                              # compact slots are C apart
    with pytest.raises(IRVerifyError, match="one element per access"):
        verify(kir, require_layouts=True)


@pytest.mark.parametrize("constants,butterfly,gathers,scale_stores", [
    ({}, 7, 16, 1), ({"SF": "ue8m0"}, 7, 8, 1), ({"WARPS": 8}, 4, 8, 1), ({"G": 64}, 2, 4, 1)],
    ids=["f32", "ue8m0", "warps8", "g64"])
def test_requant_t_scale_takes_a_reduce_scatter(constants, butterfly, gathers, scale_stores):
    """The amax across a row's C lanes: R/2 + R/4 + ... shuffles (7 for R = C = 8, not 24;
    with R < C, at least 1 per step: 2 + 1 + 1 for R = 4, C = 8), R gathers for each of the scale and its reciprocal that
    the broadcast uses (ue8m0 broadcasts only the reciprocal). The scale is stored from
    the compact value: one st.global per thread, not R. ctas_per_sm(3) keeps 3 CTAs on an
    SM (left alone, ptxas took 244 registers at 4 warps)."""
    from commdsl.runtime.ptxas import assemble
    _, ptx = _replica_ir("requant_t.cdsl", "requant_t", **constants)
    assert ptx.count("shfl.sync.bfly") == butterfly
    assert ptx.count("shfl.sync.idx") == gathers
    assert len(re.findall(r"st\.global\.b(8|32) ", ptx)) == scale_stores
    report = assemble(ptx, arch="sm_90a", entry="requant_t").report
    assert report.spill_stores_bytes == 0 and report.spill_loads_bytes == 0
    assert report.registers <= 65536 // (3 * 32 * constants.get("WARPS", 4))


COLUMN_SCALES = """
kernel k(a: e4m3[M, K], b: e4m3[N, K], sb: f32[cdiv(N, 128), K / 128], d: out f32[M, N])
  tune BN = 160 in [128, 160]
{
  for m0 in 0 .. M step 128, n0 in 0 .. N step BN persistent(raster = 1) {
    let acc = zeros(f32, 128, BN)
    let first = iota(BN) < 128 - n0 % 128
    for k in 0 .. K step 128 pipeline(4) {
      let ta = load a[m0 : +128, k : +128] via tma
      let tb = load b[n0 : +BN, k : +128] via tma
      let s0 = load sb[n0 / 128, k / 128]
      let s1 = load sb[n0 / 128 + 1, k / 128]
      acc += mma(ta, tb.T) * where(first[None, :], s0, s1)
    }
    store d[m0 : +128, n0 : +BN] = acc
  }
}
"""


def test_a_column_select_against_an_aligned_bound_is_made_once_per_chunk(monkeypatch):
    """A 160-column B tile across B's 128-row scale blocks picks each column's scale; n0
    steps by 160, so the bound is a multiple of 32 and passes/chunk.py compares 32-column
    chunks, which the accumulator's fragment holds in whole runs: a handful of selects
    instead of one per element held (40)."""
    assert compile_source(COLUMN_SCALES, "k.cdsl").ptx.count("selp.f32") <= 8
    monkeypatch.setattr("commdsl.passes.chunk.run", lambda kernel, target: kernel)
    assert compile_source(COLUMN_SCALES, "k.cdsl").ptx.count("selp.f32") >= 40


@pytest.mark.parametrize("bn,promotes", [(160, "mma_promote"), (128, "mma_retire")])
def test_a_scale_per_element_fuses_and_keeps_the_product(bn, promotes):
    """The per-column scale fuses into the promotion (at BN = 128 also into overlap.py's
    in-flight K step, mma_retire), and the lowered kernel computes the product on the CPU."""
    import torch
    from commdsl.interpreter import run
    from commdsl.passes import PASS_ORDER, get_pass
    kir = compile_source(COLUMN_SCALES, "k.cdsl", emit="ir", constants=dict(BN=bn)).ir[0]
    for name in PASS_ORDER:
        kir = get_pass(name)(kir, get_target("sm_90a"))
    assert any(op.name == promotes and len(op.operands[-2].type.shape) == 2
               for op in kir.walk())
    g = torch.Generator().manual_seed(bn)
    m, n, k = 128, 440, 256                    # tiles straddle 128-row blocks, the last ragged
    a = (torch.randn(m, k, generator=g) * 8).to(torch.float8_e4m3fn)
    b = (torch.randn(n, k, generator=g) * 8).to(torch.float8_e4m3fn)
    sb = torch.rand(4, 2, generator=g) + 0.5
    d = torch.full((m, n), float("nan"))
    run(kir, dict(a=a, b=b, sb=sb, d=d), dict(M=m, N=n, K=k), sms=2)
    scale = sb.repeat_interleave(128, 0)[:n].repeat_interleave(128, 1).double()
    ref = (a.double()[:, None, :] * b.double()[None] * scale[None]).sum(-1)
    assert ((d.double() - ref).norm() / ref.norm()).item() < 1e-5


def test_a_scale_per_element_held_otherwise_than_the_product_is_rejected():
    """The backend reads a per-element scale register by register beside the product, so
    the verifier insists on the product's fragment layout."""
    from commdsl.passes import PASS_ORDER, get_pass
    kir = compile_source(COLUMN_SCALES, "k.cdsl", emit="ir").ir[0]
    for name in PASS_ORDER:
        kir = get_pass(name)(kir, get_target("sm_90a"))
    verify(kir, require_layouts=True)
    promote = next(op for op in kir.walk() if op.name == "mma_promote")
    scale = promote.operands[-2]
    scale.type = scale.type.with_layout(choose_blocked(scale.type.shape, 4, 8, 32))
    with pytest.raises(IRVerifyError, match="held as the result is"):
        verify(kir, require_layouts=True)


INT_SCALED = """
kernel k(a: i8[M, K], b: i8[N, K], w: i32[M, N], d: out i32[M, N])
  grid(cdiv(N, 128), cdiv(M, 128))
{
  let acc = zeros(i32, 128, 128)
  let s = load w[pid.1 * 128 : +128, pid.0 * 128 : +128]
  let r = load w[pid.1 * 128 : +128, 0]
  for k in 0 .. K step 128 pipeline(4) {
    let ta = load a[pid.1 * 128 : +128, k : +128] via tma
    let tb = load b[pid.0 * 128 : +128, k : +128] via tma
    acc += mma(ta, tb.T) * SCALE
  }
  store d[pid.1 * 128 : +128, pid.0 * 128 : +128] = acc
}
"""


@pytest.mark.parametrize("scale", ["s", "r[:, None]"], ids=["per_element", "per_row"])
def test_an_integer_product_times_a_scale_is_a_multiply_and_an_add(scale):
    """An i32 product is exact: nothing is promoted, and no f32 FMA is made of it (it was an
    internal error in LLVM), on the CPU the exact sum."""
    import torch
    from commdsl.interpreter import run
    from commdsl.passes import PASS_ORDER, get_pass
    source = INT_SCALED.replace("SCALE", scale)
    assert "wgmma.mma_async.sync.aligned.m64n128k32.s32.s8.s8" in compile_source(
        source, "k.cdsl").ptx
    kir = compile_source(source, "k.cdsl", emit="ir").ir[0]
    for name in PASS_ORDER:
        kir = get_pass(name)(kir, get_target("sm_90a"))
    assert not any(op.name in ("mma_promote", "fma") for op in kir.walk())
    g = torch.Generator().manual_seed(1)
    a = torch.randint(-128, 128, (128, 256), generator=g, dtype=torch.int8)
    b = torch.randint(-128, 128, (128, 256), generator=g, dtype=torch.int8)
    w = torch.randint(-3, 4, (128, 128), generator=g, dtype=torch.int32)
    d = torch.zeros(128, 128, dtype=torch.int32)
    run(kir, dict(a=a, b=b, w=w, d=d), dict(M=128, N=128, K=256), sms=1)
    ws = w if scale == "s" else w[:, :1]
    steps = [a[:, k:k + 128].long() @ b[:, k:k + 128].long().T for k in (0, 128)]
    assert torch.equal(d.long(), sum(p * ws.long() for p in steps))
