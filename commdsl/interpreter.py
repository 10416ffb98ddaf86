"""Runs the tile IR on the CPU with torch, at any stage: before the passes or after any.

It gives the language's meaning without a GPU: the same front end, whole tiles as torch
tensors (layouts move no values), out-of-bounds loads reading 0 and out-of-bounds stores
dropped, FP8 conversion rounding to nearest and saturating as `cvt.rn.satfinite` does
(commdsl/cpu_numerics.py). After the passes a CTA's warpgroup roles, and the CTAs of a
cluster, run together as coroutines over mbarriers and shared-memory rings
(commdsl/interpreter_async.py). Meant for small shapes in tests and for debugging.

Each op's meaning is its declaration's `interpret(ctx, op, *operand_values)`; `ctx` is the
`Program` below: the state of one thread set of one CTA. An interpret that waits returns a
generator, which the program runs as part of its coroutine.
"""
from __future__ import annotations

import copy
import inspect
import itertools
import threading
from dataclasses import dataclass

from .dims import SM_COUNT
from .interpreter_async import (ClusterBarrier, InterpreterError, Mbarriers, Ring, Scheduler,
                                wait_until)
from .interpreter_comm import CommMachinery, Ranks
from .ir import KernelIR
from .ops import lookup


def run(kernel: KernelIR, tensors: dict, sizes: dict[str, int], comm: Ranks | None = None,
        sms: int = 1) -> None:
    """Runs every program of the grid; `tensors` maps parameter names to CPU tensors.
    `comm`: what a communication kernel sees of the other ranks (run_ranks). `sms`: the SM
    count a persistent grid (passes/schedule.py) is sized for."""
    _check_shapes(kernel, tensors, sizes)
    grid = [d.evaluate({**sizes, SM_COUNT: sms}) for d in kernel.grid]
    size = kernel.attrs.get("cluster", 1)
    pids = list(itertools.product(*(range(n) for n in grid)))  # clusters: a 1-D grid's runs

    def run_cluster(first):
        scheduler, meet = Scheduler(), ClusterBarrier(size)
        cluster = [Program(kernel, tensors, sizes, pid, grid, comm, scheduler, meet)
                   for pid in pids[first:first + size]]
        for program in cluster:
            program.cluster = cluster
            scheduler.spawn(f"CTA {program.pid}", program.run())
        scheduler.run()
    firsts = range(0, len(pids), size)
    if comm is not None and 1 < len(firsts) <= CO_RESIDENT:
        _all_at_once(run_cluster, firsts)
    else:
        for first in firsts:
            run_cluster(first)


# A communication kernel's CTAs (sms(N), N at most an SM count) are all resident on the GPU
# at once, so one may wait for another's signal: the interpreter runs them as threads.
CO_RESIDENT = 132


def _all_at_once(work, items) -> None:
    """work(item) for every item, each on its own thread; the first item's error (in the
    items' order, whichever came first in time) is raised here."""
    errors: dict[int, BaseException] = {}

    def body(i, item):
        try:
            work(item)
        except BaseException as e:       # re-raised below, on the caller's thread
            errors[i] = e
    threads = [threading.Thread(target=body, args=(i, item), daemon=True)
               for i, item in enumerate(items)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[min(errors)]


def _check_shapes(kernel: KernelIR, tensors: dict, sizes: dict[str, int]) -> None:
    """Each tensor's shape is its parameter's (a transposed scale tensor passed row by row
    would otherwise be read out of place, its overhang as TMA's zeros)."""
    for v in kernel.tensors:
        want = tuple(d.evaluate(sizes) for d in v.type.dims)
        got = tuple(tensors[v.name].shape)
        if got != want:
            raise ValueError(f"tensor '{v.name}' has shape {got}, but {v.type} with "
                             f"{sizes} is {want}")


class Program(CommMachinery):
    """One thread set (the whole CTA, or a warp_specialize role) of one CTA."""

    def __init__(self, kernel: KernelIR, tensors: dict, sizes: dict, pid: tuple[int, ...],
                 grid: list[int], comm: Ranks | None, scheduler: Scheduler,
                 meet: ClusterBarrier):
        self.k, self.pid, self.grid, self.comm = kernel, pid, grid, comm
        self.scheduler, self.meet = scheduler, meet
        self.cluster: list[Program] = [self]
        self.threads = kernel.num_threads or 128
        self.top = True                   # not inside a warp_specialize role
        self.bulk_groups: list = []       # this thread set's TMA stores not yet waited for
        self.vals = {v.id: tensors[v.name] for v in kernel.tensors}
        self.vals.update({v.id: sizes[v.name] for v in kernel.sizes})

    def run(self):
        yield from self.run_block(self.k.body, [])
        self.land_bulk_groups()

    def run_block(self, block, args: list):
        """Runs a block with its arguments bound (a generator: it yields where it waits);
        returns what its `yield` op gives."""
        for arg, value in zip(block.args, args):
            self.vals[arg.id] = value
        for op in block.ops:
            if op.name == "yield":
                return [self.vals[o.id] for o in op.operands]
            meaning = lookup(op.name).interpret
            if meaning is None:
                raise InterpreterError(f"op '{op.name}' has no CPU meaning: its declaration "
                                       f"in commdsl/ops has no interpret")
            out = meaning(self, op, *(self.vals[o.id] for o in op.operands))
            if inspect.isgenerator(out):
                out = yield from out
            if len(op.results) == 1:
                self.vals[op.result.id] = out
            elif op.results:
                for r, value in zip(op.results, out):
                    self.vals[r.id] = value
        return []

    # ---- what the async ops ask of the machinery -------------------------------------------

    def nprogs(self, axis: int) -> int:
        return self.grid[axis]

    def role(self, threads: int) -> "Program":
        """This CTA's view for a warp_specialize role of `threads` threads: the same values."""
        view = copy.copy(self)
        view.threads, view.top, view.bulk_groups = threads, False, []
        return view

    def spawn(self, name: str, block):
        """Runs `block` as a coroutine of its own; returns its task."""
        def body():
            yield from self.run_block(block, [])
            self.land_bulk_groups()
        return self.scheduler.spawn(f"CTA {self.pid} {name}", body())

    def join(self, op, tasks):
        return wait_until(op, lambda: all(t.done for t in tasks))

    def peers(self) -> list["Program"]:
        """The CTAs of this one's cluster, in cluster rank order (this one among them)."""
        return self.cluster

    def cluster_rank(self) -> int:
        return [p.pid for p in self.cluster].index(self.pid)

    def cluster_sync(self, op):
        if not self.top:
            raise InterpreterError(f"'{op.name}' inside a warp_specialize role is not modelled")
        return self.meet.meet(op)

    def ring(self, smem_type) -> Ring:
        return Ring(smem_type)

    def barriers(self, count: int, arrivals: int) -> Mbarriers:
        return Mbarriers(count, arrivals)

    def in_flight(self, copy_fn) -> None:
        """An async copy: it lands when no coroutine can run on (Scheduler.land)."""
        self.scheduler.in_flight.append(copy_fn)

    def land_bulk_groups(self) -> None:
        groups, self.bulk_groups = self.bulk_groups, []
        for store in groups:
            store()


def run_ranks(kernel: KernelIR, tensors: list[dict], sizes: list[dict], epoch: int,
              timeout_s: float = 10.0) -> None:
    """Runs `kernel` on len(tensors) simulated ranks at once, each a thread that runs its
    programs at once (threads). `tensors[r]` maps parameter names to rank r's CPU tensors (its
    own copy of each symmetric one); `sizes[r]` its sizes."""
    run_concurrently([Launch(kernel, tensors, sizes, epoch)], timeout_s)


@dataclass
class Launch:
    """One kernel launched on every simulated rank: tensors[r] and sizes[r] are rank r's."""
    kernel: KernelIR
    tensors: list[dict]
    sizes: list[dict]
    epoch: int


def run_concurrently(launches: list[Launch], timeout_s: float = 10.0) -> None:
    """Runs every launch on every rank at once, one thread per launch and rank (kernels on
    disjoint SMs of each GPU: a producer and the GEMM that waits for it). A symmetric tensor
    passed to several launches is shared by them, as the GPU's memory is; a wait gives up
    when every other thread has finished."""
    world = len(launches[0].tensors)
    copies: dict[str, list] = {}
    for launch in launches:
        for v in launch.kernel.tensors:
            if v.type.symmetric:
                given = [t[v.name] for t in launch.tensors]
                shared = copies.setdefault(v.name, given)
                if any(a is not b for a, b in zip(shared, given)):
                    raise InterpreterError(f"{launch.kernel.name}: the symmetric tensor "
                                           f"'{v.name}' is given other tensors than another "
                                           "launch's of that name; pass the same ones")
    jobs = [(launch, r) for launch in launches for r in range(world)]
    finished = [threading.Event() for _ in jobs]
    everyone_else = [threading.Event() for _ in jobs]
    errors: list[BaseException | None] = [None] * len(jobs)

    def body(j):
        launch, r = jobs[j]
        try:
            run(launch.kernel, launch.tensors[r], launch.sizes[r],
                Ranks(r, world, launch.epoch, copies, timeout_s, everyone_else[j]))
        except BaseException as e:       # re-raised below, on the caller's thread
            errors[j] = e
        finally:
            finished[j].set()
            for other in range(len(jobs)):
                if all(finished[o].is_set() for o in range(len(jobs)) if o != other):
                    everyone_else[other].set()

    threads = [threading.Thread(target=body, args=(j,), daemon=True) for j in range(len(jobs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for e in errors:
        if e is not None:
            raise e

