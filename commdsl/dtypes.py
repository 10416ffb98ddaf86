"""The element types of the language, in one table.

Each row: the name in .cdsl source, its width in bits, its kind, and the torch dtype that
holds it. Nothing here imports torch, so the compiler starts fast.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class DType:
    name: str
    bits: int
    kind: str            # 'float', 'int', 'uint', 'scale' (an exponent-only scale format)
    torch_name: str

    @property
    def bytes(self) -> int:
        return self.bits // 8

    @property
    def is_float(self) -> bool:
        return self.kind == "float"


    @property
    def is_int(self) -> bool:
        return self.kind in ("int", "uint")

    def __str__(self):
        return self.name


_TABLE = [
    DType("f32", 32, "float", "float32"),
    DType("f16", 16, "float", "float16"),
    DType("bf16", 16, "float", "bfloat16"),
    DType("e4m3", 8, "float", "float8_e4m3fn"),
    DType("e5m2", 8, "float", "float8_e5m2"),
    DType("i64", 64, "int", "int64"),
    DType("i32", 32, "int", "int32"),
    DType("i16", 16, "int", "int16"),
    DType("i8", 8, "int", "int8"),
    DType("u8", 8, "uint", "uint8"),
    DType("bool", 8, "uint", "bool"),
    # OCP E8M0 ("UE8M0"): a power-of-two scale, one byte = the biased exponent (2^(b - 127),
    # 0xFF = NaN). Held in torch.uint8 tensors; torch's uint8 maps back to u8 (listed first).
    DType("ue8m0", 8, "scale", "uint8"),
]

DTYPES: dict[str, DType] = {d.name: d for d in _TABLE}

# Largest finite value of each FP8 format: the saturation bound of the conversion.
FP8_MAX = {"e4m3": 448.0, "e5m2": 57344.0}
# Largest finite value of every float format, for `max_finite<T>()`.
MAX_FINITE = {**FP8_MAX, "bf16": 3.3895313892515355e38, "f16": 65504.0,
              "f32": 3.4028234663852886e38}


def dtype(name: str) -> DType:
    return DTYPES[name]


def torch_dtype(name: str):
    import torch
    return getattr(torch, DTYPES[name].torch_name)
