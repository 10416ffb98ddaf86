"""Launch checks that keep a call from silently computing nothing or the wrong thing: an empty
grid, and an output that shares memory with another argument. No GPU: CPU tensors stand in
for CUDA ones and launches are recorded instead of made."""
import os

import pytest
import torch

import commdsl
from commdsl.diagnostics import LaunchError
from commdsl.dims import BinOp, Const, Sym
from commdsl.runtime import callplan
from commdsl.runtime.launcher import Launcher
from commdsl.spec import KernelSpec, TensorParam

ACT_QUANT = os.path.join(os.path.dirname(__file__), "..", "examples", "act_quant.cdsl")
M, K = Sym("M"), Sym("K")


def scale_spec(grid) -> KernelSpec:
    # x: f32[M, K]; y: out f32[M, K]; s: out f32[M]
    return KernelSpec(
        name="scale",
        tensors=(TensorParam("x", "f32", (M, K)), TensorParam("y", "f32", (M, K), is_out=True),
                 TensorParam("s", "f32", (M,), is_out=True)),
        size_symbols=("M", "K"), grid=grid, num_threads=128)


def bind_error(launcher, *args, **kwargs) -> LaunchError:
    with pytest.raises(LaunchError) as info:
        launcher.bind(*args, require_cuda=False, **kwargs)
    return info.value


def bf16(m, k):
    return torch.randn(m, k).to(torch.bfloat16)


# -- an empty grid ------------------------------------------------------------------------

def test_a_grid_axis_of_zero_names_the_axis_its_expression_and_the_sizes():
    launcher = Launcher(scale_spec((BinOp("cdiv", K, Const(64)), BinOp("cdiv", M, Const(8)))))
    err = bind_error(launcher, torch.zeros(0, 256))
    assert err.arg == "x"
    assert "axis y = cdiv(M, 8) is 0 (M = 0 from the shape of 'x')" in err.message
    assert "leave the outputs unwritten" in err.message
    assert launcher.bind(torch.zeros(1, 256), require_cuda=False).grid == (4, 1, 1)


def test_a_grid_of_a_literal_zero_is_blamed_on_the_grid():
    err = bind_error(Launcher(scale_spec((Const(0),))), torch.zeros(4, 256))
    assert err.arg == "grid" and "axis x = 0 is 0;" in err.message


def test_a_product_of_sizes_lists_every_size():
    grid = (BinOp("*", BinOp("cdiv", M, Const(8)), K),)
    err = bind_error(Launcher(scale_spec(grid)), torch.zeros(16, 0), s=torch.zeros(16))
    assert "(K = 0 from the shape of 'x'; M = 16 from the shape of 'x')" in err.message


def test_an_empty_input_is_an_error_on_every_call_path(launches):
    kernel = commdsl.load(ACT_QUANT, ROWS=4)
    for call in (kernel, kernel.interpret):
        with pytest.raises(LaunchError, match=r"axis y = cdiv\(M, 4\) is 0 \(M = 0"):
            call(bf16(0, 256))
    assert launches["launches"] == []


# -- an output that aliases an argument ---------------------------------------------------

def test_an_output_overlapping_an_input_names_both():
    buffer = torch.zeros(2 * 8 * 64)
    x = buffer[:8 * 64].view(8, 64)
    y = buffer[8 * 64 - 16:-16].view(8, 64)          # its first 16 floats are x's last 16
    err = bind_error(Launcher(scale_spec((M,))), x, y)
    assert err.arg == "y"
    assert "shares memory with input 'x'; in-place kernels are not supported yet" in err.message
    assert "pass a separate tensor as 'y'" in err.hint
    assert bind_error(Launcher(scale_spec((M,))), x, y=x).arg == "y"


def test_outputs_overlapping_each_other_are_an_error():
    y = torch.zeros(8, 64)
    err = bind_error(Launcher(scale_spec((M,))), torch.zeros(8, 64), y, y[0, :8].view(8))
    assert err.arg == "s" and "shares memory with output 'y'" in err.message


def test_adjacent_views_of_one_buffer_and_empty_tensors_do_not_alias():
    buffer = torch.zeros(2 * 8 * 64 + 8)
    x, y = buffer[:512].view(8, 64), buffer[512:1024].view(8, 64)
    s = buffer[1024:].view(8)
    bound = Launcher(scale_spec((M,))).bind(x, y, s, require_cuda=False)
    assert bound.tensors == (x, y, s)
    empty = torch.zeros(0)
    bound = Launcher(scale_spec((Const(1),))).bind(empty.view(0, 64), empty.view(0, 64),
                                                   empty, require_cuda=False)
    assert bound.grid == (1, 1, 1)


def act_quant_aliased(x_bytes: torch.Tensor):
    """y (e4m3[8, 256]) over the first half of x's bytes."""
    return x_bytes.view(-1).view(torch.uint8)[:8 * 256].view(torch.float8_e4m3fn).view(8, 256)


@pytest.mark.parametrize("guards", [True, False], ids=["recent-call", "signature"])
def test_the_fast_path_catches_an_alias_its_signature_cannot_see(launches, monkeypatch, guards):
    if not guards:
        monkeypatch.setattr(callplan.RecentCall, "of",
                            staticmethod(lambda args, kwargs, value: None))
    kernel = commdsl.load(ACT_QUANT, ROWS=4)
    x = bf16(8, 256)
    y = torch.empty(8, 256, dtype=torch.float8_e4m3fn)
    s = torch.empty(8, 2)
    for _ in range(3):
        kernel(x, y, s)
    assert launches["binds"] == 1, "the same disjoint buffers are checked once"
    with pytest.raises(LaunchError, match="'y'.*shares memory with input 'x'"):
        kernel(x, act_quant_aliased(x), s)            # same shapes, dtypes and strides
    with pytest.raises(LaunchError, match="'s'.*shares memory with output 'y'"):
        kernel(x, y, y.view(-1).view(torch.uint8)[:64].view(torch.float32).view(8, 2))
    kernel(x, torch.empty_like(y), s)
    assert len(launches["launches"]) == 4


# -- a tensor with no data ------------------------------------------------------------------

def test_interpreting_a_meta_tensor_names_the_argument():
    """Found as a traceback from inside torch (issue 17): meta tensors hold no data."""
    with pytest.raises(LaunchError) as info:
        commdsl.load(ACT_QUANT).interpret(torch.empty(16, 256, dtype=torch.bfloat16,
                                                       device="meta"))
    assert info.value.arg == "x" and "meta device" in info.value.message
    assert "to_empty(device='cpu')" in info.value.hint


# -- a size given by a dimension offset by a constant ---------------------------------------

def offsets_spec() -> KernelSpec:
    # x: f32[T, H]; cu: i32[B + 1]; y: out f32[T, H]
    b, t, h = Sym("B"), Sym("T"), Sym("H")
    return KernelSpec(
        name="offsets",
        tensors=(TensorParam("x", "f32", (t, h)), TensorParam("cu", "i32", (BinOp("+", b,
                                                                                  Const(1)),)),
                 TensorParam("y", "f32", (t, h), is_out=True)),
        size_symbols=("T", "H", "B"), grid=(b, h), num_threads=128)


def test_a_size_is_inferred_from_a_dimension_offset_by_a_constant():
    """cu_seqlens: i32[B + 1] gives B (attention_varlen's batch), as FlashAttention's
    varlen interface has it."""
    launcher = Launcher(offsets_spec())
    bound = launcher.bind(torch.zeros(10, 4), torch.zeros(6, dtype=torch.int32),
                          require_cuda=False)
    assert bound.grid == (5, 4, 1)
    err = bind_error(launcher, torch.zeros(10, 4), torch.zeros(0, dtype=torch.int32))
    assert err.arg == "cu" and "dimension 0 is 0, so size B would be -1" in err.message
