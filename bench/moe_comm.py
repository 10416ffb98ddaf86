"""MoE dispatch/combine (commdsl, NVLink peer memory) against what the SMs alone can move
over NVLink at the same SM count, NCCL's all_to_all_single on the same bytes and the copy
engine, in one run on the GPUs of one host (issue 20's criterion 1).

    python bench/moe_comm.py [--tokens 4096] [--hidden 7168] [--world 2]

Spawns one process per GPU (NCCL; multicast off). Per rank: routes T tokens to top-8 of 256
experts (random, a third of the tokens with all experts on one rank), tunes each kernel's
SM count, rows and chunk (their `tune` constants) with the lockstep autotuner, sweeps the
whole space again to check the choice, and times the kernels alone with CUDA events
(median; the staging copy into the symmetric buffer is outside): bf16 dispatch, FP8
dispatch (tokens and their 1x128 scales) and combine. The ceilings: bare peer copies
(examples/peer_copy.cdsl: pull with get, push with put, the MoE kernels' cache policies
and handshake) moving the same bytes at each kernel's tuned SM count, the best of their
ROWS x CHUNK. Bandwidth counts the bytes that cross NVLink per rank: the rows a rank
receives from other ranks (dispatch) or reads from them (combine), times the row size. NCCL
moves the same rows with all_to_all_single; its bus bandwidth counts the same cross-rank
bytes. Rank 0 prints the ratio table and writes bench/results/moe_comm-<device>.json.
"""
from __future__ import annotations

import argparse
import math
import os
import statistics
import sys

sys.path.insert(0, os.path.dirname(__file__))
import common  # noqa: E402

# Issue 20, criterion 1: each kernel >= 92% of the SMs' ceiling for the way it moves data
# (dispatch and combine pull: get) at its SM count, and >= 1.15x NCCL's bus bandwidth.
OF_CEILING, VS_NCCL, TUNED_WITHIN = 0.92, 1.15, 0.05
PEER_COPY = os.path.join(os.path.dirname(__file__), "..", "examples", "peer_copy.cdsl")
KERNELS = ("dispatch", "dispatch_fp8", "combine")


def median_ms(prepare, launch, iters=30, warmup=5):
    import torch
    times = []
    for i in range(warmup + iters):
        prepare()
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        launch()
        end.record()
        if i >= warmup:
            times.append((start, end))
    torch.cuda.synchronize()
    return statistics.median(s.elapsed_time(e) for s, e in times)


def slowest(value: float, group=None) -> float:
    """The largest value over the ranks: a collective's time is its slowest rank's."""
    import torch
    import torch.distributed as dist
    t = torch.tensor([value], dtype=torch.float64, device="cuda")
    dist.all_reduce(t, op=dist.ReduceOp.MAX, group=group)
    return float(t)


def run(rank, world, port, args, results):
    import torch
    import torch.distributed as dist

    from commdsl.moe import MoeBuffer
    common.join_ranks(rank, world, port)
    from test_moe_gpu import routing                     # the tests' routing, a third local

    t, h = args.tokens, args.hidden
    ids, w, x = routing(rank, t, world, seed=11)
    scales = x.view(t, -1, 128).abs().amax(-1).clamp(min=1e-4) / 448
    x8 = (x.view(t, -1, 128) / scales[..., None]).view(t, h).to(torch.float8_e4m3fn).cuda()
    x, ids, w, scales = x.to(torch.bfloat16).cuda(), ids.cuda(), w.cuda(), scales.cuda()
    buf = MoeBuffer(max_tokens=t, hidden=h, num_experts=256, topk=8)
    buf8 = MoeBuffer(max_tokens=t, hidden=h, num_experts=256, topk=8, fp8=True)
    handle, _, _, _ = buf.get_layout(ids, w)                     # buf8 moves the same rows
    rows_in = int((handle.src_rank != rank).sum())               # rows received over NVLink
    rows_out = int(handle.is_token_in_rank[:, [p for p in range(world) if p != rank]].sum())
    received = handle.src_rank.shape[0]
    row_bytes = {"dispatch": 2 * h, "dispatch_fp8": h + h // 128 * 4, "combine": 2 * h}
    crossing = {"dispatch": rows_in, "dispatch_fp8": rows_in, "combine": rows_out}
    out = {"rank": rank, "tokens": t, "hidden": h, "rows_in": rows_in, "rows_out": rows_out,
           "row_bytes": row_bytes}

    y = torch.randn(received, h, device="cuda").to(torch.bfloat16)
    recv_x = torch.empty(received, h, dtype=torch.bfloat16, device="cuda")
    recv_x8 = torch.empty(received, h, dtype=torch.float8_e4m3fn, device="cuda")
    recv_xs = torch.empty(received, h // 128, dtype=torch.float32, device="cuda")
    comb = torch.empty(t, h, dtype=torch.bfloat16, device="cuda")
    kernels = {
        "dispatch": (buf, buf.dispatch_name, lambda: buf.stage(x),
                     lambda k: k(x=buf.comm.region("x").current, src_rank=handle.src_rank,
                                 src_row=handle.src_row, recv_x=recv_x, flags=buf.comm.flags)),
        "dispatch_fp8": (buf8, buf8.dispatch_name, lambda: buf8.stage(x8, scales),
                         lambda k: k(x=buf8.comm.region("x").current,
                                     xs=buf8.comm.region("xs").current,
                                     src_rank=handle.src_rank, src_row=handle.src_row,
                                     recv_x=recv_x8, recv_xs=recv_xs, flags=buf8.comm.flags)),
        "combine": (buf, "moe_combine", lambda: buf.stage_y(y, handle),
                    lambda k: k(y=buf.comm.region("y").current, slot=handle.slot, comb_x=comb,
                                flags=buf.comm.flags)),
    }
    for name, (b, kernel, stage, launch) in kernels.items():
        out[name] = tuned_and_timed(b, kernel, stage, launch)
        out[name]["gbs"] = crossing[name] * row_bytes[name] / out[name]["ms"] / 1e6
    out["ceilings"] = ceilings({n: (out[n]["tuned"]["SMS"], crossing[n] * row_bytes[n])
                                for n in KERNELS}, h)

    # --- NCCL all_to_all_single moving the same rows: tokens out, expert outputs back -----
    dest = handle.is_token_in_rank                                  # [T, W]
    to_rank = [int(dest[:, p].sum()) for p in range(world)]         # rows this rank sends
    prefix = handle.rank_prefix_matrix[:, rank].tolist()
    from_rank = [b - a for a, b in zip([0] + prefix[:-1], prefix)]  # rows it receives
    packed8 = torch.cat([x8.view(torch.uint8), scales.view(torch.uint8)], 1)
    for name, source, out_split, in_split in (
            ("dispatch", torch.cat([x[dest[:, p]] for p in range(world)]), from_rank, to_rank),
            ("dispatch_fp8", torch.cat([packed8[dest[:, p]] for p in range(world)]), from_rank,
             to_rank),
            ("combine", y, to_rank, from_rank)):
        output = torch.empty(sum(out_split), source.shape[1], dtype=source.dtype, device="cuda")
        ms = slowest(median_ms(lambda: None, lambda: dist.all_to_all_single(
            output, source, out_split, in_split)))
        out[name]["nccl_ms"] = ms
        out[name]["nccl_busbw_gbs"] = crossing[name] * row_bytes[name] / ms / 1e6

    # --- the copy engine into the peer's memory (both ranks at once, one direction each) ---
    n = rows_in * row_bytes["dispatch"]
    peer = (rank + 1) % world
    src = torch.randint(0, 255, (n,), dtype=torch.uint8, device="cuda")
    # The peer's second y buffer (idle now), reached through its symmetric-memory mapping.
    offset = buf.comm.region("y").views[1].data_ptr() - buf.comm.handle.buffer_ptrs[rank]
    dst = buf.comm.handle.get_buffer(peer, (n,), torch.uint8, offset)
    ms_ce = slowest(median_ms(lambda: None, lambda: dst.copy_(src)))
    out["copy_engine_gbs"] = n / ms_ce / 1e6
    dist.barrier()
    results.put(out)
    dist.destroy_process_group()


def tuned_and_timed(buf, kernel: str, stage, launch) -> dict:
    """`kernel` tuned by the lockstep autotuner, its choice checked against a full sweep, and
    the tuned kernel timed on every rank (the slowest rank's median)."""
    from commdsl.moe import COMBINE_SOURCE, DISPATCH_SOURCE, tune_lockstep
    path = COMBINE_SOURCE if kernel == "moe_combine" else DISPATCH_SOURCE
    tuned, trials = tune_lockstep(buf.comm, path, kernel, {}, stage, launch)
    _, sweep = tune_lockstep(buf.comm, path, kernel, {}, stage, launch, warmup=5, iters=30)
    best_cfg, best_ms = min(sweep, key=lambda ct: ct[1])
    if kernel == "moe_combine":
        buf.configure(combine=tuned)
    else:
        buf.configure(dispatch=tuned)
    k = buf.combine_kernel if kernel == "moe_combine" else buf.dispatch_kernel
    ms = slowest(median_ms(stage, lambda: launch(k)))
    buf.comm.check()
    return {"tuned": tuned, "tuned_ms": next(t for c, t in sweep if c == tuned),
            "sweep_best": best_cfg, "sweep_best_ms": best_ms, "tuner_trials": trials,
            "sweep": sweep, "ms": ms}


def ceilings(wanted: dict, hidden: int) -> dict:
    """{kernel: {"sms", "pull_gbs", "push_gbs", "pull_config", "push_config"}}: the bare peer
    copies (examples/peer_copy.cdsl) at each kernel's SM count, moving its bytes, the best of
    their ROWS x CHUNK (lockstep, slowest rank)."""
    import torch

    from commdsl.moe import tune_lockstep
    from commdsl.runtime.symmetric import Comm, RegionSpec
    rows = max(1, max(math.ceil(nbytes / (2 * hidden)) for _, nbytes in wanted.values()))
    comm = Comm(None, "peer_copy", {"rows": rows, "hidden": hidden},
                [RegionSpec("src", (rows, hidden), "bf16", copies=1),
                 RegionSpec("dst", (rows, hidden), "bf16", copies=1)])
    comm.region("src").views[0].normal_()
    local = torch.randn(rows, hidden, device="cuda").to(torch.bfloat16)
    result, timed = {}, {}
    for name, (sms, nbytes) in wanted.items():
        n = max(1, math.ceil(nbytes / (2 * hidden)))
        entry = {"sms": sms, "bytes": n * 2 * hidden}
        for kernel, launch in (
                ("peer_pull", lambda k: k(src=comm.region("src").views[0][:n], dst=local[:n],
                                          flags=comm.flags)),
                ("peer_push", lambda k: k(src=local[:n], dst=comm.region("dst").views[0][:n],
                                          flags=comm.flags))):
            key = (kernel, sms, n)
            if key not in timed:         # kernels with the same SMs and bytes share a sweep
                timed[key] = tune_lockstep(comm, PEER_COPY, kernel, {"SMS": sms},
                                           lambda: None, launch, warmup=5, iters=30)
            config, trials = timed[key]
            ms = min(t for _, t in trials)
            way = kernel.split("_")[1]
            entry[f"{way}_gbs"] = entry["bytes"] / ms / 1e6
            entry[f"{way}_config"] = config
        result[name] = entry
    return result


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--tokens", type=int, default=4096)
    ap.add_argument("--hidden", type=int, default=7168)
    ap.add_argument("--world", type=int, default=2)
    args = ap.parse_args()
    ranks = common.spawn_ranks(run, args.world, args, timeout_s=900)
    report(ranks)


def report(ranks):
    """Prints the table and the checks of criterion 1; writes the results; exit status 1 if
    a check failed."""
    r0 = ranks[0]
    checks = summarize(ranks)
    ce = min(r["copy_engine_gbs"] for r in ranks)
    rows = []
    for name in KERNELS:
        c = checks[name]
        rows.append([f"commdsl {name} {r0[name]['tuned']}", c["gbs"], c["of_ceiling"],
                     c["vs_nccl"], c["gbs"] / ce])
        rows.append([f"  SMs' pull ceiling at {c['sms']} SMs (bare get)", c["pull_gbs"], 1.0,
                     "", c["pull_gbs"] / ce])
        rows.append([f"  SMs' push ceiling at {c['sms']} SMs (bare put)", c["push_gbs"], "",
                     "", c["push_gbs"] / ce])
        rows.append(["  NCCL all_to_all_single, the same rows (bus bw)", c["nccl_gbs"], "", 1.0,
                     c["nccl_gbs"] / ce])
    rows.append(["copy engine into the peer's memory", ce, "", "", 1.0])
    common.print_table(f"MoE exchange, T = {r0['tokens']}, H = {r0['hidden']}, top-8 of 256, "
                       f"{len(ranks)} ranks: GB/s per direction crossing NVLink (slowest rank)",
                       ["what", "GB/s", "of ceiling", "of NCCL", "of copy engine"], rows)
    for name in KERNELS:
        c, r = checks[name], r0[name]
        print(f"{name}: {c['gbs']:.0f} GB/s on {c['sms']} SMs = {c['of_ceiling']:.1%} of the "
              f"pull ceiling (needs >= {OF_CEILING:.0%}), {c['vs_nccl']:.2f}x NCCL (needs >= "
              f"{VS_NCCL}) -> {'pass' if c['pass'] else 'FAIL'}; tuned {r['tuned']} within "
              f"{c['tuned_vs_sweep_best']:.1%} of the sweep's best {r['sweep_best']}")
    common.write_results("moe_comm", {"ranks": ranks, "checks": checks,
                                      "targets": {"of_ceiling": OF_CEILING, "vs_nccl": VS_NCCL,
                                                  "tuned_within": TUNED_WITHIN}})
    if not all(c["pass"] for c in checks.values()):
        sys.exit(1)


def summarize(ranks: list[dict]) -> dict:
    """Per kernel, over the ranks (each figure its slowest rank's): GB/s, the ceilings at its
    SM count, NCCL's bus bandwidth, the ratios and whether criterion 1 holds. Dispatch and
    combine read their peers' memory (get), so the pull ceiling is theirs."""
    checks = {}
    for name in KERNELS:
        gbs = min(r[name]["gbs"] for r in ranks)
        pull = min(r["ceilings"][name]["pull_gbs"] for r in ranks)
        push = min(r["ceilings"][name]["push_gbs"] for r in ranks)
        nccl = min(r[name]["nccl_busbw_gbs"] for r in ranks)
        off = max(r[name]["tuned_ms"] / r[name]["sweep_best_ms"] - 1 for r in ranks)
        checks[name] = {"gbs": gbs, "sms": ranks[0][name]["tuned"]["SMS"], "pull_gbs": pull,
                        "push_gbs": push, "nccl_gbs": nccl, "of_ceiling": gbs / pull,
                        "vs_nccl": gbs / nccl, "tuned_vs_sweep_best": off,
                        "pass": bool(gbs >= OF_CEILING * pull and gbs >= VS_NCCL * nccl)}
    return checks


if __name__ == "__main__":
    main()
