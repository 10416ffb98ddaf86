"""Keeps one K step of wgmmas in flight while the consumers promote the step before it.

After passes/pipeline.py each step of the consumers' K loop waits for its stage, issues its
wgmmas, waits for all of them and only then promotes the partial sums into the f32
accumulator: while a warpgroup promotes, its own tensor-core queue is empty. With a second
partial accumulator, the loop takes steps in groups and issues each step's wgmmas before it
waits for the step before it:

    for k in lo .. hi step S (acc, .., it) {
      s = it % STAGES; wait full[s]; acc = mma_promote(ring[s], scale, acc); rest
    }
 -> n = cdiv(hi - lo, S);  k1 = lo + (n % G) S          G = 8 (2 with one consumer warpgroup)
    for k in lo .. k1 step S (..) { the original body }                    the first n % G steps
    for k in k1 .. hi step G S (..) {
      p0 = issue(k); p1 = issue(k + S); finish(k, p0, 1); p2 = issue(k + 2 S);
      finish(k + S, p1, 1); ...; finish(k + (G - 1) S, p(G - 1), 0)
    }
where issue(k) = wait full[s]; mma_issue(ring[s]) (the step's wgmmas and a commit), and
finish(k, p, N) is the rest of step k's body with mma_retire(p, scale, acc) {pending = N}
(wgmma.wait_group N, then the FFMAs). Two partial accumulators are live at a time. A group
ends with its queue drained: nothing is in flight across a back edge, because ptxas
serializes every wgmma of a kernel (warning C7514) where a group issued in one iteration is
read after a wait in the next. Both consumer warpgroups' wgmmas share the tensor cores, so
each drain is a gap that the other warpgroup does not fill: groups of 8 steps measured 4-9%
faster than pairs at 4096x7168x16384 on an H200. Groups of 4 spill with 128 x 128 tiles, and
a loop of pairs between the two (fewer steps alone) spills as well.

Applies to a loop with one mma_promote that promotes once per step, when three accumulator
tiles (two partial, one f32) fit in the consumers' registers with room to spare, and when a
step's stage and barrier phase follow from the loop variable and counters the loop bumps by
plain arithmetic (passes/pipeline.py's `it`).
"""
from __future__ import annotations

from commdsl.ir import Block, Builder, KernelIR, Op, ScalarType, Value
from commdsl.ops import ASYNC, CONSTANT, ELEMENTWISE, MMA, PROMOTES, has_trait
from commdsl.passes.prefetch import drop_dead
from commdsl.target import Target

I32 = ScalarType("i32")
# Registers a consumer thread needs besides its accumulators (addresses, scales, counters):
# ptxas used 40 with one partial and one f32 accumulator of 64 registers each.
OTHER_REGS = 48
# K steps per iteration of the steady-state loop, by consumer warpgroups: with one, groups
# of 8 (and 6) spill in ptxas even at 64 x 64 tiles.
GROUP_STEPS = {1: 2, 2: 8}


def _index_math(op: Op) -> bool:
    """A constant or elementwise op giving an i32 scalar: the stage and phase arithmetic a
    step may recompute, or drop where nothing uses it."""
    return ((has_trait(op, CONSTANT) or has_trait(op, ELEMENTWISE))
            and all(r.type == I32 for r in op.results))


def _defining(body: Block) -> dict[int, Op]:
    return {r.id: op for op in body.ops for r in op.results}


def _closure(values: list[Value], local: dict[int, Op], body: Block) -> list[Op] | None:
    """The body's index math (_index_math) that computes `values`, in body order; None
    when one of them needs anything else the body computes."""
    needed: set[int] = set()
    stack = [local[v.id] for v in values if v.id in local]
    while stack:
        op = stack.pop()
        if id(op) in needed:
            continue
        if not _index_math(op):
            return None
        needed.add(id(op))
        stack += [local[v.id] for v in op.operands if v.id in local]
    return [op for op in body.ops if id(op) in needed]


class _Step:
    """How to emit one step of the loop body, its issue and its finish, anywhere."""

    def __init__(self, loop: Op, mma: Op, wait: Op, issue_ops: list[Op], next_ops: list[Op],
                 carried: list[int]):
        self.mma, self.wait, self.carried = mma, wait, carried
        self.body = loop.blocks[0]
        self.issue_ops, self.next_ops = issue_ops, next_ops
        self.yield_op = self.body.ops[-1]
        self.step = loop.operands[2]

    def _clone(self, b: Builder, ops: list[Op], env: dict[int, Value]) -> None:
        b.block.ops += [op.copy(env) for op in ops]

    def env(self, iv: Value, args: list[Value]) -> dict[int, Value]:
        """A step's view of the body's block arguments."""
        return {a.id: v for a, v in zip(self.body.args, [iv, *args])}

    def next_env(self, b: Builder, env: dict[int, Value]) -> dict[int, Value]:
        """The view the next step's issue has: the loop variable one step on, and the
        counters it reads as this step yields them."""
        here = dict(env)
        self._clone(b, self.next_ops, here)
        iv = self.body.args[0]
        following = {iv.id: b.value("add", [env[iv.id], self.step], I32)}
        for i in self.carried:
            value = self.yield_op.operands[i]
            following[self.body.args[1 + i].id] = here.get(value.id, value)
        return following

    def issue(self, b: Builder, env: dict[int, Value]) -> Value:
        """Waits for the step's stage and issues its wgmmas."""
        here = dict(env)
        self._clone(b, self.issue_ops, here)
        rings = [here.get(v.id, v) for v in self.mma.operands[:3]]
        return b.value("mma_issue", rings, self.mma.result.type,
                       **{k: v for k, v in self.mma.attrs.items() if k != "promote_every"})

    def finish(self, b: Builder, env: dict[int, Value], partial: Value,
               pending: int) -> list[Value]:
        """The rest of the step: retire its wgmmas into the accumulator, then what follows;
        returns the values it yields."""
        here = dict(env)
        start = len(b.block.ops)
        for op in self.body.ops[:-1]:
            if op is self.wait:
                continue
            if op is self.mma:
                scale, acc = (here.get(v.id, v) for v in op.operands[3:5])
                retired = b.value("mma_retire", [partial, scale, acc], op.result.type,
                                  pending=pending)
                here[op.result.id] = retired
                continue
            self._clone(b, [op], here)
        yielded = [here.get(v.id, v) for v in self.yield_op.operands]
        mine = b.block.ops[start:]
        kept = drop_dead(mine, {id(op) for op in mine if _index_math(op)},
                          keep=yielded)
        b.block.ops[start:] = kept
        return yielded


def _step(loop: Op) -> _Step | None:
    """The loop's issue/finish split, or None when the rewrite does not apply."""
    body = loop.blocks[0]
    mmas = [op for op in body.ops if has_trait(op, PROMOTES) and not has_trait(op, ASYNC)]
    if len(mmas) != 1 or any(has_trait(op, MMA) for inner in body.ops
                             for b in inner.blocks for op in b.walk()):
        return None
    mma = mmas[0]
    if mma.attrs["promote_steps"] != mma.attrs["k_steps"]:
        return None               # several groups per step already overlap within it
    stage = mma.operands[2]
    waits = [op for op in body.ops[:body.ops.index(mma)]
             if op.name == "mbarrier_wait" and op.operands[1] is stage]
    if len(waits) != 1:
        return None
    local = _defining(body)
    issue_ops = _closure([*waits[0].operands, *mma.operands[:3]], local, body)
    if issue_ops is None:
        return None
    used = {v.id for op in issue_ops + waits for v in op.operands}
    carried = [i for i, a in enumerate(body.args[1:]) if a.id in used]
    next_ops = _closure([body.ops[-1].operands[i] for i in carried], local, body)
    if next_ops is None:
        return None
    return _Step(loop, mma, waits[0], issue_ops + waits, next_ops, carried)


def _fits(mma: Op, consumer_regs: int, warpgroup_threads: int) -> bool:
    """Three accumulators of one wave (a product of several waves runs them in turn,
    which leaves nothing to overlap across steps)."""
    partial = mma.result.type.numel // (warpgroup_threads * mma.attrs["warpgroups"])
    return mma.attrs.get("waves", 1) == 1 and 3 * partial + OTHER_REGS <= consumer_regs


def _grouped_loop(loop: Op, s: _Step, lo: Value, hi: Value, steps: int,
                  carried: list[Value]) -> list[Op]:
    """for k in lo .. hi step `steps` S: `steps` steps, each issued before the one before it
    is finished, the last one finished with nothing in flight."""
    b = Builder(Block(), loop.loc)
    step = loop.operands[2]
    stride = b.value("mul", [step, b.value("const", [], I32, value=steps)], I32)
    body = Block(args=[Value(a.type, a.name) for a in s.body.args])
    g = Builder(body, loop.loc)
    env = s.env(body.args[0], body.args[1:])
    partial = s.issue(g, env)
    for _ in range(1, steps):
        following = s.issue(g, s.next_env(g, env))
        yielded = s.finish(g, env, partial, pending=1)
        iv = g.value("add", [env[s.body.args[0].id], step], I32)
        env, partial = s.env(iv, yielded), following
    g.op("yield", s.finish(g, env, partial, pending=0), [])
    b.block.ops.append(Op("for", [lo, hi, stride, *carried],
                          [Value(v.type) for v in loop.results], {}, [body], loc=loop.loc))
    return b.block.ops


def _rewrite(loop: Op, s: _Step) -> list[Op]:
    """The ops that replace `loop` (see the module doc); the last one's results are its."""
    steps = GROUP_STEPS[min(s.mma.attrs["warpgroups"], 2)]
    b = Builder(Block(), loop.loc)
    lo, hi, step = loop.operands[:3]
    one, group = (b.value("const", [], I32, value=v) for v in (1, steps))
    n = b.value("div", [b.value("add", [b.value("sub", [hi, lo], I32),
                                        b.value("sub", [step, one], I32)], I32), step], I32)
    k1 = b.value("add", [lo, b.value("mul", [b.value("rem", [n, group], I32), step], I32)], I32)
    alone = Op("for", [lo, k1, step, *loop.operands[3:]],
               [Value(v.type) for v in loop.results], dict(loop.attrs), [loop.blocks[0]],
               loc=loop.loc)
    ops = b.block.ops + [alone] + _grouped_loop(loop, s, k1, hi, steps, alone.results)
    ops[-1].results = list(loop.results)
    return ops


def _lower(block: Block, consumer_regs: int, warpgroup_threads: int) -> None:
    for op in list(block.ops):
        for inner in op.blocks:
            _lower(inner, consumer_regs, warpgroup_threads)
        if op.name != "for":
            continue
        s = _step(op)
        if s is None or not _fits(s.mma, consumer_regs, warpgroup_threads):
            continue
        at = block.ops.index(op)
        block.ops[at:at + 1] = _rewrite(op, s)


def run(kernel: KernelIR, target: Target) -> KernelIR:
    for op in kernel.walk():
        if op.name == "warp_specialize":
            _lower(op.blocks[1], op.attrs["consumer_regs"], target.warpgroup_threads)
    return kernel
