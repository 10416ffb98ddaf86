"""On a GPU: the FP8 quantization family equals the torch formulas of quant_reference.py bit
for bit, on fresh random inputs with outliers, with every output poisoned before the run."""
import pytest
import torch

import commdsl
import quant_reference as R
from test_quant_family import DEQUANT, REQUANT_T, WEIGHT_QUANT

pytestmark = pytest.mark.gpu

SHAPES = [(1, 7168), (127, 7168), (4097, 7168), (256, 1000), (129, 200)]
FORMATS = [dict(FMT="e4m3", SF="f32"), dict(FMT="e4m3", SF="ue8m0"),
           dict(FMT="e5m2", SF="f32"), dict(FMT="e5m2", SF="ue8m0")]
SMALL_GROUPS = [dict(FMT="e4m3", SF="f32", G=48), dict(FMT="e4m3", SF="ue8m0", G=80),
                dict(FMT="e5m2", SF="f32", G=64)]


def fmt_id(f):
    return "-".join(str(v) for v in f.values())


def poisoned(shape, dtype):
    """An output full of NaN (FP8 0x7F/0xFF bytes, 0xFF for ue8m0), so unwritten cells show."""
    t = torch.empty(shape, dtype=dtype, device="cuda")
    t.view(torch.uint8).fill_(0xFF)
    return t


def scale_dtype(sf):
    return torch.uint8 if sf == "ue8m0" else torch.float32


def inputs(m, k):
    return R.random_activations(m, k, device="cuda")


CASES = [(f, shape) for f in FORMATS for shape in SHAPES] + [
    (f, shape) for f in SMALL_GROUPS for shape in [(127, 1000), (129, 200)]]
CASE_IDS = [f"{fmt_id(f)}-{a}x{b}" for f, (a, b) in CASES]


@pytest.mark.parametrize("fmt,shape", CASES, ids=CASE_IDS)
def test_weight_quant_bit_exact(fmt, shape):
    n, k = shape
    g = fmt.get("G", 128)
    kernel = commdsl.load(WEIGHT_QUANT, **fmt)
    w = inputs(n, k)
    y = poisoned((n, k), R.FP8[fmt["FMT"]])
    s = poisoned((R.cdiv(n, g), R.cdiv(k, g)), scale_dtype(fmt["SF"]))
    kernel(w, y=y, s=s)
    y_ref, s_ref = R.weight_quant(w, g, fmt["FMT"], fmt["SF"])
    assert R.same_bits(s, s_ref)
    assert R.same_bits(y, y_ref)


@pytest.mark.parametrize("fmt,shape", CASES, ids=CASE_IDS)
def test_dequant_bit_exact(fmt, shape):
    m, k = shape
    g = fmt.get("G", 128)
    x = inputs(m, k)
    aq, as_ = R.act_quant(x, g, fmt["FMT"], fmt["SF"])
    act = commdsl.load(DEQUANT, kernel="dequant_act", **fmt)
    y = poisoned((m, k), torch.bfloat16)
    act(aq, as_, y=y)
    assert R.same_bits(y, R.dequant(aq, as_, (1, g)))
    wq, ws = R.weight_quant(x, g, fmt["FMT"], fmt["SF"])
    weight = commdsl.load(DEQUANT, kernel="dequant_weight", **fmt)
    y = poisoned((m, k), torch.bfloat16)
    weight(wq, ws, y=y)
    assert R.same_bits(y, R.dequant(wq, ws, (g, g)))


RQ_CASES = [(f, shape) for f in FORMATS
            for shape in [(1, 7168), (127, 7168), (4097, 7168), (4096, 7168), (300, 1000)]] + [
    (f, shape) for f in SMALL_GROUPS for shape in [(127, 1000), (300, 200)]]


@pytest.mark.parametrize("fmt,shape", RQ_CASES, ids=[f"{fmt_id(f)}-{a}x{b}" for f, (a, b) in RQ_CASES])
def test_requant_t_bit_exact(fmt, shape):
    m, k = shape
    g = fmt.get("G", 128)
    xq, xs = R.act_quant(inputs(m, k), g, fmt["FMT"], fmt["SF"])
    kernel = commdsl.load(REQUANT_T, **fmt)
    xt = poisoned((k, m), R.FP8[fmt["FMT"]])
    st = poisoned((k, R.cdiv(m, g)), scale_dtype(fmt["SF"]))
    kernel(xq, xs, xt=xt, st=st)
    xt_ref, st_ref = R.requant_t(xq, xs, g, fmt["FMT"], fmt["SF"])
    assert R.same_bits(st, st_ref)
    assert R.same_bits(xt, xt_ref)


@pytest.mark.parametrize("warps", [4, 8, 16])
def test_every_warp_count(warps):
    """The block amax crosses warps through shared memory; the transpose's plan differs."""
    w = inputs(4097, 7168)
    y, s = commdsl.load(WEIGHT_QUANT, WARPS=warps)(w)
    y_ref, s_ref = R.weight_quant(w)
    assert R.same_bits(s, s_ref) and R.same_bits(y, y_ref)
    xq, xs = R.act_quant(inputs(4097, 7168))
    xt, st = commdsl.load(REQUANT_T, WARPS=warps)(xq, xs)
    xt_ref, st_ref = R.requant_t(xq, xs)
    assert R.same_bits(st, st_ref) and R.same_bits(xt, xt_ref)


def test_all_zero_weights():
    y, s = commdsl.load(WEIGHT_QUANT)(torch.zeros(300, 7168, dtype=torch.bfloat16, device="cuda"))
    assert (y.view(torch.uint8) == 0).all()
    assert torch.all(s == torch.tensor(1e-4, device="cuda") / torch.tensor(448.0, device="cuda"))
