"""Tensor-core matrix products (wgmma) and their promotion into f32 accumulators."""
from __future__ import annotations

from commdsl.ir import Op, SmemType, TileType

from .operands import is_i32, shape_of
from .registry import ASYNC, MMA, PROMOTES, declare, fail

FAMILY = "mma"
# What wgmma multiplies (by family: FP8 by FP8, 8-bit integers by 8-bit integers, a 16- or
# 32-bit float type by itself), and into what.
FP8 = ("e4m3", "e5m2")
HALF = ("bf16", "f16")
INT8 = ("i8", "u8")               # s8 / u8 in wgmma, summed exactly in s32
TF32 = ("f32",)                   # f32 tiles are read as tf32 (the top 19 bits)
OPERAND_TYPES = FP8 + HALF + INT8 + TF32


def accumulator_dtype(operand_dtype: str) -> str:
    return "i32" if operand_dtype in INT8 else "f32"


def _mma(op):
    a, b = op.operands[0].type, op.operands[1].type
    r = op.result.type
    if isinstance(b, SmemType):          # after passes/pipeline.py; a may stay in registers
        if not isinstance(a, (SmemType, TileType)) or not is_i32(op.operands[2]):
            fail(op, "takes a ring (or a register tile), a ring and a stage index")
        rest = op.operands[3:]
    else:
        if not isinstance(a, TileType) or not isinstance(b, TileType):
            fail(op, "takes two tiles")
        rest = op.operands[2:]
    a_shape, b_shape = a.shape, (b.shape if op.attrs["trans_b"] else b.shape[::-1])
    if len(a_shape) != 2 or len(b_shape) != 2 or a_shape[1] != b_shape[1]:
        fail(op, f"operand shapes {a_shape} and {b_shape} (as [N, K]) disagree on K")
    acc = accumulator_dtype(a.dtype)
    if not isinstance(r, TileType) or r.dtype != acc or r.shape != (a_shape[0], b_shape[0]):
        fail(op, f"result must be {acc} [{a_shape[0]}, {b_shape[0]}], not {r}")
    if rest and (len(rest) != 1 or shape_of(rest[0].type) != shape_of(r)):
        fail(op, "accumulator must have the result's type")


def _scale(op, scale):
    r = op.result.type
    if not isinstance(scale.type, TileType) or scale.type.shape not in (r.shape[:1], r.shape):
        fail(op, f"scale must be a [{r.shape[0]}] tile (one per row) or a "
                 f"[{r.shape[0]}, {r.shape[1]}] one (per element), not {scale.type}")
    if (scale.type.shape == r.shape and None not in (scale.type.layout, r.layout)
            and scale.type.layout != r.layout):
        fail(op, "a scale per element must be held as the result is (the backend reads it "
                 "register by register beside the product)")


def _per_element(s):
    """A promotion's scale as a [M, N] tensor or one that broadcasts to it."""
    return s if s.dim() == 2 else s.unsqueeze(1)


def _mma_promote(op):
    smem = isinstance(op.operands[1].type, SmemType)
    scale, acc = op.operands[-2:]
    if len(op.operands) != (5 if smem else 4):
        fail(op, "takes a, b (or their rings and a stage), a scale and an accumulator")
    _mma(Op("mma", op.operands[:-2], op.results, op.attrs))
    if shape_of(acc.type) != shape_of(op.result.type):
        fail(op, "accumulator must have the result's type")
    _scale(op, scale)


def _mma_issue(op):
    if len(op.operands) != 3 or not isinstance(op.operands[1].type, SmemType):
        fail(op, "takes a ring (or a register tile), a ring and a stage index")
    _mma(op)


def _mma_retire(op):
    if len(op.operands) != 3:
        fail(op, "takes an in-flight product, a scale and an accumulator")
    partial, scale, acc = op.operands
    r = op.result.type
    if shape_of(partial.type) != shape_of(r) or shape_of(acc.type) != shape_of(r):
        fail(op, "product and accumulator must have the result's type")
    _scale(op, scale)
    if op.attrs["pending"] not in (0, 1):
        fail(op, "leaves 0 or 1 later groups in flight")


LOWERED = {    # what passes/mma.py decides for the wgmmas of a product
    "instr": "the wgmma shape, e.g. m64n128k32",
    "warpgroups": "consumer warpgroups that share the rows",
    "waves": "m64 row blocks each warpgroup runs in turn (absent: one)",
    "k_steps": "wgmmas along K",
    "promote_steps": "wgmmas per promotion interval",
}


# ---- CPU meaning (commdsl/interpreter.py) ------------------------------------------------

def _operands(op, values):
    """(A tile, B tile as [K, N], the other operands): from registers, or from a stage of
    two shared-memory rings (after passes/pipeline.py)."""
    a, b, *rest = values
    if isinstance(op.operands[1].type, SmemType):
        stage, *rest = rest
        b = b.read(op, stage)
        if isinstance(op.operands[0].type, SmemType):
            a = a.read(op, stage)
    return a, (b.T if op.attrs["trans_b"] else b), rest


def _run_mma(ctx, op, *values):
    """The exact product rounded once to f32 (cpu_numerics.matmul_f32): more precise than
    the tensor cores' accumulation, which only changes the rounding. f32 operands are read
    as tf32, as wgmma reads them; 8-bit integers sum exactly, wrapping in i32 as s32 does."""
    import torch
    from commdsl.cpu_numerics import matmul_f32, matmul_i32, tf32, wrap_i32
    a, b, rest = _operands(op, values)
    if op.result.type.dtype == "i32":
        out = matmul_i32(a, b)
        return out if not rest else wrap_i32(rest[0].long() + out)
    if a.dtype == torch.float32:
        a, b = tf32(a), tf32(b)
    out = matmul_f32(a, b)
    return out if not rest else rest[0] + out


def _run_mma_promote(ctx, op, *values):
    """acc + (a . b) * s (s[:, None] for a row scale), one FMA per element per promotion
    interval of K, as the backend promotes (DeepGEMM's `final += scale * accum`)."""
    from commdsl.cpu_numerics import fma_f32, matmul_f32
    a, b, (s, acc) = _operands(op, values)
    k = a.shape[1]
    every = op.attrs.get("promote_every") or k
    for first in range(0, k, every):
        part = matmul_f32(a[:, first:first + every], b[first:first + every])
        acc = fma_f32(part, _per_element(s), acc)
    return acc


class Partial:
    """mma_issue's product, in flight: its rings' stage is read when it retires, and no TMA
    copy may land in that stage before."""

    def __init__(self, op, rings, stage):
        self.op, self.rings, self.stage = op, rings, stage
        for ring in rings:
            ring.readers[ring.slot(stage)] += 1

    def retire(self):
        from commdsl.cpu_numerics import matmul_f32
        a, b, _ = _operands(self.op, [*self.rings, self.stage])
        for ring in self.rings:
            ring.readers[ring.slot(self.stage)] -= 1
        return matmul_f32(a, b)


def _run_mma_issue(ctx, op, buf_a, buf_b, stage):
    return Partial(op, (buf_a, buf_b), stage)


def _run_mma_retire(ctx, op, partial, s, acc):
    from commdsl.cpu_numerics import fma_f32
    return fma_f32(partial.retire(), _per_element(s), acc)


declare("mma", "mma(a, b[, acc]) {trans_b} : f32 tile | mma(bufA, bufB, stage[, acc])",
        "[M, K] x [N, K]^T tiles ([K, N] without trans_b) -> f32 [M, N]; after "
        "passes/pipeline.py the operands are the stage's shared-memory buffers (a stays a "
        "register tile where the kernel computes it)", traits=(MMA,), verify=_mma,
        attrs={"trans_b": "b is given as [N, K]", "promote_every": "K elements per "
               "promotion into the accumulator (None: all of K)", **LOWERED},
               interpret=_run_mma, family=FAMILY)
declare("mma_promote", "mma_promote(a, b, s, acc) : f32 tile", "acc + mma(a, b) * s[:, None] "
        "for a row scale s, * s for a scale per element (passes/mma.py fuses it; smem "
        "operands as for mma)", traits=(MMA, PROMOTES),
        verify=_mma_promote, attrs={"trans_b": "as for mma", "promote_every": "as for mma",
                                    **LOWERED}, interpret=_run_mma_promote, family=FAMILY)
declare("mma_issue", "mma_issue(bufA | a, bufB, stage) : f32 tile", "mma_promote's first half "
        "(passes/overlap.py): starts the wgmmas; the partial product is in flight",
        traits=(MMA, ASYNC), verify=_mma_issue, attrs={"trans_b": "as for mma", **LOWERED},
        interpret=_run_mma_issue, family=FAMILY)
declare("mma_retire", "mma_retire(p, s, acc) {pending} : f32 tile", "its second half: waits "
        "until at most `pending` later mma_issues are in flight, then acc + p * s (s[:, None] "
        "for a row scale)",
        traits=(MMA, ASYNC, PROMOTES), verify=_mma_retire,
        attrs={"pending": "later mma_issues left in flight, 0 or 1"},
        interpret=_run_mma_retire, family=FAMILY)
