"""FP8 block-scaled GEMM: commdsl's model default and tuned config, cuBLAS and DeepGEMM.

1x128 A groups, 128x128 B blocks, bf16 out; all in one run (issue 18):

    python bench/fp8_gemm.py                       # DeepGEMM's 18 shapes and 8192^3
    python bench/fp8_gemm.py --random 8            # and criterion 1's 8 random shapes
    python bench/fp8_gemm.py --no-tune             # the model default and the peers only
    python bench/fp8_gemm.py --shapes 128,2112,7168 --search exhaustive   # criterion 2's
                                                                          # exhaustive best

Per shape, on fresh random data quantized DeepSeek-style:
  model     commdsl.load(fp8_gemm, config="model"): the cost model's config, nothing timed
  tuned     commdsl.autotune over the declared space (pruned by the model, compiled in
            worker processes, successive halving), its wall time kept; a shape tuned before
            on this machine reads the saved choice (--retune times again)
  cuBLAS    torch._scaled_mm with the same blockwise scales
  DeepGEMM  gemm_fp8_fp8_bf16_nt, where its tree is found (bench/deepgemm.py)
Every output is NaN-poisoned, computed and checked against a float64 reference of the
dequantized product before it is timed; each is timed as DeepGEMM's benchmark times (L2
flushed and host cost hidden: common.time_flushed_ms), in three rounds that take the
libraries in turn, each round from another first (the median of the rounds: a clock dip
does not land on one alone, nor the slower last slot of a round on one).
"vs recorded" compares with this device's numbers from before issue 18
(bench/results/before-18: commdsl's best of 7 hand-picked configs, timed without the flush,
so the config compared is timed that way too); "vs before" times that commit's code in this
run instead, flushed as the rest (--before TREE, bench/fp8_gemm_before.py). Every shape is
tuned before any is timed; tuning stops starting after --tune-until seconds, so the run
ends within one device call.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import torch

sys.path.insert(0, os.path.dirname(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests"))
import common  # noqa: E402
import deepgemm  # noqa: E402
import fp8_gemm_report as report  # noqa: E402
from test_fp8_gemm import (FP8_GEMM, mn_major, quantize_a, quantize_b, reference,  # noqa: E402
                           relative_error)

TOLERANCE = 2e-3
ROUNDS = 3
DEVICE = "cuda"


def arguments():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--random", type=int, default=0, metavar="COUNT",
                    help=f"add COUNT random shapes (seed {report.RANDOM_SEED}; criterion 1)")
    ap.add_argument("--no-tune", action="store_true", help="time the model default and peers")
    ap.add_argument("--retune", action="store_true", help="tune even shapes tuned before")
    ap.add_argument("--search", default="auto", choices=["auto", "exhaustive", "halving"])
    ap.add_argument("--tune-until", type=float, default=420.0, metavar="SECONDS",
                    help="start no tuning this long after the run began (default 420)")
    ap.add_argument("--no-deepgemm", action="store_true")
    ap.add_argument("--before", metavar="TREE",
                    help="a tree of commit ac54502 (before issue 18): its fp8_gemm timed at "
                    "M <= 128 in this run, for criterion 5 (bench/fp8_gemm_before.py)")
    ap.add_argument("--recorded", help="an earlier fp8_gemm results file (default: this "
                                       "device's in bench/results/before-18, the numbers "
                                       "before issue 18)")
    args = common.gemm_args(ap, report.SHAPES)
    args.shapes = list(args.shapes) + report.random_shapes(args.random)
    if args.before and not all(os.path.isfile(os.path.join(args.before, *part)) for part in
                               (("pyproject.toml",), ("tests", "test_fp8_gemm.py"))):
        ap.error(f"--before {args.before}: not a commdsl tree with tests/test_fp8_gemm.py; "
                 "make one with `git worktree add /tmp/before ac54502`")
    return args


def checked(run, out, ref) -> dict:
    """The output of `run()` (into `out`) checked: {"rel_err"}, with "error" where wrong."""
    out.fill_(float("nan"))
    try:
        run()
        err = relative_error(out, ref)
    except Exception as e:        # a library that cannot run a shape must not end the run
        err, error = float("nan"), f"{type(e).__name__}: {e}".splitlines()[0]
    else:
        error = None if err <= TOLERANCE else f"relative error {err:.2e} > {TOLERANCE}"
    if error is not None:                            # NaN errors land here too
        print(f"M x N = {tuple(ref.shape)}: {error}; not timed", file=sys.stderr)
        return {"rel_err": err, "error": error}
    return {"rel_err": err}


def timed_together(runs: dict, flops: int, iters: int) -> dict:
    """{name: {"ms", "tflops"}} for each `run()`, timed in ROUNDS rounds that take the runs
    in turn, each from another first run (common.timed_in_rounds)."""
    return {name: {"ms": ms, "tflops": flops / ms / 1e9}
            for name, ms in common.timed_in_rounds(runs, iters, ROUNDS).items()}


def cublas(a, sa, b, sb, out):
    """torch._scaled_mm's DeepSeek recipe: A row-major with 1x128 scales given M-major
    (stride (1, M)), B as a column-major [K, N] with its [N/128, K/128] scales transposed."""
    sa_mn = sa.t().contiguous().t()
    return lambda: torch._scaled_mm(a, b.t(), scale_a=sa_mn, scale_b=sb.t(),
                                    out_dtype=torch.bfloat16, out=out)


def deepgemm_call(dg, a, sa, b, sb, out):
    sa_tma = dg.get_col_major_tma_aligned_tensor(sa)     # its layout, made once
    return lambda: dg.gemm_fp8_fp8_bf16_nt((a, sa_tma), (b, sb), out)


def operands(m: int, n: int, k: int):
    torch.manual_seed(m * 31 + n * 7 + k)
    a, sa = quantize_a(torch.randn(m, k, device=DEVICE))
    b, sb = quantize_b(torch.randn(n, k, device=DEVICE))
    return a, sa, b, sb


def tune(args, ours, started: float):
    """(its entry, the tuned Kernel), or (None, None) where not tuned; `ours` are fp8_gemm's
    operands (A's scales in its layout, DeepGEMM's). Timed later, with the rest."""
    a, b = ours[0], ours[2]
    if args.no_tune:
        return None, None
    if time.perf_counter() - started > args.tune_until:
        print(f"{a.shape[0]}x{b.shape[0]}x{a.shape[1]}: not tuned, past --tune-until "
              f"{args.tune_until:.0f} s", file=sys.stderr)
        return None, None
    import commdsl
    print(f"tuning {a.shape[0]}x{b.shape[0]}x{a.shape[1]} ...", flush=True)
    begin = time.perf_counter()
    try:      # No bars: off a terminal they are a line per config, thousands a shape.
        result = commdsl.autotune(FP8_GEMM, ours, search=args.search,
                                  retune=args.retune, progress=False)
    except commdsl.CommdslError as e:      # one shape's failure must not end the run
        print(f"tuning failed: {e}", file=sys.stderr)
        return {"error": str(e).splitlines()[0]}, None
    entry = {"config": common.config_name(result.config), "tune_s": time.perf_counter() - begin,
             "from_cache": result.from_cache, "tuner_ms": result.ms,
             "configs": len(result.trials),
             "timed": sum(1 for t in result.trials if t.ms is not None),
             # each timed config, for refitting the cost model (the tuner's timing:
             # tune/timer.py, cold L2 as here)
             "trials": [[common.config_name(t.config), t.ms, t.effort]
                        for t in result.trials if t.ms is not None]}
    return entry, result.kernel


def before_numbers(tree: str, shapes: list, iters: int) -> dict[tuple, dict]:
    """{shape: the old commit's best hand-picked config, timed as ours} for the M <= 128
    shapes: bench/fp8_gemm_before.py in a child process, on `tree` installed apart."""
    small = [s for s in shapes if s[0] <= report.SMALL_M]
    if not small:
        return {}
    site = tempfile.mkdtemp(prefix="commdsl-before-")
    installed = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps",
                                "--no-build-isolation", "--target", site, tree],
                               capture_output=True, text=True)
    if installed.returncode:     # the run goes on without the baseline, saying why
        print(f"--before: pip could not install {tree}:\n{installed.stderr[-2000:]}",
              file=sys.stderr)
        return {}
    # The old package first on the path; the run's own (lark's wheel) after it.
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [site] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]))
    script = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fp8_gemm_before.py")
    child = subprocess.run([sys.executable, script, os.path.abspath(tree), str(iters)]
                           + [",".join(map(str, s)) for s in small],
                           env=env, cwd=site, capture_output=True, text=True)
    found = {}
    for line in child.stdout.splitlines():
        if line.startswith("{"):
            e = json.loads(line)
            found[tuple(e["shape"])] = e["before"]
    if child.returncode:
        print(f"--before: the old commit's run failed:\n{child.stderr[-2000:]}", file=sys.stderr)
    return found


def unflushed_tflops(entry: dict | None, run, flops: int, iters: int) -> None:
    """The number "vs recorded" compares: timed as the recorded one was (common.time_ms)."""
    if entry and entry.get("ms"):
        entry["unflushed_tflops"] = flops / common.time_ms(run, iters=iters) / 1e9


def main():
    args = arguments()
    import commdsl
    started = time.perf_counter()
    recorded_path = args.recorded or os.path.join(
        common.RESULTS, "before-18", f"fp8_gemm-{common.device_name()}.json")
    recorded = {}
    if os.path.isfile(recorded_path):
        with open(recorded_path) as f:
            recorded = report.recorded_tflops(json.load(f))
    data = {shape: operands(*shape) for shape in args.shapes}
    outs = {(m, n, k): torch.empty(m, n, dtype=torch.bfloat16, device=DEVICE)
            for m, n, k in args.shapes}
    dg = None if args.no_deepgemm else deepgemm.load()
    peer = {}                                          # shape -> (DeepGEMM's call, its output)
    if dg is not None:
        for shape in args.shapes:
            out = torch.empty_like(outs[shape])
            peer[shape] = deepgemm_call(dg, *data[shape], out), out
        begin = time.perf_counter()
        try:
            deepgemm.warm([run for run, _ in peer.values()])   # nvcc, once per kernel config
        except Exception as e:     # every call is tried again, and checked, per shape below
            print(f"DeepGEMM: {type(e).__name__}: {e}", file=sys.stderr)
        print(f"DeepGEMM compiled in {time.perf_counter() - begin:.0f} s", flush=True)
    model = commdsl.load(FP8_GEMM, config="model")
    # Every shape is tuned before anything is timed: a config timed right after seconds of
    # tuning runs hotter, at lower clocks under the power cap, than one timed after another
    # library's few calls (4096x7168x16384: the same kernel at 1347 and 1400 TFLOP/s).
    tuning = {shape: tune(args, (data[shape][0], mn_major(data[shape][1]), *data[shape][2:]),
                          started) for shape in args.shapes}
    before = before_numbers(args.before, args.shapes, args.iters) if args.before else {}
    entries = []
    for i, (m, n, k) in enumerate(args.shapes):
        a, sa, b, sb = data[(m, n, k)]
        ours = (a, mn_major(sa), b, sb)             # made once, as DeepGEMM's and cuBLAS's
        d, flops = outs[(m, n, k)], 2 * m * n * k
        ref = reference(a, sa, b, sb)
        entry = {"shape": [m, n, k], "recorded_tflops": recorded.get((m, n, k)),
                 "before": before.get((m, n, k))}
        chosen = model.for_shape(M=m, N=n, K=k)
        choice = next(c for sizes, c in model.model_choices.items()
                      if dict(sizes) == {"M": m, "N": n, "K": k})
        entry["tuned"], tuned_kernel = tuning[(m, n, k)]
        runs = {"model": (lambda: chosen(*ours, d=d), d),
                "tuned": (lambda: tuned_kernel(*ours, d=d), d) if tuned_kernel else None,
                "cublas": (cublas(a, sa, b, sb, d), d), "deepgemm": peer.get((m, n, k))}
        entry["model"] = {"config": common.config_name(choice.config), "estimate_ms": choice.ms}
        entry["cublas"], entry["deepgemm"] = {}, {} if runs["deepgemm"] else None
        right = {}
        for name, pair in runs.items():
            if pair is not None:
                entry[name].update(checked(*pair, ref))
                if "error" not in entry[name]:
                    right[name] = pair[0]
        for name, timing in timed_together(right, flops, args.iters).items():
            entry[name].update(timing)
        if entry["recorded_tflops"]:
            which, kernel = (("tuned", tuned_kernel) if (entry["tuned"] or {}).get("ms")
                             else ("model", chosen))
            unflushed_tflops(entry[which], lambda: kernel(*ours, d=d), flops, args.iters)
        entry["ratios"] = report.ratios(entry)
        entries.append(entry)
        del ref
        print(f"[{i + 1}/{len(args.shapes)} {time.perf_counter() - started:.0f} s] "
              + "  ".join(map(common._fmt, _cells(entry)[:7])), flush=True)
    rows = [_cells(e) for e in entries]
    common.print_table("FP8 block-scaled GEMM, TFLOP/s (bf16 out; L2 flushed before each call)",
                       ["M x N x K", "model", "tuned", "cuBLAS", "DeepGEMM", "model/tuned",
                        "commdsl/cuBLAS", "commdsl/DeepGEMM", "vs before", "vs recorded", "tune s",
                        "model config", "tuned config"], rows)
    print("\ncommdsl = the tuned config, or the model default where not tuned; ratios of "
          "TFLOP/s; vs before: the commit before issue 18 (--before), timed in this run as "
          "commdsl is; vs recorded: timed without the flush, as the recorded numbers were")
    results = {"shapes": entries, "criteria": []}
    for name, passed, numbers in report.criteria(entries):
        verdict = {True: "pass", False: "FAIL", None: "-"}[passed]
        print(f"criterion {name}: {verdict} ({numbers})")
        results["criteria"].append({"criterion": name, "passed": passed, "numbers": numbers})
    results["geomean_vs_cublas"] = report.geomean(e["ratios"]["vs_cublas"] for e in entries)
    results["geomean_vs_deepgemm"] = report.geomean(e["ratios"]["vs_deepgemm"]
                                                    for e in entries)
    results["seconds"] = time.perf_counter() - started
    print(f"\nrun took {results['seconds']:.0f} s")
    common.write_results("fp8_gemm", results)


def _cells(e: dict) -> list:
    r = e["ratios"]

    def tflops(key):
        return (e.get(key) or {}).get("tflops", "-")

    def x(v):
        return f"{v:.2f}x" if v else "-"
    tuned = e.get("tuned") or {}
    tune_s = ("cached" if tuned.get("from_cache") else f"{tuned['tune_s']:.0f}"
              if "tune_s" in tuned else "-")
    return ["x".join(map(str, e["shape"])), tflops("model"), tflops("tuned"), tflops("cublas"),
            tflops("deepgemm"), x(r["model_vs_tuned"]), x(r["vs_cublas"]), x(r["vs_deepgemm"]),
            x(r["vs_before"]), x(r["vs_recorded"]), tune_s, e["model"].get("config", "-"),
            tuned.get("config", "-")]


if __name__ == "__main__":
    main()
