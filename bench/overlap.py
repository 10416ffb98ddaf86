"""Communication-aware compute on one GPU: fp8_gemm on the SMs a partition leaves, beside a
memory-bound stand-in for communication on N SMs of its own, in one run (docs/overlap.md).

    python bench/overlap.py [--sms 16 20 24 32] [--iters 50] [--mib 256] [--quick]
    python bench/overlap.py --doc-from bench/results/overlap-<device>.json   # fills the doc

For each N: `commdsl.partition(sms = N)` (a green context of N SMs, rounded up to the
device's granularity) runs the stand-in, and `p.rest` (a green context of the SMs left over)
runs fp8_gemm compiled with `persistent(sms = S)`, S the rest's SM count. The stand-in is a
copy through registers, bf16 rows of 7168, by `sms(N)` programs in a grid-stride loop, whose
loads take each load policy below; where it runs, moe_dispatch over symmetric memory at world
size 1 (the same tokens to the one rank) is a second stand-in with its own policy.

Measured, each the median of CUDA-event-timed launches: the GEMM alone on all SMs and on
the rest (TFLOP/s), the stand-in alone on its partition (GB/s, bytes read + written), and
both together: the stand-in launched back to back on its stream, the GEMMs on theirs once
the first few stand-ins have run, each launch between its own events, the GEMMs timed over
their events and the stand-in over the launches that lie wholly inside the GEMMs' window.
Writes bench/results/overlap-<device>.json and its chart; the table goes into docs/overlap.md
with --doc-from.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import warnings

sys.path.insert(0, os.path.dirname(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests"))
import common  # noqa: E402

SHAPES = [(4096, 7168, 16384), (4096, 2112, 7168)]
SMS = [16, 20, 24, 32]
# The stand-in's loads, as cache clauses (docs/language.md, "Cache clauses"). DeepEP reads
# peers' tokens with ld.global.nc.L1::no_allocate.L2::256B.
POLICIES = {
    "plain": "",
    "nc": "cache(nc)",
    "nc+L1::no_allocate": "cache(nc, L1 = no_allocate)",
    "nc+L1::no_allocate+L2::256B": "cache(nc, L1 = no_allocate, L2 = 256B)",
    "L1::evict_first": "cache(L1 = evict_first)",
}
DEEPEP = "nc+L1::no_allocate+L2::256B"
TARGETS = {"gemm": 0.95, "standin": 0.90}        # together / alone, at N = 20 with DEEPEP
# fp8_gemm's fastest configs on these shapes on all 132 SMs (bench/results/fp8_gemm-*.json).
GEMM_CONFIGS = {(4096, 7168, 16384): dict(BM=128, BN=128, STAGES=5, GROUP=8),
                (4096, 2112, 7168): dict(BM=192, BN=128, STAGES=4, GROUP=8, CLUSTER=2)}
HIDDEN, ROWS = 7168, 4
# Each program copies ROWS rows a step, the next step's loads issued during this one
# (pipeline(2)); the policy marker is replaced by a cache clause (a clause is syntax, which
# no constant can select).
STANDIN = f"""
kernel copy_standin(x: bf16[T, H], y: out bf16[T, H])
  const SMS = 20, ROWS = {ROWS}, H = {HIDDEN}
  sms(SMS)
  warps(16)
{{
  for w in pid.0 .. T / ROWS step SMS pipeline(2) {{
    store y[w * ROWS : +ROWS, 0 : +H] = load x[w * ROWS : +ROWS, 0 : +H] POLICY
  }}
}}
"""
GEMM_CLAUSE = "persistent(raster = GROUP, cluster = CLUSTER)"
# Stand-in launches run before the GEMMs start, so the GEMMs meet it in its steady state.
LEAD = 3
# The GEMMs' window holds at least this many whole stand-in launches.
STANDINS_INSIDE = 10
TABLE_START, TABLE_END = "<!-- overlap-table:start -->", "<!-- overlap-table:end -->"
DOC = os.path.join(os.path.dirname(__file__), "..", "docs", "overlap.md")


def standin_source(policy: str) -> str:
    return STANDIN.replace("POLICY", POLICIES[policy])


def budgeted_gemm_source() -> str:
    """examples/fp8_gemm.cdsl with an SM budget, the constant SMS."""
    from test_fp8_gemm import FP8_GEMM
    with open(FP8_GEMM) as f:
        source = f.read()
    assert GEMM_CLAUSE in source, "examples/fp8_gemm.cdsl's persistent clause changed"
    return source.replace(GEMM_CLAUSE, GEMM_CLAUSE[:-1] + ", sms = SMS)").replace(
        "  tune PROMOTE", "  const SMS = 132\n  tune PROMOTE")


# ---- timing on a stream -------------------------------------------------------------------

def timed_launches(stream, fn, count: int) -> list[tuple]:
    """`count` launches of `fn` on `stream`, each between its own pair of events (recorded,
    not yet read)."""
    import torch
    pairs = []
    with torch.cuda.stream(stream):
        for _ in range(count):
            start, end = (torch.cuda.Event(enable_timing=True) for _ in range(2))
            start.record()
            fn()
            end.record()
            pairs.append((start, end))
    return pairs


def median_ms(stream, fn, iters: int) -> float:
    """Median ms of `fn` alone on `stream`: common.time_ms, whose device synchronize waits
    for a green context's streams too (seen on an H100)."""
    import torch
    with torch.cuda.stream(stream):
        return common.time_ms(fn, iters=iters)


def together_ms(gemm, gemm_stream, gemm_ms: float, standin, standin_stream,
                standin_ms: float, iters: int) -> dict:
    """The GEMM's and the stand-in's median ms while both run (see the module's doc)."""
    import torch
    reps = max(iters, math.ceil(STANDINS_INSIDE * standin_ms / gemm_ms))
    count = LEAD + math.ceil(2 * reps * gemm_ms / standin_ms) + 2
    torch.cuda.synchronize()
    lead = timed_launches(standin_stream, standin, LEAD)
    go = torch.cuda.Event()
    go.record(standin_stream)
    rest = timed_launches(standin_stream, standin, count - LEAD)
    gemm_stream.wait_event(go)
    gemms = timed_launches(gemm_stream, gemm, reps)
    gemm_stream.synchronize()
    standin_stream.synchronize()
    origin = lead[0][0]
    window = (origin.elapsed_time(gemms[0][0]), origin.elapsed_time(gemms[-1][1]))
    inside = [s.elapsed_time(e) for s, e in rest
              if origin.elapsed_time(s) >= window[0] and origin.elapsed_time(e) <= window[1]]
    return {"gemm_ms": statistics.median(s.elapsed_time(e) for s, e in gemms),
            "standin_ms": statistics.median(inside) if inside else math.nan,
            "standins_inside": len(inside), "gemm_reps": reps,
            # the stand-in still ran when the last GEMM ended
            "covered": origin.elapsed_time(rest[-1][0]) >= window[1]}


# ---- the stand-ins ------------------------------------------------------------------------

class CopyStandin:
    """copy_standin with one load policy on the SMS programs of a partition."""
    bytes_per_row = 2 * HIDDEN

    def __init__(self, policy: str, sms: int, mib: int):
        import torch

        import commdsl
        self.kernel = commdsl.load(standin_source(policy), SMS=sms)
        rows = mib * (1 << 20) // self.bytes_per_row // ROWS * ROWS
        self.x = torch.randn(rows, HIDDEN, device="cuda").to(torch.bfloat16)
        self.y = torch.empty_like(self.x)
        self.nbytes = 2 * self.x.numel() * self.x.element_size()     # read + written
        self.kernel(self.x, y=self.y)
        torch.cuda.synchronize()
        assert torch.equal(self.x, self.y), f"copy_standin ({policy}) is not a copy"

    def __call__(self):
        self.kernel(self.x, y=self.y)


def moe_standin(sms: int, tokens: int = 16384):
    """moe_dispatch of `tokens` bf16 tokens at world size 1, on `sms` programs: a callable
    with .nbytes, or a string saying why it cannot run here. Many tokens: a launch of a
    communication kernel costs the host more than a short one runs, and the stand-in must
    run back to back."""
    import tempfile

    import torch
    import torch.distributed as dist
    try:
        from commdsl.moe import MoeBuffer
        if not dist.is_initialized():
            store = dist.FileStore(os.path.join(tempfile.mkdtemp(), "store"), 1)
            dist.init_process_group("nccl", store=store, rank=0, world_size=1)
        buf = MoeBuffer(max_tokens=tokens, hidden=HIDDEN, num_experts=256, topk=8,
                        dispatch_config={"SMS": sms})
        x = torch.randn(tokens, HIDDEN, device="cuda").to(torch.bfloat16)
        topk = torch.rand(tokens, 256, device="cuda").argsort(dim=1)[:, :8]
        weights = torch.rand(tokens, 8, device="cuda")
        out = buf.dispatch(x, topk, weights)
        assert torch.equal(out.recv_x, x), "at world size 1 every token comes back as it was"
        handle, recv = out.handle, torch.empty_like(out.recv_x)
    except Exception as e:                   # noqa: BLE001: any failure is the reason printed
        return f"{type(e).__name__}: {e}"

    def launch():
        buf.launch_dispatch(handle, recv_x=recv)
    launch.nbytes = 2 * recv.numel() * recv.element_size()
    launch.check = buf.comm.check
    return launch


# ---- the run ------------------------------------------------------------------------------

def gemm_operands(m: int, n: int, k: int):
    import torch
    from test_fp8_gemm import mn_major, quantize_a, quantize_b, reference
    torch.manual_seed(m * 31 + n * 7 + k)
    a, sa = quantize_a(torch.randn(m, k, device="cuda"))
    b, sb = quantize_b(torch.randn(n, k, device="cuda"))
    return (a, mn_major(sa), b, sb), reference(a, sa, b, sb)


def gemm_on(kernel, operands, d):
    return lambda: kernel(*operands, d=d)


def measure(args) -> dict:
    import torch

    import commdsl
    from test_fp8_gemm import FP8_GEMM, relative_error
    total = torch.cuda.get_device_properties(0).multi_processor_count
    source = budgeted_gemm_source()
    results = {"sms_total": total, "policies": POLICIES, "deepep_policy": DEEPEP,
               "targets": TARGETS, "standin_mib": args.mib, "iters": args.iters,
               "gemm_full": {}, "partitions": [], "runs": [], "moe": []}
    operands = {}
    for shape in args.shapes:
        ops, ref = gemm_operands(*shape)
        d = torch.empty(shape[0], shape[1], dtype=torch.bfloat16, device="cuda")
        operands[shape] = (ops, ref, d)
        full = commdsl.load(FP8_GEMM, config="declared", **GEMM_CONFIGS[shape])
        ms = median_ms(torch.cuda.current_stream(), gemm_on(full, ops, d), args.iters)
        results["gemm_full"]["x".join(map(str, shape))] = {
            "config": GEMM_CONFIGS[shape], "ms": ms, "tflops": _tflops(shape, ms),
            "rel_err": relative_error(d, ref)}
    for n in args.sms:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            p = commdsl.partition(n)
        rest = p.rest
        if rest is None:
            print(f"N = {n}: the partition took every SM; nothing left for the GEMM")
            continue
        results["partitions"].append({"n": n, "sms": p.sms, "rest_sms": rest.sms,
                                      "guaranteed": p.guaranteed,
                                      "warning": str(caught[0].message) if caught else None})
        standins = {policy: CopyStandin(policy, p.sms, args.mib) for policy in args.policies}
        alone = {policy: median_ms(p.stream, s, args.iters) for policy, s in standins.items()}
        for shape in args.shapes:
            ops, ref, d = operands[shape]
            config = GEMM_CONFIGS[shape]
            cluster = config.get("CLUSTER", 1)
            budget = rest.sms - rest.sms % cluster
            kernel = commdsl.load(source, SMS=budget, **config)
            gemm = gemm_on(kernel, ops, d)
            d.fill_(float("nan"))
            gemm_alone = median_ms(rest.stream, gemm, args.iters)
            err = relative_error(d, ref)
            for policy, standin in standins.items():
                both = together_ms(gemm, rest.stream, gemm_alone, standin, p.stream,
                                   alone[policy], args.iters)
                results["runs"].append(_run(n, p, budget, shape, policy, err, gemm_alone,
                                            alone[policy], standin.nbytes, both))
            if n == 20 and DEEPEP in standins:
                results.setdefault("power", {})["x".join(map(str, shape))] = power_phases(
                    gemm, rest.stream, standins[DEEPEP], p.stream)
            if n in args.moe_sms:
                results["moe"].append(_moe_run(n, p, budget, shape, gemm, gemm_alone, rest,
                                               args.iters))
        del standins
        torch.cuda.empty_cache()
    return results


def power_phases(gemm, gemm_stream, standin, standin_stream, seconds: float = 1.5) -> dict:
    """The SM clock and power while the GEMM runs alone, the stand-in alone, and both, each
    for `seconds` back to back (nvidia-smi samples; the first 0.3 s of a phase are left out
    while the clock settles)."""
    import time

    import torch
    phases = {"gemm alone": [(gemm_stream, gemm)], "stand-in alone": [(standin_stream, standin)],
              "together": [(gemm_stream, gemm), (standin_stream, standin)]}
    spans = {}
    with common.GpuSampler() as sampler:
        for name, work in phases.items():
            torch.cuda.synchronize()
            start = time.time()
            while time.time() - start < seconds:
                for stream, fn in work:
                    for _ in range(4):
                        with torch.cuda.stream(stream):
                            fn()
                torch.cuda.synchronize()
            spans[name] = (start + 0.3, time.time())
    return {name: sampler.between(*span) for name, span in spans.items()}


def _tflops(shape, ms: float) -> float:
    m, n, k = shape
    return 2 * m * n * k / ms / 1e9


def _run(n, p, budget, shape, policy, err, gemm_alone, standin_alone, nbytes, both) -> dict:
    gemm_t = _tflops(shape, gemm_alone)
    standin_gbs = common.gbs(nbytes, standin_alone)
    together_gemm = _tflops(shape, both["gemm_ms"])
    together_standin = common.gbs(nbytes, both["standin_ms"])
    return {"n": n, "standin_sms": p.sms, "gemm_sms": budget, "guaranteed": p.guaranteed,
            "shape": list(shape), "policy": policy, "gemm_rel_err": err,
            "gemm_alone_tflops": gemm_t, "gemm_together_tflops": together_gemm,
            "gemm_ratio": together_gemm / gemm_t,
            "standin_alone_gbs": standin_gbs, "standin_together_gbs": together_standin,
            "standin_ratio": together_standin / standin_gbs,
            **{k: both[k] for k in ("standins_inside", "gemm_reps", "covered")}}


def _moe_run(n, p, budget, shape, gemm, gemm_alone, rest, iters) -> dict:
    standin = moe_standin(p.sms)
    if isinstance(standin, str):
        print(f"moe_dispatch at world size 1 skipped (N = {n}): {standin}")
        return {"n": n, "shape": list(shape), "skipped": standin}
    alone = median_ms(p.stream, standin, iters)
    both = together_ms(gemm, rest.stream, gemm_alone, standin, p.stream, alone, iters)
    standin.check()
    return _run(n, p, budget, shape, "moe_dispatch (its own: nc+L1::no_allocate+L2::256B)",
                math.nan, gemm_alone, alone, standin.nbytes, both)


def table_rows(results: dict) -> list[list]:
    return [[r["n"], r["standin_sms"], r["gemm_sms"], "x".join(map(str, r["shape"])),
             r["policy"], r["gemm_alone_tflops"], r["gemm_together_tflops"], r["gemm_ratio"],
             r["standin_alone_gbs"], r["standin_together_gbs"], r["standin_ratio"],
             "yes" if r["covered"] else "no"]
            for r in results["runs"] + [m for m in results["moe"] if "skipped" not in m]]


# overlapped: the stand-in still ran when the last GEMM ended; where not, the ratios do not
# measure running together.
HEADER = ["N", "stand-in SMs", "GEMM SMs", "M x N x K", "stand-in loads",
          "GEMM alone TFLOP/s", "together", "ratio", "stand-in alone GB/s", "together",
          "ratio", "overlapped"]


def markdown(results: dict) -> str:
    """The measured table of docs/overlap.md, from a result file's payload."""
    lines = [f"Measured on {results['device']} ({results['date']}); "
             f"{results['sms_total']} SMs.", ""]
    full = ", ".join(f"{shape}: {v['tflops']:.0f} TFLOP/s" for shape, v in
                     results["gemm_full"].items())
    lines += [f"fp8_gemm on every SM, alone: {full}.", ""]
    lines += ["| " + " | ".join(HEADER) + " |", "|" + " --- |" * len(HEADER)]
    for row in table_rows(results):
        lines.append("| " + " | ".join(_cell(c) for c in row) + " |")
    for m in results["moe"]:
        if "skipped" in m:
            lines += ["", f"moe_dispatch at world size 1 (N = {m['n']}): skipped, {m['skipped']}"]
    verdict = results.get("deepep_n20")
    if verdict:
        lines += ["", f"N = 20, {DEEPEP}: GEMM together / alone {verdict['gemm_ratio']}, "
                  f"stand-in together / alone {verdict['standin_ratio']} (targets "
                  f">= {TARGETS['gemm']}, >= {TARGETS['standin']})."]
    if results.get("power"):
        lines += ["", f"SM clock and board power at N = 20 with {DEEPEP} (nvidia-smi every "
                  "50 ms; throttle reason 0x4 is the software power cap):", "",
                  "| M x N x K | phase | SM MHz | W | throttle reasons |",
                  "| --- | --- | --- | --- | --- |"]
        for shape, phases in results["power"].items():
            for phase, v in phases.items():
                if v:
                    lines.append(f"| {shape} | {phase} | {v['sm_mhz']:.0f} | {v['watts']:.0f} | "
                                 f"{v['throttle_reasons']} |")
    return "\n".join(lines) + "\n"


def _cell(c) -> str:
    if isinstance(c, float):
        return f"{c:.3f}" if c < 10 else f"{c:.0f}"
    return str(c)


def deepep_n20(results: dict) -> dict | None:
    """The issue's check: the smallest ratios over the shapes at N = 20 with DeepEP's loads,
    of the runs that overlapped."""
    runs = [r for r in results["runs"]
            if r["n"] == 20 and r["policy"] == DEEPEP and r["covered"]]
    if not runs:
        return None
    gemm = min(r["gemm_ratio"] for r in runs)
    standin = min(r["standin_ratio"] for r in runs)
    return {"gemm_ratio": round(gemm, 3), "standin_ratio": round(standin, 3),
            "meets_targets": gemm >= TARGETS["gemm"] and standin >= TARGETS["standin"]}


def fill_doc(results: dict, doc: str = DOC) -> None:
    """Puts the measured table between docs/overlap.md's markers."""
    with open(doc) as f:
        text = f.read()
    start, end = text.index(TABLE_START) + len(TABLE_START), text.index(TABLE_END)
    with open(doc, "w") as f:
        f.write(text[:start] + "\n" + markdown(results) + text[end:])
    print(f"wrote the table into {doc}")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sms", type=int, nargs="+", default=SMS,
                    help="SMs of the stand-in's partition, N (default: %(default)s)")
    ap.add_argument("--shapes", nargs="+", default=None,
                    help="GEMM shapes M,N,K (default: 4096,7168,16384 4096,2112,7168)")
    ap.add_argument("--policies", nargs="+", choices=list(POLICIES), default=list(POLICIES),
                    help="the stand-in's load policies (default: all)")
    ap.add_argument("--moe-sms", type=int, nargs="*", default=[16, 20, 24],
                    help="N at which moe_dispatch runs too; its kernel tunes SMS in "
                         "16, 20, 24 (default: %(default)s)")
    ap.add_argument("--iters", type=int, default=50, help="timed launches (default: 50)")
    ap.add_argument("--mib", type=int, default=256,
                    help="MiB the stand-in copies a launch (default: 256)")
    ap.add_argument("--quick", action="store_true",
                    help="N = 20, plain and DeepEP's loads, 20 launches: a check, not a result")
    ap.add_argument("--doc-from", metavar="JSON",
                    help="write the table of a result file into docs/overlap.md and stop")
    args = ap.parse_args(argv)
    if args.doc_from:
        with open(args.doc_from) as f:
            fill_doc(json.load(f))
        return 0
    args.shapes = ([tuple(map(int, s.split(","))) for s in args.shapes] if args.shapes
                   else SHAPES)
    unknown = [s for s in args.shapes if s not in GEMM_CONFIGS]
    if unknown:
        ap.error(f"no fp8_gemm config for {unknown}; known: {list(GEMM_CONFIGS)}")
    if args.quick:
        args.sms, args.policies, args.iters = [20], ["plain", DEEPEP], 20
        args.moe_sms = [20]
    results = measure(args)
    results["deepep_n20"] = deepep_n20(results)
    common.print_table("fp8_gemm on the rest beside a stand-in for communication on N SMs",
                       HEADER, table_rows(results))
    if results["deepep_n20"]:
        print(f"\nN = 20, {DEEPEP}: {results['deepep_n20']}")
    for shape, phases in results.get("power", {}).items():
        print(f"N = 20, {DEEPEP}, {shape}: SM clock and power by phase: {phases}")
    name = "overlap-quick" if args.quick else "overlap"
    common.write_results(name, results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
