"""Shared by bench/swiglu_quant.py, rmsnorm_quant.py and softmax.py: sweep a commdsl example's
configs (each checked against a float64 reference before it is timed), sweep a Triton
kernel, time torch.compile of the same Python function, and print and write the ratios
issue 13 asks for (of copy bandwidth, vs torch.compile, vs Triton)."""
from __future__ import annotations

import sys

import common


def sweep(name, configs, launch, check, nbytes, results):
    """launch(cfg) -> a function that runs one call; check() raises if the outputs are wrong.
    Times the configs that pass; returns (label, GB/s) of the fastest, or None."""
    best = None
    for cfg in configs:
        label = ",".join(f"{k}={v}" for k, v in cfg.items()) or "default"
        try:
            run = launch(cfg)
            run()
            check()
        except Exception as e:                  # a config that fails to build or to check
            print(f"{name} {label}: {type(e).__name__}: {e}", file=sys.stderr)
            results[label] = {"error": f"{type(e).__name__}: {e}"}
            continue
        ms = common.time_ms(run)
        bw = common.gbs(nbytes, ms)
        results[label] = {"ms": ms, "gbs": bw}
        if best is None or bw > best[1]:
            best = (label, bw)
    return best


def config_of(label):
    """sweep's label "A=1,B=2" back to its config."""
    return {k: int(v) for k, v in (kv.split("=") for kv in label.split(","))}


def sweep_caps(name, caps, launch, check, nbytes, results, best, top=4):
    """A second stage of sweep: the `top` fastest configs so far, each with CTAS (a
    ctas_per_sm register cap) set to every value of caps. Returns the new best."""
    fastest = sorted((r["gbs"], label) for label, r in results.items() if "gbs" in r)
    capped = [dict(config_of(label), CTAS=c) for _, label in fastest[-top:] for c in caps]
    found = sweep(name, capped, launch, check, nbytes, results)
    return found if found and (not best or found[1] > best[1]) else best


def roughly(s, s_ref, y, y_ref):
    """A peer's sanity check: its division and math may be approximate, its result not wrong."""
    import torch
    torch.testing.assert_close(s, s_ref, rtol=1e-5, atol=0)
    moved = (y.view(torch.uint8) != y_ref.view(torch.uint8)).float().mean().item()
    assert moved < 0.01, f"{moved:.1%} of the FP8 bytes differ"


def compiled_gbs(fn, args, nbytes):
    """torch.compile of fn, warmed up (the compile is not timed)."""
    import torch
    compiled = torch.compile(fn)
    compiled(*args)
    return common.gbs(nbytes, common.time_ms(lambda: compiled(*args)))


def report(bench, title, nbytes, copy, mine, peers, results, copy_target=0.9, targets=None):
    """Prints the table and the issue's ratios; writes bench/results/<bench>-<device>.json.
    mine: (label, GB/s); peers: name -> GB/s; targets: peer name -> the ratio to reach;
    copy_target None: no fraction of copy to reach (a kernel bound by its arithmetic)."""
    if mine is None:
        sys.exit(f"{bench}: no commdsl config passed its check; not reporting")
    label, bw = mine
    rows = [["device-to-device copy", copy], [f"commdsl ({label})", bw],
            *([n, g] for n, g in peers.items())]
    common.print_table(f"{title} (bytes read + written per call: {nbytes / 1e6:.1f} MB)",
                       ["kernel", "GB/s", "of copy", "commdsl / this"],
                       [[n, g, g / copy, f"{bw / g:.2f}x" if g else "-"] for n, g in rows])
    met = {} if copy_target is None else {
        "of_copy": {"value": bw / copy, "target": copy_target, "met": bw / copy >= copy_target}}
    for peer, target in (targets or {}).items():
        ratio = bw / peers[peer] if peers.get(peer) else None
        met[f"vs_{peer}"] = {"value": ratio, "target": target,
                             "met": ratio is not None and ratio >= target}
    for key, m in met.items():
        value = "n/a" if m["value"] is None else f"{m['value']:.3f}"
        print(f"  {key}: {value} (target >= {m['target']}) {'met' if m['met'] else 'NOT met'}")
    results.update(bytes=nbytes, copy_gbs=copy, peers=peers,
                   commdsl_best={"config": label, "gbs": bw}, criteria=met)
    common.write_results(bench, results)
