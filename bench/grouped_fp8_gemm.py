"""Grouped FP8 GEMM, DeepGEMM's m-grouped contiguous layout (examples/grouped_fp8_gemm.cdsl)
and masked layout (examples/grouped_fp8_gemm_masked.cdsl), vs DeepGEMM's own grouped kernels
and a loop of torch._scaled_mm (cuBLAS, DeepSeek's blockwise scales) over the groups' rows,
in one run.

    python bench/grouped_fp8_gemm.py [--iters 30]

DeepGEMM's test shapes: contiguous, 4 groups of ~8192 rows and 8 of ~4096 (each 0.7-1.3x at
random, padded to 128); masked (decoding), 1 group of ~1024 valid rows, 2 of ~512 and 4 of
~256 (0.7-1.3x at random) of M_max = 4096 each; N x K = 4096 x 7168 and 7168 x 2048. Each
commdsl config of a small list is checked (DeepGEMM's calc_diff < 1e-3 per group against
float64, padding rows and rows past a group's count untouched) and timed; the fastest
correct one is reported. TFLOP/s count the valid rows only. Every library is timed as
DeepGEMM's benchmark times it (common.time_flushed_ms: L2 flushed before each call), each
output checked first; the configs and the peers of a setup are timed together, in rounds that
take them in turn from another first each time (common.timed_in_rounds). DeepGEMM is timed
where its tree is on the machine (bench/deepgemm.py).
"""
from __future__ import annotations

import argparse
import math
import os
import random
import sys

import torch

sys.path.insert(0, os.path.dirname(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests"))
import common  # noqa: E402
import deepgemm  # noqa: E402
from grouped_layout import ALIGN, grouped_operands, grouped_reference  # noqa: E402
from grouped_layout import masked_operands, masked_reference  # noqa: E402
from test_fp8_gemm import mn_major  # noqa: E402


GROUPED = os.path.join(os.path.dirname(__file__), "..", "examples", "grouped_fp8_gemm.cdsl")
MASKED = os.path.join(os.path.dirname(__file__), "..", "examples", "grouped_fp8_gemm_masked.cdsl")
SETUPS = [(4, 8192, 4096, 7168), (4, 8192, 7168, 2048), (8, 4096, 4096, 7168),
          (8, 4096, 7168, 2048)]
CONFIGS = [dict(BM=128, BN=128, STAGES=5, GROUP=8), dict(BM=128, BN=128, STAGES=6, GROUP=8),
           dict(BM=128, BN=128, STAGES=5, GROUP=8, CLUSTER=2),
           dict(BM=128, BN=128, STAGES=6, GROUP=16, CLUSTER=2)]
# (groups, expected valid rows per group, N, K); every group M_MAX rows
MASKED_SETUPS = [(groups, expected, n, k) for groups, expected in ((1, 1024), (2, 512), (4, 256))
                 for n, k in ((4096, 7168), (7168, 2048))]
M_MAX = 4096
MASKED_CONFIGS = [dict(BM=128, BN=128, STAGES=5, GROUP=8), dict(BM=64, BN=128, STAGES=6, GROUP=8),
                  dict(BM=192, BN=128, STAGES=4, GROUP=8), dict(BM=256, BN=128, STAGES=3, GROUP=8)]
CUBLAS_ROWS = 16         # the cuBLAS loop's row blocks: valid rows rounded up to whole 16s


def calc_diff(x, y):
    x, y = x.double(), y.double()
    return (1 - 2 * (x * y).sum() / (x * x + y * y).sum()).item()


def cublas_loop(a, sa, b, sb, m_idx, rows):
    """(run, out): torch._scaled_mm per group on its 128-aligned row block."""
    blocks, start = [], 0
    for g, r in enumerate(rows):
        padded = -(-r // ALIGN) * ALIGN
        blocks.append((g, start, start + padded))
        start += padded
    out = torch.empty(a.shape[0], b.shape[1], dtype=torch.bfloat16, device="cuda")
    args = [(a[s:e], sa[s:e].t().contiguous().t(), b[g].t(), sb[g].t(), out[s:e])
            for g, s, e in blocks]

    def run():
        for x, xs, w, ws, o in args:
            torch._scaled_mm(x, w, scale_a=xs, scale_b=ws, out_dtype=torch.bfloat16, out=o)
    return run, out


def deepgemm_contiguous(dg, a, sa, b, sb, m_idx):
    """(run, out): one call of DeepGEMM's contiguous kernel, its scale layout made once."""
    sa_tma = dg.get_col_major_tma_aligned_tensor(sa)
    out = torch.empty(a.shape[0], b.shape[1], dtype=torch.bfloat16, device="cuda")
    return (lambda: dg.m_grouped_gemm_fp8_fp8_bf16_nt_contiguous((a, sa_tma), (b, sb), out,
                                                                  m_idx)), out


def check_peer(run, out, ref, m_idx, rows) -> float:
    """A peer's calc_diff, its output checked as commdsl's is."""
    run()
    return max(calc_diff(out[m_idx == g], ref[m_idx == g]) for g in range(len(rows)) if rows[g])


def timed_if_right(runs: dict, diffs: dict, flops: int, iters: int) -> dict:
    """{name: JSON entry} of each run: those with calc_diff < 1e-3 timed together
    (common.timed_in_rounds: in rounds that take them in turn), the others not timed."""
    right = {name: run for name, run in runs.items() if diffs[name] < 1e-3}
    ms = common.timed_in_rounds(right, iters)
    return {name: {"ms": ms[name], "tflops": flops / ms[name] / 1e9, "calc_diff": diffs[name]}
            if name in ms else
            {"calc_diff": diffs[name], "error": "calc_diff >= 1e-3: not timed"}
            for name in runs}


# ---- masked layout -------------------------------------------------------------------------

def masked_diff(out, ref, counts) -> float:
    """The worst group's calc_diff over its valid rows."""
    return max(calc_diff(out[g, :c], ref[g, :c]) for g, c in enumerate(counts) if c)


def rows_past_counts_untouched(out, counts) -> bool:
    return all(bool(out[g, c:].isnan().all()) for g, c in enumerate(counts))


def cublas_masked_loop(a, sa, b, sb, counts):
    """(run, out): torch._scaled_mm per group on its valid rows, rounded up to CUBLAS_ROWS
    (the scale layout's alignment); the rows past the count it computes are not counted."""
    out = torch.empty(a.shape[0], a.shape[1], b.shape[1], dtype=torch.bfloat16, device="cuda")
    args = []
    for g, c in enumerate(counts):
        rows = min(-(-c // CUBLAS_ROWS) * CUBLAS_ROWS, a.shape[1])
        if rows:
            args.append((a[g, :rows], sa[g, :rows].t().contiguous().t(), b[g].t(), sb[g].t(),
                         out[g, :rows]))

    def run():
        for x, xs, w, ws, o in args:
            torch._scaled_mm(x, w, scale_a=xs, scale_b=ws, out_dtype=torch.bfloat16, out=o)
    return run, out


def deepgemm_masked(dg, a, sa, b, sb, masked_m, expected):
    """(run, out): one call of DeepGEMM's masked kernel, its scale layout made once."""
    sa_tma = dg.get_col_major_tma_aligned_tensor(sa)
    out = torch.empty(a.shape[0], a.shape[1], b.shape[1], dtype=torch.bfloat16, device="cuda")
    return (lambda: dg.m_grouped_gemm_fp8_fp8_bf16_nt_masked((a, sa_tma), (b, sb), out,
                                                             masked_m, expected)), out


def masked_setups(rng):
    """(expected, counts, n, k, operands) per setup of MASKED_SETUPS."""
    setups = []
    for groups, expected, n, k in MASKED_SETUPS:
        counts = [int(expected * rng.uniform(0.7, 1.3)) for _ in range(groups)]
        setups.append((expected, counts, n, k, masked_operands(
            counts, M_MAX, n, k, seed=groups + n, device="cuda")))
    return setups


def bench_masked(dg, rng, iters):
    """(JSON entries, table rows) of the masked setups."""
    kernels = common.ConfigKernels(MASKED)
    setups = masked_setups(rng)
    peer_calls = ([deepgemm_masked(dg, *ops, expected) for expected, *_, ops in setups]
                  if dg else None)
    if peer_calls:
        deepgemm.warm([run for run, _ in peer_calls])
    entries, table = [], []
    for i, (expected, counts, n, k, (a, sa, b, sb, masked_m)) in enumerate(setups):
        ref = masked_reference(a, sa, b, sb, masked_m)
        flops = 2 * sum(counts) * n * k
        d = torch.empty(a.shape[0], M_MAX, n, dtype=torch.bfloat16, device="cuda")
        sa_t = mn_major(sa)                 # A's scales in its layout, made once as DeepGEMM's
        entry = {"groups": len(counts), "rows": counts, "m_max": M_MAX, "n": n, "k": k,
                 "commdsl": {}}
        runs, diffs, untouched = {}, {}, {}
        for config in MASKED_CONFIGS:
            kernel = kernels(config)
            d.fill_(float("nan"))
            kernel(a, sa_t, b, sb, masked_m, d=d)
            name = common.config_name(config)
            diffs[name] = masked_diff(d, ref, counts)
            untouched[name] = rows_past_counts_untouched(d, counts)
            runs[name] = lambda kernel=kernel: kernel(a, sa_t, b, sb, masked_m, d=d)
        loop, loop_out = cublas_masked_loop(a, sa, b, sb, counts)
        try:
            loop()
        except RuntimeError as e:          # cuBLAS's blockwise scaling may refuse a row count
            entry["cublas_loop"] = {"error": f"{type(e).__name__}: {e}"}
        else:
            runs["cublas_loop"], diffs["cublas_loop"] = loop, masked_diff(loop_out, ref, counts)
        if peer_calls:
            run, out = peer_calls[i]
            run()
            runs["deepgemm"], diffs["deepgemm"] = run, masked_diff(out, ref, counts)
        table.append(_record(entry, runs, diffs, untouched, "rows_past_count_untouched", flops,
                             iters, f"{len(counts)} x ~{expected} of {M_MAX}, {n}x{k}"))
        entries.append(entry)
    return entries, table


def _table_row(label, flops, best, loop_ms, dg_ms) -> list:
    def tflops(ms):
        return flops / ms / 1e9 if ms else "-"

    def ratio(ms):
        return f"{ms / best[1]:.2f}x" if ms and best else "-"
    if best is None:
        return [label, "-", "no correct config", tflops(loop_ms), tflops(dg_ms), "-", "-"]
    return [label, tflops(best[1]), best[0], tflops(loop_ms), tflops(dg_ms), ratio(loop_ms),
            ratio(dg_ms)]


def _record(entry: dict, runs: dict, diffs: dict, untouched: dict, key: str, flops: int,
            iters: int, label: str) -> list:
    """Times a setup's right runs together into `entry` (commdsl's configs, named in
    `untouched`, under entry["commdsl"] with their rows-left-alone check as `key`; the peers
    beside) with the best config and its ratios; returns its table row."""
    for name, result in timed_if_right(runs, diffs, flops, iters).items():
        if name in untouched:
            result[key] = untouched[name]
            entry["commdsl"][name] = result
        else:
            entry[name] = result
    best = _best(entry["commdsl"], key)
    loop_ms = entry["cublas_loop"].get("ms")
    dg_ms = entry.get("deepgemm", {}).get("ms")
    entry["best"] = None if best is None else {
        "config": best[0], "ms": best[1], "tflops": flops / best[1] / 1e9,
        "ratio": loop_ms / best[1] if loop_ms else None,
        "ratio_deepgemm": dg_ms / best[1] if dg_ms else None}
    return _table_row(label, flops, best, loop_ms, dg_ms)


def _best(configs: dict, untouched: str):
    """(name, ms) of the fastest config that was right and left its untouched rows so, or
    None."""
    right = [(name, r["ms"]) for name, r in configs.items() if "ms" in r and r[untouched]]
    return min(right, key=lambda c: c[1]) if right else None


def geomean(ratios) -> float:
    ratios = list(ratios)
    return math.exp(sum(map(math.log, ratios)) / len(ratios)) if ratios else float("nan")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--iters", type=int, default=30)
    args = ap.parse_args()
    rng = random.Random(0)
    dg = deepgemm.load()
    kernels = common.ConfigKernels(GROUPED)
    results, rows_out = {"setups": []}, []
    setups = []
    for groups, expected, n, k in SETUPS:
        rows = [int(expected * rng.uniform(0.7, 1.3)) for _ in range(groups)]
        setups.append((expected, rows, n, k,
                       grouped_operands(rows, n, k, seed=groups + n, device="cuda")))
    peer_calls = [deepgemm_contiguous(dg, *ops) for *_, ops in setups] if dg else None
    if peer_calls:
        deepgemm.warm([run for run, _ in peer_calls])      # nvcc, once per kernel config
    for i, (expected, rows, n, k, (a, sa, b, sb, m_idx)) in enumerate(setups):
        groups = len(rows)
        ref = grouped_reference(a, sa, b, sb, m_idx)
        flops = 2 * sum(rows) * n * k
        d = torch.empty(a.shape[0], n, dtype=torch.bfloat16, device="cuda")
        sa_t = mn_major(sa)                 # A's scales in its layout, made once as DeepGEMM's
        entry = {"groups": groups, "rows": rows, "n": n, "k": k, "commdsl": {}}
        runs, diffs, untouched = {}, {}, {}
        for config in CONFIGS:
            kernel = kernels(config)
            d.fill_(float("nan"))
            kernel(a, sa_t, b, sb, m_idx, d=d)
            name = common.config_name(config)
            diffs[name] = max(calc_diff(d[m_idx == g], ref[m_idx == g]) for g in range(groups))
            untouched[name] = bool(d[m_idx < 0].isnan().all())
            runs[name] = lambda kernel=kernel: kernel(a, sa_t, b, sb, m_idx, d=d)
        loop = cublas_loop(a, sa, b, sb, m_idx, rows)
        runs["cublas_loop"], diffs["cublas_loop"] = loop[0], check_peer(*loop, ref, m_idx, rows)
        if peer_calls:
            runs["deepgemm"] = peer_calls[i][0]
            diffs["deepgemm"] = check_peer(*peer_calls[i], ref, m_idx, rows)
        rows_out.append(_record(entry, runs, diffs, untouched, "padding_untouched", flops,
                                args.iters, f"{groups} x ~{expected}, {n}x{k}"))
        results["setups"].append(entry)
    results["geomean_ratio"] = geomean(e["best"]["ratio"] for e in results["setups"]
                                       if e["best"] and e["best"]["ratio"])
    results["geomean_ratio_deepgemm"] = geomean(e["best"]["ratio_deepgemm"]
                                                for e in results["setups"]
                                                if e["best"] and e["best"]["ratio_deepgemm"])
    columns = ["groups, N x K", "commdsl", "config", "cuBLAS loop", "DeepGEMM",
               "commdsl / cuBLAS loop", "commdsl / DeepGEMM"]
    common.print_table("grouped FP8 GEMM (contiguous layout), TFLOP/s of valid rows, L2 flushed",
                       columns, rows_out)
    results["masked"], masked_rows = bench_masked(dg, rng, args.iters)
    results["masked_geomean_ratio_deepgemm"] = geomean(
        e["best"]["ratio_deepgemm"] for e in results["masked"]
        if e["best"] and e["best"]["ratio_deepgemm"])
    common.print_table("grouped FP8 GEMM (masked layout), TFLOP/s of valid rows, L2 flushed",
                       columns, masked_rows)
    common.write_results("grouped_fp8_gemm", results)


if __name__ == "__main__":
    main()
