"""Runs the tile IR on the CPU with torch, one program after another.

It gives the language's meaning without a GPU: the same front end, whole tiles as torch
tensors, out-of-bounds loads reading 0 and out-of-bounds stores dropped, and FP8
conversion rounding to nearest and saturating as `cvt.rn.satfinite` does. Meant for small
shapes in tests and for debugging a kernel's logic.
"""
from __future__ import annotations

import itertools

from .dtypes import FP8_MAX, torch_dtype
from .interpreter_comm import CommProgram, Ranks
from .regions import in_bounds_region, unguarded
from .ir import KernelIR, Op, ScalarType, TileType


def run(kernel: KernelIR, tensors: dict, sizes: dict[str, int], comm: Ranks | None = None) -> None:
    """Runs every program of the grid; `tensors` maps parameter names to CPU tensors.
    `comm`: what a communication kernel sees of the other ranks (interpreter_comm.run_ranks)."""
    grid = [d.evaluate(sizes) for d in kernel.grid]
    for pid in itertools.product(*(range(n) for n in grid)):
        _Program(kernel, tensors, sizes, pid, comm).run()


def _is_int(dtype: str) -> bool:
    from .dtypes import DTYPES
    return DTYPES[dtype].is_int


def ue8m0_from_f32(x):
    """The UE8M0 byte of the smallest power of two >= |x|, from the f32 bits: exponent +
    (mantissa != 0), at most 0xFF. For positive normal x this is DeepGEMM's
    ceil_to_ue8m0(x) = 2^ceil(log2(x)), computed without log2's rounding."""
    import torch
    bits = x.float().contiguous().view(torch.int32)
    exp = (bits >> 23) & 0xFF
    up = exp + ((bits & 0x7FFFFF) != 0).to(torch.int32)
    return up.clamp(max=0xFF).to(torch.uint8)


def f32_from_ue8m0(b):
    """2^(b - 127) for a UE8M0 byte: 0 gives 2^-127 (subnormal), 0xFF gives NaN."""
    import torch
    e = b.to(torch.int32)
    bits = torch.where(e == 0, torch.full_like(e, 0x400000), e << 23)
    bits = torch.where(e == 0xFF, torch.full_like(e, 0x7FC00000), bits)
    return bits.view(torch.float32)


class _Program(CommProgram):
    def __init__(self, kernel: KernelIR, tensors: dict, sizes: dict, pid: tuple[int, ...],
                 comm: Ranks | None = None):
        self.k, self.pid, self.comm = kernel, pid, comm
        self.vals = {v.id: tensors[v.name] for v in kernel.tensors}
        self.vals.update({v.id: sizes[v.name] for v in kernel.sizes})

    def run(self):
        self.run_block(self.k.body, [])

    def run_block(self, block, args: list) -> list:
        """Runs a block with its arguments bound; returns what its `yield` gives."""
        for arg, value in zip(block.args, args):
            self.vals[arg.id] = value
        for op in block.ops:
            if op.name == "yield":
                return [self.vals[o.id] for o in op.operands]
            out = getattr(self, "op_" + op.name)(op, *(self.vals[o.id] for o in op.operands))
            if len(op.results) == 1:
                self.vals[op.result.id] = out
            elif op.results:
                for r, value in zip(op.results, out):
                    self.vals[r.id] = value
        return []

    # ---- loops and matrix products ----------------------------------------------------------

    def op_for(self, op, lo, hi, step, *carried):
        carried = list(carried)
        for i in range(lo, hi, step):
            carried = self.run_block(op.blocks[0], [i, *carried])
        return carried[0] if len(carried) == 1 else carried

    def op_tiles(self, op, *bounds):
        """Every tile origin in turn: the persistent schedule only changes who runs which."""
        ranges = [range(lo, hi, step) for (lo, hi), step in
                  zip(zip(bounds[0::2], bounds[1::2]), op.attrs["steps"])]
        for origin in itertools.product(*ranges):
            self.run_block(op.blocks[0], list(origin))

    def op_mma(self, op, a, b, acc=None):
        """f32 products of the exactly widened operands, summed in f32 (more precisely than
        any promotion interval of the tensor cores, which only changes the rounding)."""
        b = b.float().T if op.attrs["trans_b"] else b.float()
        out = a.float() @ b
        return out if acc is None else acc + out

    # ---- scalars and elementwise ------------------------------------------------------------

    def op_const(self, op: Op):
        return self._scalar(op.attrs["value"], op.result.type.dtype)

    @staticmethod
    def _scalar(value, dtype: str):
        import torch
        if _is_int(dtype):
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
        import torch
        if isinstance(a, int) and isinstance(b, int):
            return int(a / b)                  # C division: toward zero
        if _is_int(op.result.type.dtype):
            return torch.div(a, b, rounding_mode="trunc")
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
        src, dst = op.operands[0].type.dtype, op.result.type.dtype
        if isinstance(a, int):
            a = torch.tensor(a, dtype=torch.int32)
        if dst == "ue8m0":
            return ue8m0_from_f32(a)
        if src == "ue8m0":
            return f32_from_ue8m0(a)
        if dst in FP8_MAX:
            a = a.float().clamp(-FP8_MAX[dst], FP8_MAX[dst])     # satfinite; NaN stays NaN
        elif _is_int(dst) and a.is_floating_point():
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

    def op_transpose(self, op, a):
        return a.t().contiguous()

    # ---- memory ------------------------------------------------------------------------

    def op_load(self, op, tensor, *starts):
        import torch
        t = op.result.type
        out = torch.zeros(t.shape if isinstance(t, TileType) else (), dtype=tensor.dtype)
        starts, runs = unguarded(op, starts)
        region = in_bounds_region(op.attrs["sizes"], tensor.shape, starts)
        if runs and region is not None:
            out[region[1]] = tensor[region[0]]
        return out

    def op_store(self, op, tensor, *rest):
        import torch
        starts, value = rest[:-1], rest[-1]
        if isinstance(op.operands[-1].type, ScalarType) and not isinstance(value, torch.Tensor):
            value = torch.tensor(value)
        region = in_bounds_region(op.attrs["sizes"], tensor.shape, starts)
        if region is not None:
            tensor[region[0]] = value[region[1]].to(tensor.dtype)
