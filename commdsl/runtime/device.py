"""Which GPU family a device is, and whether a compiled kernel can run on it.

The compute capability comes from the driver (cuDeviceGetAttribute); `capability` is the one
place that asks, so a test can stand in a device of another family.
"""
from __future__ import annotations

import sys

from ..diagnostics import CommdslError
from ..spec import KernelSpec
from ..target import TARGETS, Target, get_target, target_for_capability
from . import driver


class DeviceError(CommdslError):
    """A kernel, or commdsl itself, cannot run on this GPU: the message names the kernel, the
    instructions it lacks and the device."""


def capability(device: int) -> tuple[int, int]:
    """The compute capability (major, minor) of CUDA device `device`."""
    return (driver.device_attribute(device, "COMPUTE_CAPABILITY_MAJOR"),
            driver.device_attribute(device, "COMPUTE_CAPABILITY_MINOR"))


def _describe(device: int, cc: tuple[int, int]) -> str:
    return f"cuda:{device} (compute capability {cc[0]}.{cc[1]})"


def device_target(device: int) -> Target:
    """The target to compile for on CUDA device `device`."""
    cc = capability(device)
    target = target_for_capability(*cc)
    if target is None:
        raise DeviceError(f"commdsl has no target for {_describe(device, cc)}; targets are "
                          f"{', '.join(TARGETS)}")
    return target


def current_target() -> Target | None:
    """The target of the current CUDA device (torch's, or device 0 before torch has used
    CUDA); None without one. Torch is not imported for this: a load served by the compile
    cache imports neither the compiler nor torch."""
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_initialized():
        return device_target(torch.cuda.current_device())
    try:
        cu = driver.cuda_driver()
        if cu.cuInit(0)[0] != cu.CUresult.CUDA_SUCCESS:
            return None
        err, count = cu.cuDeviceGetCount()
    except (CommdslError, RuntimeError, OSError):   # no cuda-bindings, no driver library
        return None
    return device_target(0) if err == cu.CUresult.CUDA_SUCCESS and count else None


def check_runs_on(spec: KernelSpec, device: int) -> None:
    """Raises DeviceError unless `spec`'s code, compiled for `spec.target`, runs on `device`."""
    compiled = get_target(spec.target)
    cc = capability(device)
    if compiled.runs_on(cc):
        return
    own = target_for_capability(*cc)
    missing = sorted(compiled.features - own.features) if own else []
    lacks = (f", which lacks what {compiled.name} code may use: {', '.join(missing)}"
             if missing else f", which cannot run {compiled.name} code")
    hint = (f"load it with target='{own.name}' (or no target: the device's own)" if own else
            f"targets are {', '.join(TARGETS)}")
    raise DeviceError(f"kernel {spec.name} is compiled for {compiled.name}, but "
                      f"{_describe(device, cc)} is {own.name if own else 'no known target'}"
                      f"{lacks}\n  help: {hint}")
