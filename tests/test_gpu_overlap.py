"""ag_gemm and gemm_rs on a GPU at world size 1 over symmetric memory: fused on two
partitions (commdsl.partition and its rest) the outputs equal fp8_gemm's bit for bit on
ragged shapes, and a GEMM whose producer never runs ends in CommError within the timeout
instead of hanging."""
from __future__ import annotations

import os
import socket
import time

import pytest

torch = pytest.importorskip("torch")
pytestmark = pytest.mark.gpu
if not torch.cuda.is_available():
    pytest.skip("needs a CUDA GPU", allow_module_level=True)

import commdsl  # noqa: E402
from commdsl.api import load_comm  # noqa: E402
from commdsl.runtime.symmetric import Comm, CommError, RegionSpec  # noqa: E402

from test_fp8_gemm import mn_major, quantize_a, quantize_b  # noqa: E402

EXAMPLES = os.path.join(os.path.dirname(__file__), "..", "examples")
AG = os.path.join(EXAMPLES, "ag_gemm.cdsl")
RS = os.path.join(EXAMPLES, "gemm_rs.cdsl")
FP8_GEMM = os.path.join(EXAMPLES, "fp8_gemm.cdsl")
_names = iter(range(1 << 30))


@pytest.fixture(scope="module")
def group():
    import torch.distributed as dist
    os.environ.setdefault("TORCH_SYMM_MEM_DISABLE_MULTICAST", "1")
    if not dist.is_initialized():
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        dist.init_process_group("nccl", init_method=f"tcp://127.0.0.1:{port}", rank=0,
                                world_size=1, device_id=torch.device("cuda", 0))
    yield dist.group.WORLD


@pytest.fixture(scope="module")
def part():
    return commdsl.partition(sms=20)


def comm(group, regions, timeout_s=10.0):
    return Comm(group, f"overlap{next(_names)}",
                {}, [RegionSpec(n, s, dt, copies=1) for n, s, dt in regions], timeout_s=timeout_s)


def operands(m, n, k, seed):
    torch.manual_seed(seed)
    x = torch.randn(m, k, device="cuda")
    x[0, 0] = 300.0                                   # an outlier in a group
    return (*quantize_a(x), *quantize_b(torch.randn(n, k, device="cuda")))


@pytest.mark.parametrize("m,n,k", [(256, 200, 384), (1024, 2112, 7168)])
def test_ag_gemm_fused_equals_fp8_gemm(group, part, m, n, k):
    a0, sa0, b, sb = operands(m, n, k, seed=m + n)
    c = comm(group, [("a_shard", (m, k), "e4m3"), ("sa_shard", (m, k // 128), "f32"),
                     ("ready", (1, m // 128), "i32")])
    a_shard, sa_shard, ready = (c.region(r).next() for r in ("a_shard", "sa_shard", "ready"))
    a_shard.copy_(a0)
    sa_shard.copy_(sa0)
    ready.zero_()
    a = torch.full((m, k), float("nan"), device="cuda").to(torch.float8_e4m3fn)
    sa = torch.full((m, k // 128), float("nan"), device="cuda")
    d = torch.full((m, n), float("nan"), device="cuda", dtype=torch.bfloat16)
    pull = load_comm(c, AG, "ag_pull", SMS=part.sms)
    gemm = load_comm(c, AG, "ag_gemm", GEMM_SMS=part.rest.sms)
    for _ in range(3):                   # later launches find the flags of earlier epochs
        d.fill_(float("nan"))
        with torch.cuda.stream(part.stream):
            pull(a_shard=a_shard, sa_shard=sa_shard, a=a, sa=sa, ready=ready, flags=c.flags)
        with torch.cuda.stream(part.rest.stream):
            gemm(a=a, sa=sa, b=b, sb=sb, d=d, ready=ready)
        torch.cuda.synchronize()
        c.check()
        ref = commdsl.load(FP8_GEMM, config="declared")(a0, mn_major(sa0), b, sb)
        assert torch.equal(d.view(torch.int16), ref.view(torch.int16))


@pytest.mark.parametrize("m,n,k", [(256, 200, 384), (1024, 7168, 2048)])
def test_gemm_rs_fused_equals_fp8_gemm(group, part, m, n, k):
    a, sa, b, sb = operands(m, n, k, seed=m + k)
    c = comm(group, [("part", (1, m, n), "bf16"), ("done", (1, m // 128, -(-n // 128)), "i32")])
    part_buf, done = c.region("part").next(), c.region("done").next()
    part_buf.fill_(float("nan"))
    done.zero_()
    d = torch.full((m, n), float("nan"), device="cuda", dtype=torch.bfloat16)
    gemm = load_comm(c, RS, "gemm_rs", GEMM_SMS=part.rest.sms)
    reduce = load_comm(c, RS, "rs_reduce", SMS=part.sms)
    for _ in range(3):
        d.fill_(float("nan"))
        with torch.cuda.stream(part.rest.stream):
            gemm(a=a, sa=sa, b=b, sb=sb, part=part_buf, done=done)
        with torch.cuda.stream(part.stream):
            reduce(part=part_buf, done=done, d=d)
        torch.cuda.synchronize()
        c.check()
        ref = commdsl.load(FP8_GEMM, config="declared")(a, mn_major(sa), b, sb)
        assert torch.equal(d.view(torch.int16), ref.view(torch.int16))


def test_a_gemm_whose_producer_never_runs_raises_comm_error(group, part):
    """ag_pull, ag_gemm (its blocks ready), then ag_gemm again without a pull: the second
    waits for epoch 2's blocks, which nobody raises."""
    m, n, k = 256, 256, 256
    a0, sa0, b, sb = operands(m, n, k, seed=1)
    c = comm(group, [("a_shard", (m, k), "e4m3"), ("sa_shard", (m, k // 128), "f32"),
                     ("ready", (1, m // 128), "i32")], timeout_s=1.0)
    a_shard, sa_shard, ready = (c.region(r).next() for r in ("a_shard", "sa_shard", "ready"))
    a_shard.copy_(a0)
    sa_shard.copy_(sa0)
    ready.zero_()
    a, sa = torch.empty_like(a0), torch.empty_like(sa0)
    d = torch.empty(m, n, device="cuda", dtype=torch.bfloat16)
    pull = load_comm(c, AG, "ag_pull", SMS=part.sms)
    gemm = load_comm(c, AG, "ag_gemm", GEMM_SMS=part.rest.sms)
    pull(a_shard=a_shard, sa_shard=sa_shard, a=a, sa=sa, ready=ready, flags=c.flags)
    gemm(a=a, sa=sa, b=b, sb=sb, d=d, ready=ready)
    torch.cuda.synchronize()
    c.check()
    start = time.monotonic()
    gemm(a=a, sa=sa, b=b, sb=sb, d=d, ready=ready)
    torch.cuda.synchronize()
    assert time.monotonic() - start < 10
    with pytest.raises(CommError, match=r"rank 0 waited 1 s for flag \d+( \(rank 0's, [^)]*\))? "
                       r"to reach epoch 2 \(that of ag_gemm\), but it stayed at 1"):
        c.check()
