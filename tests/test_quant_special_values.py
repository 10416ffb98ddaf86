"""NaN, Inf and -0.0 through every quantization example (docs/language.md, "NaN, Inf and
-0.0"). On the CPU: the interpreter gives torch's formula (a NaN in a group makes its scale
and bytes NaN, an Inf makes its scale Inf, -0.0 stays -0.0), and the FP8 NaN byte is 0x7F.
On a GPU (marked gpu): the kernel gives the interpreter's bits."""
import os

import pytest
import torch

import commdsl
import quant_reference as R
from new_example_references import rmsnorm_grid_rows, swiglu_reference, rmsnorm_reference
from special_values import INF, NAN, differences, inject, inject_fp8, inject_scales, same, same_as_torch

EXAMPLES = os.path.join(os.path.dirname(__file__), "..", "examples")


def _path(name):
    return os.path.join(EXAMPLES, f"{name}.cdsl")


def _bf16(m, k, seed):
    return (torch.randn(m, k, generator=torch.Generator().manual_seed(seed)) * 3).to(
        torch.bfloat16)


def act_quant(m=5, k=512):
    x = inject(_bf16(m, k, 1), 128).to(torch.bfloat16)
    return commdsl.load(_path("act_quant"), ROWS=4), (x,), ("y", "s"), R.act_quant(x)


def weight_quant(m=130, k=400, **fmt):
    x = inject(_bf16(m, k, 2), 128).to(torch.bfloat16)
    ref = R.weight_quant(x, 128, fmt.get("FMT", "e4m3"), fmt.get("SF", "f32"))
    return commdsl.load(_path("weight_quant"), **fmt), (x,), ("y", "s"), ref


def requant_t(m=130, k=384, **fmt):
    xq, xs = R.act_quant(_bf16(m, k, 3))
    xq, xs = inject_fp8(xq, 128), inject_scales(xs)
    ref = R.requant_t(xq, xs, 128, fmt.get("OUT_FMT", "e4m3"), fmt.get("OUT_SF", "f32"))
    return commdsl.load(_path("requant_t"), **fmt), (xq, xs), ("xt", "st"), ref


def dequant_act(m=7, k=384):
    xq, xs = R.act_quant(_bf16(m, k, 4))
    xq, xs = inject_fp8(xq, 128), inject_scales(xs)
    kernel = commdsl.load(_path("dequant"), kernel="dequant_act", ROWS=4)
    return kernel, (xq, xs), ("y",), (R.dequant(xq, xs, (1, 128)),)


def dequant_weight(m=130, k=300):
    wq, ws = R.weight_quant(_bf16(m, k, 5))
    wq = inject_fp8(wq, 128)
    ws = ws.clone()
    ws[0, 1], ws[1, 0], ws[1, 2] = INF, NAN, -0.0
    kernel = commdsl.load(_path("dequant"), kernel="dequant_weight")
    return kernel, (wq, ws), ("y",), (R.dequant(wq, ws, (128, 128)),)


def swiglu_quant(m=6, n=512):
    """Gates where silu is exact on the GPU too (0, >= 64: a itself, < -112: -0.0), so the
    GPU must give the interpreter's bits; the specials in both operands."""
    gen = torch.Generator().manual_seed(6)
    a = torch.randint(64, 128, (m, n), generator=gen).float()
    a[:, ::3] *= -2
    a[:, ::5] = 0.0
    a = inject(a, 128)
    a[5, 7] = -INF                                   # silu(-inf) is NaN
    b = inject(_bf16(m, n, 7), 128)
    b[5, 130] = -0.0
    a, b = a.to(torch.bfloat16), b.to(torch.bfloat16)
    y, s, _ = swiglu_reference(a, b)
    return commdsl.load(_path("swiglu_quant"), ROWS=4), (a, b), ("y", "s"), (y, s)


def rmsnorm_quant(m=6, h=512):
    """Rows whose f32 sums are exact in any order (tests/new_example_references.py): a NaN
    row, an Inf row (r = 0: the Inf's group NaN, the others +-0), a row with -0.0s, a row of
    zeros."""
    x = rmsnorm_grid_rows(m, h, torch.Generator().manual_seed(8)).float()
    x = inject(x, 128)
    x[5] = 0.0
    x[5, ::2] = -0.0
    x = x.to(torch.bfloat16)
    w = (torch.rand(h, generator=torch.Generator().manual_seed(9)) + 0.5).to(torch.bfloat16)
    y, s, _ = rmsnorm_reference(x, w)
    return commdsl.load(_path("rmsnorm_quant"), H=h), (x, w), ("y", "s"), (y, s)


CASES = {
    "act_quant": act_quant,
    "act_quant_ragged": lambda: act_quant(m=7, k=384),
    "weight_quant": weight_quant,
    "weight_quant_ue8m0": lambda: weight_quant(m=5, k=512, SF="ue8m0"),
    "weight_quant_e5m2": lambda: weight_quant(FMT="e5m2"),
    "requant_t": requant_t,
    "requant_t_ue8m0": lambda: requant_t(m=128, k=256, OUT_SF="ue8m0"),
    "dequant_act": dequant_act,
    "dequant_weight": dequant_weight,
    "swiglu_quant": swiglu_quant,
    "rmsnorm_quant": rmsnorm_quant,
}


def _outputs(result):
    return result if isinstance(result, tuple) else (result,)


@pytest.mark.parametrize("case", CASES)
def test_interpreter_gives_torchs_formula(case):
    kernel, inputs, _, ref = CASES[case]()
    got = _outputs(kernel.interpret(*inputs))
    assert len(got) == len(ref)
    for name, g, r in zip(CASES[case]()[2], got, ref):
        if r.dtype == torch.uint8 and g.dtype != torch.uint8:
            r = r.view(g.dtype)
        assert same_as_torch(g, r), f"{case}: output {name} differs from torch's formula"


def test_act_quant_nan_inf_and_minus_zero_groups():
    """The promises spelled out on act_quant: a NaN makes its group's scale and bytes NaN
    and no other group's; an Inf makes the scale Inf, its byte NaN, the rest +-0; -0.0
    quantizes to the byte 0x80."""
    kernel, (x,), _, _ = act_quant()
    y, s = kernel.interpret(x)
    b = y.view(torch.uint8)
    assert torch.isnan(s[0, 0]) and (b[0, :128] == 0x7F).all()
    assert not torch.isnan(s[0, 1:]).any() and not (b[0, 128:] == 0x7F).any()
    assert s[1, 1] == INF and b[1, 128 + 5] == 0x7F
    others = torch.cat([b[1, 128:133], b[1, 134:256]])
    assert ((others == 0x00) | (others == 0x80)).all()
    assert s[2, 2] == INF and b[2, 256 + 7] == 0x7F                 # |-inf| is inf
    assert s[3, 0] == torch.tensor(1e-4) / torch.tensor(448.0) and (b[3, :128] == 0x80).all()
    assert b[3, 129] == 0x80
    assert torch.isnan(s[4, 0]) and (b[4, :128] == 0x7F).all()


def test_nan_beats_inf_and_zero_in_a_group():
    """The reduction's order must not matter: a NaN first, last or beside an Inf wins."""
    x = torch.zeros(4, 128)
    x[0, 0], x[0, 127] = NAN, INF
    x[1, 0], x[1, 127] = INF, NAN
    x[2, 64], x[3, :] = NAN, -0.0
    _, s = commdsl.load(_path("act_quant"), ROWS=4).interpret(x.to(torch.bfloat16))
    assert torch.isnan(s[:3, 0]).all() and not torch.isnan(s[3, 0])


@pytest.mark.gpu
@pytest.mark.parametrize("case", CASES)
def test_gpu_gives_the_interpreters_bits(case):
    kernel, inputs, names, _ = CASES[case]()
    want = _outputs(kernel.interpret(*inputs))
    outs = {}
    for name, w in zip(names, want):
        t = torch.empty(w.shape, dtype=w.dtype, device="cuda")
        t.view(torch.uint8).fill_(0xFF)                    # unwritten cells show as NaN
        outs[name] = t
    kernel(*(i.cuda() for i in inputs), **outs)
    torch.cuda.synchronize()
    for name, w in zip(names, want):
        assert same(outs[name].cpu(), w), (f"{case}: output {name} differs from the interpreter: "
                                           f"{differences(outs[name], w)} (GPU vs interpreter)")
