"""Structural checks of the tile IR, run after irgen and after every pass.

A failure here is a compiler bug, not a user mistake: the message names the op and the rule.
"""
from __future__ import annotations

from .ir import Block, KernelIR, Op, ScalarType, TensorType, TileType
from .ir_async import RULES as ASYNC_RULES
from .ir_comm import RULES as COMM_RULES


class IRVerifyError(Exception):
    pass


def _fail(op: Op, msg: str):
    raise IRVerifyError(f"'{op.name}' {msg}")


def _same_shape_operands(op: Op):
    types = [o.type for o in op.operands]
    if any(type(t) is not type(types[0]) for t in types):
        _fail(op, "mixes scalars and tiles: broadcast first")
    if isinstance(types[0], TileType) and len({t.shape for t in types}) > 1:
        _fail(op, f"operand shapes differ: {[t.shape for t in types]}")
    if len({t.dtype for t in types}) > 1:
        _fail(op, f"operand dtypes differ: {[t.dtype for t in types]}")


def _elementwise(op: Op):
    _same_shape_operands(op)
    r, a = op.result.type, op.operands[0].type
    if type(r) is not type(a) or getattr(r, "shape", None) != getattr(a, "shape", None):
        _fail(op, "result must have the operands' shape")


def _convert(op: Op):
    a, r = op.operands[0].type, op.result.type
    if getattr(a, "shape", None) != getattr(r, "shape", None):
        _fail(op, "changes the shape")


def _splat(op: Op):
    if not isinstance(op.operands[0].type, ScalarType) or not isinstance(op.result.type, TileType):
        _fail(op, "takes a scalar and makes a tile")


def _expand_dims(op: Op):
    a, r, axis = op.operands[0].type, op.result.type, op.attrs["axis"]
    if r.shape != a.shape[:axis] + (1,) + a.shape[axis:]:
        _fail(op, f"shape {r.shape} is not {a.shape} with a 1 at axis {axis}")


def _broadcast(op: Op):
    a, r = op.operands[0].type, op.result.type
    if len(a.shape) != len(r.shape) or any(x not in (1, y) for x, y in zip(a.shape, r.shape)):
        _fail(op, f"cannot broadcast {a.shape} to {r.shape}")


def _reduce(op: Op):
    a, r, axis = op.operands[0].type, op.result.type, op.attrs["axis"]
    if not isinstance(a, TileType) or not 0 <= axis < len(a.shape):
        _fail(op, f"axis {axis} is not an axis of {a}")
    shape = a.shape[:axis] + a.shape[axis + 1:]
    if (isinstance(r, ScalarType) and shape) or (isinstance(r, TileType) and r.shape != shape):
        _fail(op, f"result {r} does not drop axis {axis} of {a.shape} (a scalar when none is "
              "left)")
    if op.attrs["kind"] not in ("sum", "max", "min", "amax"):
        _fail(op, f"unknown reduction {op.attrs['kind']}")


def _transpose(op: Op):
    a, r = op.operands[0].type, op.result.type
    if not isinstance(a, TileType) or len(a.shape) != 2 or r.shape != a.shape[::-1]:
        _fail(op, f"result {r} is not {a} with its two axes swapped")
    if r.dtype != a.dtype:
        _fail(op, "changes the dtype")
    plan = op.attrs.get("smem")
    if plan is not None and (plan.row_bytes % 16 or plan.swizzle_mask >= plan.row_bytes // 16):
        _fail(op, f"shared-memory plan {plan} breaks 16-byte rows")


def _gather_copies(op: Op):
    """Compact -> its Sliced parent (passes/replicas.py). Same shape and dtype."""
    from .layout import Compact, Sliced
    a, r = op.operands[0].type, op.result.type
    if not isinstance(a, TileType) or not isinstance(r, TileType) or a.shape != r.shape or (
            a.dtype != r.dtype):
        _fail(op, "must keep the tile's shape and dtype")
    if a.layout is None and r.layout is None:
        return
    if not isinstance(r.layout, Sliced) or not isinstance(a.layout, Compact) or (
            a.layout.parent != r.layout):
        _fail(op, f"needs a Compact tile and the Sliced layout it splits, not {a.layout} -> "
              f"{r.layout}")


def _compact_operands(op: Op):
    """Compact values (passes/replicas.py) come from a reduce (a reduce-scatter) or a
    splat, and feed only slot-by-slot elementwise ops of the same Compact layout, stores
    (one element per access) and gather_copies."""
    from .layout import Compact, Sliced
    layouts = [getattr(v.type, "layout", None) for v in op.operands + op.results]
    compact = [l for l in layouts if isinstance(l, Compact)]
    if not compact or op.name in ("gather_copies", "splat"):
        return
    if op.name == "reduce":
        a, r = op.operands[0].type.layout, op.result.type.layout
        if r != Compact(Sliced(a, op.attrs["axis"])):
            _fail(op, f"makes {r}, not the Compact layout of its Sliced result")
        return
    if op.name == "store":
        if op.attrs.get("vec", 1) != 1:
            _fail(op, "stores a compact tile one element per access (vec 1)")
        return
    if op.name not in _COMPACT_OPS:
        _fail(op, "takes a compact tile: only elementwise ops, stores and gather_copies may")
    if len(compact) != len(layouts) or len(set(compact)) != 1:
        _fail(op, "mixes compact and other layouts")


_COMPACT_OPS = ("add", "sub", "mul", "div", "rem", "max", "min", "neg", "abs", "fma", "recip",
                "convert")


def guard_operands(op: Op) -> int:
    """1 if a load or get has a guard (passes/prefetch.py): a trailing i32 scalar; the
    access moves data only where it is > 0."""
    if not op.attrs.get("guard"):
        return 0
    if op.name not in ("load", "get"):
        _fail(op, "takes no guard: only loads and gets do")
    g = op.operands[-1].type
    if not isinstance(g, ScalarType) or g.dtype != "i32":
        _fail(op, "guard must be an i32 scalar")
    return 1


def _memory(op: Op):
    """load(x, idx...[, guard]) {sizes, ...}, store(x, idx..., value) {sizes, ...}"""
    tensor = op.operands[0].type
    if not isinstance(tensor, TensorType):
        _fail(op, "needs a tensor as first operand")
    sizes = op.attrs["sizes"]
    idx = op.operands[1:1 + tensor.rank]
    if len(sizes) != tensor.rank or len(idx) != tensor.rank:
        _fail(op, f"needs one index and one size per dimension of a rank-{tensor.rank} tensor")
    if any(not isinstance(i.type, ScalarType) or i.type.dtype != "i32" for i in idx):
        _fail(op, "indices must be i32 scalars")
    check_access_value(op, tensor, reads=op.name == "load", fixed=1 + tensor.rank)


def check_access_value(op: Op, tensor: TensorType, reads: bool, fixed: int):
    """The tile a memory access moves (its result if it reads, else its last operand) has
    the tensor's dtype and the shape of the sliced sizes; the op has `fixed` operands, one
    more for a written value and one more for a guard."""
    tile_shape = tuple(s for s in op.attrs["sizes"] if s is not None)
    value = op.result.type if reads else op.operands[-1].type
    if isinstance(value, ScalarType) and not tile_shape:
        pass                                   # one element: a scalar
    elif not isinstance(value, TileType) or value.shape != tile_shape:
        _fail(op, f"tile shape must be {tile_shape}")
    if value.dtype != tensor.dtype:
        _fail(op, f"tile dtype {value.dtype} differs from tensor dtype {tensor.dtype}")
    n = fixed + (not reads) + guard_operands(op)
    if len(op.operands) != n:
        _fail(op, f"takes {n} operands")


_RULES = {
    "const": lambda op: None,
    "pid": lambda op: None,
    **{n: _elementwise for n in ("add", "sub", "mul", "div", "rem", "max", "min", "neg", "abs",
                                 "fma", "recip")},
    "convert": _convert,
    "splat": _splat,
    "expand_dims": _expand_dims,
    "broadcast": _broadcast,
    "reduce": _reduce,
    "transpose": _transpose,
    "relayout": _convert,
    "gather_copies": _gather_copies,    # a Compact tile's slots to every copy (passes/replicas.py)
    "load": _memory,
    "store": _memory,
}
_RULES.update(ASYNC_RULES)      # loops, shared memory, barriers, TMA, warpgroups, mma
_RULES.update(COMM_RULES)       # peer memory, signals, waits


def verify(kernel: KernelIR, require_layouts: bool = False) -> None:
    defined = {v.id for v in kernel.tensors} | {v.id for v in kernel.sizes}
    _verify_block(kernel.body, defined, require_layouts)
    if require_layouts and kernel.num_threads <= 0:
        raise IRVerifyError("kernel has no thread count after layout assignment")


def _verify_block(block: Block, defined: set[int], require_layouts: bool):
    for arg in block.args:
        defined.add(arg.id)
    for op in block.ops:
        rule = _RULES.get(op.name)
        if rule is None:
            raise IRVerifyError(f"unknown op '{op.name}'")
        for o in op.operands:
            if o.id not in defined:
                _fail(op, f"uses {o!r} before it is defined")
        rule(op)
        _compact_operands(op)
        for r in op.results:
            if require_layouts and isinstance(r.type, TileType) and r.type.layout is None:
                _fail(op, "result tile has no layout")
            defined.add(r.id)
        for b in op.blocks:
            _verify_block(b, set(defined), require_layouts)
