"""Ranks that disagree end in a clear CommError within the timeout, not a hang: two real
processes meet through torch.distributed (gloo, so this runs without a GPU) and create a
MoeBuffer, whose first step is the handshake (runtime/symmetric.py)."""
import multiprocessing
import socket
import time

import pytest

TIMEOUT_S = 3.0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank, port, hidden, join, results):
    import torch.distributed as dist

    from commdsl.moe import MoeBuffer
    from commdsl.runtime.symmetric import CommError
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank,
                            world_size=2)
    start = time.monotonic()
    try:
        if join:
            MoeBuffer(max_tokens=16, hidden=hidden, num_experts=8, topk=2, timeout_s=TIMEOUT_S)
        results.put((rank, "ok", time.monotonic() - start))
    except CommError as e:
        results.put((rank, str(e), time.monotonic() - start))
    except Exception as e:                  # reported to the test, which fails on it
        results.put((rank, f"{type(e).__name__}: {e}", time.monotonic() - start))
    if not join:                            # stay up (the store lives on rank 0) until told
        time.sleep(TIMEOUT_S + 2)
    dist.destroy_process_group()


def _run(hiddens, joins):
    ctx = multiprocessing.get_context("spawn")
    results = ctx.Queue()
    port = _free_port()
    procs = [ctx.Process(target=_worker, args=(r, port, hiddens[r], joins[r], results))
             for r in range(2)]
    for p in procs:
        p.start()
    out = {}
    for _ in range(2):
        rank, message, seconds = results.get(timeout=60)
        out[rank] = (message, seconds)
    for p in procs:
        p.join(timeout=30)
        if p.is_alive():
            p.kill()
    return out


def test_different_shapes_are_a_clear_error_on_every_rank():
    out = _run([7168, 4096], [True, True])
    for rank in (0, 1):
        message, _ = out[rank]
        assert "ranks disagree on hidden" in message, message
        assert "7168" in message and "4096" in message


def test_a_rank_that_never_joins_is_an_error_within_the_timeout():
    out = _run([7168, 7168], [True, False])
    message, seconds = out[0]
    assert "rank(s) 1 of 2 did not join within 3 s" in message, message
    assert TIMEOUT_S - 0.5 <= seconds < TIMEOUT_S + 10
    assert out[1][0] == "ok"


@pytest.mark.parametrize("hidden", [7168])
def test_matching_ranks_pass_the_handshake(hidden):
    """Both agree, so both get past the handshake: on this machine they then stop where
    symmetric memory needs CUDA, which shows the handshake itself succeeded."""
    out = _run([hidden, hidden], [True, True])
    for rank in (0, 1):
        message, _ = out[rank]
        assert "disagree" not in message and "did not join" not in message, message
