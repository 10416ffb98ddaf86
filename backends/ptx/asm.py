"""Single PTX instructions the NVPTX backend has no intrinsic for, as inline asm.

Each helper emits exactly one instruction (with the predicate it needs); the loops and the
address arithmetic around them are LLVM IR built by codegen.py.
"""
from __future__ import annotations

from llvmlite import ir

I1, I8, I16, I32, I64 = (ir.IntType(n) for n in (1, 8, 16, 32, 64))
F32 = ir.FloatType()
GLOBAL_PTR = ir.PointerType(addrspace=1)
# The register type that holds one element of each dtype (16-bit floats as their bits).
_REG = {"f32": F32, "bf16": I16, "f16": I16, "e4m3": I8, "e5m2": I8, "ue8m0": I8,
        "i64": I64, "i32": I32, "i16": I16, "i8": I8, "u8": I8, "bool": I8}


def reg_type(dtype: str) -> ir.Type:
    return _REG[dtype]

# bytes per access -> (vector suffix, register count, register type, constraint)
_WIDTHS = {
    16: (".v4.b32", 4, I32, "r"),
    8: (".v2.b32", 2, I32, "r"),
    4: (".b32", 1, I32, "r"),
    2: (".b16", 1, I16, "h"),
    1: (".b8", 1, I16, "h"),
}


def access_registers(nbytes: int) -> tuple[int, ir.IntType]:
    _, count, ty, _ = _WIDTHS[nbytes]
    return count, ty


def global_access(kind: str, policy: dict) -> str:
    """`ld` or `st` of global memory under a cache policy (passes/cache.py), as PTX spells
    it: {nc = True, L1 = "no_allocate", L2 = "256B"} -> ld.global.nc.L1::no_allocate.L2::256B."""
    parts = [kind, "volatile", "global"] if policy.get("volatile") else [kind, "global"]
    if "operator" in policy:
        parts.append(policy["operator"])
    if policy.get("nc"):
        parts.append("nc")
    parts += [f"{level}::{policy[level]}" for level in ("L1", "L2") if level in policy]
    return ".".join(parts)


def global_load(b: ir.IRBuilder, policy: dict, nbytes: int, address, predicate) -> list:
    """`@p ld.global<policy>.v4.b32 {...}, [addr]`. Each output is tied to a zero input, so
    where `p` is false the registers keep 0. The predicate is an i1 in a `.pred` register
    ("b")."""
    suffix, n, ty, c = _WIDTHS[nbytes]
    regs = ", ".join(f"${i}" for i in range(n))
    dst = f"{{{regs}}}" if n > 1 else "$0"
    text = f"@${n + 1} {global_access('ld', policy)}{suffix} {dst}, [${n}];"
    ret = ir.LiteralStructType([ty] * n) if n > 1 else ty
    fn = ir.FunctionType(ret, [GLOBAL_PTR, I1] + [ty] * n)
    constraints = [f"={c}"] * n + ["l", "b"] + [str(i) for i in range(n)]
    asm = ir.InlineAsm(fn, text, ",".join(constraints), side_effect=True)
    out = b.call(asm, [address, predicate] + [ir.Constant(ty, 0)] * n)
    return [b.extract_value(out, i) for i in range(n)] if n > 1 else [out]


def global_store(b: ir.IRBuilder, policy: dict, nbytes: int, address, words: list, predicate):
    suffix, n, ty, c = _WIDTHS[nbytes]
    regs = ", ".join(f"${i + 1}" for i in range(n))
    vals = f"{{{regs}}}" if n > 1 else "$1"
    text = f"@${n + 1} {global_access('st', policy)}{suffix} [$0], {vals};"
    fn = ir.FunctionType(ir.VoidType(), [GLOBAL_PTR] + [ty] * n + [I1])
    asm = ir.InlineAsm(fn, text, ",".join(["l"] + [c] * n + ["b"]), side_effect=True)
    b.call(asm, [address, *words, predicate])


def fp8x2_from_f32(b: ir.IRBuilder, fmt: str, hi, lo):
    """Two floats to two FP8 bytes (hi in bits 15:8), rounding to nearest and saturating."""
    fn = ir.FunctionType(I16, [F32, F32])
    asm = ir.InlineAsm(fn, f"cvt.rn.satfinite.{fmt}x2.f32 $0, $1, $2;", "=h,f,f")
    return b.call(asm, [hi, lo])


def f16x2_from_fp8x2(b: ir.IRBuilder, fmt: str, pair):
    fn = ir.FunctionType(I32, [I16])
    return b.call(ir.InlineAsm(fn, f"cvt.rn.f16x2.{fmt}x2 $0, $1;", "=r,h"), [pair])


def f32_from_f16(b: ir.IRBuilder, half_bits):
    fn = ir.FunctionType(F32, [I16])
    return b.call(ir.InlineAsm(fn, "cvt.f32.f16 $0, $1;", "=f,h"), [half_bits])


def bf16_from_f32(b: ir.IRBuilder, x):
    fn = ir.FunctionType(I16, [F32])
    return b.call(ir.InlineAsm(fn, "cvt.rn.bf16.f32 $0, $1;", "=h,f"), [x])


def bf16x2_from_f32(b: ir.IRBuilder, hi, lo):
    """Two floats to two bf16 (hi in bits 31:16), each rounded to nearest even."""
    fn = ir.FunctionType(I32, [F32, F32])
    return b.call(ir.InlineAsm(fn, "cvt.rn.bf16x2.f32 $0, $1, $2;", "=r,f,f"), [hi, lo])


def f16_from_f32(b: ir.IRBuilder, x):
    fn = ir.FunctionType(I16, [F32])
    return b.call(ir.InlineAsm(fn, "cvt.rn.f16.f32 $0, $1;", "=h,f"), [x])


def prmt(b: ir.IRBuilder, a, c, selector: int):
    """`prmt.b32`: four bytes picked from the eight of a (0-3) and c (4-7)."""
    fn = ir.FunctionType(I32, [I32, I32])
    return b.call(ir.InlineAsm(fn, f"prmt.b32 $0, $1, $2, {selector:#x};", "=r,r,r"), [a, c])


def shuffle_xor(b: ir.IRBuilder, value_i32, lane_mask: int):
    fn = ir.FunctionType(I32, [I32])
    asm = ir.InlineAsm(fn, f"shfl.sync.bfly.b32 $0, $1, {lane_mask}, 0x1f, 0xffffffff;", "=r,r")
    return b.call(asm, [value_i32])


def shuffle_up(b: ir.IRBuilder, value_i32, delta: int):
    """`shfl.sync.up`: the value of lane laneid - delta (a lane below delta keeps its own)."""
    fn = ir.FunctionType(I32, [I32])
    asm = ir.InlineAsm(fn, f"shfl.sync.up.b32 $0, $1, {delta}, 0, 0xffffffff;", "=r,r")
    return b.call(asm, [value_i32])


def shuffle_idx(b: ir.IRBuilder, value_i32, src_lane: int, segmask: int):
    """`shfl.sync.idx` from lane (laneid & segmask) | src_lane: the lanes that agree on the
    segmask bits form one group, and src_lane picks a lane of it (both immediates)."""
    fn = ir.FunctionType(I32, [I32])
    c = (segmask & 0x1F) << 8 | 0x1F
    asm = ir.InlineAsm(fn, f"shfl.sync.idx.b32 $0, $1, {src_lane}, {c:#x}, 0xffffffff;", "=r,r")
    return b.call(asm, [value_i32])


def barrier(b: ir.IRBuilder):
    b.call(ir.InlineAsm(ir.FunctionType(ir.VoidType(), []), "bar.sync 0;", "", side_effect=True),
           [])
