"""commdsl.partition on the CPU, by injection: the driver calls it makes for a green context
and for the rest of the SMs, the streams it wraps, and the fallback to plain streams with a
warning where green contexts are missing. Whether kernels in a partition keep to its SMs:
tests/test_gpu_partition.py."""
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


def sm_resource(count: int):
    return types.SimpleNamespace(sm=types.SimpleNamespace(smCount=count))


GROUP, REST = sm_resource(24), sm_resource(108)


def fake_driver(green: bool = True, supported: bool = True, rest=REST):
    """A cuda.bindings.driver stand-in recording the green-context calls: a split of 132 SMs
    into a group of 24 and `rest`; each green context and stream named by its resource."""
    calls = []
    ok = SUCCESS if supported else NOT_SUPPORTED

    def record(name, *values, made=None):
        def call(*args):
            calls.append((name, args))
            status = SUCCESS if name in ("cuInit", "cuDeviceGet") else ok
            return (status, *values) if made is None else (status, made(*args))
        return call
    cu = types.SimpleNamespace(
        CUresult=types.SimpleNamespace(CUDA_SUCCESS=SUCCESS, CUDA_ERROR_NOT_SUPPORTED=NOT_SUPPORTED),
        CUdevResourceType=types.SimpleNamespace(CU_DEV_RESOURCE_TYPE_SM="SM"),
        CUgreenCtxCreate_flags=types.SimpleNamespace(CU_GREEN_CTX_DEFAULT_STREAM="default"),
        CUstream_flags=types.SimpleNamespace(CU_STREAM_NON_BLOCKING="nonblocking"),
        cuInit=record("cuInit"), cuDeviceGet=record("cuDeviceGet", "dev"),
        cuGetErrorName=lambda e: (SUCCESS, e), cuGetErrorString=lambda e: (SUCCESS, e))
    if green:
        cu.cuDeviceGetDevResource = record("cuDeviceGetDevResource", "whole")
        cu.cuDevSmResourceSplitByCount = record("cuDevSmResourceSplitByCount", [GROUP], 1, rest)
        cu.cuDevResourceGenerateDesc = record(
            "cuDevResourceGenerateDesc", made=lambda resources, n: ("desc", resources[0].sm.smCount))
        cu.cuGreenCtxCreate = record("cuGreenCtxCreate",
                                     made=lambda desc, dev, flags: ("green", desc[1]))
        cu.cuGreenCtxStreamCreate = record("cuGreenCtxStreamCreate",
                                           made=lambda green, flags, priority: 0xA00 + green[1])
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
    assert p.guaranteed and p.sms == 24 and p.green_context == ("green", 24)
    assert isinstance(p.stream, FakeStream) and p.stream.handle == 0xA00 + 24
    split = [args for name, args in calls if name == "cuDevSmResourceSplitByCount"]
    assert split == [(1, "whole", 0, 20)]           # one split: a group of at least 20 SMs
    streams = [args for name, args in calls if name == "cuGreenCtxStreamCreate"]
    assert streams[0] == (("green", 24), "nonblocking", 0)


def test_the_rest_is_a_green_context_of_the_sms_the_split_left(device):
    cu, calls = fake_driver()
    device(cu)
    p = commdsl.partition(20, device=0)
    rest = p.rest
    assert rest.guaranteed and rest.sms == 108 and rest.device == 0
    assert rest.green_context == ("green", 108) and rest.stream.handle == 0xA00 + 108
    descs = [args[0] for name, args in calls if name == "cuDevResourceGenerateDesc"]
    assert descs == [[GROUP], [REST]]               # the remaining resource, not a new split
    assert rest.rest is None


def test_a_split_that_leaves_no_sms_has_no_rest(device):
    cu, calls = fake_driver(rest=sm_resource(0))
    device(cu)
    p = commdsl.partition(132, device=0)
    assert p.guaranteed and p.rest is None
    assert [name for name, _ in calls].count("cuGreenCtxCreate") == 1


@pytest.mark.parametrize("cu", [fake_driver(green=False)[0], fake_driver(supported=False)[0]],
                         ids=["old cuda-bindings", "driver says not supported"])
def test_without_green_contexts_a_plain_stream_and_a_warning(device, cu):
    device(cu)
    with pytest.warns(RuntimeWarning, match="no green contexts .* not kept to 20 SMs"):
        p = commdsl.partition(20, device=0)
    assert not p.guaranteed and p.stream.handle is None and p.stream.device == 0
    rest = p.rest                                   # another plain stream, for the other SMs
    assert not rest.guaranteed and rest.sms == 112 and rest.stream is not p.stream
    assert rest.stream.handle is None and rest.stream.device == 0


def test_without_green_contexts_all_sms_leave_no_rest(device):
    device(fake_driver(green=False)[0])
    with pytest.warns(RuntimeWarning, match="no green contexts"):
        p = commdsl.partition(132, device=0)
    assert not p.guaranteed and p.rest is None


@pytest.mark.parametrize("sms", [0, -4, 133])
def test_a_partition_needs_between_one_and_all_sms(device, sms):
    device(fake_driver()[0])
    with pytest.raises(LaunchError, match=f"sms = {sms} is not in 1 .. 132"):
        module.partition(sms, device=0)
