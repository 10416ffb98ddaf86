"""The model's choice of a config for one call shape, without timing (tune/model.py).

    choice = model_choice(text, path, kernel, fixed, target, space, {"M": 128, ...})
    choice.config            # the fastest estimate; near-ties keep the source's defaults
    print(choice.table())    # every config's estimate and terms: `commdsl tune --explain`

A choice is saved beside the tuner's records (tune/records.py, search "model"), so a shape
is modelled once; the part modelled is the current GPU's (its name and SM count), else the
target family's reference part (tune/machine.py).
"""
from __future__ import annotations

import functools
import hashlib
import os
from dataclasses import dataclass, field

from .machine import Machine
from .model import Estimate

TIE = 1.01          # estimates this close are the same to the model: keep more defaults


@dataclass
class ModelChoice:
    config: dict
    ms: float | None                # the chosen config's estimate, in milliseconds like the
                                    # tuner's TuneResult.ms and the saved records' "ms"
    machine: str
    estimates: list[Estimate] = field(default_factory=list)   # empty when read from a record
    from_cache: bool = False

    def table(self) -> str:
        lines = [f"model of {self.machine}:", f"{'config':<52} {'estimate':>10}  terms"]
        for e in sorted(self.estimates, key=lambda e: (e.seconds is None, e.seconds or 0)):
            shown = "-" if e.seconds is None else f"{e.seconds * 1e6:.1f} us"
            lines.append(f"{_label(e.config):<52} {shown:>10}  {e.terms()}")
        lines.append(f"model's choice: {_label(self.config)}"
                     + (f" ({self.ms * 1e3:.1f} us)" if self.ms else ""))
        return "\n".join(lines)


def pick(estimates: list[Estimate], defaults: dict) -> Estimate | None:
    """The fastest estimate; among those within TIE of it, the one that keeps the most of
    the source's defaults (a term the model does not see, such as a promotion interval,
    then stays as the author chose it)."""
    runnable = [e for e in estimates if e.seconds is not None]
    if not runnable:
        return None
    fastest = min(e.seconds for e in runnable)
    near = [e for e in runnable if e.seconds <= fastest * TIE]
    return max(near, key=lambda e: (sum(defaults.get(k) == v for k, v in e.config.items()),
                                    -e.seconds))


@functools.cache
def model_version() -> str:
    """A digest of the model's code and machine figures: a choice saved by another version
    of the model is not read back as this one's."""
    here = os.path.dirname(__file__)
    digest = hashlib.sha1()
    for name in ("model.py", "machine.py", "profile.py", "model_choice.py"):
        with open(os.path.join(here, name), "rb") as f:
            digest.update(f.read())
    return digest.hexdigest()[:12]


def estimate_space(text: str, path: str, kernel: str | None, fixed: dict, target: str,
                   configs: list[dict], sizes: dict[str, int], machine: Machine,
                   on_estimate=None) -> list[Estimate]:
    """The model's estimate of each config (set on top of `fixed`) at `sizes`. A large space
    is profiled in forked worker processes (each config runs the front end and the passes:
    fp8_gemm's 1920 configs take ~6 s on one CPU)."""
    chunks = _chunks(configs, _workers(len(configs)))
    job = (text, path, kernel, fixed, target, sizes, machine)
    estimates: list[Estimate] = []
    if len(chunks) > 1:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor
        try:
            with ProcessPoolExecutor(len(chunks), multiprocessing.get_context("fork")) as pool:
                for part in pool.map(_estimate_chunk, [(*job, c) for c in chunks]):
                    estimates += part
                    for e in part:
                        if on_estimate is not None:
                            on_estimate(e)
            return estimates
        except (OSError, RuntimeError):    # no pool (RuntimeError: a broken one): one by one
            estimates = []
    for e in _estimate_chunk((*job, configs)):
        estimates.append(e)
        if on_estimate is not None:
            on_estimate(e)
    return estimates


# Spaces below this are profiled in the caller: a pool costs ~0.2 s, and a kernel `by
# model` (fp8_gemm's 160 tiles, ~0.5 s once per shape) should not fork a user's process,
# which may hold CUDA and NCCL threads; the tuner's spaces (1920 configs) fork, as its
# compiles do.
POOL_MIN = 256


def _workers(configs: int) -> int:
    import multiprocessing
    import sys
    if configs < POOL_MIN or not sys.platform.startswith("linux") \
            or "fork" not in multiprocessing.get_all_start_methods():
        return 1
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(1, min(cpus or 1, configs // (POOL_MIN // 4)))


def _chunks(configs: list[dict], count: int) -> list[list[dict]]:
    """`configs` in `count` contiguous parts, in order."""
    size = -(-len(configs) // count) if configs else 1
    return [configs[i:i + size] for i in range(0, len(configs), size)] or [[]]


def _estimate_chunk(job) -> list[Estimate]:
    from ..target import get_target
    from .model import estimate
    from .profile import profile
    text, path, kernel, fixed, target, sizes, machine, configs = job
    limits = get_target(target)
    estimates = []
    for config in configs:
        e = estimate(profile(text, path, kernel, {**fixed, **config}, target), sizes, machine,
                     limits)
        e.config = dict(config)
        estimates.append(e)
    return estimates


def model_choice(text: str, path: str, kernel: str | None, fixed: dict, target: str, space,
                 sizes: dict[str, int], machine: Machine | None = None, *,
                 device_name: str | None = None, use_records: bool = True) -> ModelChoice:
    """The model's config over `space` (a SearchSpace) at `sizes`, read from a saved record
    when this shape was modelled before."""
    from ..check import check_signature
    from ..diagnostics import CompileError
    from .records import TuneRecords, record_fields
    from .space import _pick_kernel
    from .profile import _parsed
    machine = machine or default_machine(target, device_name)
    records = TuneRecords() if use_records else None
    fields = record_fields(machine.name, space.kernel, text, sizes, target, fixed,
                           space, f"model/{machine.sms}/{model_version()}")
    saved = records.get(fields) if records else None
    if saved is not None:
        return ModelChoice(saved["config"], saved["ms"], machine.name, from_cache=True)
    k = _pick_kernel(_parsed(text, path).kernels, kernel, path)
    defaults = check_signature(k, fixed).constants
    estimates = estimate_space(text, path, kernel, fixed, target, space.configs(), sizes,
                               machine)
    chosen = pick(estimates, defaults)
    if chosen is None:
        reasons = "; ".join(f"{_label(e.config)}: {e.why_not}" for e in estimates[:3])
        raise CompileError(f"the model finds no config of {space.kernel} that runs "
                           f"({reasons})", None, "widen the tune lists, or fix the kernel")
    ms = chosen.seconds * 1e3          # the model estimates in seconds; records keep ms
    if records:
        records.put(fields, chosen.config, ms,
                    [{"config": e.config, "ms": e.seconds and e.seconds * 1e3,
                      "pruned": e.why_not, "effort": None} for e in estimates])
    return ModelChoice(chosen.config, ms, machine.name, estimates)


def default_machine(target: str, device_name: str | None = None,
                    sms: int | None = None) -> Machine:
    from ..target import get_target
    from .machine import machine_for
    return machine_for(get_target(target).sm, device_name, sms)


def _label(config: dict) -> str:
    return ",".join(f"{k}={v}" for k, v in config.items())
