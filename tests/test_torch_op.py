"""Kernel.as_torch_op on CPU: registration, the fake implementation's shapes and dtypes, the
requires-grad warning, and a torch.compile(fullgraph=True) trace that runs the interpreter."""
import warnings

import pytest
import torch
from torch._subclasses.fake_tensor import FakeTensor, FakeTensorMode

import commdsl
from commdsl.torch_op import TorchOpError, register


@pytest.fixture(scope="module")
def act_quant():
    kernel = commdsl.load("examples/act_quant.cdsl", target="sm_90a")
    return kernel, kernel.as_torch_op("commdsl_test::act_quant")


@pytest.fixture(scope="module")
def fp8_gemm():
    kernel = commdsl.load("examples/fp8_gemm.cdsl", target="sm_90a")
    return kernel, kernel.as_torch_op("commdsl_test::fp8_gemm")


def test_registers_under_the_name(act_quant):
    _, call = act_quant
    assert torch.ops.commdsl_test.act_quant.default is call.op._opoverload
    assert str(call.op._opoverload._schema) == \
        "commdsl_test::act_quant(Tensor x) -> (Tensor, Tensor)"


def test_fake_act_quant_shapes_and_dtypes(act_quant):
    _, call = act_quant
    with FakeTensorMode():
        y, s = call(torch.empty(64, 512, dtype=torch.bfloat16))
    assert isinstance(y, FakeTensor) and isinstance(s, FakeTensor)
    assert (y.shape, y.dtype) == ((64, 512), torch.float8_e4m3fn)
    assert (s.shape, s.dtype) == ((64, 4), torch.float32)


def test_fake_fp8_gemm_shapes_and_dtypes(fp8_gemm):
    _, call = fp8_gemm
    M, N, K = 48, 320, 256
    with FakeTensorMode():
        d = call(torch.empty(M, K, dtype=torch.float8_e4m3fn), torch.empty(K // 128, M),
                 torch.empty(N, K, dtype=torch.float8_e4m3fn),
                 torch.empty((N + 127) // 128, K // 128))
    assert (d.shape, d.dtype) == ((M, N), torch.bfloat16)


def test_cpu_op_runs_the_interpreter(act_quant):
    kernel, call = act_quant
    x = torch.randn(32, 256).to(torch.bfloat16)
    y, s = call(x)
    want_y, want_s = kernel.interpret(x)
    assert torch.equal(y.view(torch.uint8), want_y.view(torch.uint8))
    assert torch.equal(s, want_s)


def test_compiled_fullgraph_has_no_graph_breaks(act_quant):
    kernel, call = act_quant
    torch._dynamo.reset()

    def scaled(x):
        y, s = call(x)
        return y.float() * s.repeat_interleave(128, dim=1)

    x = torch.randn(32, 256).to(torch.bfloat16)
    explained = torch._dynamo.explain(scaled)(x)
    assert (explained.graph_count, explained.graph_break_count) == (1, 0)
    assert torch.equal(torch.compile(scaled, fullgraph=True)(x), scaled(x))


def test_requires_grad_warns_once_per_kernel():
    kernel = commdsl.load("examples/act_quant.cdsl", target="sm_90a")
    call = kernel.as_torch_op("commdsl_test::act_quant_grad")
    x = torch.randn(16, 128).to(torch.bfloat16).requires_grad_()
    with pytest.warns(UserWarning, match="act_quant_grad .* has no backward"):
        call(x)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        call(x)
        call(x.detach())


def test_output_sized_by_no_input_is_refused():
    kernel = commdsl.load("kernel k(x: f32[M], y: out f32[N]) grid(1) warps(1) "
                          "{ store y[0:+1] = load x[0:+1] }", target="sm_90a")
    with pytest.raises(TorchOpError, match="output y .* size N"):
        register(kernel, "commdsl_test::unsized")


def test_export_keeps_the_op(act_quant):
    kernel, call = act_quant

    class Quantize(torch.nn.Module):
        def forward(self, x):
            return call(x)

    x = torch.randn(32, 256).to(torch.bfloat16)
    exported = torch.export.export(Quantize(), (x,))
    targets = [n.target for n in exported.graph.nodes if n.op == "call_function"]
    assert torch.ops.commdsl_test.act_quant.default in targets
    assert torch.equal(exported.module()(x)[1], kernel.interpret(x)[1])
