"""On one host's GPUs: MoE dispatch delivers exactly the tokens, scales and indices a torch
reference computes (bit for bit), combine matches a float64 reference within 5e-3 relative
error, on torch's CUDA symmetric-memory backend over 1 rank and 2 and its NVSHMEM one over 2
(its rendezvous needs 2); and a rank that skips a call ends in a CommError within the timeout.

Each test spawns a process per rank (NCCL, one GPU each); a worker reports failures as text, so
the assertion here shows every rank's problem. NVLink multicast stays off (NCCL_NVLS_ENABLE=0,
TORCH_SYMM_MEM_DISABLE_MULTICAST=1, NVSHMEM_DISABLE_NVLS=1, set here as bench/moe_check.sh does).
"""
import multiprocessing
import os
import socket
import time
import traceback

import pytest

pytestmark = pytest.mark.gpu

HIDDEN, EXPERTS, TOPK = 7168, 256, 8


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _spawn(target, *args, world=2, timeout=240, reporting=None):
    """Runs target(rank, world, *args) on `world` ranks; returns {rank: report} of the ranks
    in `reporting` (default all: a rank that dies on purpose reports nothing)."""
    import torch
    if torch.cuda.device_count() < world:
        pytest.skip(f"needs {world} GPUs")
    os.environ.setdefault("NCCL_NVLS_ENABLE", "0")
    os.environ.setdefault("TORCH_SYMM_MEM_DISABLE_MULTICAST", "1")
    os.environ.setdefault("NVSHMEM_DISABLE_NVLS", "1")
    ctx = multiprocessing.get_context("spawn")
    results = ctx.Queue()
    port = _free_port()
    procs = [ctx.Process(target=_main, args=(target, r, world, port, results, args))
             for r in range(world)]
    for p in procs:
        p.start()
    out = {}
    try:
        for _ in range(world if reporting is None else len(reporting)):
            rank, report = results.get(timeout=timeout)
            out[rank] = report
    finally:
        for p in procs:
            p.join(timeout=30)
            if p.is_alive():
                p.kill()
    return out


def _main(target, rank, world, port, results, args):
    import torch
    import torch.distributed as dist
    torch.cuda.set_device(rank)
    dist.init_process_group("nccl", init_method=f"tcp://127.0.0.1:{port}", rank=rank,
                            world_size=world, device_id=torch.device("cuda", rank))
    try:
        results.put((rank, target(rank, world, *args)))
    except Exception:
        results.put((rank, [f"rank {rank}: " + traceback.format_exc()]))
    finally:
        dist.destroy_process_group()


def routing(rank, tokens, world, seed):
    """Rank `rank`'s random top-k routing (a CPU generator, so every rank can rebuild every
    other rank's): a third of the tokens have all their experts on one rank."""
    import torch
    g = torch.Generator().manual_seed(seed * 100 + rank)
    per = EXPERTS // world
    ids = torch.rand(tokens, EXPERTS, generator=g).argsort(1)[:, :TOPK]
    one = torch.arange(0, tokens, 3)
    home = (one + rank) % world
    ids[one] = home[:, None] * per + torch.rand(len(one), per, generator=g).argsort(1)[:, :TOPK]
    w = torch.rand(tokens, TOPK, generator=g)
    x = torch.randn(tokens, HIDDEN, generator=g)
    x.view(-1)[torch.randint(0, max(1, x.numel()), (max(1, x.numel() // 500),), generator=g)] *= 50
    return ids, w / w.sum(1, keepdim=True), x


def expert_output(recv_x, recv_ids, recv_weights, rank, world):
    """A stand-in expert layer: expert e scales by (e + 1) / EXPERTS; weighted, summed."""
    import torch
    per = EXPERTS // world
    gain = torch.where(recv_ids >= 0, (recv_ids + rank * per + 1).float() / EXPERTS, 0.0)
    return (recv_x.float() * (recv_weights * gain).sum(1, keepdim=True)).to(torch.bfloat16)


def check_dispatch_combine(rank, world, cases, backend):
    import torch

    from commdsl.moe import MoeBuffer
    problems = []
    for fp8 in (False, True):
        buf = MoeBuffer(max_tokens=max(t for t, _ in cases), hidden=HIDDEN, num_experts=EXPERTS,
                        topk=TOPK, fp8=fp8, timeout_s=20, backend=backend)
        per = EXPERTS // world
        for tokens, seed in cases:
            name = f"{'fp8' if fp8 else 'bf16'} T={tokens}"
            inputs = [routing(r, tokens, world, seed) for r in range(world)]
            if fp8:
                xq = [(x.view(tokens, -1, 128) / (x.view(tokens, -1, 128).abs().amax(-1, True)
                                                  .clamp(min=1e-4) / 448)).view(tokens, -1)
                      .to(torch.float8_e4m3fn) for _, _, x in inputs]
                scales = [x.view(tokens, -1, 128).abs().amax(-1).clamp(min=1e-4) / 448
                          for _, _, x in inputs]
            else:
                xq = [x.to(torch.bfloat16) for _, _, x in inputs]
                scales = [None] * world
            ids, w, _ = inputs[rank]
            out = buf.dispatch(xq[rank].cuda(), ids.cuda(), w.cuda(),
                               None if scales[rank] is None else scales[rank].cuda())
            # The reference: every rank's received rows, grouped by source rank, in order.
            recv_ref = []
            for r in range(world):
                rows = [(s, (inputs[s][0] // per == r).any(1).nonzero()[:, 0])
                        for s in range(world)]
                recv_ref.append(rows)
            mine = recv_ref[rank]
            ref_x = torch.cat([xq[s][t] for s, t in mine])
            ref_ids = torch.cat([torch.where(inputs[s][0][t] // per == rank,
                                             inputs[s][0][t] - rank * per, -1) for s, t in mine])
            ref_w = torch.cat([torch.where(inputs[s][0][t] // per == rank, inputs[s][1][t], 0.0)
                               for s, t in mine])
            got = out.recv_x.cpu()
            if got.shape != ref_x.shape or not torch.equal(got.view(torch.uint8),
                                                           ref_x.view(torch.uint8)):
                problems.append(f"rank {rank} {name}: recv_x differs")
            if fp8:
                ref_s = torch.cat([scales[s][t] for s, t in mine])
                if not torch.equal(out.recv_x_scales.cpu(), ref_s):
                    problems.append(f"rank {rank} {name}: recv_x_scales differ")
            if not torch.equal(out.recv_topk_idx.cpu(), ref_ids):
                problems.append(f"rank {rank} {name}: recv_topk_idx differs")
            if not torch.equal(out.recv_topk_weights.cpu(), ref_w):
                problems.append(f"rank {rank} {name}: recv_topk_weights differ")
            if out.num_recv_tokens_per_expert != torch.bincount(ref_ids[ref_ids >= 0],
                                                                minlength=per).tolist():
                problems.append(f"rank {rank} {name}: tokens per expert differ")
            # Combine: every rank's expert outputs, summed in float64 on the home rank.
            deq = (lambda r, rows: xq[r][rows].float() *
                   scales[r][rows].repeat_interleave(128, 1)) if fp8 else \
                (lambda r, rows: xq[r][rows].float())
            ys = []
            for r in range(world):
                rx = torch.cat([deq(s, t) for s, t in recv_ref[r]]).to(torch.bfloat16)
                rids = torch.cat([torch.where(inputs[s][0][t] // per == r,
                                              inputs[s][0][t] - r * per, -1)
                                  for s, t in recv_ref[r]])
                rw = torch.cat([torch.where(inputs[s][0][t] // per == r, inputs[s][1][t], 0.0)
                                for s, t in recv_ref[r]])
                ys.append(expert_output(rx, rids, rw, r, world))
            expected = torch.zeros(tokens, HIDDEN, dtype=torch.float64)
            for p in range(world):
                start = 0
                for s, t in recv_ref[p]:
                    if s == rank:
                        expected[t] += ys[p][start:start + len(t)].double()
                    start += len(t)
            combined = buf.combine(ys[rank].cuda(), out.handle).cpu().double()
            err = (combined - expected).abs()
            bad = err > 5e-3 * expected.abs()
            if bad.any():
                problems.append(f"rank {rank} {name}: combine off by up to "
                                f"{(err / expected.abs().clamp(min=1e-30)).max():.3g} relative")
        torch.cuda.synchronize()
    return problems


@pytest.mark.parametrize("world", [1, 2])
@pytest.mark.parametrize("backend", ["CUDA", "NVSHMEM"])
def test_dispatch_and_combine_match_torch(backend, world):
    """World 1 runs where one GPU is lent: the rank reads and writes its own heap through
    the same symmetric tables and flags (CUDA backend only)."""
    import torch.distributed._symmetric_memory as symm_mem
    if backend == "NVSHMEM" and not symm_mem.is_nvshmem_available():
        pytest.skip("this torch has no NVSHMEM")
    if backend == "NVSHMEM" and world == 1:
        pytest.skip("torch's NVSHMEM rendezvous needs 2 ranks (a Comm says so: "
                    "test_symmetric_backend.py)")
    cases = [(1, 1), (128, 2), (4096, 3)]
    out = _spawn(check_dispatch_combine, cases, backend, world=world)
    problems = [p for r in sorted(out) for p in out[r]]
    assert not problems, "\n".join(problems)


def skip_a_call(rank, world, timeout_s):
    import torch

    from commdsl.moe import MoeBuffer
    from commdsl.runtime.symmetric import CommError
    buf = MoeBuffer(max_tokens=64, hidden=HIDDEN, num_experts=EXPERTS, topk=TOPK,
                    timeout_s=timeout_s)
    ids, w, x = routing(rank, 64, world, 7)
    out = buf.dispatch(x.to(torch.bfloat16).cuda(), ids.cuda(), w.cuda())
    y = out.recv_x
    if rank == 1:
        time.sleep(timeout_s + 3)            # never calls combine; stays up meanwhile
        return ["skipped"]
    start = time.monotonic()
    try:
        buf.combine(y, out.handle)
    except CommError as e:
        seconds = time.monotonic() - start
        ok = "rank 1" in str(e) and "moe_combine" in str(e) and seconds < timeout_s + 10
        return [] if ok else [f"rank 0: unclear or late ({seconds:.1f} s): {e}"]
    return ["rank 0: combine returned although rank 1 never called it"]


def die_after_dispatch(rank, world, timeout_s):
    import torch

    from commdsl.moe import MoeBuffer
    from commdsl.runtime.symmetric import CommError
    buf = MoeBuffer(max_tokens=64, hidden=HIDDEN, num_experts=EXPERTS, topk=TOPK,
                    timeout_s=timeout_s)
    ids, w, x = routing(rank, 64, world, 7)
    out = buf.dispatch(x.to(torch.bfloat16).cuda(), ids.cuda(), w.cuda())
    torch.cuda.synchronize()
    if rank == 1:
        os._exit(3)                          # dies: no report, no goodbye to the group
    start = time.monotonic()
    try:
        buf.combine(out.recv_x, out.handle)
    except CommError as e:
        seconds = time.monotonic() - start
        ok = "rank 1" in str(e) and seconds < timeout_s + 10
        return [] if ok else [f"rank 0: unclear or late ({seconds:.1f} s): {e}"]
    return ["rank 0: combine returned although rank 1 had died"]


def test_a_rank_that_dies_ends_the_others_in_an_error_within_the_timeout():
    out = _spawn(die_after_dispatch, 3.0, timeout=120, reporting=[0])
    assert out == {0: []}, out


def test_a_rank_that_skips_a_call_ends_in_an_error_not_a_hang():
    out = _spawn(skip_a_call, 3.0, timeout=120)
    assert out[0] == [], out[0]
    assert out[1] == ["skipped"], out[1]
