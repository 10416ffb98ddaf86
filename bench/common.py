"""Shared by the benchmarks: CUDA-event timing, the copy-bandwidth ceiling, result files.

Every benchmark times commdsl and its peers in one run on fresh random data, takes the
median of many timed runs after a warm-up, prints a ratio table and writes
bench/results/<name>-<device>.json itself, and beside it a chart of the same numbers
(.png, where matplotlib is installed; bench/plot.py).
"""
from __future__ import annotations

import json
import os
import platform
import shutil
import sys
import time

RESULTS = os.path.join(os.path.dirname(__file__), "results")


def device_name() -> str:
    import torch
    if torch.cuda.is_available():
        return torch.cuda.get_device_name().replace("NVIDIA ", "").replace(" ", "-").lower()
    return platform.node() or "cpu"


def time_ms(fn, warmup: int = 10, iters: int = 50) -> float:
    """Median milliseconds of `fn()` measured with CUDA events, one pair per run."""
    import torch
    from commdsl.tune.timer import event_median_ms
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    return event_median_ms(fn, iters)


def time_flushed_ms(fn, warmup: int = 5, iters: int = 30) -> float:
    """Median milliseconds of `fn()` as DeepGEMM's benchmark times a GEMM: L2 flushed (256 MB
    written) before each call, and the host's launch cost hidden behind a GPU sleep queued
    ahead of the start event, so every library is timed on cold caches and GPU time alone."""
    import statistics
    import torch
    flush = torch.empty(256 << 20, dtype=torch.uint8, device="cuda")
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(iters):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        flush.zero_()
        torch.cuda._sleep(1_000_000)           # ~0.5 ms: longer than any peer's host path
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    return statistics.median(times)


def timed_in_rounds(runs: dict, iters: int, rounds: int = 3) -> dict:
    """{name: median ms} of each `run()`, timed in `rounds` rounds that take every run in
    turn (a clock dip lands on all alike, not on one), each round starting one run later
    than the last: a GPU slows over a round (up to 6% from first slot to last, measured on
    an H100), so no run keeps the first slot. A round times iters / rounds calls of each
    (time_flushed_ms); the result is the median of the rounds."""
    import statistics
    names = list(runs)
    times = {name: [] for name in names}
    for r in range(rounds):
        shift = r % len(names) if names else 0
        for name in names[shift:] + names[:shift]:
            times[name].append(time_flushed_ms(runs[name], iters=max(iters // rounds, 5)))
    return {name: statistics.median(ms) for name, ms in times.items()}


class GpuSampler:
    """SM clock, power and the active clock-throttle reasons of GPU 0, sampled by nvidia-smi
    every `period_ms` while the `with` block runs: `samples` is a list of (seconds since the
    epoch, MHz, W, throttle bit mask). Empty where nvidia-smi is missing."""
    QUERY = "timestamp,clocks.sm,power.draw,clocks_throttle_reasons.active"

    def __init__(self, period_ms: int = 50):
        self.period_ms, self.samples = period_ms, []

    def __enter__(self):
        import subprocess
        smi = shutil.which("nvidia-smi")
        self._proc = smi and subprocess.Popen(
            [smi, f"--query-gpu={self.QUERY}", "--format=csv,noheader,nounits",
             "-lms", str(self.period_ms)], stdout=subprocess.PIPE, text=True)
        return self

    def __exit__(self, *exc):
        if not self._proc:
            return
        self._proc.terminate()
        for line in self._proc.communicate()[0].splitlines():
            stamp, mhz, watts, reasons = (c.strip() for c in line.split(","))
            day, _, frac = stamp.partition(".")
            when = time.mktime(time.strptime(day, "%Y/%m/%d %H:%M:%S")) + float("0." + frac)
            self.samples.append((when, int(mhz), float(watts), int(reasons, 16)))

    def between(self, start: float, end: float) -> dict:
        """Medians of the samples taken between two time.time() stamps, and every throttle
        reason seen (nvidia-smi's bits: 0x4 is the software power cap)."""
        import statistics
        inside = [s for s in self.samples if start <= s[0] <= end]
        if not inside:
            return {}
        reasons = 0
        for s in inside:
            reasons |= s[3]
        return {"sm_mhz": statistics.median(s[1] for s in inside),
                "watts": statistics.median(s[2] for s in inside),
                "throttle_reasons": hex(reasons), "samples": len(inside)}


class ConfigKernels:
    """The kernels of one example compiled for each config a bench times, each compiled
    once across shapes."""

    def __init__(self, path: str):
        self.path, self._kernels = path, {}

    def __call__(self, config: dict):
        import commdsl
        key = tuple(sorted(config.items()))
        if key not in self._kernels:
            self._kernels[key] = commdsl.load(self.path, **config)
        return self._kernels[key]


def config_name(config: dict) -> str:
    return ",".join(f"{key}={value}" for key, value in config.items())


def gemm_args(ap, default: list, what: str = "M,N,K"):
    """`ap`'s arguments with --iters and --shapes M,N,K ...: args.shapes the (M, N, K)
    triples given (`what` names their parts), or `default`."""
    ap.add_argument("--iters", type=int, default=50)
    ap.add_argument("--shapes", nargs="*", help=f"{what} triples (default: the issue's)")
    args = ap.parse_args()
    args.shapes = ([tuple(map(int, s.split(","))) for s in args.shapes] if args.shapes
                   else default)
    return args


def copy_bandwidth_gbs(nbytes: int = 1 << 30) -> float:
    """Device-to-device copy, counting bytes read plus bytes written."""
    import torch
    src = torch.randint(0, 255, (nbytes,), dtype=torch.uint8, device="cuda")
    dst = torch.empty_like(src)
    ms = time_ms(lambda: dst.copy_(src), warmup=5, iters=30)
    return 2 * nbytes / ms / 1e6


def gbs(nbytes: int, ms: float) -> float:
    return nbytes / ms / 1e6


def print_table(title: str, header: list[str], rows: list[list]) -> None:
    widths = [max(len(str(h)), *(len(_fmt(r[i])) for r in rows)) for i, h in enumerate(header)]
    print(f"\n{title}")
    print("  ".join(str(h).ljust(w) for h, w in zip(header, widths)))
    for r in rows:
        print("  ".join(_fmt(c).ljust(w) for c, w in zip(r, widths)))


def _fmt(x) -> str:
    return f"{x:.3g}" if isinstance(x, float) else str(x)


def spawn_ranks(target, world: int, args, timeout_s: float) -> list[dict]:
    """Runs target(rank, world, port, args, results) in one process per GPU of this host, NVLink
    multicast off, and returns what each put on `results` (a dict with "rank"), by rank."""
    import multiprocessing
    import socket
    os.environ.setdefault("NCCL_NVLS_ENABLE", "0")
    os.environ.setdefault("TORCH_SYMM_MEM_DISABLE_MULTICAST", "1")
    os.environ.setdefault("NVSHMEM_DISABLE_NVLS", "1")
    ctx = multiprocessing.get_context("spawn")
    results = ctx.Queue()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    procs = [ctx.Process(target=target, args=(r, world, port, args, results))
             for r in range(world)]
    for proc in procs:
        proc.start()
    ranks = sorted((results.get(timeout=timeout_s) for _ in procs), key=lambda r: r["rank"])
    for proc in procs:
        proc.join(timeout=60)
    return ranks


def join_ranks(rank: int, world: int, port: int) -> None:
    """In a process spawn_ranks started: this rank's GPU, the NCCL group of all ranks, and
    tests/ importable (the benches take the tests' routing and references)."""
    import torch
    import torch.distributed as dist
    torch.cuda.set_device(rank)
    dist.init_process_group("nccl", init_method=f"tcp://127.0.0.1:{port}", rank=rank,
                            world_size=world, device_id=torch.device("cuda", rank))
    sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests"))


def write_results(name: str, payload: dict) -> str:
    os.makedirs(RESULTS, exist_ok=True)
    path = os.path.join(RESULTS, f"{name}-{device_name()}.json")
    payload = {"benchmark": name, "device": device_name(),
               "date": time.strftime("%Y-%m-%d %H:%M:%S"), **payload}
    with open(path, "w") as f:
        json.dump(payload, f, indent=2)
    print(f"\nwrote {path}")
    import plot                               # bench/plot.py, beside this file
    png = plot.write_png(path, payload)
    out = os.environ.get("OUT")
    if out:                                   # on the lent GPU machine: bring the files back
        with open(os.path.join(out, os.path.basename(path)), "w") as f:
            json.dump(payload, f, indent=2)
        if png is not None:
            shutil.copy(png, out)
    return path
