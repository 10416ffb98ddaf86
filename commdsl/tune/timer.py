"""Timing one config on the GPU: CUDA events, a warm-up, the median of many launches.

A timer is any `timer(run, config) -> milliseconds`, where `run()` launches the kernel once
on the next set of rotating input buffers; `autotune(..., timer=...)` takes another one (a
test passes a stub that never launches). The adaptive search (search.py) also passes
`effort=`, the fraction of a full measurement to spend: short ones to weed out, full ones to
decide. The default, `cuda_event_timer`, follows Triton's
do_bench: estimate a launch's time, warm up for ~25 ms, then record an event pair around each
launch for ~100 ms and take the median, which ignores the odd launch that waited on the host.

Rotating buffers: a kernel timed on one set of inputs over and over finds them in L2 and looks
faster than it runs in a model, where its inputs come from DRAM. `rotation_count` picks enough
sets that consecutive launches of a set are two L2's worth of traffic apart.
"""
from __future__ import annotations

import math
import statistics

WARMUP_MS = 25.0
MEASURE_MS = 100.0
MIN_RUNS, MAX_RUNS = 10, 1000
MAX_ROTATIONS = 16


def cuda_event_timer(run, config: dict | None = None, effort: float = 1.0) -> float:
    """Median milliseconds of one `run()`, timed with CUDA events on the current stream;
    `effort` scales the warm-up and the measurement (never under MIN_RUNS launches each)."""
    import torch
    run()                                  # the first launch loads the module: not timed
    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(5):
        run()
    end.record()
    torch.cuda.synchronize()
    estimate = max(start.elapsed_time(end) / 5, 1e-3)
    for _ in range(_runs(WARMUP_MS * effort, estimate)):
        run()
    return event_median_ms(run, _runs(MEASURE_MS * effort, estimate))


def event_median_ms(run, count: int) -> float:
    """The median of `count` launches of `run()`, each between its own pair of CUDA events."""
    import torch
    starts = [torch.cuda.Event(enable_timing=True) for _ in range(count)]
    ends = [torch.cuda.Event(enable_timing=True) for _ in range(count)]
    for s, e in zip(starts, ends):
        s.record()
        run()
        e.record()
    torch.cuda.synchronize()
    return statistics.median(s.elapsed_time(e) for s, e in zip(starts, ends))


def _runs(budget_ms: float, estimate_ms: float) -> int:
    return int(min(MAX_RUNS, max(MIN_RUNS, budget_ms / estimate_ms)))


def rotation_count(bytes_per_set: int, device) -> int:
    """How many copies of the arguments to cycle through (1 off the GPU)."""
    if device.type != "cuda" or bytes_per_set <= 0:
        return 1
    import torch
    l2 = torch.cuda.get_device_properties(device).L2_cache_size
    return max(1, min(MAX_ROTATIONS, math.ceil(2 * l2 / bytes_per_set)))
