"""Does the autotuner pick well, and does a second run reuse its choice? Two kernels, one run.

    python bench/autotune_check.py [--m 4096] [--k 7168] [--n 67108864] [--rounds 3]

For act_quant (ROWS x WARPS) and copy_nc (BLOCK x WARPS), over the space each declares:
  1. the tuner's pick: commdsl.autotune(..., retune=True), timed as it times (tune/timer.py);
  2. an exhaustive sweep: every config of the space timed independently of the tuner (the
     mean of 200 back-to-back launches between two events, on rotating buffers, the best of
     several rounds taken in round-robin order so clock drift hits all configs alike);
  3. the same tuning call again: it must read the saved choice and time nothing.
The pick passes if, in the sweep's own timings, it is within 3% of the sweep's best.
"""
from __future__ import annotations

import argparse
import math
import os
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(__file__))
import common  # noqa: E402

import commdsl  # noqa: E402
from commdsl.tune import timer as tune_timer  # noqa: E402

EXAMPLES = os.path.join(os.path.dirname(__file__), "..", "examples")
TOLERANCE = 0.03
MAX_ROTATIONS = 16
SWEEP_LAUNCHES = 200


def declared_space(path: str) -> list[dict]:
    from commdsl.tune.space import search_space
    with open(path) as f:
        return search_space(f.read(), path, None, {}, None).configs()


def sweep(path: str, named_sets: list[dict], rounds: int) -> dict[str, float]:
    """Milliseconds per launch of every config that loads and runs."""
    kernels = {}
    for config in declared_space(path):
        label = _label(config)
        try:
            kernel = commdsl.load(path, **config)
            kernel(**named_sets[0])
            torch.cuda.synchronize()
            kernels[label] = kernel
        except commdsl.CommdslError as e:
            print(f"  sweep: {label} skipped ({str(e).splitlines()[0]})", file=sys.stderr)
    best = {label: float("inf") for label in kernels}
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    for _ in range(rounds):
        for label, kernel in kernels.items():
            for i in range(20):
                kernel(**named_sets[i % len(named_sets)])
            start.record()
            for i in range(SWEEP_LAUNCHES):
                kernel(**named_sets[i % len(named_sets)])
            end.record()
            torch.cuda.synchronize()
            best[label] = min(best[label], start.elapsed_time(end) / SWEEP_LAUNCHES)
    return best


def rotating_sets(make_inputs, nbytes: int) -> list[dict]:
    """Enough input sets that consecutive launches of one are two L2's worth of traffic
    apart: the sweep's launches read DRAM, as the tuner's do after its flush."""
    l2 = torch.cuda.get_device_properties(0).L2_cache_size
    count = max(1, min(MAX_ROTATIONS, math.ceil(2 * l2 / nbytes)))
    return [make_inputs() for _ in range(count)]


def check(name: str, path: str, args: tuple, named_sets: list[dict], rounds: int) -> dict:
    started = time.perf_counter()
    tuned = commdsl.autotune(path, args, retune=True)
    tune_s = time.perf_counter() - started
    times = sweep(path, named_sets, rounds)
    best_label = min(times, key=times.get)
    pick_label = _label(tuned.config)
    gap = times[pick_label] / times[best_label] - 1

    timed = []

    def counting_timer(run, config):
        timed.append(config)
        return tune_timer.cuda_event_timer(run)
    started = time.perf_counter()
    again = commdsl.autotune(path, args, timer=counting_timer, progress=False)
    reuse_s = time.perf_counter() - started
    ok_reuse = again.from_cache and not timed and again.config == tuned.config

    common.print_table(f"{name}: sweep of {len(times)} configs (ms per launch, sweep timing)",
                       ["config", "sweep ms", "tuner ms", "vs best"],
                       [[label, ms, _tuner_ms(tuned, label), f"{ms / times[best_label]:.3f}"]
                        for label, ms in sorted(times.items(), key=lambda kv: kv[1])])
    print(f"\n{name}: tuner picked {pick_label} in {tune_s:.1f} s; sweep best {best_label}; "
          f"pick is {gap:+.2%} off the best (limit {TOLERANCE:.0%}): "
          f"{'PASS' if gap <= TOLERANCE else 'FAIL'}")
    print(f"{name}: second tuning call: from saved record = {again.from_cache}, configs timed = "
          f"{len(timed)}, {reuse_s * 1e3:.1f} ms: {'PASS' if ok_reuse else 'FAIL'}")
    return {"space_size": len(times), "tuner_pick": pick_label, "tuner_ms": tuned.ms,
            "tune_seconds": tune_s, "sweep_best": best_label, "sweep_ms": times,
            "pick_gap": gap, "pick_within_3pct": gap <= TOLERANCE,
            "second_call": {"from_cache": again.from_cache, "configs_timed": len(timed),
                            "seconds": reuse_s, "passed": ok_reuse}}


def _tuner_ms(result, label: str):
    for trial in result.trials:
        if _label(trial.config) == label:
            return trial.ms if trial.ms is not None else "pruned"
    return "-"


def _label(config: dict) -> str:
    return ",".join(f"{k}={v}" for k, v in config.items())


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--m", type=int, default=4096)
    ap.add_argument("--k", type=int, default=7168)
    ap.add_argument("--n", type=int, default=1 << 26, help="copy_nc elements (bf16)")
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    m, k, n = args.m, args.k, args.n
    results = {}

    def act_quant_inputs():
        return {"x": (torch.randn(m, k, device="cuda") * 2).to(torch.bfloat16),
                "y": torch.empty(m, k, dtype=torch.float8_e4m3fn, device="cuda"),
                "s": torch.empty(m, k // 128, device="cuda")}
    sets = rotating_sets(act_quant_inputs, m * k * 3 + m * (k // 128) * 4)
    results["act_quant"] = check(f"act_quant {m}x{k}", os.path.join(EXAMPLES, "act_quant.cdsl"),
                                 (sets[0]["x"],), sets, args.rounds)
    del sets

    def copy_inputs():
        return {"x": torch.randn(n, device="cuda").to(torch.bfloat16),
                "y": torch.empty(n, dtype=torch.bfloat16, device="cuda")}
    sets = rotating_sets(copy_inputs, 4 * n)
    results["copy_nc"] = check(f"copy_nc {n}", os.path.join(EXAMPLES, "copy_nc.cdsl"),
                               (sets[0]["x"],), sets, args.rounds)
    passed = all(r["pick_within_3pct"] and r["second_call"]["passed"] for r in results.values())
    print(f"\nall checks: {'PASS' if passed else 'FAIL'}")
    common.write_results("autotune_check", {"shapes": {"act_quant": [m, k], "copy_nc": [n]},
                                            "tolerance": TOLERANCE, "passed": passed,
                                            **results})


if __name__ == "__main__":
    main()
