"""The autotuner: time every config of a kernel's tune space on real arguments, keep the best.

    result = commdsl.autotune("examples/act_quant.cdsl", (x,))
    result.config        # {'ROWS': 16, 'WARPS': 4}
    y, s = result.kernel(x)

    commdsl.autotune(path, (x,), space={"ROWS": [8, 16, 32]}, WARPS=4)   # a space of one's own

Each config is compiled first (through the compile cache) and pruned without timing when it
does not compile, when ptxas reports more registers than a block may hold (registers x
threads > 65536 on Hopper), or when it needs more shared memory than a block may have: the
limits of the kernel's target (commdsl/target.py), the device's family unless the caller
chose another. The
rest are timed (tune/timer.py) on copies of the arguments; a config whose launch fails scores
nothing and the run goes on. The best config is saved per (GPU, kernel, source hash, sizes,
...) (tune/records.py), and the next identical call loads it without timing anything;
`retune=True` times again.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

from ..diagnostics import CommdslError, CompileError, Source
from ..target import Target, get_target


@dataclass
class Trial:
    config: dict
    ms: float | None = None          # None: pruned or failed
    pruned: str | None = None        # why it was not timed, or why timing failed


@dataclass
class TuneResult:
    kernel: object                   # the best config's Kernel, ready to call
    config: dict                     # the tuned constants' values
    ms: float | None                 # its time when it was measured
    shape: dict[str, int]            # the sizes it was tuned for
    from_cache: bool                 # True: read from a saved record, nothing was timed
    trials: list[Trial] = field(default_factory=list)   # every config of this run, if timed


def autotune(kernel, args=(), space: dict | None = None, *, kernel_name: str | None = None,
             target: str | None = None, timer=None, retune: bool = False,
             progress: bool = True, **constants) -> TuneResult:
    """Tune a kernel (a .cdsl path, source text, or a commdsl.Kernel) on `args`.

    `args` is what the kernel is called with: a tuple of positional arguments or a dict of
    them by name. `space` maps constants to the values to try and defaults to the `tune`
    declarations of the source; constants passed as keywords (or set on a Kernel) stay fixed.
    `timer(run, config) -> ms` replaces the CUDA-event timer (tune/timer.py). The target
    defaults to the current GPU's."""
    from ..kernel import Kernel, local_target, read_source
    if isinstance(kernel, Kernel):
        if constants or kernel_name is not None:
            raise CompileError("a loaded Kernel already has its constants and name", None,
                               "pass the .cdsl path to set them, or load the Kernel with them")
        text, path, name, fixed, target = (kernel.source, kernel.path, kernel.name,
                                           kernel.constants, kernel.target)
    else:
        (text, path), name, fixed = read_source(kernel), kernel_name, constants
        target = target or local_target()
    from .space import search_space
    tune_space = None if space is None else search_space(text, path, name, fixed, space)
    positional, keywords = (((), dict(args)) if isinstance(args, dict) else (tuple(args), {}))
    return tune(text, path, name, fixed, target, tune_space, positional, keywords,
                timer=timer, retune=retune, progress=progress)


def tune(text: str, path: str, name: str | None, fixed: dict, target: str, space,
         args: tuple, kwargs: dict, *, timer=None, retune: bool = False,
         progress: bool = True) -> TuneResult:
    """`autotune` once the source is read and the space (None: declared) checked."""
    from ..kernel import Kernel
    from ..config import logger
    from .records import TuneRecords, record_fields
    start = time.perf_counter()
    default = Kernel(text, path, name, fixed, target)
    bound = default._default.launcher.bind(*args, require_cuda=False, **kwargs)
    shape = {s: bound.sizes[s] for s in default.spec.size_symbols}
    records = TuneRecords()
    fields = record_fields(_device_name(bound.device), default.name, text, shape, target,
                           fixed, space)
    saved = None if retune else records.get(fields)
    if saved is not None:
        logger().info("tune %s %s: saved choice %s", default.name, shape, saved["config"])
        best = Kernel(text, path, default.name, {**fixed, **saved["config"]}, target)
        return TuneResult(best, saved["config"], saved["ms"], shape, from_cache=True)
    if space is None:
        from .space import search_space
        space = search_space(text, path, default.name, fixed, None)
    trials, kernels = _run_trials(default, space, args, kwargs, bound, timer, progress)
    timed = [t for t in trials if t.ms is not None]
    if not timed:
        reasons = "; ".join(f"{_label(t.config)}: {t.pruned}" for t in trials[:4])
        raise CompileError(f"no config of {default.name} could be timed ({reasons})", None,
                           "fix the kernel for these configs, or tune over other values",
                           Source(text, path))
    winner = min(timed, key=lambda t: t.ms)
    logger().info("tuned %s %s in %.1f s: %d configs, best %s (%.4f ms)", default.name, shape,
                  time.perf_counter() - start, len(trials), winner.config, winner.ms)
    records.put(fields, winner.config, winner.ms,
                [{"config": t.config, "ms": t.ms, "pruned": t.pruned} for t in trials])
    return TuneResult(kernels[_label(winner.config)], winner.config, winner.ms, shape,
                      from_cache=False, trials=trials)


def _run_trials(default, space, args: tuple, kwargs: dict, bound, timer, progress: bool):
    """Compile, prune and time every config; `default` is the kernel with only the fixed
    constants set, `bound` its binding of the call's arguments."""
    from ..kernel import Kernel
    from .progress import Progress
    from .timer import cuda_event_timer
    timer = timer or cuda_event_timer
    limits = get_target(default.target)
    arg_sets = _rotating_arguments(args, kwargs, default.spec, bound)
    sizes = ", ".join(f"{s}={bound.sizes[s]}" for s in default.spec.size_symbols)
    bar = Progress(f"tuning {default.name} ({sizes}) over {space}: {len(space)} configs",
                   len(space), enabled=progress)
    trials, kernels = [], {}
    for config in space.configs():
        trial = Trial(config)
        trials.append(trial)
        try:
            kernel = Kernel(default.source, default.path, default.name,
                            {**default.constants, **config}, default.target)
        except CommdslError as e:
            trial.pruned = "does not compile: " + _first_line(e)
            bar.step(f"{_label(config)}: pruned ({trial.pruned})")
            continue
        trial.pruned = over_limits(kernel, limits)
        if trial.pruned is None:
            try:
                trial.ms = timer(_runner(kernel, arg_sets, bound.device), config)
                kernels[_label(config)] = kernel
            except CommdslError as e:
                trial.pruned = "failed to run: " + _first_line(e)
        bar.step(f"{_label(config)}: " + (f"{trial.ms:.4f} ms" if trial.ms is not None
                                          else f"pruned ({trial.pruned})"))
    timed = [t for t in trials if t.ms is not None]
    bar.close(f"best {_label(min(timed, key=lambda t: t.ms).config)}: "
              f"{min(t.ms for t in timed):.4f} ms" if timed else "no config could be timed")
    return trials, kernels


def over_limits(kernel, limits: Target) -> str | None:
    """Why `kernel` cannot run on a GPU of family `limits`, or None if it fits."""
    spec, report = kernel.spec, kernel.resources
    shared = spec.shared_bytes + (report.shared_bytes if report else 0)
    if shared > limits.shared_bytes_per_block:
        return f"{shared} bytes of shared memory > {limits.shared_bytes_per_block}"
    if report is not None and report.registers * spec.num_threads > limits.registers_per_block:
        return (f"{report.registers} registers x {spec.num_threads} threads > "
                f"{limits.registers_per_block}")
    return None


def _rotating_arguments(args: tuple, kwargs: dict, spec, bound) -> list[tuple[tuple, dict]]:
    """Sets of the call's arguments to cycle through: copies of its inputs (the first set
    reads the caller's own; kernels never write inputs) and new outputs, so tuning never
    writes a tensor of the caller's."""
    from .timer import rotation_count
    positional = spec.inputs + spec.outputs
    is_out = {t.name: t.is_out for t in spec.tensors}
    count = rotation_count(sum(t.numel() * t.element_size() for t in bound.tensors),
                           bound.device)

    def copy(value, name: str, first: bool):
        if value is None:
            return None
        if is_out[name]:
            return value.new_empty(value.shape)
        return value if first else value.clone()

    return [(tuple(copy(a, t.name, i == 0) for t, a in zip(positional, args)),
             {k: copy(v, k, i == 0) for k, v in kwargs.items()}) for i in range(count)]


def _runner(kernel, arg_sets, device):
    """run(): one launch of `kernel`, on the next argument set each time."""
    named = []
    for args, kwargs in arg_sets:
        bound = kernel._default.launcher.bind(*args, require_cuda=device.type == "cuda",
                                              **kwargs)
        named.append({t.name: v for t, v in zip(kernel.spec.tensors, bound.tensors)})
    position = [0]

    def run():
        i = position[0] = (position[0] + 1) % len(named)
        kernel(**named[i])
    return run


def _device_name(device) -> str:
    if device.type != "cuda":
        return device.type
    import torch
    return torch.cuda.get_device_name(device)


def _label(config: dict) -> str:
    return ",".join(f"{k}={v}" for k, v in config.items())


def _first_line(e: Exception) -> str:
    text = getattr(e, "message", None) or str(e)
    return text.splitlines()[0] if text else type(e).__name__
