"""`commdsl.partition(sms = N)`: a stream whose kernels run on a guaranteed set of N SMs.

The driver's green contexts (CUDA 12.4+) split a device's SMs: `cuDevSmResourceSplitByCount`
carves a group of at least N SMs (rounded up to the device's granularity) out of the device's
SM resource, `cuGreenCtxCreate` makes a context that owns only that group, and every kernel
launched on a stream of `cuGreenCtxStreamCreate` runs on those SMs. The stream is wrapped as
a `torch.cuda.ExternalStream`, so `with torch.cuda.stream(p.stream):` sends commdsl kernels
(which launch on torch's current stream) and torch's own ops into the partition: e.g. the
communication on 20 SMs while a GEMM with `persistent(sms = 112)` runs on the rest.

The split also returns the SMs it left over; `p.rest` is a second green context of those,
made in the same call, so the GEMM can run on `p.rest.stream` on SMs disjoint from `p`'s
(without it, a kernel on an ordinary stream may still land on the partition's SMs while they
are idle, and the partition's kernels then wait for them).

Where green contexts are missing (cuda-bindings or the driver older than 12.4, or a device
that does not support them), `partition` warns and returns a plain stream: kernels still run
concurrently with others, but nothing keeps them to N SMs (`Partition.guaranteed` is False).
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass

from ..diagnostics import LaunchError
from . import driver


@dataclass
class Partition:
    """A stream for kernels on `sms` SMs of `device`; `guaranteed`: a green context keeps them
    there (False: a plain stream, on any SM)."""
    stream: object                # torch.cuda.Stream or ExternalStream
    sms: int                      # the SMs granted: N rounded up to the granularity
    device: int
    guaranteed: bool
    green_context: object = None  # the CUgreenCtx, kept alive with the partition
    rest: Partition | None = None  # the device's other SMs; None when the split left none


def partition(sms: int, device: int | None = None) -> Partition:
    """A partition of `sms` SMs of CUDA device `device` (default: torch's current one)."""
    import torch
    if device is None:
        device = torch.cuda.current_device()
    total = driver.sm_count(device)
    if not 0 < sms <= total:
        raise LaunchError("partition", "sms", f"sms = {sms} is not in 1 .. {total}, the SMs of "
                          f"cuda:{device}", "ask for fewer SMs than the device has")
    cu = driver.cuda_driver()
    missing = _green_context_support(cu)
    if missing is None:
        try:
            return _green_partition(cu, sms, device)
        except _Unsupported as e:
            missing = str(e)
    warnings.warn(f"commdsl.partition: no green contexts ({missing}); a plain stream instead, "
                  f"so kernels on it are not kept to {sms} SMs", RuntimeWarning, stacklevel=2)
    rest = None
    if sms < total:
        rest = Partition(torch.cuda.Stream(device=device), total - sms, device, guaranteed=False)
    return Partition(torch.cuda.Stream(device=device), sms, device, guaranteed=False, rest=rest)


GREEN_CALLS = ("cuDeviceGetDevResource", "cuDevSmResourceSplitByCount",
               "cuDevResourceGenerateDesc", "cuGreenCtxCreate", "cuGreenCtxStreamCreate")


class _Unsupported(Exception):
    """The driver has the calls but refuses green contexts here."""


def _green_context_support(cu) -> str | None:
    """Why `cu` (cuda.bindings.driver) cannot make green contexts, or None if it can."""
    absent = [name for name in GREEN_CALLS if not hasattr(cu, name)]
    if absent:
        return f"cuda-bindings lacks {', '.join(absent)}: it needs CUDA 12.4 or later"
    return None


def _call(cu, result, call: str):
    """A green-context call's values; NOT_SUPPORTED (an old driver or device) is _Unsupported."""
    if result[0] == cu.CUresult.CUDA_ERROR_NOT_SUPPORTED:
        raise _Unsupported(f"{call} is not supported by this driver or device")
    return driver.check(result, call)


def _green_partition(cu, sms: int, device: int) -> Partition:
    driver.check(cu.cuInit(0), "cuInit")
    dev = driver.check(cu.cuDeviceGet(device), "cuDeviceGet")
    whole = _call(cu, cu.cuDeviceGetDevResource(dev, cu.CUdevResourceType.CU_DEV_RESOURCE_TYPE_SM),
                  "cuDeviceGetDevResource")
    groups, _count, remaining = _call(cu, cu.cuDevSmResourceSplitByCount(1, whole, 0, sms),
                                      "cuDevSmResourceSplitByCount")
    part = _green_context(cu, groups[0], dev, device)
    if remaining.sm.smCount > 0:      # a green context of no SMs cannot be made
        part.rest = _green_context(cu, remaining, dev, device)
    return part


def _green_context(cu, resource, dev, device: int) -> Partition:
    """A green context owning the SMs of `resource`, and a stream of it."""
    import torch
    desc = _call(cu, cu.cuDevResourceGenerateDesc([resource], 1), "cuDevResourceGenerateDesc")
    flags = cu.CUgreenCtxCreate_flags.CU_GREEN_CTX_DEFAULT_STREAM
    green = _call(cu, cu.cuGreenCtxCreate(desc, dev, flags), "cuGreenCtxCreate")
    stream = _call(cu, cu.cuGreenCtxStreamCreate(
        green, cu.CUstream_flags.CU_STREAM_NON_BLOCKING, 0), "cuGreenCtxStreamCreate")
    return Partition(torch.cuda.ExternalStream(int(stream), device=device), resource.sm.smCount,
                     device, guaranteed=True, green_context=green)
