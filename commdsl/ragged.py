"""Which elements of a tile a load did not read (past the tensor's edge), so that a reduction
can leave them out: ragged tiles reduce right by default.

A load reads 0 past the edge. For max and min that 0 would take part, so irgen gives such a
reduce the count of elements along its axis that every load feeding it read (`reduce(t, n)`:
the rest count as the reduction's identity). Tracked per axis of a tile, through elementwise
ops, broadcasts, new axes, transposes, slices and earlier reductions. A value a loop
carries out of it with edges inside (`m = max(m, t)`) has no count (CARRIED), nor an axis a
reshape made from a ragged one (RESHAPED): a max or min over such an axis is an error. A load
that says what it reads past the edge (`other = v`) is taken at its word; elements a mask
turns off read `other` (0 unless given) and take part. A sum or amax over a tile that is
provably 0 wherever a load did not read (a load, sums, products, negations, conversions of
it) needs no count: 0 is already its identity, so such kernels' code does not change.
"""
from __future__ import annotations

from .dims import BinOp, Const, Dim, Sym, divisibility_facts
from .ir import Builder, KernelIR, Op, ScalarType, TileType, Value
from .ops import ELEMENTWISE, has_trait

# One load's reach along one tile axis: element i was read iff start + offset + i < the
# tensor's dim (offset: where a slice of the loaded tile begins).
Edge = tuple[Value, int, Value, int]     # (tensor, tensor dimension, start index, offset)
# An axis a reshape made from a split or merged axis with edges: no count says which of its
# elements were read.
RESHAPED = "reshaped"
# An axis of a loop's result whose value inside the loop had edges: they moved every step.
CARRIED = "carried"

# Ops whose result is 0 wherever an operand with unread elements is 0 there.
_ZERO_KEEPING = {"add", "sub", "mul", "neg", "abs", "convert", "broadcast", "expand_dims",
                 "transpose", "slice", "reshape"}


class Raggedness:
    """Answers, for values of one kernel under construction, which loads' edges bound each
    axis and whether unread elements are 0."""

    def __init__(self, kernel: KernelIR):
        self.kernel = kernel

    def _producers(self) -> "_Producers":
        return _Producers(self.kernel)

    def edges(self, v: Value) -> list[frozenset]:
        """Per axis of v, the edges an element must be inside to have been read."""
        return _edges(v, self._producers(), {})

    def zero_padded(self, v: Value) -> bool:
        """Whether v is 0 (or -0) at every element some load did not read."""
        producers, memo = self._producers(), {}
        return _zero(v, producers, memo, {})

    def count(self, b: Builder, edges: frozenset, sizes: dict[str, Value]) -> Value:
        """The i32 count of leading elements inside every edge: min over them of dim - start."""
        n = None
        i32 = ScalarType("i32")
        for tensor, d, start, offset in sorted(edges, key=lambda e: (e[0].id, e[1], e[2].id,
                                                                      e[3])):
            dim = dim_value(b, tensor.type.dims[d], sizes)
            left = b.value("sub", [dim, start], i32)
            if offset:
                left = b.value("sub", [left, b.value("const", [], i32, value=offset)], i32)
            n = left if n is None else b.value("min", [n, left], ScalarType("i32"))
        return n


class _Producers(dict):
    """value id -> the op that makes it (a loop's variable: the loop), with the kernel's
    grid and the divisibility its shapes promise, to see loads that stay inside."""

    def __init__(self, kernel: KernelIR):
        super().__init__((r.id, op) for op in kernel.walk() for r in op.results)
        self.update((op.blocks[0].args[0].id, op) for op in kernel.walk() if op.name == "for")
        self.grid = kernel.grid
        self.facts = divisibility_facts([d for t in kernel.tensors for d in t.type.dims])


def _rank(v: Value) -> int:
    return len(v.type.shape) if isinstance(v.type, TileType) else 0


def _edges(v: Value, producers, memo) -> list[frozenset]:
    if v.id in memo:
        return memo[v.id]
    none = [frozenset()] * _rank(v)
    op = producers.get(v.id)
    out = none
    if op is None or not isinstance(v.type, TileType):
        pass
    elif op.name == "load" and "other" not in op.attrs:     # (with `other`, as the source says)
        tensor, sizes = op.operands[0], op.attrs["sizes"]
        starts = op.operands[1:1 + tensor.type.rank]
        out = [frozenset() if _inside(tensor.type.dims[d], starts[d], s, producers) else
               frozenset({(tensor, d, starts[d], 0)}) for d, s in enumerate(sizes) if s is not None]
    elif op.name == "slice":
        src = _edges(op.operands[0], producers, memo)
        out = [e if RESHAPED in e or CARRIED in e else
               frozenset((t, d, start, offset + o) for t, d, start, offset in e)
               for e, o in zip(src, op.attrs["offsets"])]
    elif op.name == "for":
        inside = _edges(_yielded(op, v), producers, memo)
        out = [frozenset({CARRIED}) if e else e for e in inside]
    elif op.name == "reshape":
        out = _reshaped(op.operands[0].type.shape, v.type.shape,
                        _edges(op.operands[0], producers, memo))
    elif op.name == "broadcast":
        src = _edges(op.operands[0], producers, memo)
        shape = op.operands[0].type.shape
        out = [e if shape[a] == v.type.shape[a] else frozenset() for a, e in enumerate(src)]
    elif op.name == "expand_dims":
        src = _edges(op.operands[0], producers, memo)
        a = op.attrs["axis"]
        out = src[:a] + [frozenset()] + src[a:]
    elif op.name == "transpose":
        out = _edges(op.operands[0], producers, memo)[::-1]
    elif op.name == "scan":          # the padding sits after the elements read: it adds to none
        out = _edges(op.operands[0], producers, memo)
    elif op.name == "reduce":
        src = _edges(op.operands[0], producers, memo)
        out = src[:op.attrs["axis"]] + src[op.attrs["axis"] + 1:]
    elif has_trait(op, ELEMENTWISE):
        out = none
        for o in op.operands:
            if _rank(o) == len(out):
                out = [a | b for a, b in zip(out, _edges(o, producers, memo))]
    memo[v.id] = out
    return out


def _yielded(loop: Op, result: Value) -> Value:
    """What a loop's body yields for one of its results."""
    return loop.blocks[0].ops[-1].operands[loop.results.index(result)]


def _inside(dim: Dim, start: Value, size: int, producers: _Producers) -> bool:
    """Whether the tile stays inside the tensor wherever it starts: a constant start in a
    constant dim; `pid.a * size` with grid(.., dim / size, ..); or the variable of
    `for k in 0 .. dim step size` where the shapes promise size | dim."""
    op = producers.get(start.id)
    if op is None:
        return False
    if op.name == "const":
        return isinstance(dim, Const) and 0 <= op.attrs["value"] <= dim.value - size
    if op.name == "mul":
        ops = [producers.get(o.id) for o in op.operands]
        pid = next((o for o in ops if o is not None and o.name == "pid"), None)
        step = next((o for o in ops if o is not None and o.name == "const"), None)
        return (pid is not None and step is not None and step.attrs["value"] == size
                and pid.attrs["axis"] < len(producers.grid)
                and producers.grid[pid.attrs["axis"]] == BinOp("/", dim, Const(size)))
    if op.name == "for" and op.blocks[0].args[0] is start:
        lo, step = producers.get(op.operands[0].id), producers.get(op.operands[2].id)
        hi = op.operands[1]                    # the size itself: a value nothing makes
        return (isinstance(dim, Sym) and hi.id not in producers and hi.name == dim.name
                and dim.divisibility(producers.facts) % size == 0
                and all(c is not None and c.name == "const" for c in (lo, step))
                and lo.attrs["value"] == 0 and step.attrs["value"] == size)
    return False


def _reshaped(src_shape, shape, src: list[frozenset]) -> list[frozenset]:
    """Axes a reshape keeps at either end keep their edges; the axes it makes by splitting
    or merging the others are RESHAPED if any of those had edges."""
    lead = 0
    while lead < min(len(src_shape), len(shape)) and src_shape[lead] == shape[lead]:
        lead += 1
    trail = 0
    while (trail < min(len(src_shape), len(shape)) - lead
           and src_shape[-1 - trail] == shape[-1 - trail]):
        trail += 1
    middle = src[lead:len(src) - trail]
    mark = frozenset({RESHAPED}) if any(middle) else frozenset()
    return src[:lead] + [mark] * (len(shape) - lead - trail) + src[len(src) - trail:]


def _zero(v: Value, producers, memo, edge_memo) -> bool:
    if not any(_edges(v, producers, edge_memo)):
        return True                            # every element was read
    if v.id in memo:
        return memo[v.id]
    op = producers.get(v.id)
    if op is None:
        ok = False
    elif op.name == "load":
        ok = True
    elif op.name == "for":           # (the body's own argument counts as 0: it is the start)
        i = op.results.index(v)
        ok = _zero(op.operands[3 + i], producers, memo, edge_memo) and _zero(
            _yielded(op, v), producers, memo, edge_memo)
    elif op.name == "reduce":
        ok = op.attrs["kind"] in ("sum", "amax") and len(op.operands) == 1 and _zero(
            op.operands[0], producers, memo, edge_memo)
    elif op.name in _ZERO_KEEPING and not (op.name == "convert" and v.type.dtype == "ue8m0"):
        # each keeps 0 where its operands are 0 (a ue8m0 byte 0 is 2^-127, not 0); a term of
        # a sum must itself be padded with 0 (not a constant), or be what a loop carries
        tiles = [o for o in op.operands if isinstance(o.type, TileType)]
        ok = all(_zero(o, producers, memo, edge_memo) for o in tiles)
        if op.name in ("add", "sub"):
            ok = ok and all(o.id not in producers or any(_edges(o, producers, edge_memo))
                            for o in tiles)
    else:
        ok = False
    memo[v.id] = ok
    return ok


def dim_value(b: Builder, d: Dim, sizes: dict[str, Value]) -> Value:
    """A tensor dimension as i32 IR ops on the kernel's size parameters."""
    i32 = ScalarType("i32")
    if isinstance(d, Const):
        return b.value("const", [], i32, value=d.value)
    if isinstance(d, Sym):
        return sizes[d.name]
    assert isinstance(d, BinOp), f"no i32 value for dimension {d}"
    lhs, rhs = dim_value(b, d.lhs, sizes), dim_value(b, d.rhs, sizes)
    if d.op == "cdiv":
        one = b.value("const", [], i32, value=1)
        lhs = b.value("add", [lhs, b.value("sub", [rhs, one], i32)], i32)
    name = {"+": "add", "-": "sub", "*": "mul", "/": "div", "cdiv": "div", "min": "min"}[d.op]
    return b.value(name, [lhs, rhs], i32)
