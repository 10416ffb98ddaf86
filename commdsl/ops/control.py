"""Loops, their terminator, the launch grid and warpgroup roles."""
from __future__ import annotations

from commdsl.ir import Block

from .operands import is_i32, shape_of
from .registry import INDEX, PER_CTA, REGION, SIDE_EFFECTS, TERMINATOR, declare, fail

FAMILY = "control"


def _for(op):
    if len(op.operands) < 3 or not all(is_i32(v) for v in op.operands[:3]):
        fail(op, "needs i32 lo, hi and step")
    inits = op.operands[3:]
    if len(op.blocks) != 1:
        fail(op, "has one body block")
    body = op.blocks[0]
    if len(body.args) != 1 + len(inits) or not is_i32(body.args[0]):
        fail(op, "body takes the induction variable and one argument per carried value")
    if not body.ops or body.ops[-1].name != "yield":
        fail(op, "body must end in yield")
    yielded = body.ops[-1].operands
    for kind, values in (("init", inits), ("block argument", body.args[1:]),
                         ("yielded value", yielded), ("result", op.results)):
        if [shape_of(v.type) for v in values] != [shape_of(v.type) for v in inits]:
            fail(op, f"{kind} types {[str(v.type) for v in values]} differ from the inits'")
    for i, arg in enumerate(body.args[1:]):
        layouts = [getattr(v.type, "layout", None)
                   for v in (inits[i], arg, yielded[i], op.results[i])]
        if None not in layouts and len(set(layouts)) > 1:
            # the backend carries registers one for one: another layout would mix elements
            fail(op, f"carried value {i} enters as {layouts[0]}, is held as {layouts[1]}, "
                     f"yielded as {layouts[2]} and returned as {layouts[3]}")


def _yield(op):
    if op.results:
        fail(op, "has no results")


def tile_ranges(op, values=None) -> list[tuple]:
    """(lo, end) per range of a `tiles` op: `end` is the range's hi operand, or, for a range
    listed in `ragged`, the block that computes it from the earlier origins. `values`: the
    operands' values in the interpreter (default: the operands themselves)."""
    values = iter(op.operands if values is None else values)
    ends = iter(op.blocks[1:])
    ragged = op.attrs.get("ragged", ())
    return [(next(values), next(ends) if i in ragged else next(values))
            for i in range(len(op.attrs["steps"]))]


def _tiles(op):
    ranks = len(op.attrs["steps"])
    ragged = tuple(op.attrs.get("ragged", ()))
    if list(ragged) != sorted(set(ragged)) or any(not 0 < i < ranks for i in ragged):
        fail(op, "ragged lists ranges after the first, in increasing order")
    if len(op.operands) != 2 * ranks - len(ragged) or not all(is_i32(v) for v in op.operands):
        fail(op, "needs an i32 lo per range and an i32 hi per range not in ragged")
    if len(op.blocks) != 1 + len(ragged) or len(op.blocks[0].args) != ranks:
        fail(op, "body takes one origin per range, and one end block follows per ragged range")
    for i, end in zip(ragged, op.blocks[1:]):
        if len(end.args) != i or not all(is_i32(a) for a in end.args):
            fail(op, f"the end block of range {i} takes the {i} earlier origins")
        if (not end.ops or end.ops[-1].name != "yield" or len(end.ops[-1].operands) != 1
                or not is_i32(end.ops[-1].operands[0])):
            fail(op, f"the end block of range {i} must end in a yield of one i32")
    if op.attrs["raster"] < 1:
        fail(op, "raster must be positive")
    if op.attrs.get("sms", 1) < 1:
        fail(op, "sms must be positive")


def _gives_i32(op):
    if not is_i32(op.result):
        fail(op, "gives an i32")


def _warp_specialize(op):
    if len(op.blocks) != 2 or op.results:
        fail(op, "has a producer and a consumer block and no results")
    regs = (op.attrs["producer_regs"], op.attrs["consumer_regs"])
    if any(r % 8 or not 24 <= r <= 256 for r in regs):
        fail(op, f"register counts {regs} must be multiples of 8 in 24 .. 256 (setmaxnreg)")
    if 128 * (regs[0] + op.attrs["consumers"] * regs[1]) > 65536:
        fail(op, f"register counts {regs} exceed the 64K registers of an SM")


# ---- CPU meaning (commdsl/interpreter.py): generators, which run their blocks --------------

def _run_for(ctx, op, lo, hi, step, *carried):
    carried = list(carried)
    for i in range(lo, hi, step):
        carried = yield from ctx.run_block(op.blocks[0], [i, *carried])
    return carried[0] if len(carried) == 1 else carried


def _run_tiles(ctx, op, *values):
    """Every tile origin in turn, a ragged range's end computed from the origins before it:
    the persistent schedule only changes who runs which."""
    ranges, steps = tile_ranges(op, values), op.attrs["steps"]

    def walk(origin: list):
        if len(origin) == len(ranges):
            yield from ctx.run_block(op.blocks[0], origin)
            return
        lo, end = ranges[len(origin)]
        if isinstance(end, Block):                    # a ragged range's end
            (end,) = yield from ctx.run_block(end, origin)
        for x in range(lo, end, steps[len(origin)]):
            yield from walk(origin + [x])

    yield from walk([])


def _run_nprogs(ctx, op):
    return ctx.nprogs(op.attrs["axis"])


def _run_smid(ctx, op):
    """The interpreter has no SMs: it runs every program on SM 0 (docs/language.md)."""
    return 0


def _run_warp_specialize(ctx, op):
    """The producer block on one thread and the consumer block on the consumer warpgroups,
    as two coroutines; the op ends when both have."""
    producer = ctx.role(1).spawn("producer", op.blocks[0])
    consumers = ctx.role(128 * op.attrs["consumers"]).spawn("consumers", op.blocks[1])
    return ctx.join(op, [producer, consumers])


declare("for", "for(lo, hi, step, inits...) {pipeline} ^(iv, carried...) { ...; yield(next...) } "
        ": carried types",
        "a counted loop (scf.for): the block's last op yields the carried values",
        traits=(REGION,), verify=_for,
        attrs={"pipeline": "pipeline(STAGES) as written: stages of 'via tma' loads in flight"},
        interpret=_run_for, family=FAMILY)
declare("yield", "yield(next...)", "ends a loop body with the carried values of the next "
        "iteration", traits=(TERMINATOR,), verify=_yield, family=FAMILY)
declare("tiles", "tiles(lo0, hi0, lo1, hi1, ...) {steps, raster, cluster, sms, ragged} "
        "^(g, m0, n0) { ... } ^(g) { ...; yield(end) }",
        "every tile origin of a persistent loop; a range in `ragged` ends where a block after "
        "the body says, computed from the earlier origins; passes/schedule.py lowers it to a "
        "`for`",
        traits=(REGION,), verify=_tiles,
        attrs={"steps": "the tile size along each range", "raster": "tile rows per group of "
               "the rasterized order", "cluster": "CTAs per cluster (1 when absent)",
               "sms": "the SM budget: CTAs of the grid at most (every SM when absent)",
               "ragged": "the ranges (after the first) whose hi is not an operand but the "
               "yield of an end block, one per range in order, given the earlier origins "
               "(none when absent)"},
        interpret=_run_tiles, family=FAMILY)
declare("nprogs", "nprogs() {axis} : i32", "the number of CTAs along a grid axis",
        traits=(INDEX,), verify=_gives_i32, attrs={"axis": "the grid axis, 0 .. 2"},
        interpret=_run_nprogs, family=FAMILY)
declare("smid", "smid() : i32", "the SM this CTA runs on (PTX %smid; 0 in the interpreter)",
        traits=(INDEX, PER_CTA), verify=_gives_i32, interpret=_run_smid, family=FAMILY)
declare("warp_specialize", "warp_specialize() {...} ^() {producer} ^() {consumers}",
        "warpgroup 0 runs the first block on one thread; the others run the second",
        traits=(REGION, SIDE_EFFECTS), verify=_warp_specialize,
        attrs={"producer_regs": "registers per producer thread (setmaxnreg)",
               "consumer_regs": "registers per consumer thread (setmaxnreg)",
               "consumers": "the number of consumer warpgroups"},
        interpret=_run_warp_specialize, family=FAMILY)
