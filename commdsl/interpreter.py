"""Runs the tile IR on the CPU with torch, one program after another.

It gives the language's meaning without a GPU: the same front end, whole tiles as torch
tensors, out-of-bounds loads reading 0 and out-of-bounds stores dropped, and FP8
conversion rounding to nearest and saturating as `cvt.rn.satfinite` does. Meant for small
shapes in tests and for debugging a kernel's logic.
"""
from __future__ import annotations

import itertools

from .dtypes import FP8_MAX, torch_dtype
from .ir import KernelIR, Op, ScalarType, TileType


def run(kernel: KernelIR, tensors: dict, sizes: dict[str, int]) -> None:
    """Runs every program of the grid; `tensors` maps parameter names to CPU tensors."""
    grid = [d.evaluate(sizes) for d in kernel.grid]
    for pid in itertools.product(*(range(n) for n in grid)):
        _Program(kernel, tensors, sizes, pid).run()


class _Program:
    def __init__(self, kernel: KernelIR, tensors: dict, sizes: dict, pid: tuple[int, ...]):
        self.k, self.pid = kernel, pid
        self.vals = {v.id: tensors[v.name] for v in kernel.tensors}
        self.vals.update({v.id: sizes[v.name] for v in kernel.sizes})

    def run(self):
        for op in self.k.body.ops:
            out = getattr(self, "op_" + op.name)(op, *(self.vals[o.id] for o in op.operands))
            if op.results:
                self.vals[op.result.id] = out

    # ---- scalars and elementwise ------------------------------------------------------------

    def op_const(self, op: Op):
        return self._scalar(op.attrs["value"], op.result.type.dtype)

    @staticmethod
    def _scalar(value, dtype: str):
        import torch
        if dtype.startswith(("i", "u")):
            return int(value)
        return torch.tensor(value, dtype=torch_dtype(dtype))

    def op_pid(self, op: Op):
        return self.pid[op.attrs["axis"]]

    def op_add(self, op, a, b):
        return a + b

    def op_sub(self, op, a, b):
        return a - b

    def op_mul(self, op, a, b):
        return a * b

    def op_div(self, op, a, b):
        if isinstance(a, int):
            return int(a / b)                  # C division: toward zero
        return a / b

    def op_rem(self, op, a, b):
        import math
        return int(math.fmod(a, b)) if isinstance(a, int) else a.fmod(b)

    def op_max(self, op, a, b):
        import torch
        return max(a, b) if isinstance(a, int) else torch.fmax(a, b)

    def op_min(self, op, a, b):
        import torch
        return min(a, b) if isinstance(a, int) else torch.fmin(a, b)

    def op_abs(self, op, a):
        return abs(a)

    def op_neg(self, op, a):
        return -a

    def op_convert(self, op, a):
        import torch
        dst = op.result.type.dtype
        if isinstance(a, int):
            a = torch.tensor(a, dtype=torch.int32)
        if dst in FP8_MAX:
            a = a.float().clamp(-FP8_MAX[dst], FP8_MAX[dst])     # satfinite; NaN stays NaN
        elif dst.startswith(("i", "u")) and a.is_floating_point():
            a = a.trunc()
        return a.to(torch_dtype(dst))

    # ---- tiles ---------------------------------------------------------------------------

    def op_splat(self, op, a):
        import torch
        t = op.result.type
        return torch.full(t.shape, float(a) if not isinstance(a, int) else a,
                          dtype=torch_dtype(t.dtype))

    def op_expand_dims(self, op, a):
        return a.unsqueeze(op.attrs["axis"])

    def op_broadcast(self, op, a):
        return a.expand(op.result.type.shape).contiguous()

    def op_reduce(self, op, a):
        axis, kind = op.attrs["axis"], op.attrs["kind"]
        if kind == "amax":
            return a.abs().amax(axis)
        if kind == "sum":
            return a.sum(axis, dtype=a.dtype)
        return a.amax(axis) if kind == "max" else a.amin(axis)

    # ---- memory ------------------------------------------------------------------------

    def _region(self, op: Op, tensor, starts):
        """(tensor index, tile index) covering the in-bounds part of the access, or None."""
        t_index, tile_index = [], []
        for dim, start, size in zip(tensor.shape, starts, op.attrs["sizes"]):
            if size is None:
                if not 0 <= start < dim:
                    return None
                t_index.append(start)
                continue
            lo, hi = max(start, 0), min(start + size, dim)
            if hi <= lo:
                return None
            t_index.append(slice(lo, hi))
            tile_index.append(slice(lo - start, hi - start))
        return tuple(t_index), tuple(tile_index)

    def op_load(self, op, tensor, *starts):
        import torch
        t: TileType = op.result.type
        out = torch.zeros(t.shape, dtype=tensor.dtype)
        region = self._region(op, tensor, starts)
        if region is not None:
            out[region[1]] = tensor[region[0]]
        return out

    def op_store(self, op, tensor, *rest):
        import torch
        starts, value = rest[:-1], rest[-1]
        if isinstance(op.operands[-1].type, ScalarType):
            value = torch.tensor(value)
        region = self._region(op, tensor, starts)
        if region is not None:
            tensor[region[0]] = value[region[1]].to(tensor.dtype)
