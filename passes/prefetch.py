"""Register prefetch: `pipeline(2)` on a loop without 'via tma' loads issues its loads and
gets one iteration ahead and carries their values in registers.

    for w in lo .. hi step S pipeline(2) {
      i = f(w); r = load ix[i]; t = get peer(r).x[i]; store y[i] = t
    }
 -> g = hi - lo; r0 = load ix[f(lo)] if g > 0; t0 = get peer(r0).x[f(lo)] if g > 0
    for w in lo .. hi step S (t = t0) {
      n = w + S; g = hi - n; r' = load ix[f(n)] if g > 0; t' = get peer(r').x[f(n)] if g > 0
      store y[f(w)] = t
      yield t'
    }

Iteration w + S's accesses are issued before iteration w's stores wait for their data, so
each thread has two iterations in flight instead of one round trip after another. An access
moves ahead when its indices depend only on the loop variable and values from before the
loop, possibly through other accesses that move with it (an index tile feeding a gather is
loaded once per iteration, not once more for the carried copy); not when the loop writes the
tensor it reads, and none in a loop that waits (an acquire orders the next iteration's
accesses after it). The guard `g > 0` (attribute `guard`, a trailing i32 operand) turns off
the accesses of the iteration past the end, so they move no data. passes/pipeline.py uses
`issue_ahead` for the other loads of a TMA-pipelined loop (the GEMM's scales).
"""
from __future__ import annotations

from commdsl.diagnostics import CompileError
from commdsl.ir import Block, Builder, KernelIR, Op, ScalarType, Value
from commdsl.ops import ASYNC, READS, WRITES, has_trait
from commdsl.target import Target

I32 = ScalarType("i32")


def _fetches(op: Op) -> bool:
    """A read of global memory into registers: what may move an iteration ahead."""
    return has_trait(op, READS) and not has_trait(op, ASYNC)


def add_carried(loop: Op, init: Value, name: str = "it") -> tuple[Value, Value]:
    """Appends a carried value to a `for`: (its block argument, its result). The caller
    appends the yielded value."""
    arg, result = Value(init.type, name), Value(init.type)
    loop.operands.append(init)
    loop.blocks[0].args.append(arg)
    loop.results.append(result)
    return arg, result


def _movable(loop: Op) -> tuple[list[Op], set[int]]:
    """The accesses that may run an iteration early, and the ids of the body ops they need
    (themselves included)."""
    body = loop.blocks[0]
    if any(op.name == "wait" for op in body.walk()):
        return [], set()          # the next step's accesses all come after this step's wait
    carried = {a.id for a in body.args[1:]}
    written = {op.operands[0].id for op in body.walk() if has_trait(op, WRITES)}
    local = {r.id: op for op in body.ops for r in op.results}
    movable: set[int] = set()
    for op in body.ops:
        if op.blocks or not op.results or any(v.id in carried for v in op.operands):
            continue
        if any(v.id in local and id(local[v.id]) not in movable for v in op.operands):
            continue
        if _fetches(op) and (op.attrs.get("via") or op.operands[0].id in written):
            continue
        movable.add(id(op))
    fetched = [op for op in body.ops if id(op) in movable and _fetches(op)]
    needed: set[int] = set()
    stack = list(fetched)
    while stack:
        op = stack.pop()
        if id(op) not in needed:
            needed.add(id(op))
            stack += [local[v.id] for v in op.operands if v.id in local]
    return fetched, needed


def _issue(b: Builder, ops: list[Op], iv: Value, at: Value, hi: Value) -> dict[int, Value]:
    """Appends copies of `ops` for the iteration at `at`, their accesses on only where
    hi - at > 0; returns the map from the originals' results to the copies'."""
    guard = b.value("sub", [hi, at], I32)
    mapping = {iv.id: at}
    for op in ops:
        new = Op(op.name, [mapping.get(v.id, v) for v in op.operands],
                 [Value(r.type, r.name) for r in op.results], dict(op.attrs), loc=op.loc)
        if op.attrs.get("guard"):             # an inner loop's first step: both guards
            new.operands[-1] = b.value("min", [new.operands[-1], guard], I32)
        elif _fetches(op):
            new.operands.append(guard)
            new.attrs["guard"] = True
        mapping.update({r.id: n for r, n in zip(op.results, new.results)})
        b.block.ops.append(new)
    return mapping


def drop_dead(ops: list[Op], candidates: set[int], keep=()) -> list[Op]:
    """`ops` without those among `candidates` whose results nothing left in `ops` (nor
    `keep`, values used after them) uses."""
    kept = {v.id for v in keep}
    while True:
        used = kept | {v.id for op in ops for v in op.operands}
        dead = [op for op in ops if id(op) in candidates and
                not any(r.id in used for r in op.results)]
        if not dead:
            return ops
        ops = [op for op in ops if op not in dead]


def issue_ahead(loop: Op) -> list[Op]:
    """Moves the loop's movable accesses one iteration ahead (see the module doc). Returns
    the ops that issue the first iteration's, for the caller to put right before the loop;
    [] when nothing moves."""
    fetched, needed = _movable(loop)
    if not fetched:
        return []
    body = loop.blocks[0]
    iv, (lo, hi, step) = body.args[0], loop.operands[:3]
    ops = [op for op in body.ops if id(op) in needed]
    # The originals of the index math stay where the rest of the body still uses them.
    rest = drop_dead([op for op in body.ops if op not in fetched], needed)
    used = {v.id for op in rest for v in op.operands}
    first = Builder(Block(), loop.loc)
    inits = _issue(first, ops, iv, lo, hi)
    ahead = Builder(Block(), loop.loc)
    nexts = _issue(ahead, ops, iv, ahead.value("add", [iv, step], I32), hi)
    renamed = {}
    for op in fetched:
        if op.result.id in used:
            renamed[op.result.id], _ = add_carried(loop, inits[op.result.id],
                                                   op.operands[0].name)
            rest[-1].operands.append(nexts[op.result.id])         # the yield
    for op in rest:
        op.operands = [renamed.get(v.id, v) for v in op.operands]
    body.ops = ahead.block.ops + rest
    return first.block.ops


def _has_tma(loop: Op) -> bool:
    return any(op.name == "load" and op.attrs.get("via") for op in loop.blocks[0].walk())


def _lower(block: Block) -> None:
    for op in list(block.ops):
        for inner in op.blocks:               # inner loops first: their first iteration's
            _lower(inner)                     # accesses may then move with the outer loop
        if op.name != "for" or not op.attrs.get("pipeline") or _has_tma(op):
            continue
        first = issue_ahead(op)
        if not first:
            raise CompileError("pipeline(2) finds no load or get in this loop to issue an "
                               "iteration ahead", op.loc,
                               "its indices may depend only on the loop variable and values "
                               "from before the loop, not on values the loop carries; it may "
                               "not read a tensor the loop writes, nor sit in a loop that waits")
        at = block.ops.index(op)
        block.ops[at:at] = first
        op.attrs["pipeline"] = None           # lowered here; passes/pipeline.py is for TMA


def run(kernel: KernelIR, target: Target) -> KernelIR:
    _lower(kernel.body)
    return kernel
