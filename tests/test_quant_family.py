"""The FP8 quantization family on the CPU: weight_quant, dequant (activations and weights)
and the fused transposed re-quantization, in every format the language expresses.

Each kernel compiles, passes ptxas for sm_90a with no spills, shows the PTX facts the issue
names (16-byte global accesses, the shared-memory transpose), runs in the IR interpreter
bit-exactly against the torch formulas of tests/quant_reference.py, and every wrong scale
shape, dtype or group is a diagnostic that names the tensor.
"""
import os
import re

import pytest
import torch

import commdsl
import quant_reference as R
from commdsl.compiler import compile_file, compile_source
from commdsl.layout import DimMap
from commdsl.runtime.ptxas import assemble

EXAMPLES = os.path.join(os.path.dirname(__file__), "..", "examples")
WEIGHT_QUANT = os.path.join(EXAMPLES, "weight_quant.cdsl")
DEQUANT = os.path.join(EXAMPLES, "dequant.cdsl")
REQUANT_T = os.path.join(EXAMPLES, "requant_t.cdsl")
KERNELS = [(WEIGHT_QUANT, "weight_quant"), (DEQUANT, "dequant_act"),
           (DEQUANT, "dequant_weight"), (REQUANT_T, "requant_t")]
FORMATS = [dict(FMT="e4m3", SF="f32", G=128), dict(FMT="e4m3", SF="ue8m0", G=128),
           dict(FMT="e5m2", SF="f32", G=128), dict(FMT="e5m2", SF="ue8m0", G=64),
           dict(FMT="e4m3", SF="f32", G=48), dict(FMT="e4m3", SF="ue8m0", G=80)]


def fmt_id(f):
    return f"{f['FMT']}-{f['SF']}-G{f['G']}"


# ---- compile, ptxas, PTX facts -------------------------------------------------------------

@pytest.mark.parametrize("aligned", [True, False], ids=["div16", "ragged"])
@pytest.mark.parametrize("fmt", FORMATS, ids=fmt_id)
@pytest.mark.parametrize("path,kernel", KERNELS, ids=[k for _, k in KERNELS])
def test_compiles_and_passes_ptxas(path, kernel, fmt, aligned):
    divisible = None if aligned else {"M": False, "N": False, "K": False}
    ptx = compile_file(path, kernel=kernel, constants=fmt, divisible=divisible).ptx
    report = assemble(ptx, arch="sm_90a", entry=kernel).report
    # requant_t asks for 3 CTAs per SM (168 registers at 4 warps); its ragged variant, with
    # a bounds mask per row and column, fits them by spilling 8 bytes. Everything else: 0.
    allowed = 16 if (kernel, aligned) == ("requant_t", False) else 0
    assert report.spill_stores_bytes <= allowed and report.spill_loads_bytes <= allowed


def ptx_of(path, kernel, **constants):
    return compile_file(path, kernel=kernel, constants=constants).ptx


def test_weight_quant_ptx():
    ptx = ptx_of(WEIGHT_QUANT, "weight_quant")
    assert re.search(r"ld\.global\.nc\.v4\.b32", ptx), "bf16 loads must be 16 bytes wide"
    assert not re.search(r"ld\.global\.nc\.b16", ptx)
    assert "cvt.rn.satfinite.e4m3x2.f32" in ptx
    assert "bar.sync 0" in ptx, "the block amax crosses warps through shared memory"
    assert "div.rn.f32" in ptx and "rcp.rn.f32" in ptx, "one IEEE scale, one reciprocal"
    ue = ptx_of(WEIGHT_QUANT, "weight_quant", SF="ue8m0", FMT="e5m2")
    assert "cvt.rn.satfinite.e5m2x2.f32" in ue
    assert re.search(r"st\.global\.b8 ", ue), "a UE8M0 scale is one byte"


def test_dequant_ptx():
    ptx = ptx_of(DEQUANT, "dequant_act")
    # Each thread holds 8 consecutive elements: one 16-byte bf16 store, coalesced across the
    # warp, from one 8-byte FP8 load (16-byte loads would split every store in two halves,
    # 32 bytes apart: passes/tile.py `_shape_vectors`).
    assert re.search(r"ld\.global\.nc\.v2\.b32", ptx), "FP8 loads must be 8 bytes wide"
    assert not re.search(r"ld\.global\.nc\.v4\.b32", ptx), "no split bf16 stores"
    assert re.search(r"st\.global\.v4\.b32", ptx), "bf16 stores must be 16 bytes wide"
    assert "cvt.rn.f16x2.e4m3x2" in ptx and "cvt.rn.bf16x2.f32" in ptx, "two per conversion"
    assert "bar.sync" not in ptx and "shfl" not in ptx, "scales are loaded where they are used"
    w = ptx_of(DEQUANT, "dequant_weight", SF="ue8m0")
    assert re.search(r"ld\.global\.nc\.v2\.b32", w) and "bar.sync" not in w


def test_requant_t_is_one_kernel_through_shared_memory():
    ptx = ptx_of(REQUANT_T, "requant_t")
    assert re.search(r"ld\.global\.nc\.L2::256B\.v4\.b32", ptx), "16-byte FP8 loads, L2 hint"
    assert "ld.shared.v4.b32" in ptx and "bar.sync 0" in ptx
    # 4 FP8 bytes per shared write (4 rows per thread, byte-transposed by prmt), no byte stores
    assert "st.shared.b32" in ptx and "prmt.b32" in ptx and "st.shared.b8" not in ptx
    # the 128 strided scales: one global load per thread, to threads through shared memory
    assert len(re.findall(r"ld\.global\.nc\.b32", ptx)) == 1
    stores = set(re.findall(r"st\.global[.\w]*", ptx))
    assert stores == {"st.global.v4.b32", "st.global.b32"}, stores   # xt (FP8) and st (f32)
    assert "bf16" not in ptx, "no bf16 intermediate"
    assert "cvt.rn.f16x2.e4m3x2" in ptx and "cvt.rn.satfinite.e4m3x2.f32" in ptx


def test_requant_t_transpose_is_bank_conflict_free():
    """Writes: 4 bytes per lane per instruction; reads: 16 bytes per lane. The plan must
    reach the minimum wavefronts for one warp: 1 per write, 4 per 16-byte read."""
    out = compile_source(open(REQUANT_T).read(), REQUANT_T, emit="ptx")
    op = next(op for op in out.ir[0].walk() if op.name == "transpose")
    plan = op.attrs["smem"]
    writes = 128 * 128 // out.ir[0].num_threads // 4
    reads = writes * 4 // 16
    assert plan.wavefronts == writes + 4 * reads, plan
    assert plan.bytes <= 128 * 128 + 128 * 16


def test_act_quant_keeps_its_hinted_16_byte_loads():
    ptx = compile_file(os.path.join(EXAMPLES, "act_quant.cdsl")).ptx
    hinted = re.findall(r"ld\.global\.nc\.L2::256B\S*", ptx)       # the default XC
    assert hinted and all(h.endswith(".v4.b32") for h in hinted)


def test_partial_repeats_cover_sizes_that_are_not_powers_of_two():
    m = DimMap(size=48, spt=1, tpw=32, wpc=1, lane_stride=1, warp_stride=1)
    assert m.reps == 2 and m.wraps
    covered = {(t + r * m.span) % 48 for t in range(32) for r in range(m.reps)}
    assert covered == set(range(48))


# ---- the interpreter against torch ---------------------------------------------------------

SHAPES = [(1, 128), (127, 256), (129, 200), (64, 80), (3, 7168)]


@pytest.mark.parametrize("fmt", FORMATS[:4], ids=fmt_id)
@pytest.mark.parametrize("n,k", SHAPES)
def test_weight_quant_interpreter(n, k, fmt):
    w = R.random_activations(n, k, seed=n * 7 + k)
    y, s = commdsl.load(WEIGHT_QUANT, **fmt).interpret(w)
    y_ref, s_ref = R.weight_quant(w, fmt["G"], fmt["FMT"], fmt["SF"])
    assert R.same_bits(s, s_ref) and R.same_bits(y, y_ref)


@pytest.mark.parametrize("fmt", FORMATS, ids=fmt_id)
@pytest.mark.parametrize("n,k", SHAPES[:4])
def test_dequant_interpreter(n, k, fmt):
    g, f, sf = fmt["G"], fmt["FMT"], fmt["SF"]
    w = R.random_activations(n, k, seed=n + k)
    xq, xs = R.act_quant(w, g, f, sf)
    act = commdsl.load(DEQUANT, kernel="dequant_act", ROWS=4, **fmt)
    assert R.same_bits(act.interpret(xq, xs), R.dequant(xq, xs, (1, g)))
    wq, ws = R.weight_quant(w, g, f, sf)
    weight = commdsl.load(DEQUANT, kernel="dequant_weight", **fmt)
    assert R.same_bits(weight.interpret(wq, ws), R.dequant(wq, ws, (g, g)))


@pytest.mark.parametrize("fmt", FORMATS, ids=fmt_id)
@pytest.mark.parametrize("m,k", [(1, 256), (127, 128), (129, 384), (33, 200)])
def test_requant_t_interpreter(m, k, fmt):
    g, f, sf = fmt["G"], fmt["FMT"], fmt["SF"]
    xq, xs = R.act_quant(R.random_activations(m, k, seed=m * 3 + k), g, f, sf)
    xt, st = commdsl.load(REQUANT_T, **fmt).interpret(xq, xs)
    xt_ref, st_ref = R.requant_t(xq, xs, g, f, sf)
    assert xt.shape == (k, m) and st.shape == (k, R.cdiv(m, g))
    assert R.same_bits(st, st_ref) and R.same_bits(xt, xt_ref)


def test_ue8m0_reference_is_deepgemm_ceil_to_ue8m0():
    """DeepGEMM: ceil_to_ue8m0(x) = 2^ceil(log2(x)). The bit form agrees wherever log2 is
    exact, and is the one that cannot be off by a power of two from log2's rounding."""
    sc = torch.cat([torch.rand(4096) * 10, torch.tensor([1e-4 / 448, 1.0, 2.0, 0.75, 3.0])])
    deepgemm = torch.pow(2.0, torch.ceil(torch.log2(sc)))
    assert torch.equal(R.ue8m0_decode(R.ue8m0_encode(sc)), deepgemm)
    assert int(R.ue8m0_encode(torch.tensor([1.0]))) == 127


def test_all_zero_block_gives_zeros_and_the_floor_scale():
    y, s = commdsl.load(WEIGHT_QUANT).interpret(torch.zeros(130, 128, dtype=torch.bfloat16))
    assert (y.view(torch.uint8) == 0).all()
    assert torch.all(s == torch.tensor(1e-4) / torch.tensor(448.0))


# ---- diagnostics: compile time and launch time ---------------------------------------------

GOOD = """\
kernel wq(w: bf16[N, K], y: out e4m3[N, K] quant(128 x 128, scale = s),
          s: out f32[cdiv(N, 128), cdiv(K, 128)])
  grid(cdiv(K, 128), cdiv(N, 128))
{
  let t = load w[pid.1 * 128 : +128, pid.0 * 128 : +128]
  let sc = max(amax(t), 1e-4) / 448.0
  store y[pid.1 * 128 : +128, pid.0 * 128 : +128] = cast<e4m3>(t / sc)
  store s[pid.1, pid.0] = sc
}
"""


def compile_error(source, **constants) -> commdsl.CompileError:
    with pytest.raises(commdsl.CompileError) as info:
        compile_source(source, "k.cdsl", constants=constants)
    e = info.value
    assert e.span is not None and e.hint, e.render()
    return e


def test_good_weight_block_kernel():
    assert "bar.sync" in compile_source(GOOD, "k.cdsl").ptx


def test_wrong_scale_shape_names_the_scale():
    e = compile_error(GOOD.replace("s: out f32[cdiv(N, 128), cdiv(K, 128)]",
                                   "s: out f32[N, cdiv(K, 128)]"))
    assert "scale 's'" in e.message and "needs [N / 128, K / 128]" in e.message
    assert e.span.line == 2


def test_group_not_a_multiple_of_16():
    e = compile_error(GOOD.replace("quant(128 x 128", "quant(128 x 100"))
    assert "multiple of 16" in e.message and e.span.line == 1
    src, caret = e.render().splitlines()[1:3]
    assert src[caret.index("^"):].startswith("100")


def test_ue8m0_format_needs_a_ue8m0_scale():
    e = compile_error(GOOD.replace("scale = s)", "scale = s, format = ue8m0)"))
    assert "format = ue8m0" in e.message and "'s' must be ue8m0, not f32" in e.message
    assert "s: out ue8m0[" in e.hint and e.span.line == 2


def test_scale_dtype_must_be_a_scale_format():
    e = compile_error(GOOD.replace("s: out f32[", "s: out u8["))
    assert "must be f32 or ue8m0, not u8" in e.message and e.span.line == 2


def test_unknown_scale_format():
    e = compile_error(GOOD.replace("scale = s)", "scale = s, format = e8m0)"))
    assert "unknown scale format 'e8m0'" in e.message and "ue8m0" in e.hint


def test_quant_of_a_non_fp8_tensor():
    e = compile_error(GOOD.replace("y: out e4m3[N, K]", "y: out bf16[N, K]"))
    assert "quant groups describe FP8 data" in e.message


def test_dtype_constant_that_is_not_a_dtype():
    src = open(WEIGHT_QUANT).read()
    with pytest.raises(commdsl.CompileError, match="constant 'FMT' = 128 is not a dtype"):
        compile_source(src, "weight_quant.cdsl", constants={"FMT": 128})


def test_arithmetic_on_ue8m0_needs_a_cast():
    src = GOOD.replace("s: out f32[", "s: out ue8m0[").replace(
        "store s[pid.1, pid.0] = sc", "store s[pid.1, pid.0] = cast<ue8m0>(sc) * 2.0")
    e = compile_error(src)
    assert "ue8m0" in e.message and "cast<f32>" in e.hint


def test_launch_checks_name_the_scale_argument():
    dq = commdsl.load(DEQUANT, kernel="dequant_weight", SF="ue8m0")
    x = torch.zeros(256, 384, dtype=torch.float8_e4m3fn)
    with pytest.raises(commdsl.LaunchError, match=r"argument 's'.*ue8m0 \(torch.uint8\)"):
        dq.interpret(x, torch.zeros(2, 3))
    with pytest.raises(commdsl.LaunchError, match=r"argument 's'.*dimension 1 must be cdiv\(K, 128\) = 3"):
        dq.interpret(x, torch.zeros(2, 4, dtype=torch.uint8))
    rq = commdsl.load(REQUANT_T)
    with pytest.raises(commdsl.LaunchError, match=r"argument 'x'.*e4m3"):
        rq.interpret(torch.zeros(4, 128, dtype=torch.float8_e5m2), torch.zeros(4, 1))
    with pytest.raises(commdsl.LaunchError, match=r"argument 's'.*size M is 5 here but 4"):
        rq.interpret(torch.zeros(4, 128, dtype=torch.float8_e4m3fn), torch.zeros(5, 1))


from test_stage_equivalence import DIVIDE_BY_ROW  # noqa: E402  (the kernel its CPU test runs)


def _division_by_specials():
    """Rows divided by inf, -inf, NaN, 3, +-0 and -3, with +-0, +-inf and NaN among x."""
    x = torch.randn(7, 128) * 3
    x[:, 1:6] = torch.tensor([-0.0, 0.0, float("inf"), float("-inf"), float("nan")])
    return x, torch.tensor([float("inf"), float("-inf"), float("nan"), 3.0, 0.0, -0.0, -3.0])


def _same_quotient(y, want):
    assert torch.equal(torch.isnan(y), torch.isnan(want))
    assert torch.equal(torch.nan_to_num(y).view(torch.int32), torch.nan_to_num(want).view(torch.int32))


@pytest.mark.gpu
def test_division_by_a_broadcast_special_value_on_the_gpu():
    x, s = _division_by_specials()
    k = commdsl.load(DIVIDE_BY_ROW)
    y = torch.full_like(x, float("nan")).cuda()
    k(x.cuda(), s.cuda(), y=y)
    _same_quotient(y.cpu(), x / s[:, None])


# ---- transposed (mn_major) scales: DeepGEMM's TMA-aligned A-scale layout -------------------

MN_MAJOR = """kernel act_quant_t(x: bf16[M, K],
                   y: out e4m3[M, K] quant(1 x 128, scale = s, layout = mn_major),
                   s: out f32[K / 128, cdiv(M, 4) * 4])
  grid(K / 128, cdiv(M, 8))
{
  let t  = load x[pid.1 * 8 : +8, pid.0 * 128 : +128]
  let sc = max(amax(t, axis = 1), 1e-4) / 448.0
  store y[pid.1 * 8 : +8, pid.0 * 128 : +128] = cast<e4m3>(t / sc[:, None])
  store s[pid.0, pid.1 * 8 : +8] = sc
}
"""


@pytest.mark.parametrize("m", [8, 70])
def test_mn_major_scales_are_the_transpose_with_a_16_byte_pitch(m):
    x = torch.randn(m, 256, generator=torch.Generator().manual_seed(m))
    x[::7, 3] *= 1000.0                                      # outliers set some groups' scales
    x = x.bfloat16()
    y, s = commdsl.load(MN_MAJOR).interpret(x)
    assert s.shape == (2, -(-m // 4) * 4)
    ref = x.float().view(m, 2, 128).abs().amax(-1).clamp(min=1e-4) / 448.0
    assert torch.equal(s[:, :m], ref.T)
    assert torch.equal(y.float(), (x.float().view(m, 2, 128) / ref[..., None])
                       .view(m, 256).to(torch.float8_e4m3fn).float())


def test_mn_major_scale_without_the_padded_pitch_is_located():
    e = compile_error(MN_MAJOR.replace("s: out f32[K / 128, cdiv(M, 4) * 4]",
                                       "s: out f32[K / 128, M]"))
    assert "layout = mn_major needs [K / 128, cdiv(M, 4) * 4]" in e.message
    assert "s: out f32[K / 128, cdiv(M, 4) * 4]" in e.hint and e.span.line == 3


def test_mn_major_scale_of_constant_rows_is_their_padded_count():
    src = MN_MAJOR.replace("x: bf16[M, K]", "x: bf16[70, K]").replace("y: out e4m3[M, K]",
                                                                     "y: out e4m3[70, K]")
    src = src.replace("cdiv(M, 8)", "cdiv(70, 8)")
    assert "ld.global" in compile_source(src.replace("cdiv(M, 4) * 4", "72"), "k.cdsl").ptx
    e = compile_error(src.replace("cdiv(M, 4) * 4", "70"))
    assert "needs [K / 128, 72]" in e.message


def test_a_wrong_runtime_pitch_names_the_argument():
    k = commdsl.load(MN_MAJOR)
    x = torch.randn(70, 256).bfloat16()
    with pytest.raises(commdsl.LaunchError, match=r"'s': dimension 1 must be cdiv\(M, 4\) \* 4"):
        k.interpret(x, y=torch.empty(70, 256, dtype=torch.float8_e4m3fn), s=torch.empty(2, 70))


@pytest.mark.parametrize("change,message,line", [
    (("layout = mn_major", "layout = row_major"), "unknown scale layout 'row_major'", 2),
    (("s: out f32[", "s: out ue8m0["), "transposed UE8M0 scales are packed four to an i32", 3),
])
def test_mn_major_mistakes_are_located(change, message, line):
    e = compile_error(MN_MAJOR.replace(*change))
    assert message in e.message and e.span.line == line


def test_mn_major_of_blocks_is_located():
    src = GOOD.replace("scale = s)", "scale = s, layout = mn_major)")
    e = compile_error(src)
    assert "mn_major needs groups of one row, 1 x G, not 128 x 128" in e.message
    assert "k_major" in e.hint


def test_mn_major_ragged_groups_take_the_ceil_div_in_the_transposed_place():
    src = (MN_MAJOR.replace("x: bf16[M, K]", "x: bf16[M, 200]")
           .replace("y: out e4m3[M, K]", "y: out e4m3[M, 200]").replace("grid(K / 128", "grid(2"))
    ok = src.replace("s: out f32[K / 128,", "s: out f32[cdiv(200, 128),")
    assert "st.global" in compile_source(ok, "k.cdsl").ptx
    e = compile_error(src.replace("s: out f32[K / 128,", "s: out f32[200 / 128,"))
    assert "does not divide dimension 200" in e.message and "cdiv(200, 128)" in e.hint


# ---- transposed UE8M0 scales, packed four to an i32 (DeepGEMM's SM100 layout) --------------

PACKED = """kernel act_quant_packed(x: bf16[M, K],
    y: out e4m3[M, K] quant(1 x 128, scale = s, format = ue8m0, layout = mn_major),
    s: out i32[cdiv(K / 128, 4), cdiv(M, 4) * 4])
  grid(cdiv(K, 512), cdiv(M, 8))
{
  let t  = reshape(load x[pid.1 * 8 : +8, pid.0 * 512 : +512] other = 0.0, 8, 4, 128)
  let sc = cast<ue8m0>(max(amax(t, axis = 2), 1e-4) / max_finite<e4m3>())
  store y[pid.1 * 8 : +8, pid.0 * 512 : +512] = reshape(cast<e4m3>(t / cast<f32>(sc)[:, :, None]),
                                                        8, 512)
  let e  = bitcast<i32>(cast<f32>(sc)) >> 23
  store s[pid.0, pid.1 * 8 : +8] = sum(e << (8 * iota(8, 4, axis = 1)), axis = 1)
}
"""


def _packed_reference(x):
    """DeepGEMM's recipe in torch: power-of-two scales (ceil_to_ue8m0), their exponent bytes
    four to an i32 (byte j of word w: group 4w + j), transposed with the rows padded to 4."""
    m, k = x.shape
    groups = k // 128
    sf = x.float().view(m, groups, 128).abs().amax(-1).clamp(min=1e-4) / 448.0
    sf = torch.exp2(torch.ceil(torch.log2(sf)))
    exps = torch.zeros(m, -(-groups // 4) * 4, dtype=torch.uint8)
    exps[:, :groups] = (sf.view(torch.int32) >> 23).to(torch.uint8)
    words = torch.zeros(exps.shape[1] // 4, -(-m // 4) * 4, dtype=torch.int32)
    words[:, :m] = exps.view(torch.int32).T
    y = (x.float().view(m, groups, 128) / sf[..., None]).view(m, k).to(torch.float8_e4m3fn)
    return y, words


def _packed_inputs(m, k, device="cpu"):
    g = torch.Generator().manual_seed(m + k)
    x = torch.randn(m, k, generator=g) * torch.exp(torch.randn(m, 1, generator=g) * 4)
    x[::5, 7] = 3e4                                            # outliers
    return x.bfloat16().to(device)


@pytest.mark.parametrize("m,k", [(70, 1024), (8, 7168), (33, 640)])
def test_packed_ue8m0_scales_are_deepgemms_words(m, k):
    x = _packed_inputs(m, k)
    y, s = commdsl.load(PACKED).interpret(x)
    want_y, want_s = _packed_reference(x)
    groups = k // 128
    # Bytes of groups past K (k / 128 not a multiple of 4) are padding: compare the rest.
    mask = -1 if groups % 4 == 0 else (1 << (8 * (groups % 4))) - 1
    assert torch.equal(s[:-1, :m], want_s[:-1, :m])
    assert torch.equal(s[-1:, :m] & mask, want_s[-1:, :m] & mask)
    assert torch.equal(y.view(torch.uint8), want_y.view(torch.uint8))
    assert commdsl.load(PACKED).spec.tensors[1].quant.format == "ue8m0"


@pytest.mark.gpu
@pytest.mark.parametrize("m,k", [(70, 1024), (4096, 7168), (33, 640)])
def test_packed_ue8m0_scales_on_the_gpu(m, k):
    x = _packed_inputs(m, k, "cuda")
    y = torch.full((m, k), 0x7F, dtype=torch.uint8, device="cuda").view(torch.float8_e4m3fn)
    s = torch.full((-(-k // 512), -(-m // 4) * 4), -1, dtype=torch.int32, device="cuda")
    commdsl.load(PACKED)(x, y=y, s=s)
    torch.cuda.synchronize()
    want_y, want_s = _packed_reference(x.cpu())
    mask = -1 if (k // 128) % 4 == 0 else (1 << (8 * ((k // 128) % 4))) - 1
    assert torch.equal(s[:-1, :m].cpu(), want_s[:-1, :m])
    assert torch.equal(s[-1:, :m].cpu() & mask, want_s[-1:, :m] & mask)
    assert torch.equal(y.view(torch.uint8).cpu(), want_y.view(torch.uint8))


@pytest.mark.parametrize("change,message,hint", [
    (("s: out i32[", "s: out ue8m0["), "packed four to an i32 (DeepGEMM's layout), so 's' "
     "must be i32, not ue8m0", "s: out i32[cdiv(K / 128, 4), cdiv(M, 4) * 4]"),
    (("format = ue8m0, ", ""), "an i32 scale holds UE8M0 exponents packed four to a word",
     "format = ue8m0, layout = mn_major"),
    (("s: out i32[cdiv(K / 128, 4),", "s: out i32[K / 128,"),
     "needs [cdiv(K / 128, 4), cdiv(M, 4) * 4]", "s: out i32[cdiv(K / 128, 4)"),
])
def test_packed_ue8m0_mistakes_are_located(change, message, hint):
    e = compile_error(PACKED.replace(*change))
    assert message in e.message and hint in e.hint and e.span.line in (2, 3)


def test_packed_ragged_groups_take_the_ceil_div_inside_the_words():
    src = (PACKED.replace("x: bf16[M, K]", "x: bf16[M, 1000]")
           .replace("y: out e4m3[M, K]", "y: out e4m3[M, 1000]").replace("grid(cdiv(K, 512)",
                                                                         "grid(2"))
    ok = src.replace("cdiv(K / 128, 4)", "cdiv(cdiv(1000, 128), 4)")
    assert "st.global" in compile_source(ok, "k.cdsl").ptx
    e = compile_error(src.replace("cdiv(K / 128, 4)", "cdiv(1000 / 128, 4)"))
    assert "does not divide dimension 1000" in e.message
    assert "cdiv(cdiv(1000, 128), 4)" in e.hint


def test_a_packed_scale_passed_row_by_row_gets_the_layout_named():
    x = torch.randn(70, 1024).bfloat16()
    with pytest.raises(commdsl.LaunchError, match="packed four to an i32 and transposed"):
        commdsl.load(PACKED).interpret(x, s=torch.empty(70, 2, dtype=torch.int32))


def test_an_i32_row_major_scale_is_located():
    src = PACKED.replace(", layout = mn_major", "")
    e = compile_error(src)
    assert "i32 scale holds UE8M0 exponents packed four to a word" in e.message


# ---- masked loads of UE8M0 scales: `other` is a scale (its exponent byte) -----------------

MASKED_UE8M0 = """kernel dq(y: e4m3[M, K], s: ue8m0[M, cdiv(K, 128)], x: out f32[M, K])
  grid(cdiv(K, 512), cdiv(M, 4))
{
  let sc = load s[pid.1 * 4 : +4, pid.0 * 4 : +4] mask(iota(4, 4, axis = 1) < 3) other = 0.5
  let t  = reshape(load y[pid.1 * 4 : +4, pid.0 * 512 : +512], 4, 4, 128)
  store x[pid.1 * 4 : +4, pid.0 * 512 : +512] = reshape(cast<f32>(t) * cast<f32>(sc)[:, :, None],
                                                        4, 512)
}
"""


def _masked_ue8m0_case(device="cpu"):
    """Every fourth group's scale masked off (0.5 instead); K = 1000: a ragged last group."""
    g = torch.Generator().manual_seed(11)
    y = (torch.randn(6, 1000, generator=g) * 10).to(torch.float8_e4m3fn)
    s = torch.randint(100, 140, (6, 8), dtype=torch.uint8, generator=g)
    scale = torch.where((torch.arange(8) % 4 < 3)[None, :], torch.exp2(s.double() - 127), 0.5)
    want = y.double() * scale.repeat_interleave(128, 1)[:, :1000]
    return y.to(device), s.to(device), want


def test_a_masked_ue8m0_load_fills_with_the_scale():
    y, s, want = _masked_ue8m0_case()
    assert "other = 126" in compile_source(MASKED_UE8M0, "dq.cdsl").text["ir"]
    x = torch.full((6, 1000), float("nan"))
    commdsl.load(MASKED_UE8M0).interpret(y, s, x=x)
    assert torch.equal(x.double(), want)


@pytest.mark.gpu
def test_a_masked_ue8m0_load_on_the_gpu():
    y, s, want = _masked_ue8m0_case("cuda")
    x = torch.full((6, 1000), float("nan"), device="cuda")
    commdsl.load(MASKED_UE8M0)(y, s, x=x)
    torch.cuda.synchronize()
    assert torch.equal(x.cpu().double(), want)
