"""Maps tiles onto the threads of a CTA: picks the CTA size and a layout for every tile.

All tiles of one shape share one Blocked layout, so elementwise ops need no data movement.
Its innermost elements per thread are the widest vector the loads and stores of that shape
may use (passes/vectorize.py) that splits no store (`_shape_vectors`). A reduction's result
is the Sliced layout of its operand, and `t[:, None]` of such a result takes the parent
layout back, which is what makes the per-row scale of a quantization group free to
broadcast. Reducing a Sliced tile again slices the slice (a 128 x 128 block's amax: rows,
then the column of row maxima); the last axis leaves a scalar every thread holds. A scan
(cumsum) keeps its operand's layout.

A load may take any layout, so one whose value is only broadcast back along an axis (the
scales of a group, `s[:, None]`) gets the Sliced layout its use wants, and costs no data
movement. `transpose` gives its result the layout of its own shape; the data moves through
shared memory (planned by passes/shared.py). The operand shape of a transpose of 1- or
2-byte elements gives each thread 4 / bytes consecutive rows, so its shared-memory writes
are 32 bits wide (one per 4 FP8 elements).

Where an elementwise op (or `t[:, None]`, or a broadcast) still meets operands that threads
hold differently, an iota among them is computed in its partner's layout (computed again
where another use already placed it), and any other operand moves through shared memory
(`relayout`), as do a gather's row numbers that were computed rather than loaded: the
kernel writer never sees layouts. A loop carries each tile in the layout it enters with (the
backend carries registers one for one): a tile the body yields in another layout moves back
before the yield, and a carry that starts as a splat starts in the yielded layout instead.
"""
from __future__ import annotations

from commdsl.diagnostics import CompileError
from commdsl.ir import KernelIR, Op, TileType, Value
from commdsl.layout import Blocked, Sliced, choose_blocked, reshaped, slots
from commdsl.ops import ASYNC, ELEMENTWISE, MEMORY, READS, WRITES, has_trait
from commdsl.target import Target

DEFAULT_WARPS = 4


def _shape_vectors(kernel: KernelIR, threads: int) -> dict[tuple[int, ...], int]:
    """Contiguous elements per thread for each tile shape: the widest vector any access of
    that shape may use, if every thread still gets that many elements, and if no access
    that L1 does not combine (a store, or a load that skips L1) is split by it (else
    narrower, down to the narrowest access). Narrower accesses of the shape take several
    vectors, whose lanes are then 32 or 64 bytes apart: every instruction touches every
    other 16-byte chunk of its span. Loads through L1 merge those (weight_quant: bf16
    loaded 16 at a time, 98% of copy); stores do not, so each store instruction writes half
    sectors to L2: an FP8 tile loaded 16 at a time and stored as bf16 in two 16-byte halves
    measured 74% of copy (dequant_weight), 8 at a time (both accesses whole) 94% (see
    docs/perf-notes.md)."""
    widths: dict[tuple[int, ...], set[int]] = {}
    whole: dict[tuple[int, ...], int] = {}       # shape -> widest vector its stores allow
    for op in kernel.walk():
        if has_trait(op, MEMORY) and not has_trait(op, ASYNC):    # not a TMA copy
            tile = op.result.type if has_trait(op, READS) else op.operands[-1].type
            if isinstance(tile, TileType) and tile.shape:
                widths.setdefault(tile.shape, set()).add(op.attrs["vec"])
                if (has_trait(op, WRITES)
                        or op.attrs["cache_policy"].get("L1") == "no_allocate"):
                    whole[tile.shape] = min(whole.get(tile.shape, op.attrs["vec"]),
                                            op.attrs["vec"])
    vec = {}
    for shape, ws in widths.items():
        numel = 1
        for n in shape:
            numel *= n
        cap = whole.get(shape, max(ws))
        vec[shape] = max([min(ws)] + [w for w in ws if numel // w >= threads and w <= cap])
    return vec


def run(kernel: KernelIR, target: Target) -> KernelIR:
    warps = kernel.attrs.get("warps") or DEFAULT_WARPS
    threads = target.warp_size * warps
    vectors = _shape_vectors(kernel, threads)
    by_shape: dict[tuple[int, ...], Blocked] = {}
    _one_use_per_splat(kernel)
    splats = {op.result.id for op in kernel.walk() if op.name == "splat"}

    rows = _transpose_rows(kernel, threads, vectors)

    def blocked(shape):
        if shape not in by_shape:
            by_shape[shape] = choose_blocked(shape, vectors.get(shape, 1), warps,
                                             target.warp_size, rows.get(shape, 1))
        return by_shape[shape]

    _seed_reshape_layouts(kernel, by_shape, blocked)
    wanted = _wanted_layouts(kernel, blocked, frozenset(splats))
    _relayout_strided_broadcasts(kernel, wanted, threads, frozenset(splats))
    gathers = _gather_layouts(kernel, blocked)
    wanted.update(gathers)
    fresh = _unplaced(kernel)
    carried: dict[int, object] = {}
    relaid: set[int] = set()
    while True:
        try:
            _assign(kernel, blocked, wanted, splats, carried)
            break
        except _Mismatch as m:
            # A loop-carried tile that starts as a splat (zeros(f32, R)) can start in any
            # layout: give it the one its partner in the loop body has (a row reduction's),
            # or the one the body yields it in, and place everything again. Other operands
            # move to one layout (relayout), a yielded tile to the one it is carried in.
            arg = _splat_started_carry(kernel, m.carries, carried)
            layout = m.start_layout(arg, splats) if arg is not None else None
            if layout is not None:
                carried[arg.id] = layout
            elif id(m.op) in relaid or not (has_trait(m.op, ELEMENTWISE) or m.op.name in
                                            ("expand_dims", "broadcast", "yield")):
                raise m.error from None
            else:
                relaid.add(id(m.op))
                targets = m.targets or [_target_layout(kernel, m.op, blocked, splats)] * len(
                    m.op.operands)
                fresh += _relayout_operands(kernel, m.op, targets, wanted, splats)
            for v in fresh:
                v.type = v.type.with_layout(None)
    for op in kernel.walk():
        for v in op.operands:
            if v.id in gathers and v.type.layout != gathers[v.id]:
                raise CompileError("the row indices (and ranks) of a gather must come straight "
                                   "from a load", op.loc, "write the load inside the get, e.g. "
                                   "get peer(load src[i : +R]).x[load row[i : +R], c : +C]")
    kernel.num_threads = _threads(kernel, target, warps)
    return kernel


def _one_use_per_splat(kernel: KernelIR) -> None:
    """A splat tile used by several ops gets a copy before each use after the first: each
    takes its user's layout (a splat costs no instruction), where one shared splat would be
    held as its last user wants and read by the others in another layout."""
    blocks = [kernel.body] + [b for o in kernel.walk() for b in o.blocks]
    splat = {o.result.id: o for o in kernel.walk() if o.name == "splat"}
    seen: set[int] = set()
    for block in blocks:
        for op in list(block.ops):
            for i, v in enumerate(op.operands):
                source = splat.get(v.id)
                if source is None or not isinstance(v.type, TileType):
                    continue
                if v.id not in seen:
                    seen.add(v.id)
                    continue
                copy = Op("splat", list(source.operands), [Value(v.type)], dict(source.attrs),
                          loc=source.loc)
                block.ops.insert(block.ops.index(op), copy)
                op.operands[i] = copy.result


def _seed_reshape_layouts(kernel: KernelIR, by_shape: dict, blocked) -> None:
    """A reshape's result shape, where no other op has fixed its layout yet, takes the layout
    that keeps every element in the thread and slot that holds it before: the reshape is
    then free (`reshape(v, H / 128, 128)` of a row spread 8 elements a lane puts each group
    of 128 in 16 lanes of one warp). Others go through shared memory (passes/shared.py)."""
    for op in kernel.walk():
        if op.name == "reshape":
            src, dst = op.operands[0].type.shape, op.result.type.shape
            if dst not in by_shape:
                layout = reshaped(blocked(src), src, dst)
                if layout is not None:
                    by_shape[dst] = layout


def _threads(kernel: KernelIR, target: Target, warps: int) -> int:
    """The CTA size: a warp-specialized kernel's producer warpgroup and its consumers."""
    ws = next((op for op in kernel.body.ops if op.name == "warp_specialize"), None)
    if ws is not None:
        return target.warpgroup_threads * (1 + ws.attrs["consumers"])
    return target.warp_size * warps


def _transpose_rows(kernel: KernelIR, threads: int, vectors) -> dict[tuple[int, ...], int]:
    """Rows per thread for the operand shape of a transpose of narrow elements: with
    4 / bytes consecutive rows in one thread, the elements that land side by side in a row
    of the result are one 32-bit shared-memory write instead of one write per element
    (FP8: 4 bytes), if every thread still gets that many rows of its vector."""
    from commdsl.dtypes import dtype as dtype_info
    out: dict[tuple[int, ...], int] = {}
    for op in kernel.walk():
        if op.name != "transpose":
            continue
        shape = op.operands[0].type.shape
        r = 4 // dtype_info(op.operands[0].type.dtype).bytes
        if (r > 1 and shape[0] % r == 0
                and shape[0] * shape[1] >= threads * r * vectors.get(shape, 1)):
            out[shape] = max(out.get(shape, 1), r)
    return out


RELAYOUT_MIN_SLOTS = 4       # elements per thread of the broadcast layout worth a relayout


def _relayout_strided_broadcasts(kernel: KernelIR, wanted: dict, threads: int,
                                 splats: frozenset) -> None:
    """A load that only feeds a broadcast gets the Sliced layout the broadcast wants, so it
    needs no data movement; but where that layout gives every thread several elements that
    are scattered in memory (a column of scales, one per row of x: `s[r0 : +G, c]`) and each
    element sits in many threads, each thread would issue one narrow load (and one decode,
    for UE8M0) per element. There, load the tile spread over the CTA instead (about one
    element per thread), and put a `relayout` before the broadcast: through shared memory,
    read back as vectors (passes/shared.py sizes it, the backend emits it). Top-level ops
    only (the buffer is not reused, so one barrier suffices)."""
    users: dict[int, list] = {}
    for op in kernel.walk():
        for o in op.operands:
            users.setdefault(o.id, []).append(op)
    producer = {r.id: op for op in kernel.body.ops for r in op.results}
    new_ops = []
    for op in kernel.body.ops:
        if op.name == "expand_dims":
            src = op.operands[0]
            chain = src
            while (producer.get(chain.id) is not None
                   and _unary_elementwise(producer[chain.id], splats)):
                chain = producer[chain.id].operands[0]
            load = producer.get(chain.id)
            layout = wanted.get(chain.id)
            if (load is not None and load.name == "load" and isinstance(layout, Sliced)
                    and load.attrs.get("vec", 1) == 1 and len(src.type.shape) == 1
                    and all(len(users.get(v.id, [])) == 1 for v in _chain(src, chain, producer))):
                held = len(slots(layout.dims(src.type.shape)))
                copies = threads * held // src.type.shape[0]
                if held >= RELAYOUT_MIN_SLOTS and copies >= RELAYOUT_MIN_SLOTS:
                    del wanted[chain.id]              # the load takes its own shape's layout
                    moved = Value(src.type)
                    new_ops.append(Op("relayout", [src], [moved], {}, loc=op.loc))
                    wanted[moved.id] = layout
                    op.operands[0] = moved
        new_ops.append(op)
    kernel.body.ops = new_ops


class _Mismatch(Exception):
    """An elementwise op whose operands are spread over threads differently, or a loop's
    yield of a tile in another layout than the one it is carried in (`loop_args`: the loop's
    carried block arguments, one per yielded value)."""

    def __init__(self, op, error: CompileError, loop_args: list | None = None):
        super().__init__(str(error))
        self.op, self.error, self.loop_args = op, error, loop_args

    @property
    def targets(self) -> list | None:
        """The layouts a yield's values move to; None for an elementwise op."""
        if self.loop_args is None:
            return None
        return [getattr(a.type, "layout", None) for a in self.loop_args]

    @property
    def carries(self) -> list:
        """The values that may be a splat-started carry whose layout is still free."""
        if self.loop_args is None:
            return self.op.operands
        return [a for v, a in zip(self.op.operands, self.loop_args)
                if getattr(v.type, "layout", None) != getattr(a.type, "layout", None)]

    def start_layout(self, arg, splats):
        """The layout the carry `arg` starts in instead: its partner's, or the yielded one."""
        if self.loop_args is None:
            return _layout_for(self.op, arg, splats)
        return next(v.type.layout for v, a in zip(self.op.operands, self.loop_args) if a is arg)


def _unplaced(kernel: KernelIR) -> list:
    """The tiles (results and block arguments) with no layout yet: what `_assign` places."""
    out = []
    for op in kernel.walk():
        for block in op.blocks:
            out += [a for a in block.args if isinstance(a.type, TileType) and a.type.layout is None]
        out += [r for r in op.results if isinstance(r.type, TileType) and r.type.layout is None]
    return out


def _assign(kernel: KernelIR, blocked, wanted: dict, splats: set[int], carried: dict) -> None:
    """Every tile's layout, in program order."""
    loops = {id(op.blocks[0].ops[-1]): op for op in kernel.walk() if op.name == "for"}
    for op in kernel.walk():
        if op.name == "for":
            _carry_layouts(op, carried)
        elif id(op) in loops:
            _check_yield(op, loops[id(op)].blocks[0].args[1:], splats)
        for r in op.results:
            t = r.type
            if not isinstance(t, TileType) or t.layout is not None:   # e.g. an mma fragment
                continue
            layout = blocked(t.shape)
            if op.name == "reduce":
                layout = Sliced(op.operands[0].type.layout, op.attrs["axis"])
            elif op.name == "scan":              # sums each thread's own elements first
                layout = op.operands[0].type.layout
            elif op.name in ("load", "relayout", "iota") and r.id in wanted:
                layout = wanted[r.id]
            elif has_trait(op, ELEMENTWISE) or op.name in ("expand_dims", "broadcast"):
                # (the two reshapes have their own rules in _propagated)
                try:
                    layout = _propagated(op, layout, splats)
                except CompileError as e:
                    raise _Mismatch(op, e) from None
            r.type = t.with_layout(layout)


def _check_yield(op, args: list, splats: set[int]) -> None:
    """The backend carries a tile's registers one for one, so the body must yield each
    carried tile in the layout it entered with (a splat, `s = zeros(f32, R)`, takes it)."""
    for v, arg in zip(op.operands, args):
        if v.id in splats:
            v.type = v.type.with_layout(arg.type.layout)
        elif isinstance(v.type, TileType) and v.type.layout != arg.type.layout:
            raise _Mismatch(op, CompileError(
                "this loop-carried tile comes back spread over threads differently, and "
                "moving it back is not supported yet", op.loc,
                "compute the new value from the carried one, e.g. acc = acc + t"), args)


def _iotas(v, producer: dict, splats) -> list | None:
    """The iotas v is computed from by elementwise ops (with splats), else None: a tile an
    op can compute in any layout."""
    src = producer.get(v.id)
    if src is not None and src.name == "iota":
        return [src]
    if src is None or not has_trait(src, ELEMENTWISE):
        return None
    roots = [_iotas(o, producer, splats) for o in src.operands if o.id not in splats]
    return None if None in roots or not roots else [i for r in roots for i in r]


def _target_layout(kernel: KernelIR, op, blocked, splats):
    """The layout `_relayout_operands` moves `op`'s operands to: for `t[:, None]`, the
    Sliced layout whose parent is that of the shape it is broadcast to (or its own); for an
    elementwise op, its shape's own layout if an operand has it, else the first operand's
    that is not computed from an iota."""
    if op.name == "expand_dims":
        after = _broadcast_shapes(kernel, op.result, splats)
        shape = after.pop() if len(after) == 1 else op.result.type.shape
        return Sliced(blocked(shape), op.attrs["axis"])
    producer = {r.id: o for o in kernel.walk() for r in o.results}
    default = blocked(op.result.type.shape)
    if op.name == "broadcast":           # its operand moves to the broadcast shape's layout
        return default
    fixed = [o.type.layout for o in op.operands if isinstance(o.type, TileType)
             and o.id not in splats and _iotas(o, producer, splats) is None]
    return default if default in fixed or not fixed else fixed[0]


def _broadcast_shapes(kernel: KernelIR, v, splats) -> set:
    """The shapes the broadcasts of v take it to, through unary elementwise ops (`h[None, :]
    > 0` is compared before it is broadcast)."""
    shapes, todo = set(), [v]
    while todo:
        w = todo.pop()
        for u in kernel.walk():
            if w in u.operands and u.name == "broadcast":
                shapes.add(u.result.type.shape)
            elif u.operands and u.operands[0] is w and _unary_elementwise(u, splats):
                todo.append(u.result)
    return shapes


def _relayout_operands(kernel: KernelIR, op, targets: list, wanted: dict, splats) -> list:
    """Moves `op`'s tile operands to the layouts `targets` (one per operand; a loop's
    yield moves each to its own carried layout): an iota (and what is computed
    from it elementwise) is computed in it directly, any other tile goes through a
    `relayout` put before `op` (shared memory). So a reduction's result combined with a
    tile of another origin (a [R, 4] tile of group maxima shifted by an iota, a row sum
    added to a loaded column, a carried row vector broadcast back with `[:, None]`) needs
    nothing from the kernel writer. Returns the relayouts' results (placed by the next
    `_assign`)."""
    producer = {r.id: o for o in kernel.walk() for r in o.results}
    blocks = [kernel.body] + [b for o in kernel.walk() for b in o.blocks]
    block = next(b for b in blocks if op in b.ops)
    moved = []
    for i, (v, target) in enumerate(zip(op.operands, targets)):
        if not isinstance(v.type, TileType) or v.id in splats or v.type.layout == target:
            continue
        roots = _iotas(v, producer, splats)
        if roots is not None:
            if any(wanted.get(r.result.id, target) != target for r in roots):
                # another use already placed these iotas: compute them again for this one
                v = op.operands[i] = _recompute(block, op, v, producer, splats, moved)
                roots = _iotas(v, {**producer, **_producers(block)}, splats)
            wanted.update((r.result.id, target) for r in roots)
            continue
        new = Value(v.type.with_layout(None))
        block.ops.insert(block.ops.index(op), Op("relayout", [v], [new], {}, loc=op.loc))
        op.operands[i] = new
        wanted[new.id] = target
        moved.append(new)
    return moved


def _producers(block) -> dict:
    return {r.id: o for o in block.ops for r in o.results}


def _recompute(block, op, v, producer, splats, made: list):
    """v computed again, from its iotas through the same elementwise ops and splats (scalars
    shared), by copies put before `op` (their results appended to `made`, to be placed): a
    value of iotas costs no data movement in any layout, so each use may have its own, and
    so may each splat (one splat in two layouts would be read in the wrong one)."""
    done: dict[int, Value] = {}

    def copy(w):
        src = producer.get(w.id)
        if src is None or not isinstance(w.type, TileType):
            return w
        if w.id not in done:
            new = Op(src.name, [copy(o) for o in src.operands],
                     [Value(w.type.with_layout(None))], dict(src.attrs), loc=src.loc)
            block.ops.insert(block.ops.index(op), new)
            done[w.id] = new.result
            made.append(new.result)
            if w.id in splats:
                splats.add(new.result.id)
        return done[w.id]
    return copy(v)


def _splat_started_carry(kernel: KernelIR, values: list, carried: dict):
    """The block argument among `values` that a loop carries from a splat used by nothing
    else, and that has no layout forced on it yet; None if there is none."""
    producer = {r.id: o for o in kernel.walk() for r in o.results}
    users: dict[int, int] = {}
    for o in kernel.walk():
        for v in o.operands:
            users[v.id] = users.get(v.id, 0) + 1
    for loop in kernel.walk():
        if loop.name != "for":
            continue
        for init, arg in zip(loop.operands[3:], loop.blocks[0].args[1:]):
            start = producer.get(init.id)
            if (any(o is arg for o in values) and arg.id not in carried
                    and start is not None and start.name == "splat" and users[init.id] == 1):
                return arg
    return None


def _layout_for(op, arg, splats: set[int]):
    """The layout an elementwise `op` needs its operand `arg` in: its other tile's; None
    for any other op (an `[:, None]` of the carry keeps its located error)."""
    if not has_trait(op, ELEMENTWISE):
        return None
    return next((o.type.layout for o in op.operands if o is not arg and o.id not in splats
                 and isinstance(o.type, TileType)), None)


def _chain(top, bottom, producer) -> list:
    out = [top]
    while out[-1] is not bottom:
        out.append(producer[out[-1].id].operands[0])
    return out


def _carry_layouts(loop, carried: dict) -> None:
    """A loop's carried tiles (block arguments and results) keep their initial value's
    layout, so `acc += t` inside the loop needs no data movement; ones a pass placed
    already (an mma accumulator) keep theirs. `carried`: block argument id -> the layout a
    splat-started carry takes instead (its splat takes it too)."""
    body = loop.blocks[0]
    for init, arg, result in zip(loop.operands[3:], body.args[1:], loop.results):
        if arg.id in carried:
            init.type = init.type.with_layout(carried[arg.id])
        layout = getattr(init.type, "layout", None)
        for v in (arg, result):
            if isinstance(v.type, TileType) and v.type.layout is None and layout is not None:
                v.type = v.type.with_layout(layout)


def _gather_layouts(kernel: KernelIR, blocked) -> dict[int, object]:
    """The index tiles of gathers (get/put with `gather`) and their per-row ranks: value id
    -> the tile's layout with every other axis sliced away, so each thread holds the row
    number (and rank) of exactly the rows it moves. A loaded index tile is loaded so; a
    computed one (a reduction's result, say) moves there through a `relayout` put before
    the gather."""
    out: dict[int, object] = {}
    producer = {r.id: o for o in kernel.walk() for r in o.results}
    blocks = [kernel.body] + [b for o in kernel.walk() for b in o.blocks]
    for op in list(kernel.walk()):
        if not op.attrs.get("gather"):
            continue
        tensor = op.operands[0].type
        tile = op.result.type if has_trait(op, READS) else op.operands[-1].type
        dim = op.attrs["gather"][0]
        axis = sum(1 for s in op.attrs["sizes"][:dim] if s is not None)  # its axis in the tile
        layout = blocked(tile.shape)
        for other in reversed(range(len(tile.shape))):
            if other != axis:
                layout = Sliced(layout, other)
        for i in (1 + dim, 1 + tensor.rank):
            v = op.operands[i]
            if not isinstance(v.type, TileType):
                continue
            source = producer.get(v.id)
            if source is None or source.name != "load":
                block = next(b for b in blocks if op in b.ops)
                moved = Value(v.type.with_layout(None))
                block.ops.insert(block.ops.index(op), Op("relayout", [v], [moved], {},
                                                         loc=op.loc))
                op.operands[i] = v = moved
            if out.get(v.id, layout) != layout:
                raise CompileError("one index tile gathers two tiles that threads hold "
                                   "differently", op.loc, "load the indices again for this "
                                   "get: write the load inside it")
            out[v.id] = layout
    return out


def _unary_elementwise(op, splats: frozenset = frozenset()) -> bool:
    """Its result keeps its first operand's layout element for element: an elementwise op of
    that operand alone, or with splats of scalars (`min(max(d, lo), hi)`)."""
    return has_trait(op, ELEMENTWISE) and all(o.id in splats for o in op.operands[1:])


def _wanted_layouts(kernel: KernelIR, blocked, splats: frozenset) -> dict[int, object]:
    """Loaded values whose every use broadcasts them back along one axis (through unary
    elementwise ops, `[:, None]` and the broadcast): value id -> the Sliced layout of the
    broadcast's shape along that axis, so the broadcast needs no data movement."""
    users: dict[int, list] = {}
    for op in kernel.walk():
        for o in op.operands:
            users.setdefault(o.id, []).append(op)

    def want(v, depth=0):
        found = set()
        for use in users.get(v.id, []):
            if _unary_elementwise(use, splats) and depth < 8 and use.operands[0] is v:
                w = want(use.result, depth + 1)
            elif use.name == "expand_dims":
                after = [u for u in users.get(use.result.id, []) if u.name == "broadcast"]
                w = {Sliced(blocked(u.result.type.shape), use.attrs["axis"]) for u in after}
                w = next(iter(w)) if len(w) == 1 and len(after) == len(
                    users.get(use.result.id, [])) else None
            else:
                w = None
            if w is None:
                return None
            found.add(w)
        return found.pop() if len(found) == 1 else None

    out = {}
    for op in kernel.walk():
        if op.name in ("load", "iota") and isinstance(op.result.type, TileType):
            w = want(op.result)
            if w is not None:
                out[op.result.id] = w
    return out


def _propagated(op, default, splats: set[int]):
    """The layout an op's result inherits from its operands."""
    src = op.operands[0].type.layout
    if op.name == "expand_dims":
        if isinstance(src, Sliced) and src.axis == op.attrs["axis"]:
            return src.parent
        raise CompileError("this reshape needs data to move between threads, which commdsl "
                           "cannot do yet", op.loc,
                           "add the new axis where a reduction removed one, e.g. "
                           "amax(t, axis = 1)[:, None]")
    if op.name == "broadcast":
        if src != default:
            raise CompileError("this broadcast needs data to move between threads, which "
                               "commdsl cannot do yet", op.loc,
                               "broadcast a reduction's result back along its own axis")
        return default
    tiles = [o for o in op.operands if isinstance(o.type, TileType)]
    layouts = {o.type.layout for o in tiles if o.id not in splats}
    if len(layouts) == 1:
        # A splat of a scalar can take any layout: give it its partner's.
        for o in tiles:
            if o.id in splats:
                o.type = o.type.with_layout(next(iter(layouts)))
    if len(layouts) > 1:
        raise CompileError("operands are spread over threads differently", op.loc,
                           "combine tiles of the same shape, or a reduction's result "
                           "re-expanded with [:, None]")
    return layouts.pop() if layouts else default
