"""Kernel.as_torch_op on the GPU: act_quant and fp8_gemm inside torch.compile(fullgraph=True)
give the bytes of eager calls with no graph break, and torch.export of a module calling them
runs and gives the same bytes."""
import pytest
import torch

import commdsl
from quant_reference import random_activations
from special_values import same
from test_fp8_gemm import mn_major, quantize_a, quantize_b

pytestmark = pytest.mark.gpu


@pytest.fixture(scope="module")
def act_quant():
    return commdsl.load("examples/act_quant.cdsl").as_torch_op("commdsl_gpu::act_quant")


@pytest.fixture(scope="module")
def fp8_gemm():
    return commdsl.load("examples/fp8_gemm.cdsl").as_torch_op("commdsl_gpu::fp8_gemm")


def _gemm_inputs(m, n, k):
    a = torch.randn(m, k, device="cuda") * 3
    b = torch.randn(n, k, device="cuda")
    a, sa = quantize_a(a)
    return (a, mn_major(sa), *quantize_b(b))


def _same(got, want):
    got = got if isinstance(got, (tuple, list)) else (got,)
    want = want if isinstance(want, (tuple, list)) else (want,)
    assert len(got) == len(want) and all(same(g, w) for g, w in zip(got, want))


def test_act_quant_compiled_fullgraph_equals_eager(act_quant):
    torch._dynamo.reset()
    x = random_activations(4096, 7168, seed=1, device="cuda")
    explained = torch._dynamo.explain(act_quant)(x)
    assert (explained.graph_count, explained.graph_break_count) == (1, 0)
    _same(torch.compile(act_quant, fullgraph=True)(x), act_quant(x))


def test_fp8_gemm_compiled_fullgraph_equals_eager(fp8_gemm):
    torch._dynamo.reset()
    args = _gemm_inputs(4096, 2112, 7168)

    def mm(a, sa, b, sb):
        return fp8_gemm(a, sa, b, sb) * 2        # an op beside it, in the same graph

    explained = torch._dynamo.explain(mm)(*args)
    assert (explained.graph_count, explained.graph_break_count) == (1, 0)
    _same(torch.compile(mm, fullgraph=True)(*args), mm(*args))


def test_export_of_a_module_calling_both(act_quant, fp8_gemm):
    class Layer(torch.nn.Module):
        def forward(self, x, b, sb):
            a, sa = act_quant(x)
            return fp8_gemm(a, mn_major(sa), b, sb)     # DeepGEMM's layout of A's scales

    x = random_activations(256, 1024, seed=2, device="cuda")
    _, _, b, sb = _gemm_inputs(256, 512, 1024)
    exported = torch.export.export(Layer(), (x, b, sb))
    targets = {n.target for n in exported.graph.nodes if n.op == "call_function"}
    assert {torch.ops.commdsl_gpu.act_quant.default, torch.ops.commdsl_gpu.fp8_gemm.default} <= targets
    _same(exported.module()(x, b, sb), Layer()(x, b, sb))
