"""The repeated-call fast path: full checks once per signature, then only the launch.

No GPU here: launches are recorded instead of made, and CPU tensors stand in for CUDA ones.
"""
import os

import pytest
import torch

import commdsl
from commdsl.runtime import callplan

EXAMPLES = os.path.join(os.path.dirname(__file__), "..", "examples")
ACT_QUANT = os.path.join(EXAMPLES, "act_quant.cdsl")
COPY_NC = os.path.join(EXAMPLES, "copy_nc.cdsl")


def bf16(m, k):
    return torch.randn(m, k).to(torch.bfloat16)


def test_repeated_calls_check_once_and_pass_the_same_arguments(launches):
    kernel = commdsl.load(ACT_QUANT, ROWS=4)
    x = bf16(8, 256)
    y1, s1 = kernel(x)
    y2, s2 = kernel(x)
    assert launches["binds"] == 1
    (_, first_ptrs, first_sizes, first_grid), (_, ptrs, sizes, grid) = launches["launches"]
    expected_grid = tuple(d.evaluate({"M": 8, "K": 256}) for d in kernel.spec.grid) + (1,)
    assert (sizes, grid) == (first_sizes, first_grid) == ([8, 256], expected_grid)
    assert ptrs == [x.data_ptr(), y2.data_ptr(), s2.data_ptr()]
    assert y2.data_ptr() != y1.data_ptr(), "each call allocates its own outputs"
    assert (y2.shape, y2.dtype, s2.shape) == ((8, 256), torch.float8_e4m3fn, (8, 2))


def test_passed_outputs_by_keyword_are_used(launches):
    kernel = commdsl.load(ACT_QUANT, ROWS=4)
    x = bf16(8, 256)
    y = torch.empty(8, 256, dtype=torch.float8_e4m3fn)
    s = torch.empty(8, 2)
    for _ in range(3):
        assert kernel(x, y=y, s=s) == (y, s)
    assert launches["binds"] == 1
    assert launches["launches"][-1][1] == [x.data_ptr(), y.data_ptr(), s.data_ptr()]


def test_a_new_shape_or_layout_is_checked_again(launches):
    kernel = commdsl.load(ACT_QUANT, ROWS=4)
    kernel(bf16(8, 256))
    kernel(bf16(16, 256))
    assert launches["binds"] == 2
    with pytest.raises(commdsl.LaunchError, match="contiguous"):
        kernel(bf16(256, 16).t())
    with pytest.raises(commdsl.LaunchError, match="bf16"):
        kernel(torch.randn(8, 256))


def test_a_misaligned_view_of_a_seen_signature_is_caught(launches):
    kernel = commdsl.load(ACT_QUANT, ROWS=4)
    kernel(bf16(4, 256))
    storage = torch.zeros(4 * 256 + 1, dtype=torch.bfloat16)
    misaligned = storage[1:].view(4, 256)         # same shape, dtype, device and strides
    with pytest.raises(commdsl.LaunchError, match="16-byte aligned"):
        kernel(misaligned)


def test_sizes_not_multiple_of_16_launch_the_scalar_variant(launches):
    kernel = commdsl.load(COPY_NC)
    kernel(torch.zeros(4096, dtype=torch.bfloat16))
    kernel(torch.zeros(4100, dtype=torch.bfloat16))
    kernel(torch.zeros(4100, dtype=torch.bfloat16))
    aligned, ragged, ragged_again = (launcher for launcher, *_ in launches["launches"])
    assert ragged is ragged_again and ragged is not aligned
    assert ".v4.b32" not in kernel.variant(frozenset({"N"})).artifact.ptx


def test_non_tensor_arguments_get_the_full_error(launches):
    kernel = commdsl.load(COPY_NC)
    with pytest.raises(commdsl.LaunchError, match="torch.Tensor"):
        kernel([1.0, 2.0])


def test_plans_are_bounded(launches, monkeypatch):
    monkeypatch.setattr(callplan, "MAX_PLANS", 3)
    kernel = commdsl.load(COPY_NC)
    for n in range(1, 6):
        kernel(torch.zeros(16 * n, dtype=torch.bfloat16))
    assert len(kernel._plans) == 3


def test_keyword_order_is_part_of_the_signature(launches):
    kernel = commdsl.load(ACT_QUANT, ROWS=4)
    x = bf16(8, 256)
    y = torch.empty(8, 256, dtype=torch.float8_e4m3fn)
    s = torch.empty(8, 2)
    kernel(x, y=y, s=s)
    assert kernel(x, s=s, y=y) == (y, s)
    assert launches["binds"] == 2
    assert launches["launches"][-1][1] == [x.data_ptr(), y.data_ptr(), s.data_ptr()]


def test_without_tensor_guards_the_signature_path_does_the_same(launches, monkeypatch):
    monkeypatch.setattr(callplan.RecentCall, "of", staticmethod(lambda args, kwargs, value: None))
    kernel = commdsl.load(ACT_QUANT, ROWS=4)
    x = bf16(8, 256)
    for _ in range(3):
        kernel(x)
    assert launches["binds"] == 1 and len(launches["launches"]) == 3
    with pytest.raises(commdsl.LaunchError, match="16-byte aligned"):
        kernel(torch.zeros(8 * 256 + 1, dtype=torch.bfloat16)[1:].view(8, 256))


class FakeDriver:
    """cuda.bindings.driver as a prepared launch uses it: records launches and context pushes."""

    class CUresult:
        CUDA_SUCCESS = 0

    def __init__(self):
        self.calls = []

    def cuLaunchKernel(self, function, gx, gy, gz, bx, by, bz, smem, stream, params, extra):
        self.calls.append(("launch", function, stream))
        return (self.CUresult.CUDA_SUCCESS,)

    def cuCtxPushCurrent(self, context):
        self.calls.append(("push", context))
        return (self.CUresult.CUDA_SUCCESS,)

    def cuCtxPopCurrent(self):
        self.calls.append(("pop",))
        return (self.CUresult.CUDA_SUCCESS, None)


@pytest.fixture
def devices(monkeypatch, tmp_path):
    """CPU tensors stand in for tensors on cuda:`devices.on`, while torch's current device
    stays cuda:0. Prepared launches run for real against a FakeDriver; the first call of a
    signature (a checked launch) and the slow path (a device_context, which allocates) are
    counted. The C++ check of the last call's signature reads the real device, which CPU
    tensors cannot fake, so calls go through the signature dict."""
    import types

    from commdsl import kernel as kernel_module
    from commdsl.runtime import driver
    from commdsl.runtime.launcher import Bound, Launcher
    state = types.SimpleNamespace(on=0, cu=FakeDriver(), binds=0, checked=0, slow=0)
    monkeypatch.setenv("COMMDSL_CACHE_DIR", str(tmp_path))
    original_bind, signature = Launcher.bind, kernel_module.call_signature

    def bind(self, *args, require_cuda=True, **kwargs):
        state.binds += 1
        bound = original_bind(self, *args, require_cuda=False, **kwargs)
        return Bound(bound.tensors, bound.sizes, bound.grid, torch.device("cuda", state.on))

    def slow_path(index):
        state.slow += 1
        raise AssertionError("a repeated call took the slow path")

    monkeypatch.setattr(Launcher, "bind", bind)
    monkeypatch.setattr(Launcher, "launch_checked", lambda self, *a: setattr(
        state, "checked", state.checked + 1))
    monkeypatch.setattr(Launcher, "_function_on", lambda self, index: f"function{index}")
    monkeypatch.setattr(kernel_module, "call_signature", lambda args, kwargs: (
        state.on, signature(args, kwargs)))
    monkeypatch.setattr(callplan.RecentCall, "of", staticmethod(lambda args, kwargs, value: None))
    monkeypatch.setattr(driver, "cuda_driver", lambda: state.cu)
    monkeypatch.setattr(driver, "primary_context", lambda index: f"context{index}")
    monkeypatch.setattr(driver, "device_context", slow_path)
    monkeypatch.setattr(torch._C, "_cuda_getDevice", lambda: 0, raising=False)
    monkeypatch.setattr(torch._C, "_cuda_getCurrentRawStream", lambda index: 1000 + index,
                        raising=False)
    return state


def test_a_second_device_keeps_its_own_plan_and_launches_in_its_context(devices, monkeypatch):
    kernel = commdsl.load(ACT_QUANT, ROWS=4, target="sm_90a")
    x = bf16(8, 256)
    y, s = torch.empty(8, 256, dtype=torch.float8_e4m3fn), torch.empty(8, 2)
    for devices.on in (0, 1):                   # the first call on each device: full checks
        kernel(x, y=y, s=s)
    plans = dict(kernel._plans)
    assert devices.binds == devices.checked == 2 and len(plans) == 2
    assert {plan.device for plan in plans.values()} == {torch.device("cuda", 0),
                                                         torch.device("cuda", 1)}
    allocations = []
    for name in ("empty", "zeros"):
        make = getattr(torch, name)
        monkeypatch.setattr(torch, name, lambda *a, make=make, **k: allocations.append(a) or
                            make(*a, **k))
    for devices.on in (1, 1, 0, 1):
        assert kernel(x, y=y, s=s) == (y, s)
    on_1 = [("push", "context1"), ("launch", "function1", 1001), ("pop",)]
    assert devices.cu.calls == on_1 * 2 + [("launch", "function0", 1000)] + on_1
    assert devices.binds == devices.checked == 2 and devices.slow == 0 and not allocations
    assert dict(kernel._plans) == plans and all(kernel._plans[k] is p for k, p in plans.items())
