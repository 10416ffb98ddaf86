"""The IR interpreter's communication ops (a mixin of interpreter._Program), and `run_ranks`,
which runs one kernel on several simulated ranks in one process.

Each rank is a thread that runs its programs one after another; a symmetric tensor is a
list of CPU tensors, one per rank, so `get`/`put` index that list and `signal`/`wait` are
stores and polls of a shared tensor. A wait polls until its flag is reached; when the
other ranks have all finished or `timeout_s` passes, it raises InterpreterWaitError, the
CPU analogue of the GPU's timed-out status.
"""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass

from .diagnostics import CommdslError
from .ir import KernelIR, Op, TileType
from .regions import in_bounds_region, unguarded

POLL_S = 1e-4


class InterpreterWaitError(CommdslError):
    """A wait whose flag no rank was going to set."""


@dataclass
class Ranks:
    """What a program of one simulated rank sees of the others."""
    rank: int
    world: int
    epoch: int
    copies: dict            # symmetric tensor name -> [tensor of rank 0, rank 1, ...]
    timeout_s: float = 10.0
    done: threading.Event | None = None      # set when every other rank has finished


class CommProgram:
    comm: Ranks

    def op_rank(self, op: Op):
        return self.comm.rank

    def op_world(self, op: Op):
        return self.comm.world

    def op_epoch(self, op: Op):
        return self.comm.epoch

    def _copy(self, op: Op, rank: int):
        name = op.operands[0].name
        if not 0 <= rank < self.comm.world:
            raise InterpreterWaitError(f"{self.k.name}: peer({rank}) is outside the "
                                       f"{self.comm.world} ranks")
        return self.comm.copies[name][rank]

    def _rows(self, op: Op, indices, rank):
        """(rank, point indices) of each row a get/put moves; one entry without a gather."""
        gather = op.attrs["gather"]
        if not gather:
            return [(int(rank), list(indices))]
        d = gather[0]
        rows = indices[d].tolist()
        ranks = rank.tolist() if hasattr(rank, "tolist") and rank.dim() else [int(rank)] * len(rows)
        return [(r, [*indices[:d], row, *indices[d + 1:]]) for r, row in zip(ranks, rows)]

    def _row_sizes(self, op: Op):
        sizes = list(op.attrs["sizes"])
        for d in op.attrs["gather"]:
            sizes[d] = None
        return sizes

    def op_get(self, op: Op, tensor, *rest):
        import torch
        rest, runs = unguarded(op, rest)
        indices, rank = rest[:-1], rest[-1]
        t = op.result.type
        shape = t.shape if isinstance(t, TileType) else ()
        out = torch.zeros(shape, dtype=tensor.dtype)
        sizes = self._row_sizes(op)
        gathered = op.attrs["gather"]
        for j, (r, starts) in enumerate(self._rows(op, indices, rank) if runs else []):
            region = in_bounds_region(sizes, self._copy(op, r).shape, starts)
            if region is None:
                continue
            src, tile_index = region
            if gathered:
                axis = sum(1 for s in op.attrs["sizes"][:gathered[0]] if s is not None)
                tile_index = tile_index[:axis] + (j,) + tile_index[axis:]
            out[tile_index] = self._copy(op, r)[src]
        return out if isinstance(t, TileType) else (int(out) if not out.is_floating_point()
                                                    else out)

    def op_put(self, op: Op, tensor, *rest):
        import torch
        indices, rank, value = rest[:-2], rest[-2], rest[-1]
        if not isinstance(value, torch.Tensor):
            value = torch.tensor(value)
        sizes = self._row_sizes(op)
        gathered = op.attrs["gather"]
        for j, (r, starts) in enumerate(self._rows(op, indices, rank)):
            target = self._copy(op, r)
            region = in_bounds_region(sizes, target.shape, starts)
            if region is None:
                continue
            dst, tile_index = region
            if gathered:
                axis = sum(1 for s in op.attrs["sizes"][:gathered[0]] if s is not None)
                tile_index = tile_index[:axis] + (j,) + tile_index[axis:]
            target[dst] = value[tile_index].to(target.dtype)

    def op_signal(self, op: Op, tensor, *rest):
        indices, rank, value = rest[:-2], rest[-2], rest[-1]
        self._copy(op, int(rank))[tuple(indices)] = value

    def op_wait(self, op: Op, tensor, *rest):
        indices, value = rest[:-1], rest[-1]
        flags = self._copy(op, self.comm.rank)
        deadline = time.monotonic() + self.comm.timeout_s
        while True:
            # Read before the flag: a rank that finished has made its signals, so a flag
            # still short after it is final (read after, it may have been set in between).
            others_done = self.comm.done is not None and self.comm.done.is_set()
            if int(flags[tuple(indices)]) >= value:
                return
            if others_done or time.monotonic() > deadline:
                why = ("every other rank has finished" if others_done
                       else f"{self.comm.timeout_s} s passed")
                raise InterpreterWaitError(
                    f"{self.k.name}: rank {self.comm.rank} waits for "
                    f"{op.operands[0].name}[{', '.join(map(str, indices))}] >= {value}, but "
                    f"it is {int(flags[tuple(indices)])} and {why}")
            time.sleep(POLL_S)




def run_ranks(kernel: KernelIR, tensors: list[dict], sizes: list[dict], epoch: int,
              timeout_s: float = 10.0) -> None:
    """Runs `kernel` on len(tensors) simulated ranks at once. `tensors[r]` maps parameter
    names to rank r's CPU tensors (its own copy of each symmetric one); `sizes[r]` its sizes."""
    from .interpreter import run
    world = len(tensors)
    symmetric = [v.name for v in kernel.tensors if v.type.symmetric]
    copies = {name: [t[name] for t in tensors] for name in symmetric}
    finished = [threading.Event() for _ in range(world)]
    everyone_else = [threading.Event() for _ in range(world)]
    errors: list[BaseException | None] = [None] * world

    def body(r):
        try:
            run(kernel, tensors[r], sizes[r], Ranks(r, world, epoch, copies, timeout_s,
                                                     everyone_else[r]))
        except BaseException as e:       # re-raised below, on the caller's thread
            errors[r] = e
        finally:
            finished[r].set()
            for other in range(world):
                if all(finished[o].is_set() for o in range(world) if o != other):
                    everyone_else[other].set()

    threads = [threading.Thread(target=body, args=(r,), daemon=True) for r in range(world)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for e in errors:
        if e is not None:
            raise e
