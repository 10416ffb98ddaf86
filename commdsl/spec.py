"""What a compiled kernel tells the runtime: its parameters, sizes, grid and resources.

This is the contract between the compiler and `commdsl.runtime`: the PTX entry takes, in
order, one `.u64` global pointer per tensor parameter (declaration order), then one `.u32`
per size symbol in `size_symbols` order.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from .dims import Dim


@dataclass(frozen=True)
class QuantGroup:
    """`quant(G0 x G1, scale = s)`: one scale in tensor `scale` per G0 x G1 block."""
    group: tuple[int, ...]
    scale: str


@dataclass(frozen=True)
class TensorParam:
    name: str
    dtype: str                    # commdsl dtype name: bf16, f16, f32, e4m3, e5m2, i32, u8, ...
    dims: tuple[Dim, ...]
    is_out: bool = False
    quant: QuantGroup | None = None


@dataclass(frozen=True)
class KernelSpec:
    name: str
    tensors: tuple[TensorParam, ...]
    size_symbols: tuple[str, ...]
    grid: tuple[Dim, ...]         # one to three entries, x first
    num_threads: int
    shared_bytes: int = 0
    target: str = "sm_90a"
    constants: dict[str, int | float] = field(default_factory=dict)
    source_path: str = "<string>"

    @property
    def inputs(self) -> tuple[TensorParam, ...]:
        return tuple(t for t in self.tensors if not t.is_out)

    @property
    def outputs(self) -> tuple[TensorParam, ...]:
        return tuple(t for t in self.tensors if t.is_out)
