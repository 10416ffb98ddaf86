"""On one host's GPUs: the low-latency buffer (commdsl/moe_ll.py) delivers each token to its
experts' rows, in order of source rank and token, bit for bit, and combine matches a float64
reference of the weighted expert outputs; the same two launches captured in a CUDA graph and
replayed on new tokens written in place give the new results (the kernels keep their epochs
on the device); FP8 dispatch delivers act_quant's bytes and scales. World size 1 on one GPU,
2 where two are lent, on torch's CUDA symmetric-memory backend and (2 ranks) its NVSHMEM
one."""
import pytest

from test_moe_gpu import _spawn

pytestmark = pytest.mark.gpu

HIDDEN, EXPERTS, TOPK, TMAX = 2048, 32, 4, 64


def _inputs(rank, tokens, seed):
    import torch
    g = torch.Generator().manual_seed(seed * 100 + rank)
    ids = torch.rand(tokens, EXPERTS, generator=g).argsort(1)[:, :TOPK]
    w = torch.rand(tokens, TOPK, generator=g)
    x = torch.randn(tokens, HIDDEN, generator=g).to(torch.bfloat16)
    return ids.int(), w, x


def _check_round(buf, rank, world, tokens, seed, replay=None):
    """One dispatch + experts + combine (or, with `replay(x, ids, w)`, a replay of the
    captured graph on the round's tokens); returns the problems found."""
    import torch
    per = EXPERTS // world
    inputs = [_inputs(r, tokens, seed) for r in range(world)]
    ids, w, x = inputs[rank]
    gain = (torch.arange(per, dtype=torch.float32) + 1 + rank * per) / EXPERTS
    if replay is None:
        out = buf.dispatch(x.cuda(), ids.cuda())
        buf.y.view_as(out.recv_x).copy_(
            (out.recv_x.float() * gain.cuda()[:, None, None]).to(torch.bfloat16))
        combined = buf.combine(ids.cuda(), w.cuda())
    else:
        out, combined = replay(x, ids, w)
    torch.cuda.synchronize()
    buf.check()
    problems = []
    for le in range(per):
        e = rank * per + le
        pairs = [(p, t) for p in range(world) for t in range(tokens)
                 if (inputs[p][0][t] == e).any()]
        n = int(out.recv_count[le])
        if n != len(pairs):
            problems.append(f"rank {rank} expert {e}: {n} rows, expected {len(pairs)}")
            continue
        src = out.recv_src[le, :n].cpu().tolist()
        if src != [p * TMAX + t for p, t in pairs]:
            problems.append(f"rank {rank} expert {e}: sources differ")
        want = torch.stack([inputs[p][2][t] for p, t in pairs]) if pairs else None
        if pairs and not torch.equal(out.recv_x[le, :n].cpu(), want):
            problems.append(f"rank {rank} expert {e}: rows differ")
    ref = torch.zeros(tokens, HIDDEN, dtype=torch.float64)
    for k in range(TOPK):
        owner, le = ids[:, k] // per, ids[:, k] % per
        g = (le + 1 + owner * per).double() / EXPERTS
        ref += w[:, k, None].double() * (x.float() * g.float()[:, None]).to(torch.bfloat16).double()
    if tokens:
        err = ((combined.cpu().double() - ref).abs().max() / ref.abs().max()).item()
        if err > 5e-3:
            problems.append(f"rank {rank}: combine error {err:.2e}")
    return problems


def check_low_latency(rank, world, backend):
    import torch

    from commdsl.moe_ll import LowLatencyBuffer
    buf = LowLatencyBuffer(max_tokens=TMAX, hidden=HIDDEN, num_experts=EXPERTS, topk=TOPK,
                           timeout_s=20, backend=backend, dispatch_config=dict(SMS=16, CHUNK=512),
                           combine_config=dict(SMS=16, CHUNK=512))
    problems = []
    for tokens, seed in ((TMAX, 0), (5, 1), (0, 2)):
        problems += _check_round(buf, rank, world, tokens, seed)
    # capture dispatch + experts + combine on static inputs; replay on two new rounds
    per = EXPERTS // world
    gain = ((torch.arange(per, dtype=torch.float32) + 1 + rank * per) / EXPERTS).cuda()
    x_s = torch.zeros(TMAX, HIDDEN, dtype=torch.bfloat16, device="cuda")
    ids_s = torch.zeros(TMAX, TOPK, dtype=torch.int32, device="cuda")
    w_s = torch.zeros(TMAX, TOPK, device="cuda")
    stream = torch.cuda.Stream()
    graph = torch.cuda.CUDAGraph()
    torch.cuda.synchronize()
    with torch.cuda.stream(stream), torch.cuda.graph(graph, stream=stream):
        out = buf.dispatch(x_s, ids_s)
        buf.y.view_as(out.recv_x).copy_((out.recv_x.float() * gain[:, None, None])
                                        .to(torch.bfloat16))
        combined = buf.combine(ids_s, w_s)
    torch.cuda.synchronize()

    def replay(x, ids, w):
        x_s.copy_(x)
        ids_s.copy_(ids)
        w_s.copy_(w)
        graph.replay()
        return out, combined
    for seed in (3, 4):
        problems += _check_round(buf, rank, world, TMAX, seed, replay)
    return problems


def check_low_latency_fp8(rank, world, backend):
    """FP8 dispatch: each received row's bytes and scales are its token's, quantized as
    act_quant does, bit for bit."""
    import torch

    from commdsl.moe_ll import LowLatencyBuffer
    buf = LowLatencyBuffer(max_tokens=TMAX, hidden=HIDDEN, num_experts=EXPERTS, topk=TOPK,
                           fp8=True, timeout_s=20, backend=backend,
                           dispatch_config=dict(SMS=16, CHUNK=896))
    per = EXPERTS // world
    inputs = [_inputs(r, TMAX, 5) for r in range(world)]
    ids, _, x = inputs[rank]
    out = buf.dispatch(x.cuda(), ids.cuda())
    torch.cuda.synchronize()
    buf.check()
    problems = []
    for le in range(per):
        pairs = [(p, t) for p in range(world) for t in range(TMAX)
                 if (inputs[p][0][t] == rank * per + le).any()]
        n = int(out.recv_count[le])
        if n != len(pairs):
            problems.append(f"rank {rank} expert {le}: {n} rows, expected {len(pairs)}")
            continue
        for j, (p, t) in enumerate(pairs):
            g = inputs[p][2][t].float().view(-1, 128)
            s = g.abs().amax(-1).clamp(min=1e-4) / 448.0
            q = (g / s[:, None]).view(-1).to(torch.float8_e4m3fn)
            if not (torch.equal(out.recv_x[le, j].cpu().view(torch.uint8), q.view(torch.uint8))
                    and torch.equal(out.recv_x_scales[le, :, j].cpu(), s)):
                problems.append(f"rank {rank} expert {le} row {j}: differs")
                break
    return problems


# World 1 on the CUDA backend only: torch's NVSHMEM rendezvous needs 2 ranks.
BACKENDS = [(1, "CUDA"), (2, "CUDA"), (2, "NVSHMEM")]


def _run(check, world, backend):
    import torch.distributed._symmetric_memory as symm_mem
    if backend == "NVSHMEM" and not symm_mem.is_nvshmem_available():
        pytest.skip("this torch has no NVSHMEM")
    reports = _spawn(check, backend, world=world)
    assert not [p for r in reports.values() for p in r], reports


@pytest.mark.parametrize("world,backend", BACKENDS)
def test_low_latency_fp8_dispatch(world, backend):
    _run(check_low_latency_fp8, world, backend)


@pytest.mark.parametrize("world,backend", BACKENDS)
def test_low_latency_dispatch_combine_and_graph_replay(world, backend):
    _run(check_low_latency, world, backend)
