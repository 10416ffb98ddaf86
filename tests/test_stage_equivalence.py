"""Every pass keeps every example's meaning: the interpreter runs the IR before the passes and
after each pass (commdsl/passes/manager.py's PASS_ORDER) on small random inputs, ragged
shapes included, and each stage's outputs equal the stage before's bit for bit.

One pass is documented to change rounding: `mma` fuses the promotion `acc + p * s` into one
FMA per element (and, with promote_every < 128, promotes each interval of K on its own), as
the GPU computes it, where the IR before it rounds the product and the sum apart. Only
across that pass are fp8_gemm's outputs compared with a tolerance (an ulp of bf16); before
and after it, bit for bit.
"""
from __future__ import annotations

import os

import pytest
import torch

from commdsl.compiler import compile_source
from commdsl.interpreter import run, run_ranks
from commdsl.moe import COMBINE_SOURCE, DISPATCH_SOURCE
from commdsl.passes import PASS_ORDER, get_pass
from commdsl.target import get_target


EXAMPLES = os.path.join(os.path.dirname(__file__), "..", "examples", "")
MASKED = EXAMPLES + "grouped_fp8_gemm_masked.cdsl"
ROUNDING = {"mma"}             # passes documented to change rounding (see the docstring)


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiles this small run fastest on one thread (OpenMP's spinning costs more than it
    gains, worst on a busy machine)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _stages(path: str, kernel: str, sizes: dict, source: str | None = None, **constants):
    """("irgen", IR), then (pass, IR after it) for every pass in order. Passes rewrite the IR
    in place: use each before taking the next. Compiled for `sizes` as the runtime would
    (its variant for sizes that are multiples of 16 or not)."""
    text = source or open(path).read()
    kir = compile_source(text, path, kernel=kernel, constants=constants, emit="ir",
                         divisible={s: n % 16 == 0 for s, n in sizes.items()}).ir[0]
    yield "irgen", kir
    target = get_target("sm_90a")
    for name in PASS_ORDER:
        kir = get_pass(name)(kir, target)
        yield name, kir


def _bits(t: torch.Tensor) -> torch.Tensor:
    """The tensor's bits, so NaNs compare equal to themselves."""
    ints = {1: torch.uint8, 2: torch.int16, 4: torch.int32, 8: torch.int64}
    return t.contiguous().view(ints[t.element_size()])


def _check(path, kernel, sizes, execute, *, source=None, tolerance=None, **constants):
    """Runs `execute(ir) -> [output tensors]` at every stage and compares each stage's
    outputs with the stage before's."""
    before = None
    for name, kir in _stages(path, kernel, sizes, source, **constants):
        outputs = execute(kir)
        assert any(o.numel() for o in outputs)
        if before is not None:
            for new, old in zip(outputs, before):
                if name in ROUNDING and tolerance is not None:
                    torch.testing.assert_close(new, old, rtol=tolerance, atol=0, equal_nan=True,
                                               msg=lambda m: f"after pass '{name}': {m}")
                else:
                    assert torch.equal(_bits(new), _bits(old)), \
                        f"{kernel}: pass '{name}' changes the outputs"
        before = outputs


def _random(shape, dtype, seed, scale=1.0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(shape, generator=g) * scale).to(dtype)


def _scales(shape, seed):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(shape, generator=g) + 0.25


def _poisoned(shape, dtype):
    return torch.full(shape, float("nan") if dtype.is_floating_point else -7, dtype=dtype)


def _runner(tensors: dict, outputs: dict, sizes: dict, sms: int = 3):
    """execute(ir) for a one-rank kernel: fresh poisoned outputs on each run."""
    def execute(kir):
        outs = {name: _poisoned(*spec) for name, spec in outputs.items()}
        run(kir, {**tensors, **outs}, sizes, sms=sms)
        return list(outs.values())
    return execute


def cdiv(a, b):
    return -(-a // b)


# ---- division by a broadcast divisor (passes/divide.py) -------------------------------------

DIVIDE_BY_ROW = """kernel k(x: f32[M, 128], s: f32[M], y: out f32[M, 128])
  grid(M)
{
  store y[pid.0 : +1, 0 : +128] = load x[pid.0 : +1, 0 : +128] / load s[pid.0 : +1][:, None]
}"""


def _divide_by_row(divisors, source=DIVIDE_BY_ROW):
    sizes = dict(M=len(divisors))
    x = _random((len(divisors), 128), torch.float32, 5, 3.0)
    x[:, 1:7] = torch.tensor([-0.0, 0.0, float("inf"), float("-inf"), float("nan"), 3e38])
    _check("divide.cdsl", "k", sizes, _runner(
        dict(x=x, s=torch.tensor(divisors)), dict(y=((len(divisors), 128), torch.float32)),
        sizes), source=source)


def test_division_by_infinity_nan_and_positive_divisors_keeps_ieee_results():
    """The reciprocal-and-correction rewrite gives the IEEE quotient: x / inf = +-0 and
    inf / 2 = inf (the correction is skipped where q0 is 0, inf or NaN)."""
    _divide_by_row([float("inf"), 2.0, float("nan"), 3.0])


def test_division_by_zero_and_negative_divisors_keeps_ieee_results():
    """x / +-0 = +-inf, 0 / 0 = NaN, +0 / -3 = -0, and a tiny divisor overflows to inf."""
    _divide_by_row([0.0, -0.0, float("-inf"), -3.0, 1e-38, -0.7])


def test_division_by_a_nonnegative_divisor_keeps_ieee_results():
    """A divisor known >= +0 (abs(s) here) takes the residual without the sign fix-up
    (passes/divide.py): +-0 / 3, x / +0, x / inf and inf / 3 still come out as IEEE's."""
    _divide_by_row([0.0, -0.0, float("inf"), float("-inf"), float("nan"), -3.0, 1e-38],
                   DIVIDE_BY_ROW.replace("load s[pid.0 : +1][:, None]",
                                         "abs(load s[pid.0 : +1])[:, None]"))


# ---- quantization kernels ------------------------------------------------------------------

@pytest.mark.parametrize("m,k", [(37, 256), (16, 128)])
def test_act_quant(m, k):
    sizes = dict(M=m, K=k)
    x = _random((m, k), torch.bfloat16, 1, 3.0)
    _check(EXAMPLES + "act_quant.cdsl", "act_quant", sizes, _runner(
        dict(x=x), dict(y=((m, k), torch.float8_e4m3fn), s=((m, k // 128), torch.float32)),
        sizes))


def test_copy_nc():
    sizes = dict(N=5000)
    _check(EXAMPLES + "copy_nc.cdsl", "copy_nc", sizes, _runner(
        dict(x=_random(5000, torch.bfloat16, 2)), dict(y=((5000,), torch.bfloat16)), sizes))


FORMATS = [dict(), dict(FMT="e5m2", SF="ue8m0", G=64)]     # a UE8M0 scale: recip is exact
TORCH = {"e4m3": torch.float8_e4m3fn, "e5m2": torch.float8_e5m2, "f32": torch.float32,
         "ue8m0": torch.uint8}


def _format(fmt):
    """(element dtype, scale dtype, group) of a quant example's constants."""
    return TORCH[fmt.get("FMT", "e4m3")], TORCH[fmt.get("SF", "f32")], fmt.get("G", 128)


def _input_scales(shape, dtype, seed):
    if dtype == torch.uint8:                                 # UE8M0: 2^-8 .. 2^7
        g = torch.Generator().manual_seed(seed)
        return torch.randint(119, 135, shape, generator=g, dtype=torch.uint8)
    return _scales(shape, seed)


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("n,k", [(200, 300), (128, 256)])
def test_weight_quant(n, k, fmt):
    sizes = dict(N=n, K=k)
    x, sf, g = _format(fmt)
    _check(EXAMPLES + "weight_quant.cdsl", "weight_quant", sizes, _runner(
        dict(w=_random((n, k), torch.bfloat16, 3, 2.0)),
        dict(y=((n, k), x), s=((cdiv(n, g), cdiv(k, g)), sf)), sizes), **fmt)


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("m,k", [(37, 300), (64, 256)])
def test_dequant_act(m, k, fmt):
    sizes = dict(M=m, K=k)
    x, sf, g = _format(fmt)
    _check(EXAMPLES + "dequant.cdsl", "dequant_act", sizes, _runner(
        dict(x=_random((m, k), x, 4, 50.0), s=_input_scales((m, cdiv(k, g)), sf, 5)),
        dict(y=((m, k), torch.bfloat16)), sizes), **fmt)


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("n,k", [(200, 300), (128, 256)])
def test_dequant_weight(n, k, fmt):
    sizes = dict(N=n, K=k)
    x, sf, g = _format(fmt)
    _check(EXAMPLES + "dequant.cdsl", "dequant_weight", sizes, _runner(
        dict(w=_random((n, k), x, 6, 50.0), s=_input_scales((cdiv(n, g), cdiv(k, g)), sf, 7)),
        dict(y=((n, k), torch.bfloat16)), sizes), **fmt)


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("m,k", [(200, 300), (128, 256)])
def test_requant_t(m, k, fmt):
    sizes = dict(M=m, K=k)
    x, sf, g = _format(fmt)
    _check(EXAMPLES + "requant_t.cdsl", "requant_t", sizes, _runner(
        dict(x=_random((m, k), x, 8, 50.0), s=_input_scales((m, cdiv(k, g)), sf, 9)),
        dict(xt=((k, m), x), st=((k, cdiv(m, g)), sf)), sizes), **fmt)


# ---- fp8_gemm: the TMA pipeline, warp specialization, clusters -----------------------------

@pytest.mark.parametrize("m,n,k,config", [
    (70, 160, 1280, {}),                       # ragged M; 10 K steps: the overlap's groups of 8
    (256, 256, 1024, {}),                      # aligned, 4 tiles on 3 CTAs: the ring runs on
    (200, 300, 384, dict(CLUSTER=2, BN=64)),   # CTA pairs, TMA multicast of A
    (130, 200, 640, dict(BM=64, BN=64, PROMOTE=64)),   # one consumer warpgroup, split promotion
])
def test_fp8_gemm(m, n, k, config):
    """A's scales in DeepGEMM's transposed layout, a row of them per K step through TMA."""
    from test_fp8_gemm import mn_major, random_operands, reference, relative_error
    a, sa, b, sb = random_operands(m, n, k, seed=m + n + k)
    sizes = dict(M=m, N=n, K=k)
    execute = _runner(dict(a=a, sa=mn_major(sa), b=b, sb=sb), dict(d=((m, n), torch.bfloat16)),
                      sizes, sms=5)
    outputs = []

    def keep(kir):
        outputs.append(execute(kir))
        return outputs[-1]
    _check(EXAMPLES + "fp8_gemm.cdsl", "fp8_gemm", sizes, keep, tolerance=2 ** -7, **config)
    assert relative_error(outputs[-1][0], reference(a, sa, b, sb)) < 2e-3


@pytest.mark.parametrize("m,n,k,config", [
    (70, 160, 200, {}),                        # ragged M, N and K (K: 3 steps of 64, the last partial)
    (256, 256, 256, dict(BN=256, STAGES=3)),   # aligned, one 256-wide tile per row band
    (130, 200, 128, dict(BM=64, BN=64)),       # one consumer warpgroup
])
def test_bf16_gemm(m, n, k, config):
    sizes = dict(M=m, N=n, K=k)
    _check(EXAMPLES + "bf16_gemm.cdsl", "bf16_gemm", sizes, _runner(
        dict(a=_random((m, k), torch.bfloat16, 1), b=_random((n, k), torch.bfloat16, 2)),
        dict(d=((m, n), torch.bfloat16)), sizes, sms=5), **config)


@pytest.mark.parametrize("m,n,k,config", [
    (70, 136, 200, {}),                        # ragged M, N and K; N past the last slab
    (130, 256, 128, dict(BM=64, BN=256, STAGES=3)),   # four 64-column slabs of B per stage
])
def test_bf16_matmul(m, n, k, config):
    sizes = dict(M=m, N=n, K=k)
    _check(EXAMPLES + "bf16_matmul.cdsl", "bf16_matmul", sizes, _runner(
        dict(a=_random((m, k), torch.bfloat16, 1), b=_random((k, n), torch.bfloat16, 2)),
        dict(d=((m, n), torch.bfloat16)), sizes, sms=5), **config)


@pytest.mark.parametrize("m,n,k,config", [
    (70, 136, 200, {}),                        # ragged M, N and K
    (130, 64, 128, dict(BM=64, BN=64)),        # one consumer warpgroup
])
def test_swiglu_gemm(m, n, k, config):
    """A computed in registers (silu(g) * u in bf16) feeds the mma."""
    sizes = dict(M=m, H=n, I=k)
    _check(EXAMPLES + "swiglu_gemm.cdsl", "swiglu_gemm", sizes, _runner(
        dict(g=_random((m, k), torch.bfloat16, 1), u=_random((m, k), torch.bfloat16, 2),
             w=_random((n, k), torch.bfloat16, 3)),
        dict(d=((m, n), torch.bfloat16)), sizes, sms=5), **config)


# ---- MoE kernels on simulated ranks ---------------------------------------------------------

def _rank_runner(world, tensors, outputs, sizes):
    """execute(ir) on `world` simulated ranks: tensors[r] rank r's inputs (its symmetric
    ones copied per run), outputs[r] name -> (shape, dtype), fresh flags each run."""
    def execute(kir):
        args = [{**{n: t.clone() for n, t in tensors[r].items()},
                 **{n: _poisoned(*spec) for n, spec in outputs[r].items()},
                 "flags": torch.zeros(world, dtype=torch.int32)} for r in range(world)]
        run_ranks(kir, args, sizes, epoch=1, timeout_s=5.0)
        return [a[n] for r, a in enumerate(args) for n in outputs[r]]
    return execute


def _rows(world, tokens, received, seed):
    """Random (src_rank, src_row) per received row, every source row in range."""
    g = torch.Generator().manual_seed(seed)
    src_rank = torch.randint(0, world, (received,), generator=g, dtype=torch.int32)
    src_row = torch.stack([torch.randint(0, tokens[int(r)], (1,), generator=g)[0]
                           for r in src_rank]).to(torch.int32)
    return src_rank, src_row


@pytest.mark.parametrize("fp8", [False, True])
def test_moe_dispatch(fp8):
    world, tokens, received, hidden = 2, [5, 9], [11, 6], 256
    tmax = max(tokens)
    kernel = "moe_dispatch_fp8" if fp8 else "moe_dispatch"
    tensors, outputs, sizes = [], [], []
    for r in range(world):
        src_rank, src_row = _rows(world, tokens, received[r], seed=r)
        t = dict(src_rank=src_rank, src_row=src_row)
        o = dict(recv_x=((received[r], hidden), torch.float8_e4m3fn if fp8 else torch.bfloat16))
        if fp8:
            t.update(x=_random((tmax, hidden), torch.float8_e4m3fn, 10 + r, 50.0),
                     xs=_scales((tmax, hidden // 128), 20 + r))
            o["recv_xs"] = ((received[r], hidden // 128), torch.float32)
        else:
            t["x"] = _random((tmax, hidden), torch.bfloat16, 10 + r)
        tensors.append(t)
        outputs.append(o)
        sizes.append(dict(TMAX=tmax, H=hidden, R=received[r], W=world))
    _check(DISPATCH_SOURCE, kernel, sizes[0], _rank_runner(world, tensors, outputs, sizes),
           SMS=3, ROWS=2, CHUNK=3584 if fp8 else 1792)


def test_moe_route():
    world, tmax, c = 2, 7, 8
    g = torch.Generator().manual_seed(11)
    tensors = [dict(route=torch.randint(-1, 64, (tmax, c), generator=g, dtype=torch.int32))
               for _ in range(world)]
    outputs = [dict(all_route=((world, tmax, c), torch.int32))] * world
    sizes = [dict(TMAX=tmax, W=world)] * world
    _check(DISPATCH_SOURCE, "moe_route", sizes[0], _rank_runner(world, tensors, outputs, sizes),
           C=c, SMS=2, ROWS=32)


def test_moe_combine():
    world, tokens, rmax, hidden = 3, 5, 8, 256
    g = torch.Generator().manual_seed(12)
    tensors = [dict(y=_random((rmax, hidden), torch.bfloat16, 30 + r),
                    slot=torch.randint(-1, rmax, (tokens, world), generator=g, dtype=torch.int32))
               for r in range(world)]
    outputs = [dict(comb_x=((tokens, hidden), torch.bfloat16))] * world
    sizes = [dict(RMAX=rmax, H=hidden, T=tokens, W=world)] * world
    _check(COMBINE_SOURCE, "moe_combine", sizes[0], _rank_runner(world, tensors, outputs, sizes),
           SMS=2, ROWS=2, CHUNK=1792)


# ---- ragged persistent loops (passes/schedule.py's group scan) ------------------------------

RAGGED_COPY = """kernel masked_copy(x: f32[G, M, N], cnt: i32[G], y: out f32[G, M, N])
{
  for g in 0 .. G, m0 in 0 .. min(load cnt[g], M) step 16, n0 in 0 .. N step 32
      persistent(raster = 2) {
    let rows = m0 + iota(16, 32, axis = 0) < load cnt[g]
    store y[g, m0 : +16, n0 : +32] mask(rows) = load x[g, m0 : +16, n0 : +32] * 2.0
  }
}"""


def test_ragged_persistent_loop():
    sizes = dict(G=5, M=40, N=70)
    counts = torch.tensor([0, 17, 40, 100, -1], dtype=torch.int32)
    _check("ragged.cdsl", "masked_copy", sizes, _runner(
        dict(x=_random((5, 40, 70), torch.float32, 1), cnt=counts),
        dict(y=((5, 40, 70), torch.float32)), sizes, sms=3), source=RAGGED_COPY)


@pytest.mark.parametrize("counts,config", [([0, 1, 70, 128], dict(BM=64, BN=64)),
                                           ([130, 5], {})])
def test_grouped_fp8_gemm_masked(counts, config):
    from grouped_layout import masked_operands
    from test_fp8_gemm import mn_major
    m_max, n, k = 128, 192, 256
    a, sa, b, sb, masked_m = masked_operands(counts, m_max, n, k, seed=sum(counts))
    sizes = dict(G=len(counts), M=m_max, N=n, K=k)
    _check(MASKED, "grouped_fp8_gemm_masked", sizes, _runner(
        dict(a=a, sa=mn_major(sa), b=b, sb=sb, masked_m=masked_m),
        dict(d=((len(counts), m_max, n), torch.bfloat16)), sizes, sms=3),
        tolerance=2 ** -7, **config)
