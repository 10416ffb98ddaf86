"""A PNG beside each bench's JSON: the chart is read from the results alone, so every bench
gets one from common.write_results, and old results can be drawn again:

    python bench/plot.py bench/results/*.json

Memory-bound kernels: GB/s of commdsl and its peers against the device-to-device copy
ceiling (the MoE exchange: against the copy engine into the peer). GEMMs: TFLOP/s by shape,
commdsl's best config against cuBLAS (fp8_gemm: its model default and tuned config against
cuBLAS and DeepGEMM; its sweep: the best, median and default tile by shape).
Communication-aware compute (overlap): each side's
throughput together over alone, by the stand-in's SM count; a GEMM fused with its
communication by signals (ag_gemm, gemm_rs): microseconds of each side alone, both fused, and
one after the other, by shape; FP8 GEMM's error against float64 by method (precision). The
launch overhead, compile
times and the autotuner check get bars of their own numbers. matplotlib is optional
(`pip install 'commdsl[plots]'`): without it a bench prints one line and writes no PNG.
"""
from __future__ import annotations

import json
import math
import os
import sys
from dataclasses import dataclass


@dataclass
class Chart:
    title: str
    unit: str                             # the y axis
    groups: dict[str, dict[str, float]]   # x label -> series -> value
    line: tuple[str, float] | None = None  # a ceiling drawn across: (label, value)
    log: bool = False                     # values spanning decades


def chart(payload: dict) -> Chart | None:
    """The chart for a bench's results, or None where no kind below fits them."""
    for make in (_gemm, _sweep, _overlap, _overlap_multi, _moe, _split_kv, _bandwidth,
                 _launch, _autotune, _compile_time, _fused, _precision, _grouped, _attention):
        found = make(payload)
        if found is not None:
            return found
    return None


def _on(payload: dict) -> str:
    return f"{payload.get('benchmark', 'bench')} on {payload.get('device', '?')}"


def _gemm(payload: dict) -> Chart | None:
    shapes = payload.get("shapes")
    if not isinstance(shapes, list) or not all("cublas" in e for e in shapes):
        return None
    groups = {}
    for e in shapes:
        if "model" in e:                   # bench/fp8_gemm.py since issue 18
            series = {"commdsl, model default": "model", "commdsl, tuned": "tuned",
                      "cuBLAS": "cublas", "DeepGEMM": "deepgemm"}
            bars = {name: (e.get(key) or {}).get("tflops", math.nan)
                    for name, key in series.items()}
        else:
            bars = {"commdsl (best config)": e["best"]["tflops"] if e.get("best") else math.nan,
                    "cuBLAS": e["cublas"]["tflops"]}
        groups["x".join(map(str, e["shape"]))] = bars
    return Chart(f"{_on(payload)}: TFLOP/s by shape (M x N x K)", "TFLOP/s", groups)


def _sweep(payload: dict) -> Chart | None:
    """fp8_gemm_sweep: TFLOP/s by shape of the best tile config, the median one and the
    source's default tile."""
    shapes = payload.get("shapes")
    if payload.get("benchmark") != "fp8_gemm_sweep" or not isinstance(shapes, list):
        return None
    default = "BM=128,BN=128,STAGES=5,CLUSTER=1"
    groups = {}
    for e in shapes:
        if not e["ms"]:
            continue
        m, n, k = e["shape"]
        tflops = sorted(2 * m * n * k / ms / 1e9 for ms in e["ms"].values())
        groups["x".join(map(str, e["shape"]))] = {
            "best tile": tflops[-1], "median tile": tflops[len(tflops) // 2],
            "128 x 128, 5 stages": 2 * m * n * k / e["ms"][default] / 1e9
            if default in e["ms"] else math.nan}
    return Chart(f"{_on(payload)}: every BM x BN x STAGES x CLUSTER", "TFLOP/s (log)", groups,
                 log=True)                  # M = 1 to 8192: 1 to 1400 TFLOP/s


def _overlap(payload: dict) -> Chart | None:
    """GEMM and stand-in throughput together / alone by N, for DeepEP's loads (for the first
    policy run where those were not); the GEMM's target drawn across. The table in
    docs/overlap.md has every load policy."""
    runs = payload.get("runs")
    if not isinstance(runs, list) or not runs or "deepep_policy" not in payload:
        return None
    policies = [r["policy"] for r in runs]
    deepep = payload["deepep_policy"]
    policy = deepep if deepep in policies else policies[0]
    groups: dict[str, dict[str, float]] = {}
    for r in runs:
        if r["policy"] == policy:
            shape = "x".join(map(str, r["shape"]))
            bars = groups.setdefault(f"N = {r['n']}", {})
            bars[f"GEMM {shape}"] = 100 * r["gemm_ratio"]
            bars[f"stand-in beside {shape}"] = 100 * r["standin_ratio"]
    loads = "DeepEP's" if policy == deepep else policy
    return Chart(f"{_on(payload)}: together / alone, {loads} loads", "% of alone", groups,
                 ("GEMM target", 100 * payload["targets"]["gemm"]))


def _fused(payload: dict) -> Chart | None:
    """ag_gemm / gemm_rs: each side alone, fused and in sequence, in microseconds by shape."""
    if not isinstance(payload.get("ag_gemm"), list) or "gemm_rs" not in payload:
        return None
    groups: dict[str, dict[str, float]] = {}
    for name in ("ag_gemm", "gemm_rs"):
        for r in payload[name]:
            groups[f"{name} {'x'.join(map(str, r['shape']))}"] = {
                "communication alone": 1e3 * r["producer_ms"], "GEMM alone": 1e3 * r["gemm_ms"],
                "fused": 1e3 * r["fused_ms"], "in sequence": 1e3 * r["sequential_ms"]}
    return Chart(f"{_on(payload)}: fused by signals vs in sequence", "us", groups)


def _precision(payload: dict) -> Chart | None:
    """FP8 GEMM's error against float64 by K and data, per method (log scale)."""
    runs = payload.get("runs")
    if payload.get("benchmark") != "precision" or not isinstance(runs, list):
        return None
    groups = {f"K = {r['k']}, {r['data']}": {name: e["normwise"]
                                              for name, e in r["errors"].items()}
              for r in runs}
    return Chart(f"{_on(payload)}: FP8 GEMM max |d - ref| / max |ref|, f32 out",
                 "error (log)", groups, log=True)


def _grouped(payload: dict) -> Chart | None:
    """Grouped GEMM: TFLOP/s of valid rows by setup, contiguous layout and (where the run
    has them) masked: commdsl's best config, a cuBLAS loop and DeepGEMM where they were
    timed and right."""
    setups = payload.get("setups")
    if not isinstance(setups, list) or not setups or "cublas_loop" not in setups[0]:
        return None
    groups = {}
    for layout, entries in (("contiguous", setups), ("masked", payload.get("masked", []))):
        for e in entries:
            bars = {}
            for peer, name in (("cublas_loop", "cuBLAS loop"), ("deepgemm", "DeepGEMM")):
                if (e.get(peer) or {}).get("tflops"):
                    bars[name] = e[peer]["tflops"]
            if e.get("best"):
                bars["commdsl (best config)"] = e["best"]["tflops"]
            groups[f"{layout} {e['groups']} x ~{max(e['rows'])}, {e['n']}x{e['k']}"] = bars
    layouts = "contiguous and masked layouts" if payload.get("masked") else "contiguous layout"
    return Chart(f"{_on(payload)}: grouped FP8 GEMM, {layouts}", "TFLOP/s", groups)


def _attention(payload: dict) -> Chart | None:
    """Attention: TFLOP/s by shape, commdsl's best config and each torch SDPA backend."""
    shapes = payload.get("shapes")
    if not isinstance(shapes, list) or not shapes or "torch" not in shapes[0]:
        return None
    groups = {}
    for e in shapes:
        bars = {f"torch {name}": r["tflops"] for name, r in e["torch"].items() if "tflops" in r}
        if e.get("best"):
            bars["commdsl (best config)"] = e["best"]["tflops"]
        groups[" x ".join(map(str, e["shape"])) + (", causal" if e.get("causal") else "")] = bars
    return Chart(f"{_on(payload)}: attention forward, TFLOP/s by BH x L x D", "TFLOP/s", groups)


def _moe(payload: dict) -> Chart | None:
    ranks = payload.get("ranks")
    if not isinstance(ranks, list) or not ranks or "copy_engine_gbs" not in ranks[0]:
        return None
    groups = {}
    for name in ("dispatch", "dispatch_fp8", "combine"):
        if name not in ranks[0]:
            continue                                 # results from before FP8 was timed
        bars = {"commdsl": min(r[name]["gbs"] for r in ranks)}
        if "ceilings" in ranks[0]:
            bars["SMs' pull ceiling, same SMs"] = min(r["ceilings"][name]["pull_gbs"]
                                                      for r in ranks)
        bars["NCCL all_to_all (bus bw)"] = min(r[name]["nccl_busbw_gbs"] for r in ranks)
        groups[name] = bars
    return Chart(f"{_on(payload)}, {len(ranks)} ranks: the slowest rank", "GB/s per direction",
                 groups, ("copy engine into the peer", min(r["copy_engine_gbs"] for r in ranks)))


def _overlap_multi(payload: dict) -> Chart | None:
    """overlap_multi: what the GEMM and the dispatch keep together of their speed alone."""
    summary = payload.get("summary")
    if payload.get("benchmark") != "overlap_multi" or not isinstance(summary, dict):
        return None
    targets = payload.get("targets", {})
    bars = {f"fp8_gemm (needs {targets.get('gemm', 0):.2f})": summary["gemm_kept"],
            f"moe_dispatch (needs {targets.get('dispatch', 0):.2f})": summary["dispatch_kept"]}
    return Chart(f"{_on(payload)}, {len(payload.get('ranks', []))} ranks: together / alone "
                 "(slowest rank)", "kept", {"": bars})


def _split_kv(payload: dict) -> Chart | None:
    """MLA decoding at small batches: KV GB/s of mla_decode alone and of the fastest correct
    split + combine, against the copy ceiling."""
    cases = payload.get("cases")
    if "copy_gbs" not in payload or not cases or "split" not in cases[0]:
        return None
    groups = {}
    for e in cases:
        kv = e["batch"] * e["length"] * 576 * 2
        split = [r["ms"] for r in e["split"].values() if r.get("correct")]
        groups[f"B={e['batch']}, S={e['s_q']}, L={e['length']}"] = {
            "mla_decode": kv / e["whole"]["ms"] / 1e6,
            "split + combine (best)": kv / min(split) / 1e6 if split else math.nan}
    return Chart(f"{_on(payload)}: KV bandwidth", "GB/s of KV cache", groups,
                 ("device-to-device copy", payload["copy_gbs"]))


def _bandwidth(payload: dict) -> Chart | None:
    if "copy_gbs" not in payload:
        return None
    if "summary" in payload:          # several kernels, each against torch
        torch = payload.get("torch", {})
        groups = {name: {"commdsl": best["gbs"],
                         **({"torch": torch[name]["gbs"]} if "gbs" in torch.get(name, {})
                            else {})}
                  for name, best in payload["summary"].items()}
    else:
        best = payload["commdsl_best"]
        shape = "x".join(map(str, payload.get("shape", [])))
        groups = {shape: {f"commdsl ({best['config']})": best["gbs"],
                          **payload.get("peers", {})}}
    return Chart(f"{_on(payload)}: bandwidth", "GB/s (bytes read + written)", groups,
                 ("device-to-device copy", payload["copy_gbs"]))


def _launch(payload: dict) -> Chart | None:
    if "host_us_per_launch" not in payload:
        return None
    return Chart(f"{_on(payload)}: host time per launch", "us per launch",
                 {"x".join(map(str, payload.get("shape", []))): payload["host_us_per_launch"]})


def _autotune(payload: dict) -> Chart | None:
    kernels = {k: v for k, v in payload.items() if isinstance(v, dict) and "sweep_ms" in v}
    if not kernels:
        return None
    groups = {name: {"the tuner's pick": k["tuner_ms"],
                     "best of the full sweep": k["sweep_ms"][k["sweep_best"]]}
              for name, k in kernels.items()}
    return Chart(f"{_on(payload)}: the tuner's pick vs a full sweep", "ms", groups)


def _compile_time(payload: dict) -> Chart | None:
    seconds = {k[:-2].replace("_", " "): v for k, v in payload.items()
               if k.endswith("_s") and isinstance(v, (int, float))}
    if not seconds:
        return None
    return Chart(f"{_on(payload)}: {payload.get('kernel', '')} compile and load times",
                 "seconds", {"": seconds}, log=True)


def draw(c: Chart, path: str) -> None:
    """Grouped bars, one colour a series (one group: a bar a series, labelled below it)."""
    from matplotlib.figure import Figure    # no pyplot: no backend chosen for the caller
    series = list(dict.fromkeys(s for bars in c.groups.values() for s in bars))
    single = len(c.groups) == 1
    count = len(series) if single else len(c.groups) * len(series)
    # no wider than a screen: past that, thinner bars
    fig = Figure(figsize=(min(24.0, max(6.0, 1.5 + 0.55 * count)), 4.2), layout="constrained")
    ax = fig.subplots()
    if single:
        (bars,) = c.groups.values()
        drawn = ax.bar(range(len(bars)), list(bars.values()),
                       color=[f"C{i}" for i in range(len(bars))])
        ax.bar_label(drawn, labels=[_number(v) for v in bars.values()], fontsize=8)
        ax.set_xticks(range(len(bars)), list(bars), rotation=20, ha="right")
    else:
        width = 0.8 / len(series)
        for i, name in enumerate(series):
            at = [g + (i - (len(series) - 1) / 2) * width for g in range(len(c.groups))]
            values = [bars.get(name, math.nan) for bars in c.groups.values()]
            drawn = ax.bar(at, values, width, label=name, color=f"C{i}")
            ax.bar_label(drawn, labels=[_number(v) for v in values], fontsize=7)
        ax.set_xticks(range(len(c.groups)), list(c.groups),
                      rotation=30 if len(c.groups) > 4 else 0, ha="right" if len(c.groups) > 4
                      else "center")
    if c.line is not None:
        label, value = c.line
        ax.axhline(value, color="black", linestyle="--", linewidth=1,
                   label=f"{label}: {value:.4g}")
    # Headroom above the tallest bar or the ceiling, for the legend in one row.
    top = max([v for bars in c.groups.values() for v in bars.values() if not math.isnan(v)] +
              ([c.line[1]] if c.line else []))
    if c.log:
        ax.set_yscale("log")
        ax.set_ylim(top=top * 4)
    else:
        ax.set_ylim(0, top * 1.2)
    if c.line is not None or not single:
        ax.legend(fontsize=8, loc="upper left", ncols=3)
    ax.set_ylabel(c.unit)
    ax.set_title(c.title, fontsize=10)
    fig.savefig(path, dpi=100)


def _number(v: float) -> str:
    return "" if math.isnan(v) else f"{v:.0f}" if abs(v) >= 100 else f"{v:.3g}"


def write_png(json_path: str, payload: dict) -> str | None:
    """Draws `payload`'s chart beside `json_path` (same name, .png); None, with one line
    saying why, without matplotlib or for results no chart fits."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        print("no plot: matplotlib is not installed (pip install 'commdsl[plots]')")
        return None
    c = chart(payload)
    if c is None:
        print(f"no plot: no chart for the results of {payload.get('benchmark', json_path)}")
        return None
    path = os.path.splitext(json_path)[0] + ".png"
    draw(c, path)
    print(f"wrote {path}")
    return path


def main(paths: list[str]) -> int:
    if not paths:
        print("usage: python bench/plot.py RESULTS.json...", file=sys.stderr)
        return 2
    for path in paths:
        with open(path) as f:
            write_png(path, json.load(f))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
