"""What the IR interpreter needs to run the IR after the passes: the threads of a CTA (and
the CTAs of a cluster) as cooperative coroutines, mbarriers, shared-memory rings and the
copies TMA has in flight.

A coroutine is a Python generator (commdsl/interpreter.py's `run_block`); it yields a
`Blocked` when it must wait (an mbarrier phase, a cluster barrier, the end of its warpgroup
roles) and runs on once its condition holds. The scheduler runs every ready coroutine until
it blocks; a TMA copy lands only when no coroutine can run, so a reader that does not wait
for its barrier sees the ring's poison (NaN), and a writer that does not wait for the
readers to release a stage is caught as a race. When nothing can run and nothing is in
flight, the kernel has deadlocked: an InterpreterError names where each coroutine waits.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Iterator

from .diagnostics import CommdslError


class InterpreterError(CommdslError):
    """The IR does something the hardware would hang on or race in."""


@dataclass
class Blocked:
    """What a coroutine yields: it waits at `op` until `ready()`."""
    op: object
    ready: Callable[[], bool]


def wait_until(op, ready: Callable[[], bool]) -> Iterator[Blocked]:
    while not ready():
        yield Blocked(op, ready)


@dataclass(eq=False)
class Task:
    name: str
    gen: Iterator
    waiting: Blocked | None = None
    done: bool = False


@dataclass(eq=False)
class Scheduler:
    """The coroutines of one cluster of CTAs (one CTA without clusters) and their copies in
    flight."""
    tasks: list[Task] = field(default_factory=list)
    in_flight: list[Callable[[], None]] = field(default_factory=list)

    def spawn(self, name: str, gen: Iterator) -> Task:
        task = Task(name, gen)
        self.tasks.append(task)
        return task

    def run(self) -> None:
        while True:
            progressed = False
            for task in list(self.tasks):
                if task.done or (task.waiting is not None and not task.waiting.ready()):
                    continue
                progressed = True
                try:
                    task.waiting = next(task.gen)
                except StopIteration:
                    task.done, task.waiting = True, None
            if all(t.done for t in self.tasks):
                if self.in_flight:
                    self.land()
                return
            if not progressed:
                if not self.in_flight:
                    raise InterpreterError("deadlock at " + "; ".join(
                        f"{_op_text(t.waiting.op)} ({t.name})" for t in self.tasks
                        if not t.done and t.waiting is not None
                        and t.waiting.op.name != "warp_specialize"))
                self.land()

    def land(self) -> None:
        landing, self.in_flight = self.in_flight, []
        for copy in landing:
            copy()


def _op_text(op) -> str:
    where = f" at line {op.loc.line}" if op.loc is not None else ""
    return f"{op.name}({', '.join('%' + str(v.name or v.id) for v in op.operands)}){where}"


class Ring:
    """`stages` tiles of one shape in shared memory. Unwritten data reads as NaN (integers:
    -1), so a read that beats its copy shows in the result."""

    def __init__(self, smem_type):
        import torch
        from .dtypes import torch_dtype
        dtype = torch_dtype(smem_type.dtype)
        poison = float("nan") if dtype.is_floating_point else -1
        self.type = smem_type
        self.data = torch.full((smem_type.stages, *smem_type.shape), poison, dtype=dtype)
        self.copies_in_flight = [0] * smem_type.stages     # TMA copies not landed yet
        self.readers = [0] * smem_type.stages              # mma_issues not retired yet

    def columns(self, start: int, cols: int, smem_type) -> "Ring":
        """Columns start .. start + cols of every stage: a view that shares the data and the
        copy and reader counts."""
        view = Ring.__new__(Ring)
        view.type, view.data = smem_type, self.data[:, :, start:start + cols]
        view.copies_in_flight, view.readers = self.copies_in_flight, self.readers
        return view

    def slot(self, stage: int) -> int:
        """Where a step's `stage` lies: a ring of one stage (a tile kept across the
        pipelined loop, passes/pipeline.py) has it at 0 whatever the step."""
        return stage if self.type.stages > 1 else 0

    def read(self, op, stage: int):
        stage = self.slot(stage)
        if self.copies_in_flight[stage]:
            raise InterpreterError(f"race at {_op_text(op)}: it reads stage {stage} of a ring "
                                   f"while a TMA copy into it is still in flight")
        return self.data[stage]

    def start_copy(self, op, stage: int):
        if self.readers[stage]:
            raise InterpreterError(f"race at {_op_text(op)}: it copies into stage {stage} "
                                   f"while an mma still reads it")
        self.copies_in_flight[stage] += 1


class Mbarriers:
    """`count` mbarriers of `arrivals` expected arrivals each. A phase completes when all
    arrivals have come and the bytes of TMA data they expect have landed; waiting on
    parity P waits until the phase of that parity has completed (the current phase's
    parity differs from P)."""

    def __init__(self, count: int, arrivals: int):
        self.count, self.arrivals = count, arrivals
        self.initialized = False
        self.phase = [0] * count         # phases completed
        self.pending = [arrivals] * count
        self.tx = [0] * count            # bytes expected and not yet landed

    def _check(self, op, i: int):
        if not self.initialized:
            raise InterpreterError(f"{_op_text(op)} uses an mbarrier before mbarrier_init")
        if not 0 <= i < self.count:
            raise InterpreterError(f"{_op_text(op)}: barrier {i} of {self.count}")

    def init(self):
        self.initialized = True

    def arrive(self, op, i: int, n: int = 1):
        self._check(op, i)
        self.pending[i] -= n
        if self.pending[i] < 0:
            raise InterpreterError(f"{_op_text(op)}: {-self.pending[i]} more arrivals on "
                                   f"barrier {i} than its {self.arrivals} in one phase")
        self._complete(i)

    def expect_tx(self, op, i: int, nbytes: int):
        self._check(op, i)
        self.tx[i] += nbytes

    def complete_tx(self, op, i: int, nbytes: int):
        self._check(op, i)
        self.tx[i] -= nbytes
        self._complete(i)

    def _complete(self, i: int):
        if self.pending[i] == 0 and self.tx[i] == 0:
            self.phase[i] += 1
            self.pending[i] = self.arrivals

    def wait(self, op, i: int, parity: int):
        self._check(op, i)
        return wait_until(op, lambda: self.phase[i] % 2 != parity % 2)


class ClusterBarrier:
    """`size` CTAs meet: each arrives once per generation and waits for the others."""

    def __init__(self, size: int):
        self.size, self.arrived, self.generation = size, 0, 0

    def meet(self, op):
        generation = self.generation
        self.arrived += 1
        if self.arrived == self.size:
            self.arrived, self.generation = 0, generation + 1
        return wait_until(op, lambda: self.generation != generation)
