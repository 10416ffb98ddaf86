"""commdsl.partition on the CPU, by injection: the driver calls it makes for a green context,
the stream it wraps, and the fallback to a plain stream with a warning where green contexts
are missing. Whether kernels in a partition keep to its SMs needs a GPU (not tested here)."""
import types

import pytest
import torch

import commdsl
from commdsl.diagnostics import LaunchError
from commdsl.runtime import driver, partition as module

SUCCESS, NOT_SUPPORTED = "success", "not supported"


class FakeStream:
    def __init__(self, handle=None, device=None):
        self.handle, self.device = handle, device


def fake_driver(green: bool = True, supported: bool = True):
    """A cuda.bindings.driver stand-in recording the green-context calls."""
    calls = []
    ok = SUCCESS if supported else NOT_SUPPORTED

    def record(name, *values):
        def call(*args):
            calls.append((name, args))
            return (SUCCESS if name in ("cuInit", "cuDeviceGet") else ok, *values)
        return call
    group = types.SimpleNamespace(sm=types.SimpleNamespace(smCount=24))
    cu = types.SimpleNamespace(
        CUresult=types.SimpleNamespace(CUDA_SUCCESS=SUCCESS, CUDA_ERROR_NOT_SUPPORTED=NOT_SUPPORTED),
        CUdevResourceType=types.SimpleNamespace(CU_DEV_RESOURCE_TYPE_SM="SM"),
        CUgreenCtxCreate_flags=types.SimpleNamespace(CU_GREEN_CTX_DEFAULT_STREAM="default"),
        CUstream_flags=types.SimpleNamespace(CU_STREAM_NON_BLOCKING="nonblocking"),
        cuInit=record("cuInit"), cuDeviceGet=record("cuDeviceGet", "dev"),
        cuGetErrorName=lambda e: (SUCCESS, e), cuGetErrorString=lambda e: (SUCCESS, e))
    if green:
        cu.cuDeviceGetDevResource = record("cuDeviceGetDevResource", "whole")
        cu.cuDevSmResourceSplitByCount = record("cuDevSmResourceSplitByCount", [group], 1, "rest")
        cu.cuDevResourceGenerateDesc = record("cuDevResourceGenerateDesc", "desc")
        cu.cuGreenCtxCreate = record("cuGreenCtxCreate", "green")
        cu.cuGreenCtxStreamCreate = record("cuGreenCtxStreamCreate", 0xABC)
    return cu, calls


@pytest.fixture
def device(monkeypatch):
    """A 132-SM cuda:0 whose streams are FakeStreams."""
    monkeypatch.setattr(driver, "sm_count", lambda index: 132)
    monkeypatch.setattr(torch.cuda, "Stream", FakeStream)
    monkeypatch.setattr(torch.cuda, "ExternalStream", FakeStream)

    def use(cu):
        monkeypatch.setattr(driver, "cuda_driver", lambda: cu)
    return use


def test_a_green_context_gives_the_partitions_stream(device):
    cu, calls = fake_driver()
    device(cu)
    p = commdsl.partition(20, device=0)
    assert p.guaranteed and p.sms == 24 and p.green_context == "green"
    assert isinstance(p.stream, FakeStream) and p.stream.handle == 0xABC
    split = dict(calls)["cuDevSmResourceSplitByCount"]
    assert split == (1, "whole", 0, 20)             # one group of at least 20 SMs
    assert dict(calls)["cuGreenCtxStreamCreate"] == ("green", "nonblocking", 0)


@pytest.mark.parametrize("cu", [fake_driver(green=False)[0], fake_driver(supported=False)[0]],
                         ids=["old cuda-bindings", "driver says not supported"])
def test_without_green_contexts_a_plain_stream_and_a_warning(device, cu):
    device(cu)
    with pytest.warns(RuntimeWarning, match="no green contexts .* not kept to 20 SMs"):
        p = commdsl.partition(20, device=0)
    assert not p.guaranteed and p.stream.handle is None and p.stream.device == 0


@pytest.mark.parametrize("sms", [0, -4, 133])
def test_a_partition_needs_between_one_and_all_sms(device, sms):
    device(fake_driver()[0])
    with pytest.raises(LaunchError, match=f"sms = {sms} is not in 1 .. 132"):
        module.partition(sms, device=0)
