"""The few CUDA driver calls the runtime makes, through `cuda.bindings.driver`.

Every cuda-bindings call returns `(CUresult, value...)`; `check` turns a failure into a
ToolError that carries the error's name. The context is PyTorch's: touching a CUDA tensor
makes the device's primary context current, so modules loaded here share memory and streams
with the tensors they run on. cuda-bindings is imported on first use, so the compiler and
the CPU-side checks work without it.
"""
from __future__ import annotations

import contextlib
import functools

from ..diagnostics import ToolError


@functools.cache
def cuda_driver():
    """The `cuda.bindings.driver` module."""
    try:
        from cuda.bindings import driver
    except ImportError as e:
        raise ToolError("launching needs cuda-bindings: pip install 'cuda-bindings>=12.6' "
                        "(or pip install 'commdsl[runtime]')") from e
    return driver


def check(result, call: str = "CUDA driver call"):
    """The values of a cuda-bindings result tuple: None, one value, or a tuple of them."""
    cu = cuda_driver()
    err, *values = result
    if err != cu.CUresult.CUDA_SUCCESS:
        _, name = cu.cuGetErrorName(err)
        _, text = cu.cuGetErrorString(err)
        raise ToolError(f"{call} failed: {_decode(name)} ({_decode(text)})")
    if not values:
        return None
    return values[0] if len(values) == 1 else tuple(values)


def _decode(s) -> str:
    return s.decode() if isinstance(s, bytes) else str(s)


@contextlib.contextmanager
def device_context(device: int):
    """Within it, `device` is torch's current device and its primary context is current here.

    torch creates a primary context lazily and binds it to a thread on that thread's first
    CUDA call on the device; a one-element fill is such a call. Cheap enough for loading and
    for recovering a launch, not for every launch."""
    import torch
    with torch.cuda.device(device):
        torch.zeros(1, device=f"cuda:{device}")
        yield


@functools.cache
def primary_context(device: int):
    """The primary context of `device`: the one torch runs its kernels on it in (and a
    device_context makes current). Retained once, for the life of the process."""
    cu = cuda_driver()
    dev = check(cu.cuDeviceGet(device), "cuDeviceGet")
    return check(cu.cuDevicePrimaryCtxRetain(dev), "cuDevicePrimaryCtxRetain")


def load_module(image: bytes | str):
    """Load a cubin (bytes) or PTX text (str, or bytes that are not ELF) into the current context.

    PTX is compiled by the driver's JIT, whose PTX ISA version may be older than ptxas's."""
    import numpy as np
    cu = cuda_driver()
    if isinstance(image, str):
        image = image.encode()
    if not image.startswith(b"\x7fELF") and not image.endswith(b"\0"):
        image += b"\0"  # the driver reads PTX up to a NUL
    # The buffer must outlive the call; `buffer` is alive until we return.
    buffer = np.frombuffer(image, np.uint8)
    return check(cu.cuModuleLoadData(buffer.ctypes.data), "cuModuleLoadData")


def get_function(module, name: str):
    cu = cuda_driver()
    return check(cu.cuModuleGetFunction(module, name.encode()), f"cuModuleGetFunction('{name}')")


def set_dynamic_smem(function, nbytes: int) -> None:
    """Let `function` launch with `nbytes` of dynamic shared memory (an opt-in)."""
    cu = cuda_driver()
    attr = cu.CUfunction_attribute.CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES
    check(cu.cuFuncSetAttribute(function, attr, nbytes),
          "cuFuncSetAttribute(MAX_DYNAMIC_SHARED_SIZE_BYTES)")


@functools.cache
def device_attribute(device: int, name: str) -> int:
    """A CU_DEVICE_ATTRIBUTE_<name> of `device`; attributes do not change, so cached."""
    cu = cuda_driver()
    check(cu.cuInit(0), "cuInit")    # in case nothing has touched CUDA yet; idempotent
    attr = getattr(cu.CUdevice_attribute, f"CU_DEVICE_ATTRIBUTE_{name}")
    dev = check(cu.cuDeviceGet(device), "cuDeviceGet")
    return check(cu.cuDeviceGetAttribute(attr, dev), f"cuDeviceGetAttribute({name})")


def sm_count(device: int) -> int:
    return device_attribute(device, "MULTIPROCESSOR_COUNT")
