"""ag_gemm and gemm_rs (examples/ag_gemm.cdsl, examples/gemm_rs.cdsl) on one GPU, world size 1
over symmetric memory: the communication side (ag_pull, rs_reduce) on a green-context
partition of SMS SMs, the GEMM on the rest (Partition.rest, persistent(sms = GEMM_SMS)).

For each shape, in one run: each side alone on its partition, both at once (fused: the GEMM
multiplies each tile as soon as its rows are ready / the reduce sums each tile as soon as it
is done), and one after the other (the unfused baseline): on the same partitions, the second
waiting for the first's end, and, for reference, both on the whole GPU. The fused outputs
are compared bit for bit with fp8_gemm's. Overlap can give at most (producer + GEMM) /
max(producer, GEMM), the `bound` column: it pays where the two take comparable times, as
communication over NVLink does beside a GEMM of a rank's shard.

    python bench/ag_gemm.py [--sms 20] [--iters 30]
"""
from __future__ import annotations

import argparse
import os
import socket
import sys

sys.path.insert(0, os.path.dirname(__file__))
import common  # noqa: E402

ROOT = os.path.join(os.path.dirname(__file__), "..")
AG = os.path.join(ROOT, "examples", "ag_gemm.cdsl")
RS = os.path.join(ROOT, "examples", "gemm_rs.cdsl")
FP8_GEMM = os.path.join(ROOT, "examples", "fp8_gemm.cdsl")
# ag: N is a rank's column shard of a tensor-parallel GEMM; rs: K is a rank's slice of K.
AG_SHAPES = [(16384, 1024, 7168), (8192, 1024, 7168), (16384, 2112, 7168), (8192, 2112, 7168),
             (4096, 2112, 7168), (4096, 4096, 7168)]
RS_SHAPES = [(4096, 7168, 1024), (8192, 7168, 1024), (8192, 4096, 1024), (4096, 7168, 2048)]
ALWAYS = 1 << 30            # a flag value every wait accepts: a side timed alone


def two_streams_ms(first, second, launch, iters: int) -> float:
    """Median ms from a common start to the end of both: launch() queues work on
    `first` and `second` (the communication first, as the examples ask)."""
    import statistics

    import torch
    main = torch.cuda.current_stream()
    times = []
    for i in range(iters + 3):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        done = [torch.cuda.Event(), torch.cuda.Event()]
        start.record(main)
        first.wait_event(start)
        second.wait_event(start)
        launch()
        done[0].record(first)
        done[1].record(second)
        main.wait_event(done[0])
        main.wait_event(done[1])
        end.record(main)
        if i >= 3:
            times.append((start, end))
    torch.cuda.synchronize()
    return statistics.median(s.elapsed_time(e) for s, e in times)


def after(first_stream, second_stream, first, second):
    """first() on first_stream, then second() on second_stream once it has finished."""
    import torch
    on(first_stream, first)
    finished = torch.cuda.Event()
    finished.record(first_stream)
    second_stream.wait_event(finished)
    on(second_stream, second)


def on(stream, fn):
    import torch
    with torch.cuda.stream(stream):
        return fn()


def bench_ag(comm_of, part, m, n, k, iters, side: dict):
    import torch

    import commdsl
    from commdsl.api import load_comm
    from test_fp8_gemm import mn_major, quantize_a, quantize_b
    torch.manual_seed(m + n + k)
    comm = comm_of(f"ag{m}x{n}x{k}", [("a_shard", (m, k), "e4m3"), ("sa_shard", (m, k // 128), "f32"),
                                     ("ready", (1, m // 128), "i32")])
    a_shard, sa_shard, ready = (comm.region(r).next() for r in ("a_shard", "sa_shard", "ready"))
    a0, sa0 = quantize_a(torch.randn(m, k, device="cuda"))
    a_shard.copy_(a0)
    sa_shard.copy_(sa0)
    ready.zero_()
    b, sb = quantize_b(torch.randn(n, k, device="cuda"))
    a = torch.full((m, k), float("nan"), device="cuda").to(torch.float8_e4m3fn)
    sa = torch.full((m, k // 128), float("nan"), device="cuda")
    d = torch.full((m, n), float("nan"), device="cuda", dtype=torch.bfloat16)
    pull = load_comm(comm, AG, "ag_pull", **side)
    gemm = load_comm(comm, AG, "ag_gemm", GEMM_SMS=part.rest.sms)
    ref = commdsl.load(FP8_GEMM, config="declared")(a0, mn_major(sa0), b, sb)

    def run_pull():
        pull(a_shard=a_shard, sa_shard=sa_shard, a=a, sa=sa, ready=ready, flags=comm.flags)

    def run_gemm():
        gemm(a=a, sa=sa, b=b, sb=sb, d=d, ready=ready)

    def fused():
        on(part.stream, run_pull)
        on(part.rest.stream, run_gemm)

    fused()
    torch.cuda.synchronize()
    comm.check()
    exact = torch.equal(d.view(torch.int16), ref.view(torch.int16))
    result = {"shape": [m, n, k], "exact": exact}
    result["producer_ms"] = on(part.stream, lambda: common.time_ms(run_pull, iters=iters))
    ready.fill_(ALWAYS)
    result["gemm_ms"] = on(part.rest.stream, lambda: common.time_ms(run_gemm, iters=iters))
    ready.zero_()
    result["fused_ms"] = two_streams_ms(part.stream, part.rest.stream, fused, iters)
    result["sequential_ms"] = two_streams_ms(
        part.stream, part.rest.stream,
        lambda: after(part.stream, part.rest.stream, run_pull, run_gemm), iters)
    result["sequential_whole_gpu_ms"] = common.time_ms(lambda: (run_pull(), run_gemm()),
                                                       iters=iters)
    comm.check()
    return result


def bench_rs(comm_of, part, m, n, k, iters, side: dict):
    import torch

    import commdsl
    from commdsl.api import load_comm
    from test_fp8_gemm import mn_major, quantize_a, quantize_b
    torch.manual_seed(m + n + k + 1)
    comm = comm_of(f"rs{m}x{n}x{k}", [("part", (1, m, n), "bf16"),
                                     ("done", (1, m // 128, -(-n // 128)), "i32")])
    part_buf, done = comm.region("part").next(), comm.region("done").next()
    done.zero_()
    a, sa = quantize_a(torch.randn(m, k, device="cuda"))
    b, sb = quantize_b(torch.randn(n, k, device="cuda"))
    d = torch.full((m, n), float("nan"), device="cuda", dtype=torch.bfloat16)
    gemm = load_comm(comm, RS, "gemm_rs", GEMM_SMS=part.rest.sms)
    reduce = load_comm(comm, RS, "rs_reduce", **side)
    ref = commdsl.load(FP8_GEMM, config="declared")(a, mn_major(sa), b, sb)

    def run_gemm():
        gemm(a=a, sa=sa, b=b, sb=sb, part=part_buf, done=done)

    def run_reduce():
        reduce(part=part_buf, done=done, d=d)

    def fused():
        on(part.rest.stream, run_gemm)
        on(part.stream, run_reduce)

    fused()
    torch.cuda.synchronize()
    comm.check()
    result = {"shape": [m, n, k], "exact": torch.equal(d.view(torch.int16), ref.view(torch.int16))}
    result["gemm_ms"] = on(part.rest.stream, lambda: common.time_ms(run_gemm, iters=iters))
    done.fill_(ALWAYS)
    result["producer_ms"] = on(part.stream, lambda: common.time_ms(run_reduce, iters=iters))
    done.zero_()
    result["fused_ms"] = two_streams_ms(part.rest.stream, part.stream, fused, iters)
    result["sequential_ms"] = two_streams_ms(
        part.rest.stream, part.stream,
        lambda: after(part.rest.stream, part.stream, run_gemm, run_reduce), iters)
    result["sequential_whole_gpu_ms"] = common.time_ms(lambda: (run_gemm(), run_reduce()),
                                                       iters=iters)
    comm.check()
    return result


def summarize(r: dict) -> dict:
    alone = max(r["producer_ms"], r["gemm_ms"])
    return {**r, "fused_over_max_alone": r["fused_ms"] / alone,
            "speedup_over_sequential": r["sequential_ms"] / r["fused_ms"],
            # what perfect overlap would give: the sum of the sides alone over the longer
            "overlap_bound": (r["producer_ms"] + r["gemm_ms"]) / alone}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sms", type=int, default=20, help="SMs of the communication side")
    ap.add_argument("--iters", type=int, default=30)
    ap.add_argument("--pull-ctas", type=int, default=1, help="ag_pull's programs per SM")
    ap.add_argument("--reduce-ctas", type=int, default=4, help="rs_reduce's programs per SM")
    ap.add_argument("--reduce-rows", type=int, default=64, help="rs_reduce's ROWS")
    args = ap.parse_args()
    os.environ.setdefault("TORCH_SYMM_MEM_DISABLE_MULTICAST", "1")
    import torch
    import torch.distributed as dist

    import commdsl
    from commdsl.runtime.symmetric import Comm, RegionSpec
    sys.path.insert(0, os.path.join(ROOT, "tests"))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    torch.cuda.set_device(0)
    dist.init_process_group("nccl", init_method=f"tcp://127.0.0.1:{port}", rank=0,
                            world_size=1, device_id=torch.device("cuda", 0))
    part = commdsl.partition(sms=args.sms)
    print(f"partition: {part.sms} SMs (guaranteed: {part.guaranteed}), the rest: {part.rest.sms}")

    def comm_of(name, regions):
        return Comm(None, name, {}, [RegionSpec(n, s, dt, copies=1) for n, s, dt in regions],
                    timeout_s=10.0)

    results = {"sms": part.sms, "gemm_sms": part.rest.sms, "guaranteed": part.guaranteed,
               "ag_gemm": [], "gemm_rs": []}
    # The communication side's constants: its programs (several per SM of its partition keep
    # more loads in flight) and tile rows.
    sides = {"ag_gemm": dict(SMS=part.sms * args.pull_ctas),
             "gemm_rs": dict(SMS=part.sms * args.reduce_ctas, ROWS=args.reduce_rows)}
    results["sides"] = sides
    for name, fn, shapes in (("ag_gemm", bench_ag, AG_SHAPES), ("gemm_rs", bench_rs, RS_SHAPES)):
        rows = []
        for m, n, k in shapes:
            r = summarize(fn(comm_of, part, m, n, k, args.iters, sides[name]))
            results[name].append(r)
            rows.append([f"{m}x{n}x{k}", r["producer_ms"] * 1e3, r["gemm_ms"] * 1e3,
                         r["fused_ms"] * 1e3, r["sequential_ms"] * 1e3,
                         r["sequential_whole_gpu_ms"] * 1e3,
                         r["fused_over_max_alone"], r["speedup_over_sequential"],
                         r["overlap_bound"], r["exact"]])
        side = "ag_pull" if name == "ag_gemm" else "rs_reduce"
        common.print_table(f"{name}: {side} on {part.sms} SMs, GEMM on {part.rest.sms} (us)",
                           ["MxNxK", f"{side} alone", "GEMM alone", "fused", "sequential",
                            "sequential (whole GPU)",
                            "fused/max(alone)", "sequential/fused", "bound", "bit-exact"], rows)
    common.write_results("ag_gemm", results)
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
