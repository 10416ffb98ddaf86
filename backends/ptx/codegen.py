"""Tile IR (with layouts) -> LLVM IR for one CTA thread, built with llvmlite.

Every tile value becomes the list of its slots in this thread (commdsl/layout.py); scalars
are single LLVM values. Narrow floats live in registers as raw bits (bf16/f16 as i16, FP8
as i8) and are only converted, never computed on: irgen already promoted arithmetic to f32.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from llvmlite import ir

from commdsl.diagnostics import CompileError
from commdsl.dims import Const, Dim, Sym
from commdsl.fragments import FragmentDim
from commdsl.dtypes import dtype as dtype_info
from commdsl.ir import KernelIR, Op, TileType, Value
from commdsl.ops import COMM, WRITES, has_trait
from commdsl.ops.tiles import IDENTITY, MINMAX
from commdsl.layout import Compact, DimMap, Sliced, reshape_in_registers, slots
from commdsl.target import Target

from . import asm, logic_emitters, math_emitters, sm90  # noqa: F401  (*_emitters register)
from .comm import CommCodegen, comm_param_types
from .compact import CompactCodegen
from .scan import ScanCodegen
from .emitters import check_emittable, emits, emitter
from .asm import F32, GLOBAL_PTR, I1, I8, I16, I32, I64, reg_type


def _int_identity(kind: str, dtype: str) -> ir.Constant:
    """What a replica slot adds to an integer reduction: nothing (the type's extreme for
    min and max, not 0)."""
    d = dtype_info(dtype)
    lo, hi = (0, (1 << d.bits) - 1) if d.kind == "uint" else (-(1 << d.bits - 1),
                                                               (1 << d.bits - 1) - 1)
    return ir.Constant(ir.IntType(d.bits), 0 if kind == "sum" else
                       hi if MINMAX[kind][0] == "min" else lo)


def _is_unsigned(dtype: str) -> bool:
    return dtype_info(dtype).kind == "uint"


@dataclass
class Tile:
    """A tile's slots in this thread, with the dimension maps that place them."""
    regs: list
    dims: list[DimMap]
    layout: object


class KernelCodegen(CommCodegen, CompactCodegen, ScanCodegen):
    def __init__(self, kernel: KernelIR, target: Target, module: ir.Module):
        self.k, self.target, self.module = kernel, target, module
        maps = kernel.attrs.get("tensor_maps", ())
        params = ([GLOBAL_PTR] * len(kernel.tensors) + [I32] * len(kernel.sizes) +
                  comm_param_types(kernel) + [sm90.TENSOR_MAP] * len(maps))
        self.fn = ir.Function(module, ir.FunctionType(ir.VoidType(), params), name=kernel.name)
        self.fn.calling_convention = "ptx_kernel"
        # CUtensorMaps by value, last; emit_module marks them grid constants (used in place).
        self.tensor_maps = list(self.fn.args[len(params) - len(maps):])
        for arg in self.tensor_maps:
            arg.add_attribute("byval")
            arg.attributes.align = 64
        for arg, v in zip(self.fn.args, kernel.tensors + kernel.sizes):
            arg.name = v.name
            if v in kernel.tensors:
                arg.add_attribute("noalias")
        self.b = ir.IRBuilder(self.fn.append_basic_block("entry"))
        self.vals: dict[int, object] = {}
        # emitting a warp_specialize's consumer block: its warpgroup index there (sm90.py)
        self.consumer_warpgroup = None
        for arg, v in zip(self.fn.args, kernel.tensors + kernel.sizes):
            self.vals[v.id] = arg
        self._sizes = {v.name: arg for v, arg in zip(kernel.sizes, self.fn.args[len(kernel.tensors):])}
        self.bind_comm_params(self.fn.args[len(kernel.tensors) + len(kernel.sizes):])
        self._coords: dict = {}
        tid = self._tid = self.special("tid.x")
        warp_size = target.warp_size
        self.lane = self.b.and_(tid, ir.Constant(I32, warp_size - 1), name="lane")
        self.warp = self.b.lshr(tid, ir.Constant(I32, warp_size.bit_length() - 1), name="warp")
        self._byte_origin: dict[int, tuple] = {}   # id(i8 value) -> (value, i32 word, byte)

    # ---- helpers -----------------------------------------------------------------------

    def special(self, reg: str):
        name = "llvm.nvvm.read.ptx.sreg." + reg
        fn = self.module.globals.get(name) or ir.Function(self.module, ir.FunctionType(I32, []), name)
        return self.b.call(fn, [])

    def intrinsic(self, name: str, ret, args):
        fn = self.module.globals.get(name) or ir.Function(
            self.module, ir.FunctionType(ret, [a.type for a in args]), name)
        return self.b.call(fn, args)

    def i32(self, n: int):
        return ir.Constant(I32, n)

    def dim_value(self, d: Dim):
        """A symbolic size, computed from the kernel's size parameters (i64)."""
        b = self.b
        if isinstance(d, Const):
            return ir.Constant(I64, d.value)
        if isinstance(d, Sym):
            return b.zext(self._sizes[d.name], I64)
        lhs, rhs = self.dim_value(d.lhs), self.dim_value(d.rhs)
        if d.op == "+":
            return b.add(lhs, rhs)
        if d.op == "-":
            return b.sub(lhs, rhs)
        if d.op == "*":
            return b.mul(lhs, rhs)
        if d.op == "/":
            return b.udiv(lhs, rhs)
        return b.udiv(b.add(lhs, b.sub(rhs, ir.Constant(I64, 1))), rhs)

    def thread_coord(self, m: DimMap):
        """This thread's position along one dimension, in units of `spt` elements."""
        key = (m.tpw, m.wpc, m.lane_stride, m.warp_stride)
        if key not in self._coords:
            # Cached for the whole kernel, so computed in the entry block, which dominates
            # every use (a first use may sit inside a loop body).
            entry = self.fn.entry_basic_block
            b = self.b
            if b.block is not entry:       # (a second builder at the entry's end would
                b = ir.IRBuilder(entry)    # leave self.b's insertion point stale)
                b.position_before(entry.terminator)
            lane = b.urem(b.udiv(self.lane, self.i32(m.lane_stride)), self.i32(m.tpw))
            warp = b.urem(b.udiv(self.warp, self.i32(m.warp_stride)), self.i32(m.wpc))
            self._coords[key] = b.add(b.mul(warp, self.i32(m.tpw)), lane)
        return self._coords[key]

    def coord(self, m: DimMap, rep, elem):
        """(coordinate, is-first-copy) of one slot along one dimension. rep and elem are
        ints, or i32 values for a Compact tile's slots (compact.py)."""
        b = self.b
        if isinstance(m, FragmentDim):          # an mma accumulator: lanes are not linear
            return sm90.fragment_coord(self, m, rep, elem), None
        offset = (self.i32(m.offset(rep, elem)) if isinstance(rep, int) else
                  b.add(b.mul(rep, self.i32(m.span)), elem))
        raw = b.add(b.mul(self.thread_coord(m), self.i32(m.spt)), offset)
        if not m.wraps:
            return raw, None
        return b.urem(raw, self.i32(m.size)), b.icmp_unsigned("<", raw, self.i32(m.size))

    def first_copy(self, tile: Tile, slot, k: int) -> object | None:
        """True in the one thread whose copy of this slot (its k-th register) counts (None:
        every copy counts)."""
        flags = [self.coord(m, r, e)[1] for m, (r, e) in zip(tile.dims, slot)]
        shape = tuple(d.size for d in tile.dims)
        if isinstance(tile.layout, Sliced):
            for m in tile.layout.reduced_dims(shape):
                flags.append(self.coord(m, 0, 0)[1])
        if isinstance(tile.layout, Compact):
            flags.append(self.compact_owner(tile.layout, shape, k))
        return self.all_of([f for f in flags if f is not None])

    def held_slots(self, t) -> list:
        """The slots of a tile (or scalar: one, `()`) this thread holds, in register order."""
        if isinstance(t, TileType) and isinstance(t.layout, Compact):
            return self.compact_slots(t)
        return slots(t.layout.dims(t.shape) if isinstance(t, TileType) else [])

    def all_of(self, flags):
        if not flags:
            return None
        acc = flags[0]
        for f in flags[1:]:
            acc = self.b.and_(acc, f)
        return acc

    def tile(self, v: Value) -> Tile:
        return self.vals[v.id]

    def new_tile(self, t: TileType, regs) -> Tile:
        return Tile(list(regs), t.layout.dims(t.shape), t.layout)

    def static_smem(self, op: Op, dtype: str):
        """The op's own shared-memory array of `dtype`, as passes/shared.py planned it."""
        count = op.attrs["smem_bytes"] // dtype_info(dtype).bytes
        smem = ir.GlobalVariable(self.module, ir.ArrayType(reg_type(dtype), count),
                                 f"{self.k.name}_{op.name}_smem{op.attrs['smem_buffer']}",
                                 addrspace=3)
        smem.linkage, smem.align = "internal", 16
        smem.initializer = ir.Constant(smem.value_type, ir.Undefined)
        return smem

    # ---- ops ---------------------------------------------------------------------------

    def run(self):
        self.emit_block(self.k.body)
        self.b.ret_void()
        return self.fn

    def emit_block(self, block) -> list:
        """Emits a block's ops; returns the values its `yield` gives (loop bodies)."""
        self.yielded = []
        for op in block.ops:
            self.op = op                      # where a diagnostic of its emission points
            emitter(op, self.target)(self, op)
        yielded, self.yielded = self.yielded, []
        return yielded

    def cta_barrier(self):
        """bar.sync 0: every thread of the program meets. A warp-specialized kernel's
        consumers cannot (its producer warpgroup never joins), and their tiles are laid out
        over the consumer threads only by the mma pass's fragments."""
        if self.consumer_warpgroup is not None:
            raise CompileError("moving a tile between threads (through shared memory) inside "
                               "a warp-specialized GEMM's tile loop is not supported yet",
                               self.op.loc, "compute such values outside the tile loop, or "
                               "from the mma's rows (a row vector as s[:, None])")
        asm.barrier(self.b)

    @emits("yield")
    def op_yield(self, op: Op):
        self.yielded = [self.vals[v.id] for v in op.operands]

    @emits("const")
    def op_const(self, op: Op):
        t = reg_type(op.result.type.dtype)
        self.vals[op.result.id] = ir.Constant(t, op.attrs["value"])

    @emits("pid")
    def op_pid(self, op: Op):
        self.vals[op.result.id] = self.special("ctaid." + "xyz"[op.attrs["axis"]])

    @emits("smid")
    def op_smid(self, op: Op):
        self.vals[op.result.id] = self.special("smid")

    def _map(self, op: Op, scalar_fn):
        """Applies a per-element function to scalars or to every slot of tiles."""
        args = [self.vals[o.id] for o in op.operands]
        if isinstance(op.result.type, TileType):
            regs = [scalar_fn(*xs) for xs in zip(*(a.regs for a in args))]
            self.vals[op.result.id] = self.new_tile(op.result.type, regs)
        else:
            self.vals[op.result.id] = scalar_fn(*args)

    def _arith(self, op: Op, float_fn, int_fn, uint_fn=None):
        dtype = op.operands[0].type.dtype
        fn = float_fn if dtype == "f32" else uint_fn if uint_fn and _is_unsigned(dtype) else int_fn
        self._map(op, getattr(self.b, fn))

    @emits("add")
    def op_add(self, op):
        self._arith(op, "fadd", "add")

    @emits("sub")
    def op_sub(self, op):
        self._arith(op, "fsub", "sub")

    @emits("mul")
    def op_mul(self, op):
        self._arith(op, "fmul", "mul")

    @emits("div")
    def op_div(self, op):
        self._arith(op, "fdiv", "sdiv", "udiv")  # fdiv: IEEE round-to-nearest (div.rn.f32)

    @emits("rem")
    def op_rem(self, op):
        self._arith(op, "frem", "srem", "urem")

    @emits("max", "min", "nanmax", "nanmin")
    def op_minmax(self, op):
        self._map(op, self._combiner(op.name, op.operands[0].type.dtype))

    @emits("abs")
    def op_abs(self, op):
        self._map(op, lambda a: self.intrinsic("llvm.fabs.f32", F32, [a]))

    @emits("sqrt")
    def op_sqrt(self, op):
        self._map(op, lambda a: self.intrinsic("llvm.sqrt.f32", F32, [a]))

    @emits("fma")
    def op_fma(self, op):
        self._map(op, lambda a, b, c: self.intrinsic("llvm.fma.f32", F32, [a, b, c]))

    @emits("recip")
    def op_recip(self, op):
        if op.operands[0].type.dtype == "ue8m0":     # 1 / 2^(u - 127) = 2^(127 - u): 254 - u
            self._map(op, lambda a: self.b.sub(ir.Constant(I8, 254), a))   # (0xFF: NaN stays)
            return
        self._map(op, lambda a: self.b.fdiv(ir.Constant(F32, 1.0), a))   # rcp.rn.f32

    @emits("neg")
    def op_neg(self, op):
        is_float = op.operands[0].type.dtype == "f32"
        self._map(op, self.b.fneg if is_float else self.b.neg)

    @emits("splat")
    def op_splat(self, op):
        t = op.result.type
        n = (t.layout.held(t.shape) if isinstance(t.layout, Compact)
             else len(slots(t.layout.dims(t.shape))))
        self.vals[op.result.id] = self.new_tile(t, [self.vals[op.operands[0].id]] * n)

    @emits("expand_dims")
    def op_expand_dims(self, op):
        self.vals[op.result.id] = self.new_tile(op.result.type, self.tile(op.operands[0]).regs)

    @emits("broadcast")
    def op_broadcast(self, op):
        src, t = self.tile(op.operands[0]), op.result.type
        index = {s: i for i, s in enumerate(slots(src.dims))}
        out = []
        for s in slots(t.layout.dims(t.shape)):
            key = tuple((0, 0) if m.size == 1 else re for m, re in zip(src.dims, s))
            out.append(src.regs[index[key]])
        self.vals[op.result.id] = self.new_tile(t, out)

    @emits("convert")
    def op_convert(self, op):
        src, dst = op.operands[0].type.dtype, op.result.type.dtype
        if isinstance(op.result.type, TileType):
            regs = self.convert(self.tile(op.operands[0]).regs, src, dst)
            self.vals[op.result.id] = self.new_tile(op.result.type, regs)
        else:
            self.vals[op.result.id] = self.convert([self.vals[op.operands[0].id]], src, dst)[0]

    def convert(self, regs: list, src: str, dst: str) -> list:
        b = self.b
        if src != "f32" and dst != "f32" and (dtype_info(src).is_float or dtype_info(dst).is_float):
            return self.convert(self.convert(regs, src, "f32"), "f32", dst)
        if src == "f32":
            if dst == "ue8m0":
                return [self.ue8m0_from_f32(r) for r in regs]
            if dst in ("e4m3", "e5m2"):
                out = []
                padded = regs + [ir.Constant(F32, 0.0)] * (len(regs) % 2)
                for lo, hi in zip(padded[0::2], padded[1::2]):
                    pair = asm.fp8x2_from_f32(b, dst, hi, lo)
                    out += [b.trunc(pair, I8), b.trunc(b.lshr(pair, ir.Constant(I16, 8)), I8)]
                return out[:len(regs)]
            if dst == "bf16":             # two per cvt.rn.bf16x2.f32, as for FP8 pairs
                if len(regs) % 2:
                    return [asm.bf16_from_f32(b, r) for r in regs]
                out = []
                for lo, hi in zip(regs[0::2], regs[1::2]):
                    pair = asm.bf16x2_from_f32(b, hi, lo)
                    out += [b.trunc(pair, I16), b.trunc(b.lshr(pair, ir.Constant(I32, 16)), I16)]
                return out
            if dst == "f16":
                return [asm.f16_from_f32(b, r) for r in regs]
            return [b.fptosi(r, reg_type(dst)) for r in regs]
        if dst == "f32":
            if src == "bf16":
                return [b.bitcast(b.shl(b.zext(r, I32), ir.Constant(I32, 16)), F32) for r in regs]
            if src == "f16":
                return [asm.f32_from_f16(b, r) for r in regs]
            if src == "ue8m0":
                return [self.f32_from_ue8m0(r) for r in regs]
            if src in ("e4m3", "e5m2"):
                # Two bytes per conversion: (hi << 8 | lo) -> f16x2 -> two f32, exactly.
                out = []
                for i in range(0, len(regs), 2):
                    lo = b.zext(regs[i], I16)
                    pair = (b.or_(lo, b.shl(b.zext(regs[i + 1], I16), ir.Constant(I16, 8)))
                            if i + 1 < len(regs) else lo)
                    h = asm.f16x2_from_fp8x2(b, src, pair)
                    out.append(asm.f32_from_f16(b, b.trunc(h, I16)))
                    out.append(asm.f32_from_f16(b, b.trunc(b.lshr(h, ir.Constant(I32, 16)), I16)))
                return out[:len(regs)]
            return [b.sitofp(r, F32) for r in regs]
        return [b.sext(r, reg_type(dst)) if reg_type(dst).width > r.type.width
                else b.trunc(r, reg_type(dst)) for r in regs]

    def ue8m0_from_f32(self, x):
        """The biased exponent of the smallest power of two >= |x| (DeepGEMM's ceil_to_ue8m0
        on the bits): exponent + (mantissa != 0), at most 0xFF (NaN; also for inf and NaN)."""
        b = self.b
        bits = b.bitcast(x, I32)
        exp = b.and_(b.lshr(bits, ir.Constant(I32, 23)), ir.Constant(I32, 0xFF))
        frac = b.and_(bits, ir.Constant(I32, 0x7FFFFF))
        up = b.add(exp, b.zext(b.icmp_unsigned("!=", frac, ir.Constant(I32, 0)), I32))
        up = b.select(b.icmp_unsigned(">", up, ir.Constant(I32, 0xFF)), ir.Constant(I32, 0xFF), up)
        return b.trunc(up, I8)

    def f32_from_ue8m0(self, byte):
        """2^(byte - 127): the byte as an f32 exponent field; 0 is 2^-127 (a subnormal),
        0xFF is NaN."""
        b = self.b
        e = b.zext(byte, I32)
        bits = b.shl(e, ir.Constant(I32, 23))
        bits = b.select(b.icmp_unsigned("==", e, ir.Constant(I32, 0)),
                        ir.Constant(I32, 0x400000), bits)
        bits = b.select(b.icmp_unsigned("==", e, ir.Constant(I32, 0xFF)),
                        ir.Constant(I32, 0x7FC00000), bits)
        return b.bitcast(bits, F32)

    # ---- data movement between threads ------------------------------------------------------

    @emits("transpose")
    def op_transpose(self, op: Op):
        """Through shared memory, as passes/shared.py planned: every thread writes its
        elements at their transposed place, a barrier, then every thread reads its slots of
        the result, up to 16 bytes per read; inside a loop or a branch, a second barrier."""
        b, plan = self.b, op.attrs["smem"]
        src, out_t = self.tile(op.operands[0]), op.result.type
        smem = self.static_smem(op, "u8")
        e = plan.elem_bytes
        rt = reg_type(out_t.dtype)

        def address(r, c):
            """Byte offset of result element (r, c) under the plan's swizzle."""
            byte = b.mul(c, self.i32(e)) if e > 1 else c
            chunk = b.lshr(byte, self.i32(4))
            if plan.swizzle_mask:
                chunk = b.xor(chunk, b.and_(b.lshr(r, self.i32(plan.swizzle_shift)),
                                             self.i32(plan.swizzle_mask)))
            off = b.add(b.mul(r, self.i32(plan.row_bytes)), b.shl(chunk, self.i32(4)))
            off = b.add(off, b.and_(byte, self.i32(15)))
            return b.gep(smem, [self.i32(0), off])

        src_slots = slots(src.dims)
        groups = plan.writes
        write_at = self._smem_addresses(
            plan.write_at,
            lambda i: tuple(self.coord(m, r, el)[0]
                            for m, (r, el) in zip(src.dims, src_slots[groups[i][0]]))[::-1],
            address)
        packed = self.pack_bytes([[src.regs[j] for j in g] for g in groups]) if e == 1 else None
        for i, g in enumerate(groups):
            vals = [b.bitcast(src.regs[j], I32) if rt == F32 else src.regs[j] for j in g]
            val = (packed[i] if packed and packed[i] is not None else
                   self.pack(vals, out_t.dtype)[0] if len(g) > 1 else vals[0])
            ptr = write_at(i)
            if val.type != I8:
                ptr = b.bitcast(ptr, val.type.as_pointer(3))
            b.store(val, ptr, align=len(g) * e)
        self.cta_barrier()
        dims = out_t.layout.dims(out_t.shape)
        vec = plan.read_vector
        nwords, wt = asm.access_registers(vec * e)
        vty = ir.VectorType(wt, nwords) if nwords > 1 else wt
        all_slots = slots(dims)
        read_at = self._smem_addresses(
            plan.read_at,
            lambda i: tuple(self.coord(m, rr, el)[0]
                            for m, (rr, el) in zip(dims, all_slots[i * vec])),
            address)
        regs = []
        for i in range(len(plan.read_at)):
            loaded = b.load(read_at(i), typ=vty, align=vec * e)
            words = ([b.extract_element(loaded, self.i32(w)) for w in range(nwords)]
                     if nwords > 1 else [loaded])
            regs += self.unpack(words, out_t.dtype, vec)
        if op not in self.k.body.ops:     # a loop's next pass writes the array again
            self.cta_barrier()
        self.vals[op.result.id] = self.new_tile(out_t, regs)

    @emits("relayout")
    def op_relayout(self, op: Op):
        """A tile to another layout through a plain shared array: every thread writes the
        elements it holds (copies write the same value), a barrier, then every thread reads
        its slots of the new layout; a 1-D tile's `read_vector` at a time (passes/shared.py).
        Inside a loop or a branch a second barrier lets the next pass write the array again."""
        b = self.b
        src, out_t = self.tile(op.operands[0]), op.result.type
        top_level = op in self.k.body.ops
        if len(out_t.shape) > 1 or not top_level:
            regs = self.exchange(self.static_smem(op, out_t.dtype), src, op.operands[0].type,
                                 out_t.layout.dims(out_t.shape),
                                 lambda coords: self.row_major(coords, out_t.shape))
            self.vals[op.result.id] = self.new_tile(out_t, regs)
            return
        e = dtype_info(out_t.dtype).bytes
        rt = reg_type(out_t.dtype)
        smem = self.static_smem(op, "u8")

        def at(index, ty):
            ptr = b.gep(smem, [self.i32(0), b.mul(index, self.i32(e)) if e > 1 else index])
            return b.bitcast(ptr, ty.as_pointer(3)) if ty != I8 else ptr

        for slot, reg in zip(slots(src.dims), src.regs):
            (r, el), = slot
            val = b.bitcast(reg, I32) if rt == F32 else reg
            b.store(val, at(self.coord(src.dims[0], r, el)[0], val.type), align=e)
        self.cta_barrier()
        dims = out_t.layout.dims(out_t.shape)
        m, vec = dims[0], op.attrs["read_vector"]
        nwords, wt = asm.access_registers(vec * e)
        vty = ir.VectorType(wt, nwords) if nwords > 1 else wt
        regs = []
        all_slots = slots(dims)
        for first in range(0, len(all_slots), vec):
            (r, el), = all_slots[first]
            loaded = b.load(at(self.coord(m, r, el)[0], vty), typ=vty, align=vec * e)
            words = ([b.extract_element(loaded, self.i32(w)) for w in range(nwords)]
                     if nwords > 1 else [loaded])
            regs += self.unpack(words, out_t.dtype, vec)
        self.vals[op.result.id] = self.new_tile(out_t, regs)

    @emits("slice", "reshape")
    def op_view(self, op: Op):
        """A view of a tile: the same registers where the layouts allow, else through
        shared memory (exchange)."""
        a_t, out_t = op.operands[0].type, op.result.type
        if op.name == "reshape" and reshape_in_registers(a_t.layout, a_t.shape, out_t.layout,
                                                         out_t.shape):
            self.vals[op.result.id] = self.new_tile(out_t, self.tile(op.operands[0]).regs)
            return

        def index(coords):
            if op.name == "slice":        # where the result's element sits in the operand
                return self.row_major([self.b.add(c, self.i32(o)) for c, o in
                                       zip(coords, op.attrs["offsets"])], a_t.shape)
            return self.row_major(coords, out_t.shape)   # a reshape keeps row-major order

        regs = self.exchange(self.static_smem(op, out_t.dtype), self.tile(op.operands[0]),
                             a_t, out_t.layout.dims(out_t.shape), index)
        self.vals[op.result.id] = self.new_tile(out_t, regs)

    def exchange(self, smem, src: Tile, src_t: TileType, dims, index) -> list:
        """Registers of another layout (`dims`) through a plain shared array of the tile
        `src`, row-major: every thread writes the elements it holds, a barrier, every thread
        reads its slots from `index(coords)`, a barrier (a loop's next iteration reuses the
        array)."""
        b = self.b
        e = dtype_info(src_t.dtype).bytes

        def element(i):
            return b.gep(smem, [self.i32(0), i])

        for slot, reg in zip(slots(src.dims), src.regs):
            coords = [self.coord(m, *s)[0] for m, s in zip(src.dims, slot)]
            b.store(reg, element(self.row_major(coords, src_t.shape)), align=e)
        self.cta_barrier()
        regs = []
        for slot in slots(dims):
            coords = [self.coord(m, *s)[0] for m, s in zip(dims, slot)]
            regs.append(b.load(element(index(coords)), typ=reg_type(src_t.dtype), align=e))
        self.cta_barrier()
        return regs

    def row_major(self, coords, shape):
        """The row-major index of an element of a tile of `shape` at `coords` (i32 values)."""
        index = coords[0]
        for c, n in zip(coords[1:], shape[1:]):
            index = self.b.add(self.b.mul(index, self.i32(n)), c)
        return index

    def _smem_addresses(self, accesses, coords_of, address):
        """Addresses of a sequence of shared-memory accesses planned as (anchor, delta)
        (passes/shared.py): an anchor's from its coordinates `coords_of(i)`, computed here
        in order; every other one's as its anchor's plus an immediate offset."""
        ptrs = {i: address(*coords_of(i)) for i, (anchor, _) in enumerate(accesses) if anchor == i}

        def at(i):
            anchor, delta = accesses[i]
            ptr = ptrs[anchor]
            return self.b.gep(ptr, [self.i32(delta)], source_etype=I8) if delta else ptr
        return at

    # ---- reductions ----------------------------------------------------------------------

    @emits("reduce")
    def op_reduce(self, op: Op):
        kind, axis = op.attrs["kind"], op.attrs["axis"]
        src = self.tile(op.operands[0])
        dtype = op.operands[0].type.dtype
        combine = self._combiner(kind, dtype)
        identity = (ir.Constant(F32, IDENTITY[kind]) if dtype == "f32"
                    else _int_identity(kind, dtype))
        # With a count (commdsl/ragged.py), elements from it on along the axis are left out.
        count = self.vals[op.operands[1].id] if len(op.operands) > 1 else None
        m = src.dims[axis]
        groups: dict[tuple, object] = {}
        for slot, reg in zip(slots(src.dims), src.regs):
            if kind == "amax":
                reg = self.intrinsic("llvm.fabs.f32", F32, [reg])
            pos, first = self.coord(m, *slot[axis])
            if count is not None:
                reg = self.b.select(self.b.icmp_signed("<", pos, count), reg, identity)
            if first is not None:
                reg = self.b.select(first, reg, identity)
            key = slot[:axis] + slot[axis + 1:]
            groups[key] = reg if key not in groups else combine(groups[key], reg)
        out_t = op.result.type
        if isinstance(out_t, TileType):
            regs = [groups[s] for s in slots(out_t.layout.dims(out_t.shape))]
        else:
            regs = [groups[()]]                                    # a scalar: all threads
        if isinstance(out_t, TileType) and isinstance(out_t.layout, Compact):
            regs = self.reduce_scatter(regs, m, combine)           # each lane its own slots
        else:
            for k in range(m.tpw.bit_length() - 1):               # lanes along the axis
                regs = [combine(r, self.shuffle(r, m.lane_stride << k)) for r in regs]
        if m.wpc > 1:
            regs = self.reduce_across_warps(op, regs, m, combine)
        self.vals[op.result.id] = (self.new_tile(out_t, regs) if isinstance(out_t, TileType)
                                   else regs[0])

    def _combiner(self, kind, dtype: str):
        is_float = dtype == "f32"
        if kind == "sum":
            return self.b.fadd if is_float else self.b.add
        which, propagate_nan = MINMAX[kind]
        if is_float:     # llvm.maximum: PTX max.NaN.f32 (sm_80 on); llvm.maxnum: max.f32
            name = f"llvm.{which}imum.f32" if propagate_nan else f"llvm.{which}num.f32"
            return lambda a, b: self.intrinsic(name, F32, [a, b])
        pred = "<" if which == "min" else ">"
        compare = self.b.icmp_unsigned if _is_unsigned(dtype) else self.b.icmp_signed
        return lambda a, b: self.b.select(compare(pred, a, b), a, b)

    def as_word(self, x, move):
        """`move` (a shfl, which moves 32-bit registers) applied to x's bits, x an f32 or an
        integer of at most 32 bits."""
        if x.type == F32:
            return self.b.bitcast(move(self.b.bitcast(x, I32)), F32)
        if x.type.width < 32:
            return self.b.trunc(move(self.b.zext(x, I32)), x.type)
        return move(x)

    def shuffle(self, x, lane_mask: int):
        return self.as_word(x, lambda w: asm.shuffle_xor(self.b, w, lane_mask))

    def lane_words(self, smem):
        """(i, warp) -> the address of this lane's word i of `warp` in a shared array laid
        out [word][warp][lane]: how warps hand partials to each other."""
        b, warp_size = self.b, self.target.warp_size
        nwarps = self.k.num_threads // warp_size

        def slot_ptr(i, warp):
            idx = b.add(b.mul(b.add(self.i32(i * nwarps), warp), self.i32(warp_size)), self.lane)
            return b.gep(smem, [self.i32(0), idx])
        return slot_ptr

    def warp_along(self, m: DimMap):
        """(this warp's coordinate along m, the warp at coordinate 0 with the same others)."""
        b = self.b
        coord = b.urem(b.udiv(self.warp, self.i32(m.warp_stride)), self.i32(m.wpc))
        return coord, b.sub(self.warp, b.mul(coord, self.i32(m.warp_stride)))

    def reduce_across_warps(self, op: Op, regs, m: DimMap, combine):
        """Each warp's partials go through shared memory; every thread combines the warps
        that differ only along the reduced axis."""
        b = self.b
        slot_ptr = self.lane_words(self.static_smem(op, op.operands[0].type.dtype))
        for i, r in enumerate(regs):
            b.store(r, slot_ptr(i, self.warp))
        self.cta_barrier()
        _, base = self.warp_along(m)
        out = []
        for i in range(len(regs)):
            acc = None
            for j in range(m.wpc):
                w = b.add(base, self.i32(j * m.warp_stride))
                v = b.load(slot_ptr(i, w))
                acc = v if acc is None else combine(acc, v)
            out.append(acc)
        self.cta_barrier()
        return out

    # ---- global memory ---------------------------------------------------------------------

    def _access(self, op: Op, tile_t: TileType):
        """Yields (address, in-bounds predicate, slot indices) per vector of one access."""
        b = self.b
        tensor = op.operands[0]
        dims = tensor.type.dims
        starts = [self.vals[v.id] for v in op.operands[1:1 + len(dims)]]
        sizes = op.attrs["sizes"]
        strides, acc = [], ir.Constant(I64, 1)
        for d in reversed(dims):
            strides.insert(0, acc)
            acc = b.mul(acc, self.dim_value(d))
        bounds = [b.trunc(self.dim_value(d), I32) if not isinstance(d, Const) else self.i32(d.value)
                  for d in dims]
        tdims = tile_t.layout.dims(tile_t.shape) if isinstance(tile_t, TileType) else []
        tile_axis = {}
        for d, s in enumerate(sizes):
            if s is not None:
                tile_axis[d] = len(tile_axis)
        all_slots = self.held_slots(tile_t)
        # The thread's run of contiguous elements, split into the accesses vectorize allowed.
        vec = math.gcd(tdims[-1].spt, op.attrs.get("vec", 1)) if tdims and sizes[-1] is not None else 1
        esize = dtype_info(tensor.type.dtype).bytes
        base = self.vals[tensor.id]
        # A guarded access (passes/prefetch.py) runs only where its guard is > 0.
        guard = ([b.icmp_signed(">", self.vals[op.operands[-1].id], self.i32(0))]
                 if op.attrs.get("guard") else [])
        # get/put reach another rank's copy (backends/ptx/comm.py), maybe a rank per row.
        base_of = self.peer_bases(op, guard) if has_trait(op, COMM) else (lambda slot: base)
        gathered = {d: self.gather_lookup(op, starts[d]) for d in op.attrs.get("gather", ())}
        for first in range(0, len(all_slots), vec):
            slot = all_slots[first]
            offset, ok = ir.Constant(I64, 0), list(guard)
            for d in range(len(dims)):
                pos = starts[d]
                if d in gathered:                 # this slot's row number, from the index tile
                    pos = gathered[d](slot)
                elif d in tile_axis:
                    a = tile_axis[d]
                    c, _ = self.coord(tdims[a], *slot[a])
                    pos = b.add(pos, c)
                ok.append(b.icmp_unsigned("<", pos, bounds[d]))
                offset = b.add(offset, b.mul(b.sext(pos, I64), strides[d]))
            if has_trait(op, WRITES) and tdims:
                # Only the first copy of a replicated slot writes. Every copy reads (a get
                # too): later ops take a slot's value from whichever copy a thread holds.
                first_copy = self.first_copy(Tile([], tdims, tile_t.layout), slot, first)
                if first_copy is not None:
                    ok.append(first_copy)
            addr = b.gep(base_of(slot), [b.mul(offset, ir.Constant(I64, esize))],
                         source_etype=I8)
            yield addr, self.all_of(ok) or ir.Constant(I1, 1), list(range(first, first + vec)), vec

    def mask_flags(self, op: Op, tile_t: TileType) -> list | None:
        """Per held slot of a masked access, whether its mask element is true (None: no mask)."""
        if not op.attrs.get("mask"):
            return None
        value = op.operands[1 + op.operands[0].type.rank]
        mask, regs = self.tile(value), self.tile(value).regs
        if mask.layout != tile_t.layout:  # through shared memory (passes/shared.py)
            regs = self.exchange(self.static_smem(op, "bool"), mask, value.type,
                                 tile_t.layout.dims(tile_t.shape),
                                 lambda coords: self.row_major(coords, tile_t.shape))
        return [self.b.icmp_unsigned("!=", r, ir.Constant(r.type, 0)) for r in regs]

    def raw_constant(self, dtype: str, value):
        """`value` as the register bits of a `dtype` element (narrow floats are raw bits)."""
        if dtype == "f32":
            return ir.Constant(F32, value)
        if dtype_info(dtype).is_int:
            return ir.Constant(reg_type(dtype), int(value))
        import torch
        from commdsl.dtypes import torch_dtype
        bits = torch.tensor(value).to(torch_dtype(dtype)).view(
            torch.int16 if dtype_info(dtype).bits == 16 else torch.uint8).item()
        return ir.Constant(reg_type(dtype), bits & ((1 << dtype_info(dtype).bits) - 1))

    @emits("load")
    def op_load(self, op: Op):
        t = op.result.type
        esize = dtype_info(t.dtype).bytes
        flags = self.mask_flags(op, t)
        fill = "other" in op.attrs or flags is not None
        other = self.raw_constant(t.dtype, op.attrs.get("other") or 0) if fill else None
        regs = []
        for addr, ok, idx, vec in self._access(op, t):
            words = asm.global_load(self.b, op.attrs["cache_policy"], vec * esize, addr, ok)
            elems = self.unpack(words, t.dtype, vec)
            if fill:                      # elements not read (edge, mask) are `other`
                elems = [self.b.select(ok if flags is None else self.b.and_(ok, flags[i]),
                                       e, other) for i, e in zip(idx, elems)]
            regs += elems
        self.vals[op.result.id] = self.new_tile(t, regs) if isinstance(t, TileType) else regs[0]

    @emits("store")
    def op_store(self, op: Op):
        value = op.operands[-1]
        t = value.type
        tile = self.tile(value) if isinstance(t, TileType) else None
        esize = dtype_info(t.dtype).bytes
        regs = tile.regs if tile else [self.vals[value.id]]
        flags = self.mask_flags(op, t)
        for addr, ok, idx, vec in self._access(op, t):
            if flags is not None:         # equal along a vector (passes/vectorize.py)
                ok = self.b.and_(ok, flags[idx[0]])
            if not tile:                  # a scalar is held by every thread; thread 0 writes it
                ok = self.b.and_(ok, self.b.icmp_unsigned("==", self._tid, self.i32(0)))
            words = self.pack([regs[i] for i in idx], t.dtype)
            asm.global_store(self.b, op.attrs["cache_policy"], vec * esize, addr, words, ok)

    def unpack(self, words: list, dtype: str, count: int) -> list:
        """Registers of a vector access -> one register per element, in memory order."""
        b = self.b
        bits = dtype_info(dtype).bits
        out = []
        for w in words:
            per = max(1, w.type.width // bits)
            for i in range(per):
                x = b.lshr(w, ir.Constant(w.type, i * bits)) if i else w
                x = b.trunc(x, ir.IntType(bits)) if bits < w.type.width else x
                if bits == 8 and w.type == I32:       # where each byte came from: pack_bytes
                    self._byte_origin[id(x)] = (x, w, i)
                out.append(b.bitcast(x, F32) if dtype == "f32" else x)
        return out[:count]

    def pack_bytes(self, groups: list[list]) -> list:
        """Words of 4 bytes each, where every byte is a byte of a 32-bit register (as unpack
        made them): a 4x4 byte transpose costs 8 `prmt` per 4 words instead of a shift and a
        mask per byte. Level 1 takes two source words and keeps two bytes of each, for two
        output words at once; level 2 joins two level-1 halves. None where a byte's origin is
        unknown (the caller packs that word with shifts)."""
        b = self.b
        out: list = [None] * len(groups)
        halves: dict[tuple, list] = {}          # (word a, word c) -> [(group, half, ia, ic)]
        origin = []
        for gi, g in enumerate(groups):
            src = [self._byte_origin.get(id(x)) for x in g]
            if len(g) != 4 or any(o is None or o[0] is not x for o, x in zip(src, g)):
                origin.append(None)
                continue
            origin.append(src)
            for h in (0, 1):
                (_, wa, ia), (_, wc, ic) = src[2 * h], src[2 * h + 1]
                halves.setdefault((id(wa), id(wc)), []).append((gi, h, wa, wc, ia, ic))
        made: dict[tuple[int, int], tuple] = {}  # (group, half) -> (register, byte position)
        for entries in halves.values():
            for k in range(0, len(entries), 2):
                pair = entries[k:k + 2]
                sel = 0
                for pos, (_, _, _, _, ia, ic) in enumerate(pair):
                    sel |= (ia | (4 + ic) << 4) << (8 * pos)
                reg = asm.prmt(b, pair[0][2], pair[0][3], sel)
                for pos, (gi, h, *_rest) in enumerate(pair):
                    made[(gi, h)] = (reg, 2 * pos)
        for gi, src in enumerate(origin):
            if src is None:
                continue
            (lo, plo), (hi, phi) = made[(gi, 0)], made[(gi, 1)]
            sel = plo | (plo + 1) << 4 | (4 + phi) << 8 | (5 + phi) << 12
            out[gi] = asm.prmt(b, lo, hi, sel)
        return out

    def words(self, elems: list, dtype: str) -> list:
        """One register per element -> elements narrower than 32 bits packed 4 bytes to a
        register (as elements() unpacks them); wider ones as they are."""
        per = 32 // dtype_info(dtype).bits
        if per <= 1 or len(elems) % per:
            return elems
        return [w for i in range(0, len(elems), per) for w in self.pack(elems[i:i + per], dtype)]

    def elements(self, words: list, dtype: str, count: int) -> list:
        """The inverse of words()."""
        return words if len(words) == count else self.unpack(words, dtype, count)

    def pack(self, elems: list, dtype: str) -> list:
        """One register per element -> the registers of one vector access."""
        b = self.b
        n, wt = asm.access_registers(len(elems) * dtype_info(dtype).bytes)
        elems = [b.bitcast(e, I32) if e.type == F32 else e for e in elems]
        per = len(elems) // n
        bits = wt.width // per
        words = []
        for w in range(n):
            acc = None
            for i in range(per):
                e = elems[w * per + i]
                e = b.zext(e, wt) if e.type.width < wt.width else e
                e = b.shl(e, ir.Constant(wt, i * bits)) if i else e
                acc = e if acc is None else b.or_(acc, e)
            words.append(acc)
        return words


def emit_module(kernels: list[KernelIR], target: Target) -> ir.Module:
    module = ir.Module(name="commdsl")
    module.triple = "nvptx64-nvidia-cuda"
    annotations = module.add_named_metadata("nvvm.annotations")
    for k in kernels:
        check_emittable(k, target)
        cg = KernelCodegen(k, target, module)
        fn = cg.run()
        cluster = k.attrs.get("cluster", 1)
        dims = (("cluster_dim_x", cluster), ("cluster_dim_y", 1), ("cluster_dim_z", 1))
        ctas = k.attrs.get("ctas_per_sm") or 1
        for key, value in (("maxntidx", k.num_threads), ("minctasm", ctas),
                           *(dims if cluster > 1 else ())):
            annotations.add(module.add_metadata(
                [fn, ir.MetaDataString(module, key), ir.Constant(I32, value)]))
        if cg.tensor_maps:       # passed by value, used in place: `cvta.param`, not a copy
            positions = [ir.Constant(I32, arg_index + 1)
                         for arg_index, arg in enumerate(fn.args) if arg in cg.tensor_maps]
            annotations.add(module.add_metadata(
                [fn, ir.MetaDataString(module, "grid_constant"), module.add_metadata(positions)]))
    return module
