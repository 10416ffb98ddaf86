"""Communication kernels at run time: ranks meet, allocate symmetric memory, launch.

    comm = Comm(group, "moe", config, regions, timeout_s=30)   # every rank of one host
    kernel = load_comm(comm, "examples/moe_dispatch.cdsl", "moe_dispatch", SMS=24)   # api.py
    kernel(x=comm.region("x").next(), src_rank=..., ..., flags=comm.flags)
    comm.check()                                 # raises CommError if a wait timed out

Set-up is torch.distributed's: the ranks of a process group first meet in the group's store
(`handshake`: every rank posts its configuration and host, and waits a bounded time for the
others), then allocate one symmetric heap with torch's symmetric memory (`empty` +
`rendezvous`) and carve it into regions in the same order, so a region has the same offset
on every rank. The heap's peer addresses (`buffer_ptrs`) and the signal pads
(`signal_pad_ptrs`, zeroed by torch) give each symmetric kernel parameter its table of
per-rank base addresses. NVLink multicast is never used (TORCH_SYMM_MEM_DISABLE_MULTICAST=1
is set before the first allocation).

The heap comes from one of torch's backends, `backend=` or COMMDSL_SYMM_BACKEND: "CUDA"
(the default: CUDA IPC between the GPUs of one host) or "NVSHMEM" (its bootstrap over the
process group; NVSHMEM_DISABLE_NVLS=1 and NCCL_NVLS_ENABLE=0 set first, as multicast is).
The kernels move data by loads and stores to peer addresses, so every rank must be
reachable that way: with CUDA, ranks on different hosts are refused at the handshake; with
NVSHMEM, whatever peer it maps (an NVLink domain may span hosts) is accepted and a peer it
cannot map is named after the rendezvous.

Epochs: the n-th communication launch of every rank carries epoch n, and its kernel's first
act is to announce the epoch to all ranks and wait until all have announced it. A region is
double-buffered by the parity of its uses, so a rank writes into one copy while the others
may still read the other one from the previous use; the handshake of the launch in between
makes that safe (docs/multinode.md, "Ordering").
"""
from __future__ import annotations

import itertools
import json
import os
import socket
from dataclasses import dataclass

from ..diagnostics import CommdslError
from ..spec import COMM_PARAMS, SPECIALIZE_DIVISOR
from .launcher import Launcher

DEFAULT_TIMEOUT_S = 30.0
BACKENDS = ("CUDA", "NVSHMEM")
BACKEND_ENV = "COMMDSL_SYMM_BACKEND"
# Set before the first allocation: commdsl's kernels never use NVLink multicast (KINDS.md).
NO_MULTICAST = {"CUDA": {"TORCH_SYMM_MEM_DISABLE_MULTICAST": "1"},
                "NVSHMEM": {"TORCH_SYMM_MEM_DISABLE_MULTICAST": "1", "NVSHMEM_DISABLE_NVLS": "1",
                            "NCCL_NVLS_ENABLE": "0"}}
# The flags live in each rank's signal pad, past the words torch's own barrier uses.
FLAGS_OFFSET = 4096
STATUS_WORDS = 4          # backends/ptx/comm.py: 1 (timed out), flag index, epoch, value seen
_sequence: dict[str, itertools.count] = {}
_allocated_with: str | None = None     # the backend of this process's first heap


class CommError(CommdslError):
    """Ranks that do not agree: a different configuration, a rank that never joins, a wait
    that timed out on the GPU."""


# ---- meeting --------------------------------------------------------------------------------

def symmetric_backend(backend: str | None) -> str:
    """The symmetric-memory backend to use: `backend`, else COMMDSL_SYMM_BACKEND, else CUDA."""
    chosen = backend if backend is not None else os.environ.get(BACKEND_ENV, "CUDA")
    name = chosen.upper() if isinstance(chosen, str) else chosen
    if name not in BACKENDS:
        source = "backend" if backend is not None else BACKEND_ENV
        raise CommError(f"{source}={chosen!r} is not a symmetric-memory backend commdsl "
                        f"uses; write one of {', '.join(map(repr, BACKENDS))} (CUDA: the GPUs "
                        "of one host; NVSHMEM: whatever its bootstrap maps)")
    return name


def handshake(group, name: str, config: dict, timeout_s: float = DEFAULT_TIMEOUT_S,
              one_host: bool = True) -> int:
    """Every rank of `group` posts `config` (plain JSON values) and its host name under
    `name` in the group's store, then waits up to `timeout_s` for all others. Raises CommError
    naming the ranks that did not come, or the first setting on which two ranks differ, or
    (with `one_host`) ranks on different hosts. Returns this rank. Works with any backend
    (gloo in CI)."""
    import datetime

    import torch.distributed as dist
    from torch.distributed.distributed_c10d import _get_process_group_store
    group = group or dist.group.WORLD
    rank, world = dist.get_rank(group), dist.get_world_size(group)
    store = _get_process_group_store(group)
    seq = next(_sequence.setdefault(name, itertools.count()))
    config = json.loads(json.dumps(config))          # as the others will read it back
    keys = [f"commdsl/{name}/{seq}/{r}" for r in range(world)]
    mine = {"config": config, "host": socket.gethostname()}
    store.set(keys[rank], json.dumps(mine, sort_keys=True))
    try:
        store.wait(keys, datetime.timedelta(seconds=timeout_s))
    except Exception:                    # the store's timeout error; say who is missing
        missing = [r for r, k in enumerate(keys) if not store.check([k])]
        raise CommError(f"{name}: rank(s) {', '.join(map(str, missing))} of {world} did not "
                        f"join within {timeout_s:g} s (this is rank {rank})",
                        ) from None
    posted = [json.loads(store.get(k)) for k in keys]
    for r, other in enumerate(posted):
        for key in sorted(set(config) | set(other["config"])):
            a, b = config.get(key), other["config"].get(key)
            if a != b:
                raise CommError(f"{name}: ranks disagree on {key}: rank {rank} has {a!r}, "
                                f"rank {r} has {b!r}; every rank must create it with the same "
                                "settings")
        if one_host and other["host"] != mine["host"]:
            raise CommError(f"{name}: rank {r} runs on {other['host']} but rank {rank} on "
                            f"{mine['host']}; peer memory reaches the GPUs of one host only "
                            "with the CUDA backend (a process group per node, or "
                            "backend='NVSHMEM' where it maps them; docs/multinode.md)")
    return rank


# ---- symmetric memory -----------------------------------------------------------------------

@dataclass(frozen=True)
class RegionSpec:
    name: str
    shape: tuple[int, ...]
    dtype: str                 # commdsl dtype name
    copies: int = 2            # double-buffered by use parity


class Region:
    """A symmetric tensor with `copies` buffers; `next()` gives the one for the next use."""

    def __init__(self, spec: RegionSpec, views: list):
        self.spec, self.views, self.uses = spec, views, 0

    def next(self):
        view = self.views[self.uses % len(self.views)]
        self.uses += 1
        return view

    @property
    def current(self):
        """The copy the last `next()` gave."""
        return self.views[(self.uses - 1) % len(self.views)]


class Comm:
    """One host's ranks, their symmetric heap and flags, and the epochs of their launches."""

    def __init__(self, group, name: str, config: dict, regions: list[RegionSpec], *,
                 timeout_s: float = DEFAULT_TIMEOUT_S, device=None, backend: str | None = None):
        import torch
        import torch.distributed as dist
        self.backend = symmetric_backend(backend)
        self.group = group or dist.group.WORLD
        self.name, self.timeout_s = name, timeout_s
        layout = [(r.name, list(r.shape), r.dtype, r.copies) for r in regions]
        self.rank = handshake(self.group, name, {**config, "regions": layout,
                                                 "backend": self.backend}, timeout_s,
                              one_host=self.backend == "CUDA")
        self.world = dist.get_world_size(self.group)
        if self.backend == "NVSHMEM" and self.world < 2:
            # torch's NVSHMEM rendezvous asserts global_ranks.size() > 1 (torch 2.11, H100)
            raise CommError(f"{name}: backend='NVSHMEM' needs 2 ranks or more in torch; a "
                            "single rank takes backend='CUDA'")
        self.device = torch.device("cuda", torch.cuda.current_device()) if device is None \
            else torch.device(device)
        import torch.distributed._symmetric_memory as symm_mem
        from ..dtypes import dtype as dtype_info, torch_dtype
        _use_backend(symm_mem, self.backend, self.device)
        offsets, total = [], 0
        for r in regions:
            nbytes = dtype_info(r.dtype).bytes
            for s in r.shape:
                nbytes *= s
            for _ in range(r.copies):
                offsets.append(total)
                total += -(-nbytes // 256) * 256          # 256-byte aligned copies
        self.heap = symm_mem.empty(max(total, 256), dtype=torch.uint8, device=self.device)
        global _allocated_with
        _allocated_with = self.backend
        self.handle = symm_mem.rendezvous(self.heap, self.group)
        unreachable = [r for r, address in enumerate(self.handle.buffer_ptrs) if not address]
        if unreachable:
            raise CommError(f"{name}: {self.backend} maps no address for rank(s) "
                            f"{', '.join(map(str, unreachable))} on rank {self.rank}: commdsl's "
                            "kernels reach peers by loads and stores, so every rank must "
                            "share a load/store domain (NVLink) with every other")
        self.regions: dict[str, Region] = {}
        it = iter(offsets)
        for r in regions:
            views = []
            for _ in range(r.copies):
                start = next(it)
                count = 1
                for s in r.shape:
                    count *= s
                dt = torch_dtype(r.dtype)
                flat = self.heap[start:start + count * dt.itemsize].view(dt)
                views.append(flat.view(r.shape))
            self.regions[r.name] = Region(r, views)
        self.flags = self.handle.get_signal_pad(self.rank, (self.world,), torch.int32,
                                                FLAGS_OFFSET // 4)
        self.flags.zero_()
        self.status = torch.zeros(STATUS_WORDS, dtype=torch.int32, device=self.device)
        self._tables: dict[int, object] = {}
        self.epoch = 0
        self._launched: dict[int, str] = {}
        self.broken: CommError | None = None
        torch.cuda.synchronize(self.device)
        handshake(self.group, name + "/ready", {}, timeout_s)   # flags zeroed everywhere

    def region(self, name: str) -> Region:
        return self.regions[name]

    def table(self, view):
        """The device table of every rank's address of `view` (a view of the heap or of the
        signal pad): what a `sym` kernel parameter takes."""
        import torch
        address = view.data_ptr()
        if address not in self._tables:
            # Offsets from this rank's base of the allocation (the heap may sit inside a
            # larger one of torch's symmetric pool) hold on every rank.
            for peers, size in ((self.handle.buffer_ptrs, self.handle.buffer_size),
                                (self.handle.signal_pad_ptrs, self.handle.signal_pad_size)):
                base = peers[self.rank]
                if base <= address < base + size:
                    offset = address - base
                    self._tables[address] = torch.tensor([p + offset for p in peers],
                                                         dtype=torch.int64, device=self.device)
                    break
            else:
                raise CommError(f"{self.name}: a symmetric argument must be a region of this "
                                "Comm (comm.region(name).next()) or comm.flags")
        return self._tables[address]

    def next_epoch(self, kernel: str) -> int:
        if self.broken is not None:
            raise self.broken
        self.epoch += 1
        self._launched[self.epoch] = kernel
        return self.epoch

    def check(self) -> None:
        """Waits for this rank's launches and raises CommError if a wait timed out."""
        if self.broken is not None:
            raise self.broken
        code, flag, target, seen = self.status.tolist()
        if code:
            # A handshake waits for its own epoch on rank `flag`'s flag; a tile flag (ag_gemm)
            # for the epoch of the launch that raises it.
            raiser = self._launched.get(target, "a communication kernel")
            # The status does not say which flag tensor; a handshake's flag index is a rank.
            whose = (f" (rank {flag}'s, if it was the launch's opening handshake)"
                     if 0 <= flag < self.world else "")
            self.broken = CommError(
                f"{self.name}: rank {self.rank} waited {self.timeout_s:g} s for flag {flag}"
                f"{whose} to reach epoch {target} (that of {raiser}), but it stayed at {seen}: the "
                "launch that raises it did not run or failed, or a rank did not make the "
                "matching call (every rank must call the same communication operations in "
                "the same order)")
            raise self.broken


def _use_backend(symm_mem, backend: str, device) -> None:
    """Makes `backend` this process's symmetric-memory backend: torch keeps one a process
    once it allocated (its get_backend names its default, CUDA, before anything is set, so
    what this process allocated with is remembered here)."""
    for key, value in NO_MULTICAST[backend].items():
        os.environ.setdefault(key, value)
    if _allocated_with not in (None, backend):
        raise CommError(f"this process's symmetric memory already uses {_allocated_with}, and "
                        f"torch allows one backend a process; create every Comm with backend="
                        f"{_allocated_with!r} (or set {BACKEND_ENV} before the first)")
    if backend == "NVSHMEM" and not symm_mem.is_nvshmem_available():
        raise CommError("backend='NVSHMEM': this torch build or machine has no NVSHMEM; use "
                        "backend='CUDA' for the GPUs of one host")
    current = symm_mem.get_backend(device)
    if (current or "").upper() != backend:
        try:
            symm_mem.set_backend(backend)
        except RuntimeError as e:       # something else in the process allocated already
            raise CommError(f"torch keeps its symmetric memory on {current} in this process "
                            f"({e}); create every Comm with backend={current!r}") from None


# ---- launching -----------------------------------------------------------------------------

class CommKernel:
    """A communication kernel bound to a Comm: `kernel(name=tensor, ...)` checks the arguments
    (the ordinary launcher checks), swaps each symmetric argument for its table, appends
    rank, world, epoch, timeout and status, and launches through the ordinary launcher on
    torch's current stream. `variant(unaligned_sizes)` gives the compiled kernel (a
    runtime.cache.CachedKernel) for sizes of which exactly those are not multiples of 16:
    the API layer passes it in (api.load_comm), so the runtime never imports the compiler."""

    def __init__(self, comm: Comm, name: str, variant):
        self.comm, self.name, self._compile = comm, name, variant
        self._variants: dict[frozenset, tuple] = {}
        self.spec = self._variant(frozenset())[0].spec
        if not self.spec.comm:
            raise CommError(f"{name} is not a communication kernel (no sym parameter, get, "
                            "put, signal or wait)")

    def _variant(self, unaligned: frozenset):
        if unaligned not in self._variants:
            artifact = self._compile(unaligned)
            image = artifact.cubin if artifact.cubin is not None else artifact.ptx
            self._variants[unaligned] = (artifact, Launcher.from_image(artifact.spec, image))
        return self._variants[unaligned]

    @property
    def ptx(self) -> str:
        return self._variant(frozenset())[0].ptx

    def __call__(self, **tensors):
        checker = self._variant(frozenset())[1]
        bound = checker.bind(**tensors)
        unaligned = frozenset(s for s in self.spec.size_symbols
                              if bound.sizes[s] % SPECIALIZE_DIVISOR)
        launcher = self._variant(unaligned)[1]
        launcher.check_tensor_maps(bound)
        comm = self.comm
        pointers = [comm.table(t).data_ptr() if p.symmetric else t.data_ptr()
                    for p, t in zip(self.spec.tensors, bound.tensors)]
        values = {"rank": comm.rank, "world": comm.world, "epoch": comm.next_epoch(self.name),
                  "timeout_ns": int(comm.timeout_s * 1e9), "status": comm.status.data_ptr()}
        launcher.launch_checked(pointers, [bound.sizes[s] for s in self.spec.size_symbols],
                                bound.grid, bound.device.index,
                                tuple(values[n] for n, _ in COMM_PARAMS))
        return checker.results(bound)
