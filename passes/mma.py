"""Selects the tensor-core instruction of each `mma` and gives its accumulator a fragment.

On sm_90a an FP8 [BM, 128] x [BN, 128]^T product becomes, per 128-wide K step, four
`wgmma.mma_async.m64n{BN}k32.f32.e4m3.e4m3` per m64 block, read from 128B-swizzled shared
memory (TMA's layout), on BM / 64 consumer warpgroups (three for BM = 192: 160 registers
each, with 128 x 128 tiles' 128 FLOP per byte of L2 traffic raised to 154), or for BM = 256
on two warpgroups of two m64 waves each (171 FLOP per byte). bf16/f16 take
k16 steps over 64 of K, f32 (read as tf32) k8 over 32, i8/u8 k32 over 128 into an s32
accumulator; a product takes any whole number of such 128-byte swizzled rows of K (slabs,
one TMA box each: MLA's 576-wide q k^T is nine). Checked
here: the target has wgmma; B is loaded `via tma`; the types pair as wgmma pairs them; the
shape fits the instruction; and, for quantized operands, the product's K extent stays inside
one scale group, since a partial sum is promoted with one scale (the promotion interval).
A bf16/f16 A may also be a tile the kernel computes in registers (`mma(cast<bf16>(x), tb.T,
acc)`: wgmma's register form); it takes the accumulator's fragment layout, which is the
register form's. A bf16/f16 B may also be MN-major (`mma(ta, tb)`, tb a [K, N] tile: torch's
`x @ w` layout): wgmma's transposed-B form reads it as 64-column slabs, which TMA lays down
one box each (passes/pipeline.py). Several mmas may share the pipelined loop (one feeding
the next as its A): they share the consumer warpgroups and their registers.

The f32 result lives in registers as a wgmma fragment (commdsl/fragments.py). Every tile
computed from it elementwise (the promotion `acc += p * s[:, None]`, the loop-carried
accumulator, the bf16 cast of the epilogue, a store's mask) takes the same fragment, and row
vectors broadcast into it (`s[:, None]`) take its Sliced form, so promotion moves no data.
The promotion itself, `acc += mma(ta, tb.T) * s[:, None]`, fuses into one `mma_promote`
op, which the backend emits block by block: wgmmas, wait, one FFMA per element.
"""
from __future__ import annotations

from commdsl.diagnostics import CompileError
from commdsl.dtypes import dtype as dtype_info
from commdsl.fragments import WARPGROUP_ROWS, WgmmaAcc
from commdsl.ir import SWIZZLE_BYTES, WGMMA_K_BYTES, KernelIR, Op, TileType, Value
from commdsl.layout import Sliced
from commdsl.ops import ELEMENTWISE, has_trait
from commdsl.ops.mma import FP8, HALF, INT8, OPERAND_TYPES
from commdsl.target import Target

MN_SLAB = SWIZZLE_BYTES // 2      # an MN-major 16-bit B: columns per 128-byte swizzled slab
REGISTER_MARGIN = 24              # addresses, scales, loop state next to the accumulators
# A tile's rows -> (consumer warpgroups, m64 waves of each): up to three warpgroups take one
# m64 block each; 256 rows (DeepGEMM's large-M tile) take two blocks on each of two, which
# halves the tiles, their epilogues and their per-step barrier and scale work per FLOP.
# A warpgroup runs its waves one after the other, so one wave's partial sums are live at a
# time, and the other warpgroup's wgmmas fill the tensor cores meanwhile.
ROWS = {64: (1, 1), 128: (2, 1), 192: (3, 1), 256: (2, 2)}


def _check(op: Op, producers: dict[int, Op], kernel: KernelIR,
           target: Target) -> tuple[int, int]:
    """(consumer warpgroups, m64 waves of each) for this mma; raises what the target cannot
    do."""
    if not target.has_wgmma:
        raise CompileError(f"mma needs the warpgroup MMA (wgmma) of sm_90a; {target.name} has "
                           "none", op.loc, "compile with --target sm_90a")
    a, b = op.operands[:2]
    for v, which in ((a, "a"), (b, "b")):
        if which == "a" and a_from_registers(op, producers):
            if a.type.dtype not in HALF:
                raise CompileError(f"an mma operand a computed in registers is lowered for "
                                   f"bf16 and f16; {a.type.dtype} from registers is not "
                                   "supported yet", op.loc,
                                   f"cast it to bf16, or load it 'via tma' as {a.type.dtype}")
            continue
        src = tma_load(v, producers)
        if src is None:
            raise CompileError("mma's operand b must be loaded 'via tma': wgmma reads B from "
                               "shared memory", op.loc,
                               "write 'let tb = load ...[...] via tma' in the pipelined loop")
        if v.type.dtype not in OPERAND_TYPES:
            raise CompileError(f"mma on {v.type.dtype} tiles is not lowered yet; FP8 (e4m3, "
                               "e5m2), bf16, f16, f32 (as tf32) and i8/u8 are", op.loc,
                               "convert the operands to bf16 or quantize them to e4m3")
    kinds = [_kind(v.type.dtype) for v in (a, b)]
    if kinds[0] != kinds[1]:
        raise CompileError(f"wgmma multiplies FP8 by FP8 (e4m3 and e5m2 mix), 8-bit integers "
                           f"by 8-bit integers or a 16- or 32-bit float type by itself, not "
                           f"{a.type.dtype} by {b.type.dtype}", op.loc,
                           f"cast one operand: both {a.type.dtype} or both {b.type.dtype}")
    if kinds[0] == "int8" and a.type.dtype != b.type.dtype:
        raise CompileError(f"wgmma on {a.type.dtype} by {b.type.dtype} needs PTX ISA 8.4, and "
                           "commdsl emits 8.0 for sm_90a: mixed integer types are not "
                           "supported yet", op.loc,
                           f"store both operands as {a.type.dtype} or both as {b.type.dtype}")
    (bm, bk), bn = a.type.shape, b.type.shape[0 if op.attrs["trans_b"] else 1]
    if not op.attrs["trans_b"]:
        if dtype_info(b.type.dtype).bytes != 2:
            raise CompileError(f"wgmma reads {b.type.dtype} operands K-major only; an MN-major "
                               "B (b as [K, N], no .T) is for bf16 and f16", op.loc,
                               "store b as [N, K] and write mma(a, b.T)")
        if bn % MN_SLAB:
            raise CompileError(f"an MN-major B tile ([K, N], no .T) is read in {MN_SLAB}-column "
                               f"swizzled slabs; N = {bn} is not a multiple of {MN_SLAB}",
                               op.loc, "use BN = 64, 128, 192 or 256, or store b as [N, K] and "
                               "write mma(a, b.T)")
    if bm not in ROWS:
        raise CompileError(f"mma tiles are 64, 128, 192 or 256 rows (one m64 wgmma block per "
                           f"consumer warpgroup, or two on each of two), not {bm}", op.loc,
                           "use BM = 64, 128, 192 or 256")
    if bn % 8 or not 8 <= bn <= 256:
        raise CompileError(f"wgmma's N is a multiple of 8 from 8 to 256, not {bn}", op.loc,
                           "pick BN among 16, 32, 64, 128, ...")
    quant = kernel.attrs.get("quant", {})
    for v in (b,) if a_from_registers(op, producers) else (a, b):
        tensor = tma_load(v, producers).operands[0]
        q = quant.get(tensor.name)
        rows = v.type.shape[0]
        if q is not None and q.group[0] > 1 and q.group[0] % rows:
            raise CompileError(
                f"a tile of {rows} rows of '{tensor.name}' can straddle its {q.group[0]}-row "
                f"scale blocks (quant {' x '.join(map(str, q.group))}), but its product is "
                "promoted with one scale", op.loc,
                f"use a tile height that divides {q.group[0]}, e.g. 16, 32, 64 or 128")
        if q is not None and len(op.operands) == 2 and bk > q.group[-1]:
            raise CompileError(
                f"this product sums {bk} of K, but '{tensor.name}' has one scale per "
                f"{q.group[-1]} (quant {' x '.join(map(str, q.group))}): a partial sum must "
                "be promoted with one scale", op.loc,
                f"step the K loop by {q.group[-1]} so each product is promoted with its scale")
    # K runs along the swizzled rows of a K-major operand in shared memory; A in registers
    # times an MN-major B needs only whole wgmma steps of K (B's K is its rows)
    k_major = not a_from_registers(op, producers) or op.attrs["trans_b"]
    per_row = (SWIZZLE_BYTES if k_major else WGMMA_K_BYTES) // dtype_info(a.type.dtype).bytes
    if bk % per_row:
        raise CompileError(f"a {a.type.dtype} mma takes K in whole "
                           + (f"{SWIZZLE_BYTES}-byte swizzled rows" if k_major else
                              "wgmma steps") + f", multiples of {per_row}, not {bk}", op.loc,
                           f"make the product's K a multiple of {per_row}, e.g. step the K "
                           f"loop by {per_row}")
    return ROWS[bm]


def _kind(dtype: str) -> str:
    """The operand families wgmma multiplies with each other."""
    return "FP8" if dtype in FP8 else "int8" if dtype in INT8 else dtype


def tma_load(v: Value, producers: dict[int, Op]) -> Op | None:
    """The `via tma` load that lays v in shared memory (v may be columns of its tile:
    passes/subtile.py), or None."""
    src = producers.get(v.id)
    if src is not None and src.name == "columns":
        src = producers.get(src.operands[0].id)
    return src if src is not None and src.name == "load" and src.attrs.get("via") == "tma" \
        else None


def a_from_registers(op: Op, producers: dict[int, Op]) -> bool:
    """Whether the mma's A is a tile the kernel computes (wgmma's register form) rather than
    one TMA lays in shared memory."""
    return tma_load(op.operands[0], producers) is None


def _assign(kernel: KernelIR, seeds: dict[int, object], values: dict[int, Value]):
    """Spreads layouts from `seeds` (value id -> layout) along elementwise ops, broadcasts,
    row vectors and loop-carried values until nothing changes."""
    links: list[tuple[Value, Value, object]] = []    # (a, b, how b's layout follows a's)
    for op in kernel.walk():
        tiles = [v for v in op.operands + op.results if isinstance(v.type, TileType)]
        if op.name == "expand_dims":
            links.append((op.results[0], op.operands[0], ("slice", op.attrs["axis"])))
        elif has_trait(op, ELEMENTWISE) or op.name == "broadcast":
            out = op.results[0]
            links += [(o, out, None) for o in op.operands if isinstance(o.type, TileType)]
        elif op.name == "mma" and len(op.operands) > 2:
            links.append((op.results[0], op.operands[-1], None))
        elif op.name == "store" and op.attrs.get("mask"):
            # the mask of a fragment's store, element for element: it takes the fragment
            links.append((op.operands[-1], op.operands[-2], None))
        elif op.name == "for":
            body = op.blocks[0]
            carried = zip(op.operands[3:], body.args[1:], body.ops[-1].operands, op.results)
            for group in carried:
                links += [(group[0], v, None) for v in group[1:]]
                # a carried block argument the body never reads is no op's operand
                tiles += [v for v in group if isinstance(v.type, TileType)]
        for v in tiles:
            values[v.id] = v
    changed = True
    while changed:
        changed = False
        for a, b, how in links:
            for src, dst, forward in ((a, b, True), (b, a, False)):
                lay = seeds.get(src.id)
                if lay is None:
                    continue
                if how is not None:          # b = a sliced along an axis, a = b's parent
                    if forward:
                        lay = Sliced(lay, how[1])
                    elif isinstance(lay, Sliced):
                        lay = lay.parent
                    else:
                        continue
                have = seeds.get(dst.id)
                if have is None:
                    seeds[dst.id] = lay
                    changed = True
                elif have != lay:
                    raise CompileError("this value is needed in two register layouts (an "
                                       "mma fragment and another)", None,
                                       "keep mma results apart from other tiles of that shape")


def run(kernel: KernelIR, target: Target) -> KernelIR:
    mmas = [op for op in kernel.walk() if op.name == "mma"]
    if not mmas:
        return kernel
    producers = {r.id: o for o in kernel.walk() for r in o.results}
    groups, waves = _check(mmas[0], producers, kernel, target)
    for op in mmas[1:]:
        if _check(op, producers, kernel, target) != (groups, waves):
            raise CompileError(f"the mmas of a kernel share its consumer warpgroups, so their "
                               f"products have the same rows: {mmas[0].result.type.shape[0]} "
                               f"here, {op.result.type.shape[0]} before", op.loc,
                               "give every mma's A tile the same number of rows (BM)")
    # Every product's registers are live at once in the consumers (a chain's first result
    # feeds the next as its A), so they share one budget.
    needed = REGISTER_MARGIN + sum(_select(op, producers, groups, waves,
                                           _loop_ops(kernel, op)) for op in mmas)
    in_place = all(len(op.operands) == 3 for op in mmas)
    budget = target.consumer_registers(groups)
    if in_place:
        # The estimate of a promoted product counts every interval in flight, more than
        # ptxas keeps; an accumulator alone is what ptxas holds, so it must fit what ptxas
        # may allocate (BM = 192, BN = 256 stops ptxas with C7602).
        budget = min(budget, target.compiled_registers(groups))
    if needed > budget:
        op = mmas[-1]
        if len(mmas) == 1:
            held = "" if in_place else "promotion intervals and "
            raise CompileError(f"{held}an accumulator of BN = {op.result.type.shape[1]} need "
                               f"about {needed} registers per thread; {groups} consumer "
                               f"warpgroups get {budget}", op.loc,
                               "promote less often, or use a smaller BN or BM")
        raise CompileError(f"the {len(mmas)} products' results and register operands need "
                           f"about {needed} registers per thread; {groups} consumer "
                           f"warpgroups get {budget}", op.loc,
                           "use narrower tiles (fewer columns or less K in a product), or a "
                           "smaller BM")
    kernel.attrs["mma_warpgroups"] = groups
    seeds: dict[int, object] = {}
    for op in mmas:
        seeds[op.result.id] = WgmmaAcc(groups)
        if a_from_registers(op, producers):
            # wgmma's A fragment of a 16-bit k16 step is the accumulator's fragment over its
            # 16 columns, so A takes the accumulator layout: the loads and math that make it
            # (or the product before it) land each element in the thread and register the
            # instruction reads it from.
            seeds[op.operands[0].id] = WgmmaAcc(groups)
    values: dict[int, Value] = {}
    _assign(kernel, seeds, values)
    for vid, layout in seeds.items():
        v = values[vid]
        v.type = v.type.with_layout(layout)
    _fuse_multiply_add(kernel)
    for op in mmas:
        _fuse_promotion(kernel, op)
    return kernel


def _loop_ops(kernel: KernelIR, mma: Op) -> list[Op]:
    """Every op inside the innermost loop around `mma` (none outside loops)."""
    inner: list[Op] = []
    for op in kernel.walk():
        if op.name == "for" and any(o is mma for o in op.blocks[0].walk()):
            inner = list(op.blocks[0].walk())      # walk() meets outer loops first
    return inner


def _select(op: Op, producers: dict[int, Op], groups: int, waves: int,
            loop_ops: list[Op]) -> int:
    """Sets the mma's wgmma shape and steps; gives the registers per thread it holds
    (`loop_ops`: the ops of the loop around it)."""
    bn = op.result.type.shape[1]
    wgmma_k = WGMMA_K_BYTES // dtype_info(op.operands[0].type.dtype).bytes
    k_steps = op.operands[0].type.shape[1] // wgmma_k
    every = op.attrs.get("promote_every") or op.operands[0].type.shape[1]
    if every % wgmma_k:
        raise CompileError(f"promote_every = {every} is not a whole number of {wgmma_k}-wide "
                           "wgmma steps", op.loc,
                           f"use a multiple of {wgmma_k} that divides {k_steps * wgmma_k}")
    op.attrs.update(instr=f"m64n{bn}k{wgmma_k}", warpgroups=groups, k_steps=k_steps,
                    promote_steps=every // wgmma_k)
    if waves > 1:
        op.attrs["waves"] = waves
    # Each promotion interval in flight holds its own BN / 2 partial sums per thread besides
    # the accumulator it is added into; an mma that accumulates in place (mma(a, b, acc)),
    # or whose product no accumulator takes (s = mma(a, b.T) * SCALE), holds only its result.
    intervals = k_steps // (every // wgmma_k) if _accumulated(op, loop_ops) else 0
    # A from registers: its [64 W, K] rows of the warpgroup, two 16-bit elements a register;
    # a tile made in the pipelined loop is held a K step ahead too (passes/prefetch.py).
    a_regs = 0
    if a_from_registers(op, producers):
        made = producers.get(op.operands[0].id)
        copies = 2 if any(o is made for o in loop_ops) else 1
        a_regs = copies * waves * WARPGROUP_ROWS * op.operands[0].type.shape[1] // 2 // 128
    # the waves' results, and one wave's promotion intervals at a time
    return (intervals + waves) * bn // 2 + a_regs


def _accumulated(mma: Op, loop_ops: list[Op]) -> bool:
    """Whether a two-operand mma's product, scaled or not, is added into an accumulator
    (`acc += mma(a, b.T) * s[:, None]`: promoted) rather than used as it is."""
    if len(mma.operands) != 2:
        return False
    values = [mma.result]
    while values:
        v = values.pop()
        for o in loop_ops:
            if v in o.operands:
                if o.name in ("add", "fma"):
                    return True
                if o.name == "mul":
                    values.append(o.result)
    return False


def _fuse_promotion(kernel: KernelIR, mma: Op) -> None:
    """fma(mma(a, b), s[:, None], acc) -> mma_promote(a, b, s, acc), and fma(mma(a, b), S,
    acc) -> mma_promote(a, b, S, acc) for any other scale, a [BM, BN] tile in the product's
    fragment (a column's scale block picked per element; it cannot be computed from the
    product, whose one use is the fma): one op from the wgmma issue to the FFMAs, so the
    backend can promote one interval's partial sums while the next interval's wgmmas still
    run (with promote_every < K)."""
    if len(mma.operands) != 2 or mma.result.type.dtype != "f32":
        return             # an integer product is exact: nothing to promote
    promoted_alone = CompileError(
        f"promote_every = {mma.attrs['promote_every']} splits the product, so it must be added "
        "into an accumulator right away", mma.loc,
        "write 'acc += mma(ta, tb.T, promote_every = P) * s[:, None]'")
    uses: dict[int, list[Op]] = {}
    for op in kernel.walk():
        for v in op.operands:
            uses.setdefault(v.id, []).append(op)
    producers = {r.id: op for op in kernel.walk() for r in op.results}
    split = mma.attrs["promote_steps"] < mma.attrs["k_steps"]
    users = uses.get(mma.result.id, [])
    if len(users) != 1 or users[0].name != "fma":
        if split:
            raise promoted_alone
        return
    fma = users[0]
    p, s, acc = fma.operands
    if p is not mma.result:
        p, s = s, p
    block = next(b for b in [kernel.body] + [b for o in kernel.walk() for b in o.blocks]
                 if fma in b.ops)
    made = producers.get(s.id)
    if p is not mma.result or mma not in block.ops:
        if split:
            raise promoted_alone
        return
    bcast, expand = made, made and made.operands and producers.get(made.operands[0].id)
    row = (bcast is not None and bcast.name == "broadcast" and bool(expand)
           and expand.name == "expand_dims" and expand.attrs["axis"] == 1)
    # a row scale stays one register per row; any other scale is the accumulator's fragment
    fused = Op("mma_promote", [*mma.operands, expand.operands[0] if row else s, acc],
               fma.results, dict(mma.attrs), loc=mma.loc)
    block.ops[block.ops.index(fma)] = fused
    block.ops.remove(mma)
    for dead in (bcast, expand) if row else ():
        if len(uses[dead.result.id]) == 1:
            block.ops.remove(dead)

def _fuse_multiply_add(kernel: KernelIR) -> None:
    """`acc + p * s` on fragments -> fma(p, s, acc): the promotion's one FFMA per element,
    rounded once (DeepGEMM's `final += scale * accum`)."""
    uses: dict[int, int] = {}
    for op in kernel.walk():
        for v in op.operands:
            uses[v.id] = uses.get(v.id, 0) + 1
    blocks = [kernel.body] + [b for op in kernel.walk() for b in op.blocks]
    for block in blocks:
        local = {r.id: op for op in block.ops for r in op.results}
        for op in list(block.ops):
            t = op.results[0].type if op.results else None
            if (op.name != "add" or not isinstance(getattr(t, "layout", None), WgmmaAcc)
                    or t.dtype != "f32"):         # integer sums stay a multiply and an add
                continue
            for x, y in (op.operands, op.operands[::-1]):
                mul = local.get(y.id)
                if mul is not None and mul.name == "mul" and uses[y.id] == 1:
                    op.name, op.operands = "fma", [*mul.operands, x]
                    block.ops.remove(mul)
                    break
