"""What the IR interpreter's communication ops ask of it: other ranks' copies of a symmetric
tensor, and waiting for a flag.

Each simulated rank is a thread (interpreter.run_ranks), and each of its programs another
(a communication kernel's CTAs are all resident at once on the GPU); a symmetric tensor is
a list of CPU tensors, one per rank, so `get`/`put` index that list and `signal`/`wait` are
stores and polls of a shared tensor. A wait polls until
its flag is reached; when the other ranks have all finished or `timeout_s` passes, it
raises InterpreterWaitError, the CPU analogue of the GPU's timed-out status.
"""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass

from .diagnostics import CommdslError
from .ir import KernelIR, Op

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


class CommMachinery:
    """A mixin of interpreter.Program."""
    k: KernelIR
    comm: Ranks

    def peer_copy(self, op: Op, rank: int):
        """Rank `rank`'s copy of the symmetric tensor that is `op`'s first operand."""
        name = op.operands[0].name
        if not 0 <= rank < self.comm.world:
            raise InterpreterWaitError(f"{self.k.name}: peer({rank}) is outside the "
                                       f"{self.comm.world} ranks")
        return self.comm.copies[name][rank]

    def wait_flag(self, op: Op, indices, value) -> None:
        """Polls this rank's flag at `indices` of `op`'s tensor until it reaches `value`."""
        flags = self.peer_copy(op, self.comm.rank)
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
