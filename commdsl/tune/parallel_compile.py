"""Compiling the configs of a tuning run in worker processes, before any is timed.

Compiling is the slow, CPU-only part of tuning (parsing, passes, LLVM and ptxas for each
config) and the configs are independent, so a pool of processes, one per CPU, compiles them
at once. A worker only fills the compile cache (kernel.build) and answers with why a config
does not compile, if it does not; the parent then makes each Kernel, which the cache turns
into a file read. Any failure in a worker is that config's pruning message; a pool that
cannot start, or breaks, leaves the configs it did not finish to the parent, compiled one by
one as without a pool.

Workers are forked (on Linux): they start at once with commdsl imported, where a spawned
worker would import the caller's script again. They never touch the GPU. Without a compile
cache (no folder, or COMMDSL_ALWAYS_COMPILE) the parent would compile every config again,
so there is no pool.
"""
from __future__ import annotations

import multiprocessing
import os
import sys
from concurrent.futures import ProcessPoolExecutor, as_completed

from ..diagnostics import CommdslError


def worker_count(configs: int) -> int:
    """How many processes compile `configs` configs: one per CPU this process may use; 1
    (the parent alone) where a pool cannot help."""
    from ..config import always_compile
    from ..runtime.cache import CompileCache
    if (configs < 2 or always_compile() or CompileCache().root is None
            or not sys.platform.startswith("linux")
            or "fork" not in multiprocessing.get_all_start_methods()):
        return 1
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(1, min(cpus or 1, configs))


def compile_configs(default, configs: list[dict], on_compiled, workers: int | None = None,
                    unaligned: frozenset[str] = frozenset()):
    """[(Kernel or None, None or why it does not compile)] for each config, set on top of
    `default`'s constants; `on_compiled(config, why)` after each compile. `workers`: the pool's
    size (default worker_count). `unaligned`: the sizes of the tuned call that are not
    multiples of 16, whose variant (kernel.Kernel.variant) the workers compile too: else
    each config's first timed launch would compile it, one after another."""
    workers = worker_count(len(configs)) if workers is None else workers
    why: dict[int, str | None] = {}
    if workers > 1:
        jobs = [(default.source, default.path, default.name, {**default.constants, **c},
                 default.target, unaligned) for c in configs]
        try:
            with ProcessPoolExecutor(workers, multiprocessing.get_context("fork")) as pool:
                pending = {pool.submit(build_message, *job): i for i, job in enumerate(jobs)}
                for future in as_completed(pending):
                    i = pending[future]
                    why[i] = future.result()
                    on_compiled(configs[i], why[i])
        except (OSError, RuntimeError) as e:   # RuntimeError: BrokenProcessPool among others
            from ..config import logger
            logger().warning("tuning: the compile pool stopped (%s: %s); compiling the "
                             "%d configs left here", type(e).__name__, e,
                             len(configs) - len(why))
    results = []
    for i, config in enumerate(configs):
        kernel, message = None, why.get(i)
        if message is None:
            kernel, message = load_message(default, config, unaligned)
            if i not in why:
                on_compiled(config, message)
        results.append((kernel, message))
    return results


def build_message(text: str, path: str, name: str | None, constants: dict,
                  target: str, unaligned: frozenset[str] = frozenset()) -> str | None:
    """In a worker: compile one config (and its variant for `unaligned` sizes) into the
    compile cache; why it failed, or None."""
    from ..kernel import build
    try:
        build(text, path, name, constants, target)
        if unaligned:
            build(text, path, name, constants, target, unaligned)
    except Exception as e:       # any failure prunes the config, never the run
        return failure_message(e)
    return None


def load_message(default, config: dict, unaligned: frozenset[str] = frozenset()):
    """(the Kernel of `config` on top of `default`, with its variant for `unaligned` sizes
    made, None) or (None, why it failed)."""
    from ..kernel import Kernel
    try:
        kernel = Kernel(default.source, default.path, default.name,
                        {**default.constants, **config}, default.target)
        if unaligned:
            kernel.variant(unaligned)
        return kernel, None
    except Exception as e:       # as in a worker: the config is pruned
        return None, failure_message(e)


def failure_message(e: Exception) -> str:
    if isinstance(e, CommdslError):
        text = getattr(e, "message", None) or str(e)
        return "does not compile: " + (text.splitlines()[0] if text.strip() else
                                       type(e).__name__)
    return f"the compiler failed: {type(e).__name__}: {e}".splitlines()[0]
