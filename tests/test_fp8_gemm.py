"""fp8_gemm: the PTX facts the issue names, ptxas acceptance, compile and launch errors, and
CPU numerics through the interpreter (the GPU numerics are in test_gpu_fp8_gemm.py)."""
import os
import re

import pytest
import torch

import commdsl
from commdsl.compiler import compile_file, compile_source
from commdsl.diagnostics import CompileError
from commdsl.runtime.ptxas import assemble

EXAMPLES = os.path.join(os.path.dirname(__file__), "..", "examples")
FP8_GEMM = os.path.join(EXAMPLES, "fp8_gemm.cdsl")
SOURCE = open(FP8_GEMM).read()
CONFIGS = [dict(), dict(BM=64, BN=128), dict(BM=128, BN=16, STAGES=6), dict(BM=64, BN=32),
           dict(BM=128, BN=64, STAGES=3), dict(BM=64, BN=16, STAGES=6), dict(BM=192, STAGES=5),
           dict(PROMOTE=64), dict(BM=64, BN=32, PROMOTE=32), dict(BM=256, STAGES=3)]


def quantize_a(x: torch.Tensor):
    """1 x 128 groups along K: s = amax / 448, a = x / s in e4m3."""
    m, k = x.shape
    g = x.float().view(m, k // 128, 128)
    s = g.abs().amax(-1).clamp(min=1e-4) / 448.0
    return (g / s[..., None]).view(m, k).to(torch.float8_e4m3fn), s


def quantize_b(w: torch.Tensor):
    """128 x 128 blocks; the last block row may be partial (cdiv(N, 128) scale rows)."""
    n, k = w.shape
    nb = -(-n // 128)
    padded = torch.zeros(nb * 128, k, device=w.device)
    padded[:n] = w.float()
    g = padded.view(nb, 128, k // 128, 128)
    s = g.abs().amax((1, 3)).clamp(min=1e-4) / 448.0
    q = (g / s[:, None, :, None]).view(nb * 128, k)[:n].to(torch.float8_e4m3fn)
    return q, s


def mn_major(sa: torch.Tensor) -> torch.Tensor:
    """[..., M, K / 128] scales -> the kernels' [..., K / 128, cdiv(M, 4) * 4] (DeepGEMM's
    TMA-aligned layout), the padding NaN: a kernel that read it would show it."""
    *lead, m, groups = sa.shape
    out = torch.full((*lead, groups, -(-m // 4) * 4), float("nan"), device=sa.device)
    out[..., :m] = sa.transpose(-1, -2)
    return out


def reference(a, sa, b, sb):
    """The float64 product of the dequantized operands."""
    m, k = a.shape
    n = b.shape[0]
    a64 = (a.double().view(m, k // 128, 128) * sa.double()[..., None]).view(m, k)
    sb_rows = sb.double().repeat_interleave(128, 0)[:n]
    b64 = (b.double().view(n, k // 128, 128) * sb_rows[..., None]).view(n, k)
    return a64 @ b64.T


def random_operands(m, n, k, device="cpu", seed=0):
    g = torch.Generator(device=device).manual_seed(seed)
    x = torch.randn(m, k, generator=g, device=device)
    w = torch.randn(n, k, generator=g, device=device)
    return (*quantize_a(x), *quantize_b(w))


def relative_error(d, ref) -> float:
    return ((d.double() - ref).norm() / ref.norm()).item()


# ---- what the compiler emits ----------------------------------------------------------------

@pytest.mark.parametrize("config", CONFIGS, ids=lambda c: ",".join(f"{k}={v}" for k, v in c.items()) or "default")
def test_ptx_facts_and_ptxas(config):
    ptx = compile_file(FP8_GEMM, constants=config).ptx
    bn = config.get("BN", 128)
    assert re.search(rf"wgmma\.mma_async\.sync\.aligned\.m64n{bn}k32\.f32\.e4m3\.e4m3", ptx)
    assert "cp.async.bulk.tensor.2d.shared::cluster.global.tile.mbarrier::complete_tx::bytes" in ptx
    for instr in ("mbarrier.init.shared::cta.b64", "mbarrier.try_wait.parity.shared::cta.b64",
                  "mbarrier.arrive.expect_tx.shared::cta.b64", "mbarrier.arrive.shared::cta.b64",
                  "fence.mbarrier_init.release.cluster", "setmaxnreg.dec.sync.aligned.u32 24",
                  "setmaxnreg.inc.sync.aligned.u32", "wgmma.fence.sync.aligned",
                  "wgmma.commit_group.sync.aligned", "wgmma.wait_group.sync.aligned 0",
                  "prefetch.tensormap", "fma.rn.f32", "cvta.param.u64"):
        assert instr in ptx, instr
    # The tensor maps are kernel parameters passed by value, used in place: A's, B's and the
    # row of A's scales, and D's where the epilogue stores through TMA (passes/epilogue.py:
    # BN a multiple of 64).
    maps = 4 if bn % 64 == 0 and config.get("BM") != 192 else 3    # 192 x 128: no room
    assert len(re.findall(r"\.param \.align 64 \.b8 fp8_gemm_param_\d+\[128\]", ptx)) == maps
    assert ".maxntid" in ptx and ".minnctapersm 1" in ptx
    report = assemble(ptx, arch="sm_90a", entry="fp8_gemm").report
    assert report.spill_stores_bytes == 0 and report.spill_loads_bytes == 0, report.summary()
    assert not [w for w in report.warnings if re.search(r"C75\d\d", w)], report.warnings


def test_promotion_every_k_step():
    """Each 128-wide K step starts a fresh tensor-core sum (scale-d = 0) and chains three
    more into it; the partial is then promoted into f32 with one FMA per element. The K loop
    runs the first K / 128 % 8 steps one at a time, then groups of 8 (passes/overlap.py): nine
    copies."""
    ptx = compile_file(FP8_GEMM).ptx
    wgmmas = re.findall(r"wgmma\.mma_async[^;]*, (\d), 1, 1;", ptx)
    assert wgmmas == ["0", "1", "1", "1"] * 9
    assert ptx.count("fma.rn.f32") == 9 * 64     # BN / 2 accumulators per thread


@pytest.mark.parametrize("every,scale_d,waits", [(128, ["0", "1", "1", "1"] * 9,
                                                   ["0"] + ["1"] * 7 + ["0"]),
                                                  (64, ["0", "1", "0", "1"], ["1", "0"]),
                                                  (32, ["0", "0", "0", "0"], ["3", "2", "1", "0"])])
def test_promotion_interval_is_a_language_choice(every, scale_d, waits):
    """promote_every = P: a fresh tensor-core sum (scale-d = 0) every P of K, each its own
    commit group, promoted into f32 as soon as its group is done while later ones run. With
    one group per step, the K loop's groups of steps do the same across eight steps."""
    ptx = compile_file(FP8_GEMM, constants=dict(BN=32, PROMOTE=every)).ptx
    assert re.findall(r"wgmma\.mma_async[^;]*, (\d), 1, 1;", ptx) == scale_d
    assert re.findall(r"wgmma\.wait_group\.sync\.aligned (\d);", ptx) == waits
    assert ptx.count("wgmma.commit_group") == len(waits)
    assert ptx.count("fma.rn.f32") == len(waits) * 16        # BN / 2 per interval


def test_next_step_is_issued_before_this_one_is_promoted():
    """passes/overlap.py: in a group of K steps, each step's wgmmas are committed before the
    previous step's are waited for (wait_group 1), so the tensor cores work while that one is
    promoted; nothing is in flight across the loop's back edge."""
    ir = compile_file(FP8_GEMM, emit="llvm").text["ir"]
    assert ir.count("mma_promote(") == 1                  # the steps before the groups
    assert ir.count("mma_issue(") == 8
    assert ir.count("{pending = 1}") == 7 and ir.count("{pending = 0}") == 1
    ptx = compile_file(FP8_GEMM).ptx
    group = ptx[ptx.index("wgmma.wait_group.sync.aligned 0;") + 1:]
    sync = re.findall(r"wgmma\.(commit_group|wait_group)\.sync\.aligned ?(\d?);", group)
    assert sync == [("commit_group", ""), ("commit_group", ""), ("wait_group", "1")] + [
        ("commit_group", ""), ("wait_group", "1")] * 6 + [("wait_group", "0")]


def test_waves_of_a_256_row_tile_share_one_partial_sum():
    """Two m64 waves per warpgroup: the second zeroes its partial sum in the first's
    registers, after the first's promotion; with two partial sums live, ptxas spilled 412
    bytes (test_ptx_facts_and_ptxas checks 0)."""
    ptx = compile_file(FP8_GEMM, constants=dict(BM=256, STAGES=3)).ptx
    zeroing = re.findall(r"wgmma\.mma_async[^{]*\{([^}]*)\}[^;]*, 0, 1, 1;", ptx)
    assert len(zeroing) == 2 and zeroing[0] == zeroing[1]
    second = ptx.index("{" + zeroing[1] + "}", ptx.index("{" + zeroing[0] + "}") + 1)
    promotions = ptx[:second].count("fma.rn.f32")
    assert promotions == 64              # the first wave's, one per partial-sum register


def test_the_consumers_warpgroup_index_is_one_per_warp():
    """tid / 128 read from lane 0: ptxas then derives the wgmma descriptors of a warpgroup's
    rows in uniform registers (with tid / 128 itself it moved each one there, R2UR, every K
    step: 42 R2URs in the SASS of 256 x 128, 17 after, none in the K loop)."""
    ptx = compile_file(FP8_GEMM, constants=dict(BM=256, STAGES=3)).ptx
    consumers = ptx[ptx.index("setmaxnreg.inc"):]
    index = re.search(r"shfl\.sync\.idx\.b32 (%r\d+), %r\d+, 0, 31, -1;", consumers)
    assert index and consumers.index(index.group(0)) < consumers.index("wgmma.mma_async")
    assert "%tid.x" not in consumers[:consumers.index("wgmma.mma_async")]


def test_one_consumer_warpgroup_takes_steps_in_pairs():
    """With a single consumer warpgroup the steady state is two steps per iteration (groups
    of 8 spill there)."""
    ir = compile_file(FP8_GEMM, emit="llvm", constants=dict(BM=64)).text["ir"]
    assert ir.count("mma_issue(") == 2 and ir.count("mma_promote(") == 1


@pytest.mark.parametrize("config", [dict(BM=192), dict(PROMOTE=64)])
def test_no_second_partial_when_it_does_not_pay(config):
    """Three warpgroups have 160 registers each, too few for two partial accumulators and
    the f32 one; promote_every < K already overlaps within a step."""
    ir = compile_file(FP8_GEMM, emit="llvm", constants=config).text["ir"]
    assert "mma_issue(" not in ir and ir.count("mma_promote(") == 1


def test_spec_describes_the_launch():
    spec = compile_file(FP8_GEMM, constants=dict(BM=64, BN=32, STAGES=4)).specs[0]
    tiles = "cdiv(M, 64) * cdiv(N, 32)"
    assert str(spec.grid[0]) == f"cdiv({tiles}, max(cdiv({tiles}, sms), 1))"
    assert spec.num_threads == 256            # a producer and one consumer warpgroup
    assert [(m.tensor, m.box) for m in spec.tensor_maps] == [("a", (64, 128)), ("b", (32, 128)),
                                                             ("sa", (1, 64))]
    stage = 64 * 128 + 32 * 128 + 64 * 4            # A's and B's tiles and 64 row scales
    assert spec.shared_bytes == 4 * stage + 4 * 16 and spec.shared_bytes > 48 * 1024


@pytest.mark.parametrize("m,n,config,ctas", [
    (4096, 7168, dict(BM=256, STAGES=3), 128),           # 896 tiles: 7 full waves of 128
    (4096, 7168, dict(BM=256, STAGES=3, CLUSTER=2), 128),   # 448 pairs on 66 pair slots
    (4096, 2112, dict(), 109),                           # 544 tiles: 5 waves of <= 109
    (1536, 1408, dict(), 132),                           # 132 tiles: one wave on every SM
    (128, 2112, dict(), 17),                             # fewer tiles than SMs: one each
    (0, 2112, dict(), 0)])
def test_the_grid_takes_the_tiles_in_as_few_waves_on_as_few_ctas(m, n, config, ctas):
    from commdsl.dims import SM_COUNT
    grid = compile_file(FP8_GEMM, constants=config).specs[0].grid[0]
    assert grid.evaluate({"M": m, "N": n, "K": 7168, SM_COUNT: 132}) == ctas
    if config.get("CLUSTER") == 2:          # one SM (a CPU launch): still one pair
        assert grid.evaluate({"M": m, "N": n, "K": 7168, SM_COUNT: 1}) == 2


def test_cluster_of_two_multicasts_the_shared_tile():
    """cluster = 2: CTA pairs take neighbouring tiles of one tile row; A's tile is the same
    for both, so each producer copies half its rows to both CTAs (one multicast TMA, B's
    stays a plain copy), consumers release each stage in both CTAs, and the pair meets after
    the barrier inits and before exit."""
    result = compile_file(FP8_GEMM, constants=dict(CLUSTER=2))
    ptx, spec = result.ptx, result.specs[0]
    assert ".explicitcluster" in ptx and ".reqnctapercluster 2, 1, 1" in ptx
    assert ptx.count(".multicast::cluster") == 1
    assert ptx.count("cp.async.bulk.tensor.2d.shared::cluster.global") == 3   # A, B, A's scales
    assert "%cluster_ctarank" in ptx
    steps = 9                                  # copies of the K step (passes/overlap.py)
    assert ptx.count("mapa.shared::cluster.u32") == 2 * steps
    assert ptx.count("mbarrier.arrive.shared::cluster.b64") == 2 * steps
    assert ptx.count("barrier.cluster.arrive.release;") == 2
    assert [(m.tensor, m.box) for m in spec.tensor_maps] == [("a", (64, 128)), ("b", (128, 128)),
                                                             ("sa", (1, 128)), ("d", (64, 64))]
    pairs = "cdiv(M, 128) * cdiv(cdiv(N, 128), 2)"
    slots = "max(cdiv(sms - 1, 2), 1)"
    assert str(spec.grid[0]) == f"2 * cdiv({pairs}, max(cdiv({pairs}, {slots}), 1))"
    report = assemble(ptx, arch="sm_90a", entry="fp8_gemm").report
    assert report.spill_stores_bytes == 0 and report.spill_loads_bytes == 0, report.summary()
    assert not [w for w in report.warnings if re.search(r"C75\d\d", w)], report.warnings
    small = compile_file(FP8_GEMM, constants=dict(CLUSTER=2, BM=64, BN=64)).specs[0]
    assert [m.box for m in small.tensor_maps] == [(32, 128), (64, 128), (1, 64), (64, 64)]


def test_epilogue_stores_through_shared_memory_and_tma():
    """passes/epilogue.py: each consumer warpgroup writes its 64 x BN fragment into a
    128B-swizzled buffer (BN / 4 four-byte st.shared per thread), fences it for the async
    proxy, and one thread per warpgroup stores it with one TMA copy per 64 columns; nothing
    goes out through st.global, and the leader waits for its stores to land before exiting."""
    result = compile_file(FP8_GEMM)
    ptx, spec = result.ptx, result.specs[0]
    assert ptx.count("cp.async.bulk.tensor.2d.global.shared::cta.bulk_group") == 2
    assert ptx.count("st.shared.b32") == 32 and "st.global" not in ptx
    for instr in ("fence.proxy.async.shared::cta;", "cp.async.bulk.commit_group;",
                  "cp.async.bulk.wait_group.read 0;", "cp.async.bulk.wait_group 0;"):
        assert ptx.count(instr) == 1, instr
    assert len(re.findall(r"bar\.sync %r\d+, 128;", ptx)) == 2   # 1 + warpgroup, 128 threads
    stages = 5 * (128 * 128 + 128 * 128 + 128 * 4) + 16 * 5
    assert spec.shared_bytes == -(-stages // 1024) * 1024 + 128 * 128 * 2
    assert spec.tensor_maps[-1].tensor == "d" and spec.tensor_maps[-1].box == (64, 64)


@pytest.mark.parametrize("config,divisible", [(dict(), {"N": False}), (dict(BN=32), None),
                                              (dict(BM=192, STAGES=5), None)])
def test_epilogue_stays_direct_where_tma_cannot_store(config, divisible):
    """Rows that may not be a multiple of 16 bytes (the variant for N % 16 != 0), box rows
    shorter than 128 bytes, or no room left beside the stages (5 stages of 192 x 128 and
    128 x 128): the tile goes out through st.global, and D has no tensor map."""
    result = compile_file(FP8_GEMM, constants=config, divisible=divisible)
    assert "bulk_group" not in result.ptx and "st.global" in result.ptx
    assert [m.tensor for m in result.specs[0].tensor_maps] == ["a", "b", "sa"]


def test_ir_after_passes_has_the_pipeline_structure():
    ir = compile_file(FP8_GEMM, emit="llvm").text["ir"]
    assert "warp_specialize() {producer_regs = 24, consumer_regs = 240, consumers = 2}" in ir
    assert ir.count("tma_load(") == 3 and "mbarrier_expect_tx" in ir
    assert "wgmma_acc<warpgroups=2>" in ir and "nprogs()" in ir
    # A's scales arrive by TMA with the stage and are read from it after its barrier, in
    # each of the K loop's nine copies of the step; B's block scale is loaded a K step ahead
    # (before the loop, then for k + 128 in each copy) and carried in a register, so its
    # latency is not on the wgmma issue's path.
    assert ir.count("smem_read(") == 9 and "= load(%sa" not in ir
    assert ir.count("load(%sb") == 10
    # The carried scale is named after its tensor, with a suffix (ir_printer.Names).
    assert "%sb.1: f32" in ir


# ---- compile errors -------------------------------------------------------------------------

def compile_error(source, **kwargs) -> CompileError:
    with pytest.raises(CompileError) as err:
        compile_source(source, "fp8_gemm.cdsl", **kwargs)
    assert err.value.hint, err.value.render()
    return err.value


def test_target_without_wgmma_is_a_clear_error():
    err = compile_error(SOURCE, target="sm_80")
    assert "wgmma" in err.message and "sm_80" in err.message and "sm_90a" in err.hint
    assert err.span is not None and SOURCE.splitlines()[err.span.line - 1].strip().startswith("acc +=")


def test_promotion_cannot_span_scale_groups():
    err = compile_error(SOURCE.replace("step 128", "step 256").replace("+128]", "+256]"),
                        constants={"PROMOTE": 256})
    assert "promoted with one scale" in err.message


@pytest.mark.parametrize("edit,message", [
    (("let tb = load b[n0 : +BN, k : +128] via tma", "let tb = load b[n0 : +BN, k : +128]"),
     "loaded 'via tma'"),
    (("mma(ta, tb.T,", "mma(ta, tb,"), "K-major"),
    (("persistent(raster = GROUP, ", "persistent(raster = GROUP)\n  grid(4)"), None),
    (("pipeline(STAGES)", "pipeline(1)"), "at least 2"),
    (("persistent(raster = GROUP, ", "persistent(order = GROUP, "), "only 'raster"),
    (("cluster = CLUSTER", "cluster = 3"), "cluster must be 1 or 2"),
    (("M step BM, n0 in 0 .. N step BN persistent(raster = GROUP, cluster = CLUSTER)",
      "M step BM persistent(raster = GROUP, cluster = 2)"), "two tile coordinates"),
    (("pipeline(STAGES)", "pipelined(STAGES)"), "unknown loop clause"),
    (("  tune BM", "  ctas_per_sm(2)\n  tune BM"), "one CTA per SM"),
    (("acc += mma", "acc2 += mma"), "not a variable"),
])
def test_mistakes_get_errors_with_a_span(edit, message):
    source = SOURCE.replace(*edit)
    if message is None:           # a grid annotation cannot go inside the body: syntax error
        source = SOURCE.replace("  tune GROUP", "  grid(4)\n  tune GROUP")
        message = "takes no grid"
    err = compile_error(source)
    assert message in err.message, err.render()
    assert err.span is not None


def test_promotion_interval_errors():
    assert "divisor of the product's K = 128" in compile_error(SOURCE, constants={"PROMOTE": 48}).message
    assert "whole number of 32-wide" in compile_error(SOURCE, constants={"PROMOTE": 16}).message
    err = compile_error(SOURCE, constants={"PROMOTE": 32})          # 4 x 64 partial sums
    assert "registers per thread" in err.message and "promote less often" in err.hint
    err = compile_error(SOURCE.replace("acc += mma(ta, tb.T, promote_every = PROMOTE) * s[:, None]",
                                       "acc = mma(ta, tb.T, acc, promote_every = 64)"))
    assert "promotes nothing" in err.message


def test_tile_shape_limits():
    assert "multiple of 8" in compile_error(SOURCE, constants={"BN": 20}).message
    assert "straddle its 128-row scale blocks" in compile_error(SOURCE, constants={"BN": 144}).message
    assert "64, 128, 192 or 256 rows" in compile_error(SOURCE, constants={"BM": 32}).message
    err = compile_error(SOURCE, constants={"STAGES": 8})
    assert "bytes of shared memory" in err.message and "fewer stages" in err.hint


# ---- the interpreter ------------------------------------------------------------------------

@pytest.mark.parametrize("m,n,k,config", [
    (128, 128, 256, dict()),
    (256, 256, 256, dict(BN=64)),
    (200, 300, 384, dict(BM=64, BN=32)),            # ragged M and N, partial scale block
    (1, 72, 128, dict(BN=16)),
])
def test_interpreter_matches_float64_reference(m, n, k, config):
    kernel = commdsl.load(FP8_GEMM, **config)
    a, sa, b, sb = random_operands(m, n, k, seed=m + n + k)
    d = torch.full((m, n), float("nan"), dtype=torch.bfloat16)
    kernel.interpret(a, mn_major(sa), b, sb, d=d)
    ref = reference(a, sa, b, sb)
    assert not d.isnan().any()
    # bf16 output rounding alone is ~1.7e-3 relative on such data
    assert relative_error(d, ref) <= 2e-3


# ---- launch checks (on CPU tensors: no GPU needed) ------------------------------------------

def test_launch_errors_name_the_argument():
    kernel = commdsl.load(FP8_GEMM)
    a, sa, b, sb = random_operands(128, 384, 256)
    with pytest.raises(commdsl.LaunchError, match=r"argument 'sa'.*dimension 0 must be "
                                                  r"K / 128 = 2, got 128") as row_major:
        kernel.interpret(a, sa, b, sb)                 # the scales row by row: the help says
    assert "transposed (quant layout = mn_major)" in row_major.value.hint
    assert "get_col_major_tma_aligned_tensor" in row_major.value.hint
    sa = mn_major(sa)
    with pytest.raises(commdsl.LaunchError, match=r"argument 'sa'.*dimension 1 must be "
                                                  r"cdiv\(M, 4\) \* 4"):
        kernel.interpret(a, sa[:, :126].contiguous(), b, sb)
    with pytest.raises(commdsl.LaunchError, match=r"argument 'a'.*multiple of 128"):
        kernel.interpret(a[:, :200].contiguous(), sa, b[:, :200].contiguous(), sb)
    with pytest.raises(commdsl.LaunchError, match=r"argument 'sb'.*dimension 0 must be cdiv\(N, 128\)"):
        kernel.interpret(a, sa, b, sb.T.contiguous())
    with pytest.raises(commdsl.LaunchError, match=r"argument 'sa'.*contiguous"):
        kernel.interpret(a, sa.T.contiguous().T, b, sb)
    with pytest.raises(commdsl.LaunchError, match=r"argument 'b'.*e4m3"):
        kernel.interpret(a, sa, b.to(torch.float8_e5m2), sb)
    with pytest.raises(commdsl.LaunchError, match=r"argument 'a'.*CUDA"):
        kernel(a, sa, b, sb)


def test_tensor_map_row_stride_check():
    from commdsl.runtime.tensormap import TensorMaps
    from commdsl.spec import KernelSpec, TensorMapParam, TensorParam
    from commdsl.dims import Sym
    from commdsl.diagnostics import LaunchError
    spec = KernelSpec("k", (TensorParam("x", "bf16", (Sym("R"), Sym("C"))),), ("R", "C"), (),
                      128, tensor_maps=(TensorMapParam("x", (64, 64)),))

    def fail(arg, message, hint=None):
        return LaunchError("k", arg, message, hint)
    TensorMaps(spec).check(fail, {"R": 3, "C": 64})
    with pytest.raises(LaunchError, match=r"argument 'x'.*rows of 20 bytes \(C = 10\).*TMA"):
        TensorMaps(spec).check(fail, {"R": 3, "C": 10})


def test_only_the_variant_that_stores_d_through_tma_checks_its_rows():
    """N = 300 (rows of 600 bytes): the variant for sizes that are multiples of 16 would
    describe D with a tensor map and refuses it; the call runs the variant for other sizes,
    which stores D directly."""
    kernel = commdsl.load(FP8_GEMM, config="declared")
    a, sa, b, sb = random_operands(64, 300, 256)
    aligned = kernel.variant(frozenset()).launcher
    bound = aligned.bind(a, mn_major(sa), b, sb, require_cuda=False)
    with pytest.raises(commdsl.LaunchError, match=r"argument 'd'.*600 bytes.*multiple of 16"):
        aligned.check_tensor_maps(bound)
    kernel.variant(frozenset({"M", "N"})).launcher.check_tensor_maps(bound)
    d = kernel.interpret(a, mn_major(sa), b, sb)
    assert relative_error(d, reference(a, sa, b, sb)) <= 2e-3



def test_two_rows_share_a_stage():
    """A second row of scales in the stage (a per-row scale beside sa): the rows' rings are
    packed at TMA's 128-byte alignment after the 1024-byte swizzled tiles (3 stages of a
    512-byte row end at an offset that is not a multiple of 1024), and the lowered kernel
    keeps the product's meaning on the interpreter."""
    from commdsl.interpreter import run
    from commdsl.passes import PASS_ORDER, get_pass
    from commdsl.target import get_target
    source = SOURCE.replace("sa: f32[K / 128, cdiv(M, 4) * 4],",
                            "sa: f32[K / 128, cdiv(M, 4) * 4], sr: f32[K / 128, cdiv(M, 4) * 4],"
                            ).replace("via tma * load sb", "via tma * load sr[k / 128, m0 : +BM] "
                                      "via tma * load sb")
    assert source.count("via tma *") == 2
    kir = compile_source(source, "two_rows.cdsl", constants={"STAGES": 3}, emit="ir").ir[0]
    for name in PASS_ORDER:
        kir = get_pass(name)(kir, get_target("sm_90a"))
    rows = [op.attrs["offset"] for op in kir.walk()
            if op.name == "smem_alloc" and len(op.result.type.shape) == 1]
    assert len(rows) == 2 and rows[1] % 1024 and rows[1] % 128 == 0
    m, n, k = 128, 128, 384
    a, sa, b, sb = random_operands(m, n, k, seed=5)
    sr = torch.rand_like(sa) + 0.5
    d = torch.full((m, n), float("nan"), dtype=torch.bfloat16)
    run(kir, dict(a=a, sa=mn_major(sa), sr=mn_major(sr), b=b, sb=sb, d=d),
        dict(M=m, N=n, K=k), sms=2)
    assert relative_error(d, reference(a, sa * sr, b, sb)) <= 2e-3
    report = assemble(compile_source(source, "two_rows.cdsl", constants={"STAGES": 3}).ptx).report
    assert report.spill_stores_bytes == 0
