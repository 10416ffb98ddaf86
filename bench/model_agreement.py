"""How well the cost model (commdsl/tune/model.py) agrees with recorded GPU timings; CPU only.

    python bench/model_agreement.py            # per recorded shape: the model's pick among
                                               # the recorded configs vs the measured best
    python bench/model_agreement.py --fit      # refit the model's efficiencies to all of it

The data are the per-config timings the benches recorded on an H100 (bench/results):
fp8_gemm's every tile config at 19 shapes (bench/fp8_gemm_sweep.py; before it was run, 7
configs x 11 shapes of an older kernel, before-18/), act_quant's sweeps (28 configs at
4096x7168, 18 at 16384x7168). A config a result names in part takes the source's defaults
for the rest. The fit is one least-squares over every (shape, config) time at once, in log
space, on a coarse grid: a constant that helps one shape and hurts the others does not
survive it.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import re
import sys
from dataclasses import dataclass, replace

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
RESULTS = os.path.join(HERE, "results")
EXAMPLES = os.path.join(ROOT, "examples")


@dataclass
class Shape:
    kernel: str                  # example file stem
    sizes: dict[str, int]
    measured: dict[str, float]   # config label -> ms


def recorded_shapes(device: str = "h100-80gb-hbm3") -> list[Shape]:
    shapes = []
    # fp8_gemm: bench/fp8_gemm_sweep.py's timings of every tile config at each shape, where
    # recorded; else the 7 configs a shape recorded before bench/fp8_gemm.py tuned instead
    # (issue 18), by an older kernel, kept in before-18/.
    sweep = os.path.join(RESULTS, f"fp8_gemm_sweep-{device}.json")
    if os.path.isfile(sweep):
        with open(sweep) as f:
            for entry in json.load(f)["shapes"]:
                m, n, k = entry["shape"]
                shapes.append(Shape("fp8_gemm", {"M": m, "N": n, "K": k}, entry["ms"]))
    else:
        with open(os.path.join(RESULTS, "before-18", f"fp8_gemm-{device}.json")) as f:
            for entry in json.load(f)["shapes"]:
                m, n, k = entry["shape"]
                shapes.append(Shape("fp8_gemm", {"M": m, "N": n, "K": k},
                                    {c: r["ms"] for c, r in entry["commdsl"].items()}))
    with open(os.path.join(RESULTS, f"act_quant-{device}.json")) as f:
        data = json.load(f)
        m, k = data["shape"]
        shapes.append(Shape("act_quant", {"M": m, "K": k},
                            {c: r["ms"] for c, r in data["commdsl"].items()}))
    with open(os.path.join(RESULTS, f"autotune_check-{device}.json")) as f:
        data = json.load(f)
        m, k = data["shapes"]["act_quant"]
        shapes.append(Shape("act_quant", {"M": m, "K": k}, data["act_quant"]["sweep_ms"]))
    return shapes


def parse_label(label: str) -> dict:
    """'ROWS=16,WARPS=8,XC=cache(nc, L2 = 256B)' -> constants (a cache policy's own commas
    stay inside its parentheses)."""
    return {name: value if value.startswith("cache(") else int(value) for name, value in
            re.findall(r"(\w+)=(cache\([^)]*\)|[^,]+)", label)}


class Model:
    """The cost model over the recorded configs, each profiled once."""

    def __init__(self):
        from commdsl.target import get_target
        from commdsl.tune.machine import H100
        self.machine, self.limits = H100, get_target("sm_90a")
        self.profiles = {}

    def estimate(self, shape: Shape, label: str, machine=None):
        from commdsl.tune.model import estimate
        from commdsl.tune.profile import profile
        key = (shape.kernel, label)
        if key not in self.profiles:
            path = os.path.join(EXAMPLES, f"{shape.kernel}.cdsl")
            with open(path) as f:
                text = f.read()
            self.profiles[key] = profile(text, path, None, parse_label(label), "sm_90a")
        return estimate(self.profiles[key], shape.sizes, machine or self.machine, self.limits)

    def defaults(self, kernel: str) -> dict:
        from commdsl.check import check_signature
        from commdsl.parser import parse
        path = os.path.join(EXAMPLES, f"{kernel}.cdsl")
        with open(path) as f:
            return check_signature(parse(f.read(), path).kernels[0], {}).constants


def agreement(model: Model, shapes: list[Shape], machine=None) -> list[dict]:
    """Per shape: the model's pick among the recorded configs (as commdsl picks: near-ties
    keep the source's defaults) against the measured best."""
    from commdsl.tune.model_choice import pick
    rows = []
    for shape in shapes:
        estimates = {c: model.estimate(shape, c, machine) for c in shape.measured}
        chosen = pick(list(estimates.values()), model.defaults(shape.kernel))
        label = next(c for c, e in estimates.items() if e is chosen)
        best = min(shape.measured, key=shape.measured.get)
        rows.append({"kernel": shape.kernel, "sizes": shape.sizes, "pick": label, "best": best,
                     "slowdown": shape.measured[label] / shape.measured[best],
                     "estimate_ms": chosen.seconds * 1e3, "measured_ms": shape.measured[label],
                     "terms": chosen.terms()})
    return rows


def log_error(model: Model, shapes: list[Shape], machine) -> float:
    errors = [math.log(model.estimate(s, c, machine).seconds * 1e3 / ms) ** 2
              for s in shapes for c, ms in s.measured.items()]
    return math.sqrt(sum(errors) / len(errors))


GRID = {"mma_efficiency": [0.5, 0.55, 0.6, 0.65, 0.7, 0.75],
        "unoverlapped_promotion": [0.8, 0.85, 0.9, 0.95, 1.0],
        "direct_store_bytes_per_s": [5e9, 10e9, 15e9, 20e9, 30e9],
        "sm_load_bytes_per_s": [40e9, 50e9, 60e9, 70e9, 80e9, 90e9, 100e9, 120e9],
        "cluster_efficiency": [0.85, 0.88, 0.9, 0.92, 0.95, 1.0],
        "memory_latency_s": [0.5e-6, 0.75e-6, 1.0e-6, 1.5e-6, 2e-6, 3e-6],
        "load_latency_s": [0.5e-6, 0.75e-6, 1.0e-6, 1.5e-6],
        "unit_overhead_s": [0.5e-6, 1e-6, 2e-6, 3e-6],
        "launch_s": [3e-6, 6e-6, 9e-6, 12e-6],
        "memory_overlap_norm": [3.0, 4.0, 6.0, 8.0, 16.0],
        "oob_bytes_per_s": [1e12, 1.5e12, 2e12, 2.5e12, 3e12, 4e12, 6e12]}


def fit(model: Model, shapes: list[Shape]):
    """The grid point of least error, found one rate at a time (each the best of its values
    with the others held) until a round changes none: the whole grid is too many points for
    thousands of recorded times."""
    machine, error = model.machine, log_error(model, shapes, model.machine)
    for _ in range(6):
        changed = False
        for name, values in GRID.items():
            for value in values:
                trial = replace(machine, **{name: value})
                trial_error = log_error(model, shapes, trial)
                if trial_error < error - 1e-9:
                    machine, error, changed = trial, trial_error, True
        if not changed:
            break
    return error, machine


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--fit", action="store_true", help="refit the fitted rates on a grid")
    args = p.parse_args(argv)
    model, shapes = Model(), recorded_shapes()
    machine = model.machine
    if args.fit:
        error, machine = fit(model, shapes)
        print("fitted: " + ", ".join(f"{name}={getattr(machine, name):g}" for name in GRID))
    print(f"rms log error of every recorded time: {log_error(model, shapes, machine):.3f}")
    print(f"{'kernel':<10} {'shape':<22} {'model pick':<44} {'measured best':<44} slowdown")
    for row in agreement(model, shapes, machine):
        shape = "x".join(str(v) for v in row["sizes"].values())
        print(f"{row['kernel']:<10} {shape:<22} {row['pick']:<44} {row['best']:<44} "
              f"{row['slowdown']:.3f}")
    return 0


if __name__ == "__main__":
    sys.path.insert(0, ROOT)
    sys.exit(main())
