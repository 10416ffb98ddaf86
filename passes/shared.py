"""Plans the static shared memory of ops that move data between threads: `transpose`,
`relayout` (a plain array of its tile, read `read_vector` elements at a time), and a
`reduce` or `scan` whose axis spans warps (each warp's partials go through shared memory).
Each gets its own array: `smem_buffer`, its number in the kernel, of `smem_bytes`. Their
total is checked here, for all of them at once, against what a CTA may have statically;
the backend makes the arrays as planned.

A transpose writes every element of its operand, from the thread that holds it, to its
place in the result tile, kept in shared memory row by row; after a barrier every thread
reads the elements its result layout gives it, 16 bytes at a time where it holds that many.
The writes go down a column of the result, one element at a time or, where a thread holds
consecutive rows of the operand (FP8: 4 per thread, passes/tile.py), 4 bytes at a time
across the result's row (`write_groups`); either way the worst case for shared memory's banks
(32 of 4 bytes): with plain rows every lane of a warp would hit the same bank. So each row
is stored with its 16-byte chunks permuted by an XOR swizzle,

    byte(r, c) = r * row_bytes + ((c * e / 16) ^ ((r >> shift) & mask)) * 16 + (c * e) % 16

(or with a padded row, where that is enough), and the pass picks the plan with the fewest
bank wavefronts for this op's two access patterns, simulated for one warp from the layouts.
16-byte chunks stay whole, so the reads stay 16-byte vectors. The plan, the op's `smem`
attribute, also fixes the accesses: which registers each write takes, the read width, and,
from every thread's coordinates, which accesses are an earlier one's address plus a
constant (an immediate offset in PTX); the backend emits them as planned.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

from commdsl.dtypes import dtype as dtype_info
from commdsl.diagnostics import CompileError
from commdsl.ir import KernelIR, Op, TileType
from commdsl.ir_printer import attribute_class
from commdsl.layout import Compact, one_replica, reshape_in_registers, slots
from commdsl.ops import READS, has_trait
from commdsl.target import Target

@attribute_class("smem_plan")
@dataclass(frozen=True)
class SmemPlan:
    rows: int                # the result tile's shape
    cols: int
    elem_bytes: int
    row_bytes: int           # a multiple of 16
    swizzle_shift: int
    swizzle_mask: int        # 0: no swizzle
    wavefronts: int          # modelled cost for one warp: writes + reads
    # The accesses, in the order the backend emits them. Write i stores the operand's
    # registers writes[i] (side by side in a result row); read i loads read_vector
    # elements from the result's slot i * read_vector on. Each access's address is
    # (anchor, delta): that of access `anchor` (the same kind) plus delta bytes, in every
    # thread; only an access that is its own anchor computes a swizzled address.
    writes: tuple[tuple[int, ...], ...] = ()
    write_at: tuple[tuple[int, int], ...] = ()
    read_vector: int = 1
    read_at: tuple[tuple[int, int], ...] = ()

    @property
    def bytes(self) -> int:
        return self.rows * self.row_bytes

    def address(self, r: int, c: int) -> int:
        b = c * self.elem_bytes
        return (r * self.row_bytes + (((b >> 4) ^ ((r >> self.swizzle_shift) & self.swizzle_mask)) << 4)
                + (b & 15))

    def __str__(self):
        swz = (f", xor(r >> {self.swizzle_shift} & {self.swizzle_mask})"
               if self.swizzle_mask else "")
        return f"smem<{self.rows}x{self.row_bytes}B{swz}, {self.wavefronts} wavefronts>"


def lane_coords(layout, shape, lane: int, warp: int = 0) -> list[tuple[int, ...]]:
    """The tile coordinates of every slot of one thread, in slot order."""
    dims = layout.dims(shape)
    base = []
    for m in dims:
        lane_part = (lane // m.lane_stride) % m.tpw
        warp_part = (warp // m.warp_stride) % m.wpc
        base.append((warp_part * m.tpw + lane_part) * m.spt)
    out = []
    for slot in slots(dims):
        out.append(tuple((b + m.offset(r, e)) % m.size
                         for b, m, (r, e) in zip(base, dims, slot)))
    return out


def thread_coords(tile_type, num_threads: int,
                  warp_size: int) -> list[tuple[tuple[int, ...], ...]]:
    """Per slot, the tile coordinates it stands for in every thread of the CTA."""
    layout, shape = tile_type.layout, tile_type.shape
    return list(zip(*(lane_coords(layout, shape, t % warp_size, t // warp_size)
                      for t in range(num_threads))))


def anchors(p: SmemPlan, coords_by_access) -> tuple[tuple[int, int], ...]:
    """(anchor, delta) per access, from the (row, col) each thread touches in it: an access
    whose address differs from an earlier anchor's by the same constant in every thread
    reuses that address plus an immediate offset (`st.shared [%rd+128]`)."""
    found: list[tuple[int, list[int]]] = []
    out = []
    for i, coords in enumerate(coords_by_access):
        addrs = [p.address(r, c) for r, c in coords]
        for a, a_addrs in found:
            delta = addrs[0] - a_addrs[0]
            if all(x - y == delta for x, y in zip(addrs, a_addrs)):
                out.append((a, delta))
                break
        else:
            found.append((i, addrs))
            out.append((i, 0))
    return tuple(out)


def _wavefronts(addresses: list[int], nbytes: int, target: Target) -> int:
    """Bank wavefronts of one warp-wide access of `nbytes` per lane."""
    bank_bytes, width = target.shared_bank_bytes, target.shared_banks * target.shared_bank_bytes
    per_phase = len(addresses) if nbytes <= bank_bytes else width // nbytes
    total = 0
    for p in range(0, len(addresses), per_phase):
        banks: dict[int, set[int]] = {}
        for a in addresses[p:p + per_phase]:
            for w in range(a // bank_bytes, (a + max(nbytes, 1) - 1) // bank_bytes + 1):
                banks.setdefault(w % target.shared_banks, set()).add(w)
        total += max(len(s) for s in banks.values())
    return total


def _accesses(op: Op, e: int, warp_size: int):
    """Per warp instruction: (bytes per lane, [(row, col) per lane]) for the writes of the
    operand and the reads of the result, both in result coordinates."""
    src, dst = op.operands[0].type, op.result.type
    src_lanes = [lane_coords(src.layout, src.shape, lane) for lane in range(warp_size)]
    groups = write_groups(src, e)
    writes = [(len(g) * e, [(c[g[0]][1], c[g[0]][0]) for c in src_lanes]) for g in groups]
    dst_lanes = [lane_coords(dst.layout, dst.shape, lane) for lane in range(warp_size)]
    vec = read_vector(dst, e)
    reads = [(vec * e, [c[j] for c in dst_lanes]) for j in range(0, len(dst_lanes[0]), vec)]
    return writes + reads


def write_groups(tile_type, e: int) -> list[list[int]]:
    """The operand's slots as shared-memory writes: each group is one write, of the
    elements a thread holds in consecutive rows of one column, which are side by side in a
    row of the result (up to 4 bytes: the layout gives FP8 operands 4 rows per thread)."""
    dims = tile_type.layout.dims(tile_type.shape)
    spt = dims[0].spt
    n = 1
    while n * 2 * e <= 4 and spt % (n * 2) == 0:
        n *= 2
    all_slots = slots(dims)
    index = {sl: i for i, sl in enumerate(all_slots)}
    groups = []
    for i, sl in enumerate(all_slots):
        rep, elem = sl[0]
        if elem % n == 0:
            groups.append([index[((rep, elem + k),) + sl[1:]] for k in range(n)])
    return groups


def read_vector(tile_type, e: int) -> int:
    """Elements per shared-memory read of the result: the thread's contiguous run, <= 16 B."""
    spt = tile_type.layout.dims(tile_type.shape)[-1].spt
    v = 1
    while v * 2 <= spt and spt % (v * 2) == 0 and v * 2 * e <= 16:
        v *= 2
    return v


def _candidates(rows: int, cols: int, e: int):
    base = -(-cols * e // 16) * 16
    chunks = base // 16
    pow2 = 1
    while chunks % (pow2 * 2) == 0:
        pow2 *= 2
    yield base, 0, 0
    yield base + 16, 0, 0
    shift = 0
    while (1 << shift) < rows:
        for mask_bits in range(1, pow2.bit_length()):
            yield base, shift, (1 << mask_bits) - 1
        shift += 1


def plan(op: Op, num_threads: int, target: Target) -> SmemPlan:
    rows, cols = op.result.type.shape
    e = dtype_info(op.result.type.dtype).bytes
    accesses = _accesses(op, e, target.warp_size)
    best = None
    for row_bytes, shift, mask in _candidates(rows, cols, e):
        p = SmemPlan(rows, cols, e, row_bytes, shift, mask, 0)
        cost = sum(_wavefronts([p.address(r, c) for r, c in coords], n, target)
                   for n, coords in accesses)
        key = (cost, p.bytes, mask)
        if best is None or key < best[0]:
            best = (key, SmemPlan(rows, cols, e, row_bytes, shift, mask, cost))
    chosen = best[1]
    every = {chosen.address(r, c) for r in range(rows) for c in range(cols)}
    assert len(every) == rows * cols and max(every) < chosen.bytes, f"{chosen} is not a bijection"
    src, dst = op.operands[0].type, op.result.type
    groups = write_groups(src, e)
    by_slot = thread_coords(src, num_threads, target.warp_size)
    writes = [[(c[1], c[0]) for c in by_slot[g[0]]] for g in groups]    # result (row, col)
    vec = read_vector(dst, e)
    reads = thread_coords(dst, num_threads, target.warp_size)[::vec]
    return replace(chosen, writes=tuple(tuple(g) for g in groups), write_at=anchors(chosen, writes),
                   read_vector=vec, read_at=anchors(chosen, reads))


def reduce_bytes(op: Op, num_threads: int) -> int:
    """Shared memory of a reduce's exchange between warps: a 4-byte word per register of
    its result per thread (a Compact result: after the reduce-scatter within the warp);
    0 where the reduced axis stays within a warp."""
    src, out = op.operands[0].type, op.result.type
    m = src.layout.dims(src.shape)[op.attrs["axis"]]
    if m.wpc == 1:
        return 0
    regs = len(slots(out.layout.dims(out.shape))) if isinstance(out, TileType) else 1
    if isinstance(out, TileType) and isinstance(out.layout, Compact):
        regs = -(-regs // m.tpw)
    return regs * num_threads * dtype_info(src.dtype).bytes


def scan_bytes(op: Op, num_threads: int) -> int:
    """Shared memory of a scan's exchange between warps: a word per lane for each line
    along the axis a thread holds (and each repeat); 0 where the axis stays within a warp."""
    src = op.operands[0].type
    dims = src.layout.dims(src.shape)
    m = one_replica(dims[op.attrs["axis"]])
    if m is None or m.wpc == 1:       # (None: the backend reports it)
        return 0
    lines = len(slots(dims)) // m.spt
    return lines * num_threads * dtype_info(src.dtype).bytes


def plan_buffer(op: Op, num_threads: int, target: Target) -> int:
    """Plans the op's shared-memory accesses (a transpose's layout and accesses, a
    relayout's read width); returns the bytes of its array, 0 for an op with none."""
    if op.name == "transpose":
        op.attrs["smem"] = plan(op, num_threads, target)
        return op.attrs["smem"].bytes
    if op.name == "relayout":        # a plain array of the tile (passes/tile.py)
        t = op.result.type
        e = dtype_info(t.dtype).bytes
        op.attrs["read_vector"] = read_vector(t, e)
        return -(-t.numel * e // 16) * 16
    if op.name in ("slice", "reshape"):   # the operand tile, row-major
        t, r = op.operands[0].type, op.result.type
        if op.name == "reshape" and reshape_in_registers(t.layout, t.shape, r.layout, r.shape):
            return 0
        return -(-t.numel * dtype_info(t.dtype).bytes // 16) * 16
    if op.attrs.get("mask"):              # a mask spread unlike its access's tile moves
        mask = op.operands[1 + op.operands[0].type.rank].type
        tile = op.result.type if has_trait(op, READS) else op.operands[-1].type
        return 0 if mask.layout == tile.layout else -(-mask.numel // 16) * 16
    if op.name == "reduce":
        return reduce_bytes(op, num_threads)
    if op.name == "scan":
        return scan_bytes(op, num_threads)
    return 0


def run(kernel: KernelIR, target: Target) -> KernelIR:
    if not kernel.num_threads:       # before passes/tile.py: no thread mapping to plan for
        return kernel
    limit = target.default_shared_bytes_per_block       # what a CTA may have statically
    total, count = 0, 0
    for op in kernel.walk():
        nbytes = plan_buffer(op, kernel.num_threads, target)
        if not nbytes:
            continue
        op.attrs["smem_buffer"], op.attrs["smem_bytes"] = count, nbytes
        count += 1
        total += nbytes
        if total > limit:
            raise CompileError(f"with this {op.name}, the kernel's transposes, relayouts and "
                               f"reductions across warps need {total} bytes of shared memory, "
                               f"more than the {limit} a CTA has statically",
                               op.loc, "transpose or reduce a smaller tile (fewer warps along "
                               "a reduced axis), or transpose FP8 data before dequantizing "
                               "it (1 byte per element instead of 4)")
    return kernel
