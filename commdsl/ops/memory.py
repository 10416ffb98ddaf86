"""Global-memory accesses of this program: tiles (or single elements) in and out of tensors."""
from __future__ import annotations

from commdsl.ir import ScalarType, TensorType, TileType

from .registry import MEMORY, READS, SIDE_EFFECTS, WRITES, declare, fail

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


def mask_operands(op, tile_shape) -> int:
    """1 if a load or store is masked (attribute `mask`): a bool tile of the access's shape
    right after the indices; the access moves only the elements where it holds."""
    if not op.attrs.get("mask"):
        return 0
    if op.name not in ("load", "store"):
        fail(op, "takes no mask: only loads and stores do")
    m = op.operands[1 + op.operands[0].type.rank].type
    if not isinstance(m, TileType) or m.dtype != "bool" or m.shape != tile_shape:
        fail(op, f"mask must be a bool tile of shape {tile_shape}")
    if op.attrs.get("via"):
        fail(op, "through TMA takes no mask")
    return 1


def check_access_value(op, tensor: TensorType, reads: bool, fixed: int):
    """The tile a memory access moves (its result if it reads, else its last operand) has
    the tensor's dtype and the shape of the sliced sizes; the op has `fixed` operands, one
    more for a mask, one more for a written value and one more for a guard."""
    tile_shape = tuple(s for s in op.attrs["sizes"] if s is not None)
    value = op.result.type if reads else op.operands[-1].type
    if isinstance(value, ScalarType) and not tile_shape:
        pass                                   # one element: a scalar
    elif not isinstance(value, TileType) or value.shape != tile_shape:
        fail(op, f"tile shape must be {tile_shape}")
    if value.dtype != tensor.dtype:
        fail(op, f"tile dtype {value.dtype} differs from tensor dtype {tensor.dtype}")
    n = fixed + mask_operands(op, tile_shape) + (not reads) + guard_operands(op)
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
    "cache_policy": "the cache pass's decision, which the backend spells: volatile, operator "
                    "(ca/cg/cs/wb/wt), nc, L1 (eviction policy), L2 (prefetch size); {} for "
                    "a plain access",
    "vec": "elements per access (passes/vectorize.py)",
    "mask": "a bool tile operand after the indices: only its true elements move",
    "smem_buffer": "a mask spread over the threads unlike the tile moves through this "
                   "static shared-memory array (passes/shared.py)",
    "smem_bytes": "that array's size",
}


# ---- CPU meaning (commdsl/interpreter.py): out of bounds (or masked off) reads `other` (0
# unless given) and writes nothing --------------------------------------------------------

def _run_load(ctx, op, tensor, *starts):
    import torch
    from commdsl.regions import in_bounds_region, unguarded
    t = op.result.type
    other = op.attrs.get("other") or 0
    out = torch.full(t.shape if isinstance(t, TileType) else (), other, dtype=tensor.dtype)
    starts, runs = unguarded(op, starts)
    starts, mask = (starts[:-1], starts[-1]) if op.attrs.get("mask") else (starts, None)
    region = in_bounds_region(op.attrs["sizes"], tensor.shape, starts)
    if runs and region is not None:
        out[region[1]] = tensor[region[0]]
    if mask is not None:
        out = torch.where(mask, out, torch.tensor(other, dtype=tensor.dtype))
    return out


def _run_store(ctx, op, tensor, *rest):
    import torch
    from commdsl.regions import in_bounds_region
    starts, value = rest[:-1], rest[-1]
    starts, mask = (starts[:-1], starts[-1]) if op.attrs.get("mask") else (starts, None)
    if isinstance(op.operands[-1].type, ScalarType) and not isinstance(value, torch.Tensor):
        value = torch.tensor(value)
    region = in_bounds_region(op.attrs["sizes"], tensor.shape, starts)
    if region is not None:
        new = value[region[1]].to(tensor.dtype)
        if mask is not None:
            new = torch.where(mask[region[1]], new, tensor[region[0]])
        tensor[region[0]] = new


declare("load", "load(x, idx...[, mask][, guard]) {sizes, ...} : tile | scalar",
        "a tile of tensor x at the indices, `other` (0 unless given) where it reads nothing: "
        "past the tensor's edge, where the mask is false, everywhere if the i32 guard <= 0",
        traits=(MEMORY, READS), verify=_memory,
        attrs={**ACCESS_ATTRS,
               "via": "'tma': the tile goes through shared memory by TMA (passes/pipeline.py)",
               "guard": "a trailing i32 guard operand (passes/prefetch.py)",
               "other": "the value of the elements not read, in the tile's dtype (0 if none; "
                        "a UE8M0 tile's as its exponent byte)"},
        interpret=_run_load, family=FAMILY)
declare("store", "store(x, idx...[, mask], value) {sizes, ...}",
        "value into tensor x at the indices (where the mask is true)",
        traits=(MEMORY, WRITES, SIDE_EFFECTS), verify=_memory, attrs=ACCESS_ATTRS,
        interpret=_run_store, family=FAMILY)
