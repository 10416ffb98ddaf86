"""MoE low-latency dispatch + combine (commdsl/moe_ll.py) end to end, captured in a CUDA
graph, against NCCL all_to_all_single moving the same bytes, in one run on the GPUs of one
host (issue 20's criterion 2).

    python bench/moe_low_latency.py [--tokens 128] [--hidden 7168] [--world 2]

Spawns one process per GPU (NCCL; multicast off). Per rank: T tokens routed to top-8 of 256
experts (the tests' routing: a third of the tokens with all experts on one rank). One CUDA
graph holds dispatch then combine (the experts' outputs are left as they are in the
buffer: no expert compute is timed); its replay is timed with CUDA events (median of many,
after warm-up), as are graphs of dispatch alone and combine alone. NCCL moves the same
bytes both ways: every (token, destination rank) row out, as all_to_all_single, and the
same rows back; its time is the two calls'. Rank 0 prints the table and writes
bench/results/moe_low_latency-<device>.json; each figure is the slowest rank's.
"""
from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(__file__))
import common  # noqa: E402

TARGET_US = 40.0          # issue 20, criterion 2: dispatch + combine of 128 tokens, 2 GPUs
EXPERTS, TOPK = 256, 8


def graph_us(body, replays=200, warmup=20) -> float:
    """Median time of one replay of a CUDA graph of `body()`, in microseconds."""
    import statistics

    import torch
    stream = torch.cuda.Stream()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.stream(stream):
        body()                                  # loads and compiles outside the capture
        torch.cuda.synchronize()
        with torch.cuda.graph(graph, stream=stream):
            body()
    torch.cuda.synchronize()
    times = []
    for i in range(warmup + replays):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        graph.replay()
        end.record()
        if i >= warmup:
            times.append((start, end))
    torch.cuda.synchronize()
    return statistics.median(s.elapsed_time(e) for s, e in times) * 1e3


def run(rank, world, port, args, results):
    import torch
    import torch.distributed as dist

    from commdsl.moe_ll import LowLatencyBuffer
    common.join_ranks(rank, world, port)
    from test_moe_gpu import routing

    t, h = args.tokens, args.hidden
    ids, w, _ = routing(rank, t, world, seed=11)
    x = torch.randn(t, h, device="cuda").to(torch.bfloat16)
    ids, w = ids.int().cuda(), w.cuda()
    buf = LowLatencyBuffer(max_tokens=t, hidden=h, num_experts=EXPERTS, topk=TOPK)
    per = EXPERTS // world
    out = {"rank": rank, "tokens": t, "hidden": h,
           "dispatch_config": buf.dispatch_kernel.spec.constants,
           "combine_config": buf.combine_kernel.spec.constants}
    out["both_us"] = graph_us(lambda: (buf.dispatch(x, ids), buf.combine(ids, w)))
    out["dispatch_us"] = graph_us(lambda: buf.dispatch(x, ids))
    out["combine_us"] = graph_us(lambda: buf.combine(ids, w))
    buf.check()

    # NCCL: every (token, destination rank) row out and back, the same bytes
    dest = torch.stack([(ids // per == p).any(1) for p in range(world)], 1)     # [T, W]
    to_rank = dest.sum(0).tolist()
    from_rank = torch.empty(world, dtype=torch.int64, device="cuda")
    dist.all_to_all_single(from_rank, dest.sum(0).cuda())
    from_rank = from_rank.tolist()
    source = torch.cat([x[dest[:, p]] for p in range(world)])
    received = torch.empty(sum(from_rank), h, dtype=x.dtype, device="cuda")
    back = torch.empty_like(source)

    def nccl():
        dist.all_to_all_single(received, source, from_rank, to_rank)
        dist.all_to_all_single(back, received, to_rank, from_rank)
    out["nccl_us"] = graph_us(nccl)
    out["bytes_out"] = int(source.numel() * source.element_size())
    dist.barrier()
    results.put(out)
    dist.destroy_process_group()


def summarize(ranks: list[dict]) -> dict:
    """The slowest rank's times, the ratio to NCCL and whether criterion 2 holds."""
    worst = {k: max(r[k] for r in ranks) for k in ("both_us", "dispatch_us", "combine_us",
                                                  "nccl_us")}
    return {**worst, "vs_nccl": worst["nccl_us"] / worst["both_us"],
            "pass": bool(worst["both_us"] <= TARGET_US)}


def report(ranks):
    r0, s = ranks[0], summarize(ranks)
    rows = [["commdsl dispatch + combine (one graph)", s["both_us"], s["vs_nccl"]],
            ["  dispatch alone", s["dispatch_us"], ""],
            ["  combine alone", s["combine_us"], ""],
            ["NCCL all_to_all_single out and back, same bytes", s["nccl_us"], 1.0]]
    common.print_table(f"MoE low-latency, T = {r0['tokens']}, H = {r0['hidden']}, top-{TOPK} "
                       f"of {EXPERTS}, {len(ranks)} ranks: microseconds (slowest rank)",
                       ["what", "us", "x NCCL"], rows)
    print(f"dispatch + combine: {s['both_us']:.1f} us (needs <= {TARGET_US:.0f}) -> "
          f"{'pass' if s['pass'] else 'FAIL'}; {s['vs_nccl']:.2f}x NCCL's speed")
    common.write_results("moe_low_latency", {"ranks": ranks, "summary": s,
                                             "target_us": TARGET_US})
    if not s["pass"]:
        sys.exit(1)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--tokens", type=int, default=128)
    ap.add_argument("--hidden", type=int, default=7168)
    ap.add_argument("--world", type=int, default=2)
    args = ap.parse_args()
    report(common.spawn_ranks(run, args.world, args, timeout_s=600))


if __name__ == "__main__":
    main()
