"""What a compiled kernel tells the runtime: its parameters, sizes, grid and resources.

This is the contract between the compiler and `commdsl.runtime`: the PTX entry takes, in
order, one `.u64` global pointer per tensor parameter (declaration order), then one `.u32`
per size symbol in `size_symbols` order, and last (after any communication parameters) one
CUtensorMap by value (`.param .align 64 .b8 [128]`) per entry of `tensor_maps`, which the
runtime encodes for each call's tensors.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from .dims import Dim
from .target import DEFAULT_TARGET

# The runtime specializes each kernel on which sizes are multiples of this (as Triton does),
# so accesses along them can be 16-byte vectors.
SPECIALIZE_DIVISOR = 16


# The trailing entry parameters of a communication kernel, in order: this rank, the number of
# ranks, the call's epoch (every rank's n-th communication launch has the same one), how long a
# wait may spin (ns), and where a wait that timed out reports (i32[4]: 1, flag index, epoch,
# value seen).
COMM_PARAMS = (("rank", "u32"), ("world", "u32"), ("epoch", "u32"), ("timeout_ns", "u64"),
               ("status", "ptr"))


@dataclass(frozen=True)
class QuantGroup:
    """`quant(G0 x G1, scale = s)`: one scale in tensor `scale` per G0 x G1 block, stored
    as `format` (f32, or ue8m0 for power-of-two scales in one byte), row by row (`k_major`)
    or transposed with a 16-byte-aligned row pitch (`mn_major`; ue8m0 scales are then
    packed four to an i32)."""
    group: tuple[int, ...]
    scale: str
    format: str = "f32"
    layout: str = "k_major"


@dataclass(frozen=True)
class TensorParam:
    name: str
    dtype: str                    # commdsl dtype name: bf16, f16, f32, e4m3, e5m2, i32, u8, ...
    dims: tuple[Dim, ...]
    is_out: bool = False
    quant: QuantGroup | None = None
    # `sym`: allocated on every rank (runtime/symmetric.py); the entry takes a pointer to a
    # table of each rank's base address instead of the tensor's own.
    symmetric: bool = False


# TMA's rule for a tensor map (cuTensorMapEncodeTiled): row strides, and the base address,
# are multiples of 16 bytes.
TMA_ALIGNMENT = 16


@dataclass(frozen=True)
class TensorMapParam:
    """A TMA tensor map over a row-major tensor parameter of rank 2 to 5: `box` = (rows,
    columns) per copy, the columns along its last dimension and the rows along dimension
    `rows_dim` (counted from the end: -2 is the one before the columns; one element deep in
    every other), landing in shared memory 128B-swizzled (so a box row is at most 128
    bytes)."""
    tensor: str
    box: tuple[int, int]
    swizzle: int = 128
    rows_dim: int = -2


@dataclass(frozen=True)
class KernelSpec:
    name: str
    tensors: tuple[TensorParam, ...]
    size_symbols: tuple[str, ...]
    grid: tuple[Dim, ...]         # one to three entries, x first
    num_threads: int
    shared_bytes: int = 0
    target: str = DEFAULT_TARGET
    constants: dict[str, int | float] = field(default_factory=dict)
    source_path: str = "<string>"
    # A communication kernel (peer access, signals, waits, rank/world/epoch): after the sizes
    # its entry takes COMM_PARAMS, which runtime/symmetric.py fills.
    comm: bool = False
    tensor_maps: tuple[TensorMapParam, ...] = ()

    @property
    def inputs(self) -> tuple[TensorParam, ...]:
        return tuple(t for t in self.tensors if not t.is_out)

    @property
    def outputs(self) -> tuple[TensorParam, ...]:
        return tuple(t for t in self.tensors if t.is_out)
