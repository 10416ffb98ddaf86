"""Ops that reshape tiles or move their elements between threads."""
from __future__ import annotations

from commdsl.ir import ScalarType, TileType
from commdsl.layout import Compact, Sliced

from .registry import KEEPS_NONNEGATIVE, LAYOUT, REDUCTION, SHARED, declare, fail

FAMILY = "tiles"


def _splat(op):
    if not isinstance(op.operands[0].type, ScalarType) or not isinstance(op.result.type, TileType):
        fail(op, "takes a scalar and makes a tile")


def _expand_dims(op):
    a, r, axis = op.operands[0].type, op.result.type, op.attrs["axis"]
    if r.shape != a.shape[:axis] + (1,) + a.shape[axis:]:
        fail(op, f"shape {r.shape} is not {a.shape} with a 1 at axis {axis}")


def _broadcast(op):
    a, r = op.operands[0].type, op.result.type
    if len(a.shape) != len(r.shape) or any(x not in (1, y) for x, y in zip(a.shape, r.shape)):
        fail(op, f"cannot broadcast {a.shape} to {r.shape}")


REDUCTIONS = ("sum", "max", "min", "amax", "nanmax", "nanmin")
# The reductions whose result is >= +0 (or NaN) always, and those that keep their operand's
# being so. max and nanmax are in neither: over a row they read nothing of, they give -inf.
NONNEGATIVE_KINDS = ("amax",)
KEEPS_NONNEGATIVE_KINDS = ("sum", "min", "nanmin")


def _reduce(op):
    a, r, axis = op.operands[0].type, op.result.type, op.attrs["axis"]
    if not isinstance(a, TileType) or not 0 <= axis < len(a.shape):
        fail(op, f"axis {axis} is not an axis of {a}")
    shape = a.shape[:axis] + a.shape[axis + 1:]
    if (isinstance(r, ScalarType) and shape) or (isinstance(r, TileType) and r.shape != shape):
        fail(op, f"result {r} does not drop axis {axis} of {a.shape} (a scalar when none is "
             "left)")
    if op.attrs["kind"] not in REDUCTIONS:
        fail(op, f"unknown reduction {op.attrs['kind']}")
    if len(op.operands) > 2 or any(not isinstance(n.type, ScalarType) or n.type.dtype != "i32"
                                   for n in op.operands[1:]):
        fail(op, "takes a tile and at most one i32 count (commdsl/ragged.py)")


SCANS = ("sum",)


def _scan(op):
    a, r, axis = op.operands[0].type, op.result.type, op.attrs["axis"]
    if not isinstance(a, TileType) or not 0 <= axis < len(a.shape):
        fail(op, f"axis {axis} is not an axis of {a}")
    if not isinstance(r, TileType) or (r.shape, r.dtype) != (a.shape, a.dtype):
        fail(op, f"result {r} is not of its operand's shape and dtype {a}")
    if a.dtype not in ("i32", "f32"):
        fail(op, f"scans i32 or f32 tiles, not {a.dtype}")
    if op.attrs["kind"] not in SCANS:
        fail(op, f"unknown scan {op.attrs['kind']}")


def _transpose(op):
    a, r = op.operands[0].type, op.result.type
    if not isinstance(a, TileType) or len(a.shape) != 2 or r.shape != a.shape[::-1]:
        fail(op, f"result {r} is not {a} with its two axes swapped")
    if r.dtype != a.dtype:
        fail(op, "changes the dtype")
    plan = op.attrs.get("smem")
    if plan is not None and (plan.row_bytes % 16 or plan.swizzle_mask >= plan.row_bytes // 16):
        fail(op, f"shared-memory plan {plan} breaks 16-byte rows")


# The static shared-memory array passes/shared.py gives an op that moves data between warps.
SMEM_BUFFER_ATTRS = {"smem_buffer": "its static shared-memory array's number in the kernel",
                     "smem_bytes": "that array's size"}


def _relayout(op):
    a, r = op.operands[0].type, op.result.type
    if getattr(a, "shape", None) != getattr(r, "shape", None):
        fail(op, "changes the shape")


def _gather_copies(op):
    a, r = op.operands[0].type, op.result.type
    if not isinstance(a, TileType) or not isinstance(r, TileType) or a.shape != r.shape or (
            a.dtype != r.dtype):
        fail(op, "must keep the tile's shape and dtype")
    if a.layout is None and r.layout is None:
        return
    if not isinstance(r.layout, Sliced) or not isinstance(a.layout, Compact) or (
            a.layout.parent != r.layout):
        fail(op, f"needs a Compact tile and the Sliced layout it splits, not {a.layout} -> "
             f"{r.layout}")


def _slice(op):
    a, r, offsets = op.operands[0].type, op.result.type, op.attrs["offsets"]
    if not isinstance(a, TileType) or len(offsets) != len(a.shape) or len(r.shape) != len(
            a.shape) or any(o < 0 or o + n > m for o, n, m in zip(offsets, r.shape, a.shape)):
        fail(op, f"result {r} at offsets {offsets} is not inside {a}")
    if r.dtype != a.dtype:
        fail(op, "changes the dtype")


def _reshape(op):
    a, r = op.operands[0].type, op.result.type
    if not isinstance(a, TileType) or a.numel != r.numel or r.dtype != a.dtype:
        fail(op, f"result {r} does not hold the elements of {a}")


# ---- CPU meaning (commdsl/interpreter.py): whole tiles; layouts move no values -------------

def _run_splat(ctx, op, s):
    import torch
    from commdsl.dtypes import torch_dtype
    t = op.result.type
    return torch.full(t.shape, s if isinstance(s, int) else float(s), dtype=torch_dtype(t.dtype))


def _run_expand_dims(ctx, op, t):
    return t.unsqueeze(op.attrs["axis"])


def _run_broadcast(ctx, op, t):
    return t.expand(op.result.type.shape).contiguous()


# What an element a reduction leaves out counts as (commdsl/ragged.py). The NaN-dropping
# forms leave out NaN itself, so a row with nothing but NaN stays NaN wherever it is cut.
IDENTITY = {"sum": 0.0, "amax": 0.0, "max": float("-inf"), "min": float("inf"),
            "nanmax": float("nan"), "nanmin": float("nan")}
I32_IDENTITY = {"sum": 0, "amax": 0, "max": -2 ** 31, "min": 2 ** 31 - 1,
                "nanmax": -2 ** 31, "nanmin": 2 ** 31 - 1}
# The max or min a reduction folds with, and whether a NaN element makes the result NaN.
MINMAX = {"max": ("max", True), "amax": ("max", True), "min": ("min", True),
          "nanmax": ("max", False), "nanmin": ("min", False)}


def identity(kind: str, is_float: bool):
    return IDENTITY[kind] if is_float else I32_IDENTITY[kind]


def _run_reduce(ctx, op, t, *count):
    import torch
    axis, kind = op.attrs["axis"], op.attrs["kind"]
    if kind == "amax":
        t = t.abs()
    if count:
        shape = [1] * t.dim()
        shape[axis] = t.shape[axis]
        read = (torch.arange(t.shape[axis]) < int(count[0])).view(shape)
        t = torch.where(read, t, torch.tensor(identity(kind, t.dtype.is_floating_point),
                                              dtype=t.dtype))
    if kind == "sum":
        return t.sum(axis, dtype=t.dtype)
    which, propagate_nan = MINMAX[kind]
    if t.dtype.is_floating_point:
        from commdsl.cpu_numerics import reduce_minmax
        return reduce_minmax(t, axis, which, propagate_nan)
    return t.amax(axis) if which == "max" else t.amin(axis)


def _run_scan(ctx, op, t):
    return t.cumsum(op.attrs["axis"], dtype=t.dtype)


def _run_transpose(ctx, op, t):
    return t.t().contiguous()


def _run_slice(ctx, op, t):
    return t[tuple(slice(o, o + n) for o, n in zip(op.attrs["offsets"],
                                                   op.result.type.shape))].contiguous()


def _run_reshape(ctx, op, t):
    return t.reshape(op.result.type.shape).contiguous()


def _run_same(ctx, op, t):
    """The elements move between threads; the tile's values stay."""
    return t


declare("splat", "splat(s) : tile", "a tile with the scalar s in every element",
        traits=(KEEPS_NONNEGATIVE,), verify=_splat, interpret=_run_splat, family=FAMILY)
declare("expand_dims", "expand_dims(t) {axis} : tile", "t with a new axis of size 1 at `axis`",
        traits=(LAYOUT, KEEPS_NONNEGATIVE), verify=_expand_dims, attrs={"axis": "where the new axis goes"},
        interpret=_run_expand_dims, family=FAMILY)
declare("broadcast", "broadcast(t) : tile", "t repeated along its axes of size 1 to the "
        "result's shape", traits=(LAYOUT, KEEPS_NONNEGATIVE), verify=_broadcast,
        interpret=_run_broadcast, family=FAMILY)
declare("reduce", "reduce(t[, n]) {axis, kind} : tile | scalar",
        "t folded along `axis` by sum, max, min or amax (max of |x|), NaN if any element is "
        "(nanmax, nanmin: leaving NaN out); with the i32 n, only the first n elements along "
        "`axis` take part (the rest were not read: commdsl/ragged.py)",
        traits=(REDUCTION,), verify=_reduce,
        attrs={"axis": "the axis folded away",
               "kind": "sum, max, min, amax, nanmax or nanmin",
               **SMEM_BUFFER_ATTRS},
        interpret=_run_reduce, family=FAMILY)
declare("scan", "scan(t) {axis, kind} : tile",
        "the inclusive prefix sum of t along `axis` (element i: the sum of elements 0 .. i), "
        "in the operand's layout: within each thread, then across lanes by shuffles, then "
        "across warps through shared memory",
        traits=(KEEPS_NONNEGATIVE,), verify=_scan,
        attrs={"axis": "the axis summed along", "kind": "sum", **SMEM_BUFFER_ATTRS},
        interpret=_run_scan, family=FAMILY)
declare("transpose", "transpose(t) {smem, smem_buffer, smem_bytes} : tile",
        "t with its two axes swapped, through shared memory", traits=(LAYOUT, SHARED),
        verify=_transpose,
        attrs={"smem": "the shared-memory plan of passes/shared.py: row bytes, swizzle, and "
                       "each access's registers and address", **SMEM_BUFFER_ATTRS},
        interpret=_run_transpose, family=FAMILY)
declare("relayout", "relayout(t) {read_vector, smem_buffer, smem_bytes} : tile",
        "t in another thread layout, same values, through shared memory (passes/tile.py)",
        traits=(LAYOUT, SHARED),
        verify=_relayout, attrs={"read_vector": "elements per shared-memory read "
                                 "(passes/shared.py)", **SMEM_BUFFER_ATTRS},
        interpret=_run_same, family=FAMILY)
declare("gather_copies", "gather_copies(t) : tile", "a Compact tile's slots sent to every copy "
        "of its Sliced parent layout (passes/replicas.py)", traits=(LAYOUT,),
        verify=_gather_copies, interpret=_run_same, family=FAMILY)
declare("slice", "slice(t) {offsets, smem_buffer, smem_bytes} : tile",
        "the part of t from `offsets` of the result's shape (a register-tile view), through "
        "shared memory", traits=(LAYOUT, SHARED), verify=_slice,
        attrs={"offsets": "per axis, the first element taken", **SMEM_BUFFER_ATTRS},
        interpret=_run_slice, family=FAMILY)
declare("reshape", "reshape(t) {smem_buffer, smem_bytes} : tile",
        "t's elements in row-major order, in the result's shape, through shared memory",
        traits=(LAYOUT, SHARED), verify=_reshape, attrs=SMEM_BUFFER_ATTRS,
        interpret=_run_reshape, family=FAMILY)
