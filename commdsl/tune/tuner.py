"""The autotuner: time the configs of a kernel's tune space on real arguments, keep the best.

    result = commdsl.autotune("examples/act_quant.cdsl", (x,))
    result.config        # {'ROWS': 16, 'WARPS': 4}
    y, s = result.kernel(x)

    commdsl.autotune(path, (x,), space={"ROWS": [8, 16, 32]}, WARPS=4)   # a space of one's own

Every config is compiled first, in worker processes (tune/parallel_compile.py, through the
compile cache), and pruned without timing when it does not compile, when ptxas reports more
registers than a block may hold (registers x threads > 65536 on Hopper), or when it needs
more shared memory than a block may have: the limits of the kernel's target
(commdsl/target.py), the device's family unless the caller chose another. The rest are timed
(tune/timer.py: each launch on a cold L2, its host cost hidden) on the call's inputs and new
outputs, all of them fully or, in a large space, by
successive halving (tune/search.py); a config whose launch fails scores nothing and the run
goes on. The best config is saved per (GPU, kernel, source hash, sizes,
...) (tune/records.py), and the next identical call loads it without timing anything;
`retune=True` times again.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

from ..diagnostics import CommdslError, CompileError, Source
from ..spec import SPECIALIZE_DIVISOR
from ..target import Target, get_target

MODEL_PRUNE = 1.5        # configs the model rates slower than this x its best are not timed


@dataclass
class Trial:
    config: dict
    ms: float | None = None          # None: pruned or failed
    pruned: str | None = None        # why it was not timed, or why timing failed
    effort: float | None = None      # the fraction of a full measurement `ms` took (1.0:
                                     # all of it; less: dropped by the search after it)


@dataclass
class TuneResult:
    kernel: object                   # the best config's Kernel, ready to call
    config: dict                     # the tuned constants' values
    ms: float | None                 # its time when it was measured
    shape: dict[str, int]            # the sizes it was tuned for
    from_cache: bool                 # True: read from a saved record, nothing was timed
    trials: list[Trial] = field(default_factory=list)   # every config of this run, if timed

    def table(self, retune: str = "retune=True") -> str:
        """Every config's time or why it was pruned, the fully timed first, then those the
        search dropped after a shorter timing; then the best. What `commdsl tune` prints
        (`retune`: how the caller asks to time again, said of a saved choice)."""
        label = _label(self.config).replace(",", ", ")
        if self.from_cache:
            return (f"{label} ({self.ms:.4f} ms when tuned; saved earlier, nothing timed; "
                    f"{retune} to time again)")
        lines = [f"{'config':<32} ms"]
        for trial in sorted(self.trials,
                            key=lambda t: (t.ms is None, -(t.effort or 0.0), t.ms or 0.0)):
            if trial.ms is None:
                shown = f"pruned: {trial.pruned}"
            elif trial.effort < 1:
                shown = (f"{trial.ms:.4f}  (dropped after 1/{round(1 / trial.effort)} of a "
                         "timing)")
            else:
                shown = f"{trial.ms:.4f}"
            lines.append(f"{_label(trial.config).replace(',', ', '):<32} {shown}")
        lines.append(f"best: {label} ({self.ms:.4f} ms)")
        return "\n".join(lines)


def autotune(kernel, args=(), space: dict | None = None, *, kernel_name: str | None = None,
             target: str | None = None, timer=None, retune: bool = False,
             progress: bool = True, search: str = "auto", **constants) -> TuneResult:
    """Tune a kernel (a .cdsl path, source text, or a commdsl.Kernel) on `args`.

    `args` is what the kernel is called with: a tuple of positional arguments or a dict of
    them by name. `space` maps constants to the values to try and defaults to the `tune`
    declarations of the source; constants passed as keywords (or set on a Kernel) stay fixed.
    `timer(run, config) -> ms` replaces the CUDA-event timer (tune/timer.py). `search`:
    "exhaustive" times every config fully, "halving" by successive halving (short
    measurements of all, longer ones of the best; the timer then takes `effort=`), "auto"
    the first up to 64 configs and the second above (tune/search.py). The target defaults to
    the current GPU's. `progress`: bars with the time taken and left on stderr, on rank 0
    only (tune/progress.py)."""
    from ..kernel import Kernel, local_target, read_source
    from .search import check_search
    check_search(search)
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
                timer=timer, retune=retune, progress=progress, search=search)


def tune(text: str, path: str, name: str | None, fixed: dict, target: str, space,
         args: tuple, kwargs: dict, *, timer=None, retune: bool = False,
         progress: bool = True, search: str = "auto") -> TuneResult:
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
                           fixed, space, search)
    saved = None if retune else records.get(fields)
    if saved is not None:
        logger().info("tune %s %s: saved choice %s", default.name, shape, saved["config"])
        best = Kernel(text, path, default.name, {**fixed, **saved["config"]}, target)
        return TuneResult(best, saved["config"], saved["ms"], shape, from_cache=True)
    if space is None:
        from .space import search_space
        space = search_space(text, path, default.name, fixed, None)
    trials, kernels, winner = _run_trials(default, space, args, kwargs, bound, timer,
                                          progress, search)
    if winner is None:
        reasons = "; ".join(f"{_label(t.config)}: {t.pruned}" for t in trials[:4])
        raise CompileError(f"no config of {default.name} could be timed ({reasons})", None,
                           "fix the kernel for these configs, or tune over other values",
                           Source(text, path))
    logger().info("tuned %s %s in %.1f s: %d configs, best %s (%.4f ms)", default.name, shape,
                  time.perf_counter() - start, len(trials), winner.config, winner.ms)
    records.put(fields, winner.config, winner.ms,
                [{"config": t.config, "ms": t.ms, "pruned": t.pruned, "effort": t.effort}
                 for t in trials])
    return TuneResult(kernels[_label(winner.config)], winner.config, winner.ms, shape,
                      from_cache=False, trials=trials)


def _run_trials(default, space, args: tuple, kwargs: dict, bound, timer, progress: bool,
                search: str):
    """Compile every config (in parallel), prune, and time what is left by the search
    (tune/search.py); `default` is the kernel with only the fixed constants set, `bound` its
    binding of the call's arguments."""
    from .parallel_compile import compile_configs
    from .progress import Progress
    from .search import best, pick_search, plan, planned_work, run_plan, sample
    from .timer import cuda_event_timer
    limits = get_target(default.target)
    sizes = {s: bound.sizes[s] for s in default.spec.size_symbols}
    shown = ", ".join(f"{k}={v}" for k, v in sizes.items())
    bar = Progress(f"tuning {default.name} ({shown}) over {space}: {len(space)} configs",
                   enabled=progress)
    trials = [Trial(config) for config in space.configs()]
    favourite = _prune_by_model(default, trials, sizes, bound.device, bar)
    alive = [t for t in trials if t.pruned is None]
    method = pick_search(search, len(alive), timer)
    timer = timer or cuda_event_timer
    if method != "exhaustive":
        sampled = sample(alive)
        if favourite is not None and all(t is not favourite for t in sampled):
            sampled.append(favourite)
        trials = [t for t in trials if t.pruned is not None] + sampled
        alive = sampled
    bar.phase("compiling", len(alive))
    unaligned = frozenset(s for s, v in sizes.items() if v % SPECIALIZE_DIVISOR)
    compiled = compile_configs(default, [t.config for t in alive], lambda config, why: bar.step(
        f"{_label(config)}: " + ("ok" if why is None else f"pruned ({why})")),
        unaligned=unaligned)
    kernels = {}
    for trial, (kernel, why) in zip(alive, compiled):
        trial.pruned = why if kernel is None else over_limits(kernel, limits)
        if trial.pruned is None:
            kernels[_label(trial.config)] = kernel
    candidates = [t for t in trials if t.pruned is None]
    rungs = plan(method, len(candidates))
    bar.phase("timing", sum(r.count for r in rungs), planned_work(rungs))
    arguments = _tuning_arguments(args, kwargs, default.spec) if candidates else None
    runners = {}

    def measure(trial: Trial, effort: float | None) -> None:
        label = _label(trial.config)
        kernel = kernels[label]
        if label not in runners:
            runners[label] = _runner(kernel, arguments, bound.device)
        try:
            trial.ms = (timer(runners[label], trial.config) if effort is None else
                        timer(runners[label], trial.config, effort=effort))
        except CommdslError as e:
            trial.ms, trial.pruned = None, "failed to run: " + _first_line(e)
            del kernels[label]
        bar.step(f"{label}: " + (f"{trial.ms:.4f} ms" if trial.ms is not None
                                 else f"pruned ({trial.pruned})"),
                 1.0 if effort is None else effort)

    # The model's pick is timed in every rung: a short, noisy first measurement must not
    # drop the config a user gets without tuning (tuning is to beat it, not lose to it).
    run_plan(candidates, rungs, measure, keep=[t for t in candidates if t is favourite])
    winner = best(trials, incumbent=favourite)
    bar.close(f"best {_label(winner.config)}: {winner.ms:.4f} ms" if winner
              else "no config could be timed")
    return trials, kernels, winner


def _prune_by_model(default, trials: list[Trial], sizes: dict, device, bar) -> Trial | None:
    """Marks, before anything compiles, the configs the cost model (tune/model.py) rates
    over MODEL_PRUNE x its best estimate, and those it found do not compile or fit. A
    config the model cannot estimate stays in, as do all of them if the model fails.
    Returns the trial of the model's pick (model_choice.pick), or None."""
    from ..config import logger
    from .model_choice import default_machine, estimate_space, pick
    name, sms = (_device_name(device), _sm_count(device)) if device.type == "cuda" \
        else (None, None)
    bar.phase("modelling", len(trials))
    try:
        estimates = estimate_space(
            default.source, default.path, default.name, default.constants, default.target,
            [t.config for t in trials], sizes, default_machine(default.target, name, sms),
            on_estimate=lambda e: bar.step(_label(e.config)))
    except Exception as e:       # the model only saves time: tune without it
        logger().warning("tuning: the cost model failed (%s: %s); timing every config",
                         type(e).__name__, e)
        return None
    runnable = [e.seconds for e in estimates if e.seconds is not None]
    fastest = min(runnable, default=None)
    for trial, e in zip(trials, estimates):
        if e.seconds is None and not e.why_not.startswith("not modelled"):
            trial.pruned = e.why_not
        elif e.seconds is not None and e.seconds > MODEL_PRUNE * fastest:
            trial.pruned = f"model estimate {e.seconds / fastest:.1f}x the best"
    chosen = pick(estimates, default.spec.constants)
    return next((t for t, e in zip(trials, estimates) if e is chosen), None)


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


def _tuning_arguments(args: tuple, kwargs: dict, spec) -> tuple[tuple, dict]:
    """The call's arguments with new outputs, so tuning never writes a tensor of the
    caller's (kernels never write their inputs)."""
    positional = spec.inputs + spec.outputs
    is_out = {t.name: t.is_out for t in spec.tensors}

    def fresh(value, name: str):
        return value.new_empty(value.shape) if value is not None and is_out[name] else value

    return (tuple(fresh(a, t.name) for t, a in zip(positional, args)),
            {k: fresh(v, k) for k, v in kwargs.items()})


def _runner(kernel, arguments: tuple[tuple, dict], device):
    """run(): one launch of `kernel` on `arguments`, bound by name (every config's kernel
    names its parameters alike)."""
    args, kwargs = arguments
    bound = kernel._default.launcher.bind(*args, require_cuda=device.type == "cuda", **kwargs)
    named = {t.name: v for t, v in zip(kernel.spec.tensors, bound.tensors)}
    return lambda: kernel(**named)


def _sm_count(device) -> int:
    import torch
    return torch.cuda.get_device_properties(device).multi_processor_count


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
