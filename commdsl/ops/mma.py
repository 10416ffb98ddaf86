"""Tensor-core matrix products (wgmma) and their promotion into f32 accumulators."""
from __future__ import annotations

from commdsl.ir import Op, SmemType, TileType

from .operands import is_i32, shape_of
from .registry import ASYNC, MMA, declare, fail

FAMILY = "mma"


def _mma(op):
    a, b = op.operands[0].type, op.operands[1].type
    r = op.result.type
    if isinstance(a, SmemType):
        if not isinstance(b, SmemType) or not is_i32(op.operands[2]):
            fail(op, "takes two shared-memory rings and a stage index")
        rest = op.operands[3:]
        a_shape, b_shape = a.shape, b.shape
    else:
        if not isinstance(a, TileType) or not isinstance(b, TileType):
            fail(op, "takes two tiles")
        rest = op.operands[2:]
        a_shape, b_shape = a.shape, (b.shape if op.attrs["trans_b"] else b.shape[::-1])
    if len(a_shape) != 2 or len(b_shape) != 2 or a_shape[1] != b_shape[1]:
        fail(op, f"operand shapes {a_shape} and {b_shape} (as [N, K]) disagree on K")
    if not isinstance(r, TileType) or r.dtype != "f32" or r.shape != (a_shape[0], b_shape[0]):
        fail(op, f"result must be f32 [{a_shape[0]}, {b_shape[0]}], not {r}")
    if rest and (len(rest) != 1 or shape_of(rest[0].type) != shape_of(r)):
        fail(op, "accumulator must have the result's type")


def _row_scale(op, scale):
    r = op.result.type
    if not isinstance(scale.type, TileType) or scale.type.shape != r.shape[:1]:
        fail(op, f"row scale must be a [{r.shape[0]}] tile, not {scale.type}")


def _mma_promote(op):
    smem = isinstance(op.operands[0].type, SmemType)
    scale, acc = op.operands[-2:]
    if len(op.operands) != (5 if smem else 4):
        fail(op, "takes a, b (or two rings and a stage), a row scale and an accumulator")
    _mma(Op("mma", op.operands[:-2], op.results, op.attrs))
    if shape_of(acc.type) != shape_of(op.result.type):
        fail(op, "accumulator must have the result's type")
    _row_scale(op, scale)


def _mma_issue(op):
    if len(op.operands) != 3 or not isinstance(op.operands[0].type, SmemType):
        fail(op, "takes two shared-memory rings and a stage index")
    _mma(op)


def _mma_retire(op):
    if len(op.operands) != 3:
        fail(op, "takes an in-flight product, a row scale and an accumulator")
    partial, scale, acc = op.operands
    r = op.result.type
    if shape_of(partial.type) != shape_of(r) or shape_of(acc.type) != shape_of(r):
        fail(op, "product and accumulator must have the result's type")
    _row_scale(op, scale)
    if op.attrs["pending"] not in (0, 1):
        fail(op, "leaves 0 or 1 later groups in flight")


LOWERED = {    # what passes/mma.py decides for the wgmmas of a product
    "instr": "the wgmma shape, e.g. m64n128k32",
    "warpgroups": "consumer warpgroups that share the rows",
    "k_steps": "wgmmas along K",
    "promote_steps": "wgmmas per promotion interval",
}

declare("mma", "mma(a, b[, acc]) {trans_b} : f32 tile | mma(bufA, bufB, stage[, acc])",
        "[M, K] x [N, K]^T tiles -> f32 [M, N]; after passes/pipeline.py the operands are "
        "the stage's shared-memory buffers", traits=(MMA,), verify=_mma,
        attrs={"trans_b": "b is given as [N, K]", "promote_every": "K elements per "
               "promotion into the accumulator (None: all of K)", **LOWERED}, family=FAMILY)
declare("mma_promote", "mma_promote(a, b, s, acc) : f32 tile", "acc + mma(a, b) * s[:, None] "
        "(passes/mma.py fuses it; smem operands as for mma)", traits=(MMA,),
        verify=_mma_promote, attrs={"trans_b": "as for mma", "promote_every": "as for mma",
                                    **LOWERED}, family=FAMILY)
declare("mma_issue", "mma_issue(bufA, bufB, stage) : f32 tile", "mma_promote's first half "
        "(passes/overlap.py): starts the wgmmas; the partial product is in flight",
        traits=(MMA, ASYNC), verify=_mma_issue, attrs={"trans_b": "as for mma", **LOWERED},
        family=FAMILY)
declare("mma_retire", "mma_retire(p, s, acc) {pending} : f32 tile", "its second half: waits "
        "until at most `pending` later mma_issues are in flight, then acc + p * s[:, None]",
        traits=(MMA, ASYNC), verify=_mma_retire,
        attrs={"pending": "later mma_issues left in flight, 0 or 1"}, family=FAMILY)
