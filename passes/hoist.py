"""Issues a tile's small reads that do not depend on its pipelined loop before that loop, so
their latency passes while the loop runs instead of at the tile's end:

    for k in 0 .. K step 128 pipeline(S) { ... }     rows = load m_idx[m0 : +BM]
    rows = load m_idx[m0 : +BM]                ->    for k in 0 .. K step 128 pipeline(S) { ... }
    store d[...] mask(rows[:, None] >= 0) = ...      store d[...] mask(rows[:, None] >= 0) = ...

The grouped GEMM's padding-row mask (examples/grouped_fp8_gemm.cdsl) and the masked
layout's row count were read after the K loop: every output tile waited one global load
(hundreds of cycles) between its last wgmma and its store. A read moves when it copies
global memory into registers (not a TMA copy), when its operands come from before the loop
(or are constants, which move with it), when nothing may write the tensor meanwhile (not an
`out` or symmetric tensor, no store to it, no acquire in the loop or after it that could
order another agent's writes before the read), and when it is small (a scalar or a row of
at most SMALL elements), so holding it through the loop costs a register or two per thread.
"""
from __future__ import annotations

from commdsl.ir import Block, KernelIR, Op, TileType
from commdsl.ops import ACQUIRE, ASYNC, COMM, CONSTANT, MEMORY, READS, WRITES, has_trait
from commdsl.target import Target

SMALL = 256


def _movable(op: Op, written: set[int], later: set[int]) -> bool:
    t = op.results[0].type if len(op.results) == 1 else None
    tensor = op.operands[0] if op.operands else None
    # a plain read of this rank's global memory: not a TMA copy, not another rank's copy
    return (has_trait(op, MEMORY) and has_trait(op, READS) and not has_trait(op, ASYNC)
            and not has_trait(op, COMM)
            and not op.blocks and t is not None
            and (not isinstance(t, TileType) or t.numel <= SMALL)
            and not tensor.type.is_out and not tensor.type.symmetric
            and tensor.id not in written and not any(v.id in later for v in op.operands))


def _acquires(op: Op) -> bool:
    return has_trait(op, ACQUIRE) or any(has_trait(o, ACQUIRE) for b in op.blocks
                                         for o in b.walk())


def _hoist(block: Block, written: set[int]) -> None:
    loop = None
    for op in list(block.ops):
        if op.name == "for" and op.attrs.get("pipeline"):
            loop, later, consts = op, set(), {}
        elif loop is not None and _movable(op, written, later):
            for moved in [consts[v.id] for v in op.operands if v.id in consts] + [op]:
                block.ops.remove(moved)
                block.ops.insert(block.ops.index(loop), moved)
            continue
        if _acquires(op):         # later reads stay behind it
            loop = None
        if loop is not None and has_trait(op, CONSTANT):
            consts.update((r.id, op) for r in op.results)   # move with a read that needs them
        elif loop is not None:
            later |= {r.id for r in op.results}


def run(kernel: KernelIR, target: Target) -> KernelIR:
    written = {op.operands[0].id for op in kernel.walk() if has_trait(op, WRITES)}
    for block in [kernel.body] + [b for op in kernel.walk() for b in op.blocks]:
        _hoist(block, written)
    return kernel
