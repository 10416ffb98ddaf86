"""examples/ag_gemm.cdsl and examples/gemm_rs.cdsl on simulated ranks (2 and 4): the producer
and the kernel that waits for its flags run at once, as on disjoint SMs, both before the
passes and after all of them (the flag wait split between the TMA producer and the
consumers, passes/pipeline.py); the output equals fp8_gemm's bit for bit; a rank that never
signals ends in a clear error within the timeout. What the GPU code of the wait looks like
is checked on the PTX."""
from __future__ import annotations

import os
import re
import time

import pytest
import torch

from commdsl.compiler import compile_file, compile_source
from commdsl.interpreter import Launch, run, run_concurrently
from commdsl.interpreter_comm import InterpreterWaitError
from commdsl.passes import PASS_ORDER, get_pass
from commdsl.target import get_target
from test_fp8_gemm import mn_major

from test_fp8_gemm import random_operands

EXAMPLES = os.path.join(os.path.dirname(__file__), "..", "examples")
AG = os.path.join(EXAMPLES, "ag_gemm.cdsl")
RS = os.path.join(EXAMPLES, "gemm_rs.cdsl")
FP8_GEMM = os.path.join(EXAMPLES, "fp8_gemm.cdsl")
SMALL = dict(GEMM_SMS=3, SMS=2, ROWS=32, CHUNK=128, GROUP=2)   # a few programs: quick


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def kernel_ir(path: str, name: str, lowered: bool, **constants):
    """The kernel's IR before the passes, or after all of them (lowered)."""
    text = open(path).read()
    own = text[text.index(f"kernel {name}("):]
    own = own[:own.find("\nkernel ", 1) % len(own) or len(own)]
    used = {k: v for k, v in {**SMALL, **constants}.items()
            if re.search(rf"\b(tune|const) {k}\b", own)}
    kir = compile_source(text, path, kernel=name, constants=used, emit="ir").ir[0]
    if lowered:
        target = get_target("sm_90a")
        for p in PASS_ORDER:
            kir = get_pass(p)(kir, target)
    return kir


def fp8_gemm(a, sa, b, sb, lowered):
    """examples/fp8_gemm.cdsl's output, interpreted at the same stage (the unfused reference;
    passes/mma.py fuses the promotion's rounding, so the stages differ by an ulp)."""
    m, n = a.shape[0], b.shape[0]
    d = torch.full((m, n), float("nan"), dtype=torch.bfloat16)
    kir = kernel_ir(FP8_GEMM, "fp8_gemm", lowered)
    run(kir, dict(a=a, sa=mn_major(sa), b=b, sb=sb, d=d), dict(M=m, N=n, K=a.shape[1]), sms=3)
    return d


def assert_wait_error(launches, waits: str):
    """The launches end within 10 s in the wait error `waits` names: its flag still 0 when
    the 1 s timeout passes (or, on another rank, once the rest have ended that way)."""
    start = time.monotonic()
    with pytest.raises(InterpreterWaitError, match=waits + r", but it is 0 and "
                       r"(1\.0 s passed|every other rank has finished)"):
        run_concurrently(launches, timeout_s=1.0)
    assert time.monotonic() - start < 10


def poisoned(shape, dtype):
    return torch.full(shape, float("nan") if dtype.is_floating_point else -7, dtype=dtype)


# ---- all-gather + GEMM ----------------------------------------------------------------------

def ag_launches(world, shard_rows, n, k, lowered, epoch=5, signal=True):
    """ag_pull (epoch - 1) and ag_gemm (epoch) on `world` ranks; returns the launches, the
    gathered operands and each rank's b, sb and output."""
    shards = [random_operands(shard_rows, n, k, seed=10 + r) for r in range(world)]
    weights = [random_operands(shard_rows, n, k, seed=50 + r)[2:] for r in range(world)]
    m = world * shard_rows
    ready = [torch.zeros(world, shard_rows // 128, dtype=torch.int32) for _ in range(world)]
    flags = [torch.zeros(world, dtype=torch.int32) for _ in range(world)]
    gathered = [(poisoned((m, k), torch.float8_e4m3fn), poisoned((m, k // 128), torch.float32))
                for _ in range(world)]
    outs = [poisoned((m, n), torch.bfloat16) for _ in range(world)]
    pull = Launch(kernel_ir(AG, "ag_pull", False),
                  [dict(a_shard=shards[r][0], sa_shard=shards[r][1], a=gathered[r][0],
                        sa=gathered[r][1], ready=ready[r], flags=flags[r]) for r in range(world)],
                  [dict(MS=shard_rows, K=k, W=world)] * world, epoch - 1)
    gemm = Launch(kernel_ir(AG, "ag_gemm", lowered),
                  [dict(a=gathered[r][0], sa=gathered[r][1], b=weights[r][0], sb=weights[r][1],
                        d=outs[r], ready=ready[r]) for r in range(world)],
                  [dict(M=m, N=n, K=k, W=world)] * world, epoch)
    launches = [pull, gemm] if signal else [gemm]
    return launches, shards, weights, outs


@pytest.mark.parametrize("world", [2, 4])
@pytest.mark.parametrize("lowered", [False, True], ids=["source", "lowered"])
def test_ag_gemm_equals_gather_then_gemm(world, lowered):
    shard_rows, n, k = 128, 192, 256
    launches, shards, weights, outs = ag_launches(world, shard_rows, n, k, lowered)
    run_concurrently(launches, timeout_s=20.0)
    a = torch.cat([s[0] for s in shards])
    sa = torch.cat([s[1] for s in shards])
    for r in range(world):
        expected = fp8_gemm(a, sa, *weights[r], lowered)
        assert torch.equal(outs[r].view(torch.int16), expected.view(torch.int16)), f"rank {r}"


@pytest.mark.parametrize("lowered", [False, True], ids=["source", "lowered"])
def test_ag_gemm_without_its_producer_is_a_clear_error(lowered):
    launches, *_ = ag_launches(2, 128, 128, 128, lowered, signal=False)
    assert_wait_error(launches, r"ag_gemm: rank \d waits for ready\[0, 0\] >= 4")


def test_launches_that_disagree_on_a_symmetric_tensor_are_refused():
    """Two launches naming one symmetric tensor must share it, as on the GPU; a copy of it
    would hide the producer's flags from the GEMM."""
    from commdsl.interpreter_async import InterpreterError
    launches, *_ = ag_launches(2, 128, 128, 128, False)
    launches[1].tensors = [{**t, "ready": t["ready"].clone()} for t in launches[1].tensors]
    with pytest.raises(InterpreterError, match="ag_gemm: the symmetric tensor 'ready' is given "
                       "other tensors than another launch's of that name"):
        run_concurrently(launches)


# ---- GEMM + reduce-scatter ------------------------------------------------------------------

def rs_launches(world, m, n, k, lowered, epoch=9, reduce=True, gemm=True):
    """gemm_rs (epoch - 1) then rs_reduce (epoch) on `world` ranks, rank r multiplying its
    slice of K (`k` columns each)."""
    operands = [random_operands(m, n, k, seed=100 + r) for r in range(world)]
    mo = m // world
    part = [poisoned((world, mo, n), torch.bfloat16) for _ in range(world)]
    done = [torch.zeros(world, mo // 128, -(-n // 128), dtype=torch.int32) for _ in range(world)]
    outs = [poisoned((mo, n), torch.bfloat16) for _ in range(world)]
    launches = []
    if gemm:
        launches.append(Launch(kernel_ir(RS, "gemm_rs", lowered),
                               [dict(a=operands[r][0], sa=operands[r][1], b=operands[r][2],
                                     sb=operands[r][3], part=part[r], done=done[r])
                                for r in range(world)],
                               [dict(M=m, N=n, K=k, W=world)] * world, epoch - 1))
    if reduce:
        launches.append(Launch(kernel_ir(RS, "rs_reduce", False),
                               [dict(part=part[r], done=done[r], d=outs[r]) for r in range(world)],
                               [dict(MO=mo, N=n, W=world)] * world, epoch))
    return launches, operands, outs


@pytest.mark.parametrize("world", [2, 4])
@pytest.mark.parametrize("lowered", [False, True], ids=["source", "lowered"])
def test_gemm_rs_equals_gemm_then_reduce_scatter(world, lowered):
    m, n, k = world * 128, 192, 256
    launches, operands, outs = rs_launches(world, m, n, k, lowered)
    run_concurrently(launches, timeout_s=20.0)
    partials = [fp8_gemm(*ops, lowered).float() for ops in operands]
    total = torch.zeros(m, n)
    for p in partials:                      # the reduce's order: rank 0 first
        total = total + p
    total = total.to(torch.bfloat16)
    mo = m // world
    for r in range(world):
        assert torch.equal(outs[r].view(torch.int16),
                           total[r * mo:(r + 1) * mo].view(torch.int16)), f"rank {r}"


def test_reduce_without_the_gemm_is_a_clear_error():
    launches, *_ = rs_launches(2, 256, 128, 128, False, gemm=False)
    assert_wait_error(launches, r"rs_reduce: rank \d waits for done\[0, 0, 0\] >= 8")


# ---- the GPU code of the wait and the signal ------------------------------------------------

def entry(ptx: str, name: str) -> str:
    start = ptx.index(f".entry {name}(")
    end = ptx.find(".entry ", start + 1)
    return ptx[start:end if end > 0 else len(ptx)]


def test_ag_gemm_producer_fences_the_async_proxy_after_its_acquire():
    ptx = entry(compile_file(AG).ptx, "ag_gemm")
    acquire = [m.start() for m in re.finditer(r"ld\.acquire\.sys\.global\.b32", ptx)]
    fence = ptx.index("fence.proxy.async.global;")
    assert len(acquire) >= 2          # the producer's and the consumers' (LLVM may peel a poll)
    assert "nanosleep.u32" in ptx                # a poll that missed sleeps before the next
    assert any(a < fence for a in acquire)
    assert ptx.find("cp.async.bulk.tensor.2d", fence) > fence
    assert "barrier.red.or.pred" not in ptx      # no CTA barrier the producer would miss


def test_gemm_rs_signal_meets_only_the_consumers():
    ptx = entry(compile_file(RS).ptx, "gemm_rs")
    meet = ptx.index("bar.sync 15, 256;")
    release = ptx.index("st.release.sys.global.b32")
    assert meet < release
    assert "bar.sync 0;" not in ptx[ptx.index("setmaxnreg.inc"):]


WAIT = "    wait ready[m0 / (M / W), m0 % (M / W) / 128] >= epoch - 1"
# ag_gemm with a flag per piece of KC columns, waited for in a loop around the K loop.
PER_PIECE = open(AG).read().replace(
    "d: out bf16[M, N], ready: sym i32[W, M / W / 128])",
    "d: out bf16[M, N], ready: sym i32[W, M / W / 128, K / KC])\n  tune KC = 128 in [128]"
).replace(WAIT + "\n", "").replace(
    "    for k in 0 .. K step 128 pipeline(STAGES) {",
    "    for kc in 0 .. K step KC {\n"
    "    wait ready[m0 / (M / W), m0 % (M / W) / 128, kc / KC] >= epoch - 1\n"
    "    for k in kc .. kc + KC step 128 pipeline(STAGES) {").replace(
    "    store d[m0 : +BM, n0 : +BN]", "    }\n    store d[m0 : +BM, n0 : +BN]")


@pytest.mark.parametrize("lowered", [False, True], ids=["source", "lowered"])
def test_a_wait_per_piece_of_k_gates_the_steps_that_read_it(lowered, tmp_path):
    """All pieces ready: fp8_gemm's result; one piece never raised: its wait is reported."""
    path = tmp_path / "ag_gemm_pieces.cdsl"
    path.write_text(PER_PIECE)
    m, n, k = 256, 128, 384
    a, sa, b, sb = random_operands(m, n, k, seed=3)
    kir = kernel_ir(str(path), "ag_gemm", lowered, KC=128)
    ready = torch.full((1, m // 128, k // 128), 4, dtype=torch.int32)
    d = poisoned((m, n), torch.bfloat16)
    args = dict(a=a, sa=sa, b=b, sb=sb, d=d, ready=ready)
    run_concurrently([Launch(kir, [args], [dict(M=m, N=n, K=k, W=1)], 5)], timeout_s=5.0)
    assert torch.equal(d.view(torch.int16), fp8_gemm(a, sa, b, sb, lowered).view(torch.int16))
    ready[0, 1, 2] = 3
    with pytest.raises(InterpreterWaitError, match=r"waits for ready\[0, 1, 2\] >= 4"):
        run_concurrently([Launch(kir, [args], [dict(M=m, N=n, K=k, W=1)], 5)], timeout_s=0.5)


def test_wait_inside_other_control_flow_of_the_nest_is_not_supported_yet():
    source = open(AG).read().replace(
        WAIT + "\n", "    for j in 0 .. 1 {" + WAIT + " }\n")
    from commdsl.diagnostics import CompileError
    line = open(AG).read().splitlines().index(WAIT) + 1
    with pytest.raises(CompileError, match=rf"ag_gemm.cdsl:{line}:\d+: error: a wait inside "
                       "other control flow of a pipelined loop nest is not supported yet"):
        compile_source(source, "ag_gemm.cdsl", kernel="ag_gemm")
