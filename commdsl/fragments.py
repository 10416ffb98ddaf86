"""The register fragment of a warpgroup MMA accumulator: which consumer thread holds which
element of an f32 [BM, BN] tile that `wgmma.mma_async` m64nNk32 writes.

Consumer warpgroup c (of C; warpgroup 0 is the TMA producer, so c = tid / 128 - 1) owns W
m64 blocks of rows, one wgmma wave each (BM = 64 C W: W = 2 for DeepGEMM's 256-row tiles on
two warpgroups), rows 64 (c W + v) .. 64 (c W + v) + 63 for wave v. In a wave, thread
t = 32 w + l holds rows r0 = 16 w + l / 4 and r0 + 8, and columns 8 q + 2 (l % 4) + {0, 1}
for q < BN / 8 (PTX ISA "wgmma register fragment"; reference §3.3, checked on an H100).

As a layout it counts slots like a Blocked one (rows: 2 W; columns: pairs, BN / 8 of them),
so elementwise ops, broadcasts and `Sliced` row vectors work unchanged; only the
coordinates differ, and the backend computes them from `FragmentDim.axis`.
"""
from __future__ import annotations

from dataclasses import dataclass

from .layout import DimMap

WARPGROUP_ROWS = 64               # the accumulator rows of one wgmma (a warpgroup's wave)


@dataclass(frozen=True)
class FragmentDim(DimMap):
    """A dimension of an accumulator fragment (`axis` 0: rows, 1: columns)."""
    axis: int = 0


@dataclass(frozen=True)
class WgmmaAcc:
    """The fragment of a tile whose rows `warpgroups` consumer warpgroups share; the waves
    each takes follow from the tile's rows (waves())."""
    warpgroups: int

    def dims(self, shape: tuple[int, ...]) -> list[DimMap]:
        rows, cols = shape
        c = self.warpgroups
        return [FragmentDim(rows, 1, 8, 4 * c, 4, 1, axis=0) if rows > 1
                else DimMap(1, 1, 1, 1, 1, 1),
                FragmentDim(cols, 2, 4, 1, 1, 1, axis=1) if cols > 1
                else DimMap(1, 1, 1, 1, 1, 1)]

    def __str__(self):
        return f"wgmma_acc<warpgroups={self.warpgroups}>"


def waves(m: DimMap) -> int:
    """The m64 row blocks each warpgroup holds of a fragment's rows dimension."""
    return max(1, m.size // (WARPGROUP_ROWS * m.wpc // 4))
