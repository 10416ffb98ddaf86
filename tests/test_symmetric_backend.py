"""The symmetric-memory backend of a Comm (runtime/symmetric.py): chosen by argument or
COMMDSL_SYMM_BACKEND, a wrong name a clear error before any rank meets, one backend per
process, NVLink multicast off before the first allocation, and the one-host rule only for
the CUDA backend. Runs without a GPU (a stand-in for torch's symmetric memory; gloo)."""
import multiprocessing
import os
import socket

import pytest

from commdsl.runtime import symmetric
from commdsl.runtime.symmetric import BACKEND_ENV, Comm, CommError, symmetric_backend


@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
    for key in (BACKEND_ENV, "TORCH_SYMM_MEM_DISABLE_MULTICAST", "NVSHMEM_DISABLE_NVLS",
                "NCCL_NVLS_ENABLE"):
        monkeypatch.delenv(key, raising=False)


def test_the_backend_comes_from_the_argument_then_the_environment(monkeypatch):
    assert symmetric_backend(None) == "CUDA"
    assert symmetric_backend("nvshmem") == "NVSHMEM"
    monkeypatch.setenv(BACKEND_ENV, "NVSHMEM")
    assert symmetric_backend(None) == "NVSHMEM"
    assert symmetric_backend("CUDA") == "CUDA"


@pytest.mark.parametrize("given, named", [("nccl", "backend='nccl'"), (3, "backend=3")])
def test_a_backend_commdsl_does_not_use_is_named_with_what_to_write(given, named):
    with pytest.raises(CommError) as e:
        Comm(None, "moe", {}, [], backend=given)       # before any process group is needed
    assert named in str(e.value) and "'CUDA', 'NVSHMEM'" in str(e.value)


def test_a_wrong_environment_value_names_the_variable(monkeypatch):
    monkeypatch.setenv(BACKEND_ENV, "shm")
    with pytest.raises(CommError, match=f"{BACKEND_ENV}='shm'"):
        symmetric_backend(None)


class FakeSymmetricMemory:
    def __init__(self, current=None, nvshmem=True):
        self.current, self.nvshmem, self.set = current, nvshmem, []

    def get_backend(self, device):
        return self.current

    def set_backend(self, name):
        self.set.append(name)

    def is_nvshmem_available(self):
        return self.nvshmem


def test_nvshmem_is_set_with_nvlink_multicast_off():
    fake = FakeSymmetricMemory()
    symmetric._use_backend(fake, "NVSHMEM", "cuda:0")
    assert fake.set == ["NVSHMEM"]
    assert os.environ["NVSHMEM_DISABLE_NVLS"] == "1"
    assert os.environ["TORCH_SYMM_MEM_DISABLE_MULTICAST"] == "1"
    assert os.environ["NCCL_NVLS_ENABLE"] == "0"


def test_the_cuda_backend_sets_torchs_multicast_switch_only():
    fake = FakeSymmetricMemory()
    symmetric._use_backend(fake, "CUDA", "cuda:0")
    assert fake.set == ["CUDA"] and os.environ["TORCH_SYMM_MEM_DISABLE_MULTICAST"] == "1"
    assert "NVSHMEM_DISABLE_NVLS" not in os.environ


def test_torchs_default_backend_is_replaced_until_a_heap_is_allocated(monkeypatch):
    """torch's get_backend names CUDA before anything is set: that is no reason to refuse
    NVSHMEM; a heap this process allocated with CUDA is."""
    fake = FakeSymmetricMemory(current="CUDA")
    symmetric._use_backend(fake, "CUDA", "cuda:0")                 # the same: nothing to do
    assert fake.set == []
    symmetric._use_backend(fake, "NVSHMEM", "cuda:0")
    assert fake.set == ["NVSHMEM"]
    monkeypatch.setattr(symmetric, "_allocated_with", "CUDA")
    with pytest.raises(CommError, match="already uses CUDA.*backend='CUDA'"):
        symmetric._use_backend(fake, "NVSHMEM", "cuda:0")


def test_torch_refusing_to_switch_is_a_comm_error():
    class Refusing(FakeSymmetricMemory):
        def set_backend(self, name):
            raise RuntimeError("cannot change the backend after allocation")
    with pytest.raises(CommError, match="keeps its symmetric memory on CUDA"):
        symmetric._use_backend(Refusing(current="CUDA"), "NVSHMEM", "cuda:0")


def test_nvshmem_missing_from_the_build_is_a_clear_error():
    with pytest.raises(CommError, match="no NVSHMEM; use backend='CUDA'"):
        symmetric._use_backend(FakeSymmetricMemory(nvshmem=False), "NVSHMEM", "cuda:0")


# -- the one-host rule: two gloo ranks that report different hosts --------------------------

def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank, port, one_host, results):
    import torch.distributed as dist
    socket.gethostname = lambda: f"node{rank}"           # as if each rank ran on its own host
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank,
                            world_size=2)
    try:
        symmetric.handshake(None, "hosts", {"hidden": 7168}, 10.0, one_host=one_host)
        results.put((rank, "ok"))
    except CommError as e:
        results.put((rank, str(e)))
    finally:
        dist.destroy_process_group()


@pytest.mark.parametrize("one_host", [True, False])
def test_ranks_on_two_hosts_are_refused_only_where_the_backend_needs_one_host(one_host):
    ctx = multiprocessing.get_context("spawn")
    results = ctx.Queue()
    port = _free_port()
    procs = [ctx.Process(target=_worker, args=(r, port, one_host, results)) for r in range(2)]
    for p in procs:
        p.start()
    out = dict(results.get(timeout=60) for _ in range(2))
    for p in procs:
        p.join(timeout=30)
    if one_host:
        assert all("runs on node" in m and "backend='NVSHMEM'" in m for m in out.values()), out
    else:
        assert out == {0: "ok", 1: "ok"}


def _single(results):
    import torch.distributed as dist
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{_free_port()}", rank=0,
                            world_size=1)
    try:
        Comm(None, "moe", {}, [], backend="NVSHMEM")
        results.put("no error")
    except CommError as e:
        results.put(str(e))
    finally:
        dist.destroy_process_group()


def test_nvshmem_over_one_rank_is_refused_with_the_alternative():
    """torch's NVSHMEM rendezvous asserts two ranks or more (seen on an H100, torch 2.11)."""
    ctx = multiprocessing.get_context("spawn")
    results = ctx.Queue()
    p = ctx.Process(target=_single, args=(results,))
    p.start()
    message = results.get(timeout=60)
    p.join(timeout=30)
    assert "needs 2 ranks or more" in message and "backend='CUDA'" in message, message
