"""Loops, their terminator, the launch grid and warpgroup roles."""
from __future__ import annotations

from .operands import is_i32, shape_of
from .registry import INDEX, REGION, SIDE_EFFECTS, TERMINATOR, declare, fail

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


def _yield(op):
    if op.results:
        fail(op, "has no results")


def _tiles(op):
    ranks = len(op.attrs["steps"])
    if len(op.operands) != 2 * ranks or not all(is_i32(v) for v in op.operands):
        fail(op, "needs an i32 (lo, hi) pair per step")
    if len(op.blocks) != 1 or len(op.blocks[0].args) != ranks:
        fail(op, "body takes one origin per range")
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


def _run_tiles(ctx, op, *bounds):
    """Every tile origin in turn: the persistent schedule only changes who runs which."""
    import itertools
    ranges = [range(lo, hi, step) for (lo, hi), step in
              zip(zip(bounds[0::2], bounds[1::2]), op.attrs["steps"])]
    for origin in itertools.product(*ranges):
        yield from ctx.run_block(op.blocks[0], list(origin))


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
declare("tiles", "tiles(lo0, hi0, lo1, hi1) {steps, raster, cluster, sms} ^(m0, n0) { ... }",
        "every tile origin of a persistent loop; passes/schedule.py lowers it to a `for`",
        traits=(REGION,), verify=_tiles,
        attrs={"steps": "the tile size along each range", "raster": "tile rows per group of "
               "the rasterized order", "cluster": "CTAs per cluster (1 when absent)",
               "sms": "the SM budget: CTAs of the grid at most (every SM when absent)"},
        interpret=_run_tiles, family=FAMILY)
declare("nprogs", "nprogs() {axis} : i32", "the number of CTAs along a grid axis",
        traits=(INDEX,), verify=_gives_i32, attrs={"axis": "the grid axis, 0 .. 2"},
        interpret=_run_nprogs, family=FAMILY)
declare("smid", "smid() : i32", "the SM this CTA runs on (PTX %smid; 0 in the interpreter)",
        traits=(INDEX,), verify=_gives_i32, interpret=_run_smid, family=FAMILY)
declare("warp_specialize", "warp_specialize() {...} ^() {producer} ^() {consumers}",
        "warpgroup 0 runs the first block on one thread; the others run the second",
        traits=(REGION, SIDE_EFFECTS), verify=_warp_specialize,
        attrs={"producer_regs": "registers per producer thread (setmaxnreg)",
               "consumer_regs": "registers per consumer thread (setmaxnreg)",
               "consumers": "the number of consumer warpgroups"},
        interpret=_run_warp_specialize, family=FAMILY)
