"""Global-memory accesses of this program: tiles (or single elements) in and out of tensors."""
from __future__ import annotations

from commdsl.ir import ScalarType, TensorType, TileType

from .registry import MEMORY, SIDE_EFFECTS, declare, fail

FAMILY = "memory"
GUARDED = ("load", "get")     # the accesses passes/prefetch.py may guard


def guard_operands(op) -> int:
    """1 if a load or get has a guard (passes/prefetch.py): a trailing i32 scalar; the
    access moves data only where it is > 0."""
    if not op.attrs.get("guard"):
        return 0
    if op.name not in GUARDED:
        fail(op, "takes no guard: only loads and gets do")
    g = op.operands[-1].type
    if not isinstance(g, ScalarType) or g.dtype != "i32":
        fail(op, "guard must be an i32 scalar")
    return 1


def check_access_value(op, tensor: TensorType, reads: bool, fixed: int):
    """The tile a memory access moves (its result if it reads, else its last operand) has
    the tensor's dtype and the shape of the sliced sizes; the op has `fixed` operands, one
    more for a written value and one more for a guard."""
    tile_shape = tuple(s for s in op.attrs["sizes"] if s is not None)
    value = op.result.type if reads else op.operands[-1].type
    if isinstance(value, ScalarType) and not tile_shape:
        pass                                   # one element: a scalar
    elif not isinstance(value, TileType) or value.shape != tile_shape:
        fail(op, f"tile shape must be {tile_shape}")
    if value.dtype != tensor.dtype:
        fail(op, f"tile dtype {value.dtype} differs from tensor dtype {tensor.dtype}")
    n = fixed + (not reads) + guard_operands(op)
    if len(op.operands) != n:
        fail(op, f"takes {n} operands")


def _memory(op):
    tensor = op.operands[0].type
    if not isinstance(tensor, TensorType):
        fail(op, "needs a tensor as first operand")
    sizes = op.attrs["sizes"]
    idx = op.operands[1:1 + tensor.rank]
    if len(sizes) != tensor.rank or len(idx) != tensor.rank:
        fail(op, f"needs one index and one size per dimension of a rank-{tensor.rank} tensor")
    if any(not isinstance(i.type, ScalarType) or i.type.dtype != "i32" for i in idx):
        fail(op, "indices must be i32 scalars")
    check_access_value(op, tensor, reads=op.name == "load", fixed=1 + tensor.rank)


ACCESS_ATTRS = {
    "sizes": "per dimension, the tile's extent from its index, or None for one index (the "
             "dimension is dropped)",
    "cache": "the cache(...) clause as written: (key, value) pairs, or None",
    "_cache_spans": "source spans of the clause's arguments, for the cache pass's errors",
    "qualifiers": "the PTX spelling the cache pass chose, e.g. ld.global.nc.L1::no_allocate",
    "vec": "elements per access (passes/vectorize.py)",
}

declare("load", "load(x, idx...[, guard]) {sizes, ...} : tile | scalar",
        "a tile of tensor x at the indices; with `guard`, only where the i32 guard > 0",
        traits=(MEMORY,), verify=_memory,
        attrs={**ACCESS_ATTRS, "via": "'tma': the tile goes through shared memory by TMA "
               "(passes/pipeline.py)", "guard": "a trailing i32 guard operand (passes/prefetch.py)"},
        family=FAMILY)
declare("store", "store(x, idx..., value) {sizes, ...}", "value into tensor x at the indices",
        traits=(MEMORY, SIDE_EFFECTS), verify=_memory, attrs=ACCESS_ATTRS, family=FAMILY)
