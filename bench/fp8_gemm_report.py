"""bench/fp8_gemm.py's arithmetic, apart from the GPU so the CPU tests check it: the shapes,
each shape's ratios, issue 18's criteria over a run, and the numbers recorded before.

A shape's entry (one per shape in the JSON): {"shape": [M, N, K], "model", "tuned", "cublas",
"deepgemm", "before" (the commit before issue 18, timed in the same run): each None or
{"ms", "tflops", "rel_err", ...}, "recorded_tflops": None or a number}. Every ratio is of
throughputs (TFLOP/s), so above 1 means the first is faster.
"""
from __future__ import annotations

import math
import random

NK_PAIRS = ((2112, 7168), (24576, 1536), (32768, 512), (7168, 16384), (4096, 7168),
            (7168, 2048))
DEEPGEMM_SHAPES = [(m, n, k) for m in (64, 128, 4096) for n, k in NK_PAIRS]   # its tests'
SHAPES = DEEPGEMM_SHAPES + [(8192, 8192, 8192)]
RANDOM_SEED = 18
SMALL_M = 128                 # criterion 5: no loss at M <= 128


def random_shapes(count: int, seed: int = RANDOM_SEED) -> list[tuple[int, int, int]]:
    """Criterion 1's other shapes: M in 1..8192 drawn evenly on a log scale (uniformly, 7 in 8
    would be over 1024, where one tile shape wins; configs differ most at small M), N and K a
    DeepSeek weight's, as in DEEPGEMM_SHAPES; none of SHAPES, none twice."""
    rng, shapes = random.Random(seed), []
    while len(shapes) < count:
        m = min(8192, max(1, round(2 ** rng.uniform(0, 13))))
        shape = (m, *rng.choice(NK_PAIRS))
        if shape not in SHAPES and shape not in shapes:
            shapes.append(shape)
    return shapes


def ratio(faster: dict | None, slower: dict | None) -> float | None:
    """TFLOP/s of `faster` over `slower`; None unless both were timed."""
    if not faster or not slower or not faster.get("ms") or not slower.get("ms"):
        return None
    return slower["ms"] / faster["ms"]


def commdsl(entry: dict) -> dict | None:
    """commdsl's number for the peer ratios: the tuned config's, else the model default's."""
    return entry.get("tuned") or entry.get("model")


def ratios(entry: dict) -> dict[str, float | None]:
    ours = commdsl(entry)
    recorded = entry.get("recorded_tflops")
    unflushed = (ours or {}).get("unflushed_tflops")
    return {"model_vs_tuned": ratio(entry.get("model"), entry.get("tuned")),
            "vs_cublas": ratio(ours, entry.get("cublas")),
            "vs_deepgemm": ratio(ours, entry.get("deepgemm")),
            "vs_recorded": unflushed / recorded if unflushed and recorded else None,
            "vs_before": ratio(ours, entry.get("before"))}


def geomean(values) -> float | None:
    values = [v for v in values if v]
    return math.exp(sum(map(math.log, values)) / len(values)) if values else None


def criteria(entries: list[dict]) -> list[tuple[str, bool | None, str]]:
    """(criterion, passed or None where this run cannot tell, its numbers) for issue 18's
    criteria 1, 2, 3 and 5 over the shapes of a run."""
    by_shape = {tuple(e["shape"]): e for e in entries}
    fixed = [by_shape[s] for s in SHAPES if s in by_shape]
    others = [e for e in entries if tuple(e["shape"]) not in SHAPES]
    deepgemm = [by_shape[s] for s in DEEPGEMM_SHAPES if s in by_shape]
    out = []

    def worst(name: str, group: list[dict], key: str, bound: float) -> None:
        values = [(ratios(e)[key], e["shape"]) for e in group]
        known = [(v, s) for v, s in values if v is not None]
        if not known:
            out.append((name, None, "not measured"))
            return
        v, shape = min(known)
        missing = len(values) - len(known)
        out.append((name, v >= bound and not missing,
                    f"worst {v:.3f} at {_label(shape)} (needs >= {bound})"
                    + (f"; {missing} shapes not measured" if missing else "")))

    worst("1: model default / tuned, fixed shapes", fixed, "model_vs_tuned", 0.95)
    if others:
        worst("1: model default / tuned, random shapes", others, "model_vs_tuned", 0.90)
    fresh = [(e["tuned"]["tune_s"], e["shape"]) for e in entries
             if e.get("tuned") and not e["tuned"].get("from_cache")]
    if fresh:
        s, shape = max(fresh)
        out.append(("2: tuning a new shape < 60 s", s < 60,
                    f"longest {s:.1f} s at {_label(shape)}"))
    else:
        out.append(("2: tuning a new shape < 60 s", None, "no shape tuned afresh"))
    mean = geomean(ratios(e)["vs_deepgemm"] for e in deepgemm)
    out.append(("3: geomean commdsl / DeepGEMM >= 0.95", None if mean is None else mean >= 0.95,
                "not measured" if mean is None else f"{mean:.3f} over "
                f"{sum(1 for e in deepgemm if ratios(e)['vs_deepgemm'])} shapes"))
    worst("3: every shape >= 0.85x DeepGEMM", deepgemm, "vs_deepgemm", 0.85)
    worst("3: every shape >= 1.0x cuBLAS", fixed, "vs_cublas", 1.0)
    big = by_shape.get((4096, 7168, 16384))
    tflops = (commdsl(big) or {}).get("tflops") if big else None
    out.append(("3: 4096x7168x16384 >= 1400 TFLOP/s", None if tflops is None else tflops >= 1400,
                "not measured" if tflops is None else f"{tflops:.0f} TFLOP/s"))
    before = [e for e in fixed if e["shape"][0] <= SMALL_M and e.get("before")]
    if before:
        worst("5: M <= 128 vs the commit before (same run)", before, "vs_before", 1.0)
    else:
        small = [e for e in fixed if e["shape"][0] <= SMALL_M and e.get("recorded_tflops")]
        worst("5: M <= 128 vs recorded (unflushed)", small, "vs_recorded", 1.0)
    return out


def recorded_tflops(payload: dict | None) -> dict[tuple, float]:
    """{(M, N, K): commdsl's TFLOP/s} from an earlier fp8_gemm results file: its best
    config's (timed without an L2 flush, before issue 18), or the tuned config's timed the
    same way by this bench."""
    found = {}
    for e in (payload or {}).get("shapes", []):
        number = ((e.get("tuned") or {}).get("unflushed_tflops") if "tuned" in e
                  else (e.get("best") or {}).get("tflops"))
        if number:
            found[tuple(e["shape"])] = number
    return found


def _label(shape) -> str:
    return "x".join(map(str, shape))
