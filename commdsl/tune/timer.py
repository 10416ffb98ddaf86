"""Timing one config on the GPU: CUDA events, a warm-up, the median of many launches.

A timer is any `timer(run, config) -> milliseconds`, where `run()` launches the kernel once;
`autotune(..., timer=...)` takes another one (a test passes a stub that never launches). The
adaptive search (search.py) also passes `effort=`, the fraction of a full measurement to
spend: short ones to weed out, full ones to decide. The default, `cuda_event_timer`, warms
up for ~25 ms, then times launches for ~100 ms, each between its own pair of CUDA events,
and takes the median.

Each timed launch starts on a cold L2 with the host's cost hidden, as DeepGEMM's benchmark
times a GEMM: twice L2's size of memory is written first, so the kernel reads its inputs
from DRAM as in a model, and a GPU sleep queued before the start event covers the host's
launch path. Timed back to back instead, a kernel shorter than that path (~20 us for
small-M GEMMs) measures the host, not itself, which ranks configs at random: fp8_gemm's
tuner picked configs up to 1.4x slower than the cost model's for that reason.
"""
from __future__ import annotations

import statistics

# What a saved tuning record's times mean (tune/records.py): records timed otherwise (back to
# back, on rotating inputs) are not reused.
TIMING = "cold L2, host hidden"
WARMUP_MS = 25.0
MEASURE_MS = 100.0
MIN_RUNS, MAX_RUNS = 10, 1000
# GPU clock cycles of torch.cuda._sleep before each timed launch, ~HIDE_HOST_MS: longer than
# commdsl's host launch path, which then overlaps the flush and the sleep, not the kernel.
HIDE_HOST_CYCLES = 100_000
HIDE_HOST_MS = 0.05


def cuda_event_timer(run, config: dict | None = None, effort: float = 1.0) -> float:
    """Median milliseconds of one `run()`, each on a cold L2 with the host's cost hidden;
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
    flush = _flush_buffer()
    start.record()
    flush.zero_()
    end.record()
    torch.cuda.synchronize()
    cold = _runs(MEASURE_MS * effort, estimate + start.elapsed_time(end) + HIDE_HOST_MS)
    return cold_median_ms(run, cold, flush)


def cold_median_ms(run, count: int, flush, sleep_cycles: int = HIDE_HOST_CYCLES) -> float:
    """The median of `count` launches of `run()`, each between its own pair of CUDA events,
    after writing `flush` (evicting L2) and queuing a sleep of `sleep_cycles` that covers
    the host's path."""
    import torch
    starts = [torch.cuda.Event(enable_timing=True) for _ in range(count)]
    ends = [torch.cuda.Event(enable_timing=True) for _ in range(count)]
    for s, e in zip(starts, ends):
        flush.zero_()
        torch.cuda._sleep(sleep_cycles)
        s.record()
        run()
        e.record()
    torch.cuda.synchronize()
    return statistics.median(s.elapsed_time(e) for s, e in zip(starts, ends))


def _flush_buffer():
    """Bytes enough to evict L2 when written: twice its size, on the current device."""
    import torch
    l2 = torch.cuda.get_device_properties(torch.cuda.current_device()).L2_cache_size
    return torch.empty(2 * l2, dtype=torch.uint8, device="cuda")


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
