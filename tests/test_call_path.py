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
