"""TMA tensor maps for a kernel's `via tma` loads: checked at bind time, encoded per call.

A CUtensorMap describes one tensor (address, shape, row stride) and the box a copy moves;
the kernel takes it by value as a `.param` (spec.TensorMapParam). Encoding costs a driver
call, so maps are cached per (address, sizes): repeated calls on the same tensors, the
usual case in a training step or a benchmark, reuse them. `cuTensorMapEncodeTiled` runs on
the host and needs no context.
"""
from __future__ import annotations

from ..dims import Sym
from ..dtypes import dtype as dtype_info
from ..spec import TMA_ALIGNMENT, KernelSpec
from . import driver

# How many (address, sizes) combinations to keep; the oldest goes first.
MAX_CACHED = 1024
_DATA_TYPES = {1: "UINT8", 2: "BFLOAT16", 4: "FLOAT32"}
_SWIZZLES = {0: "SWIZZLE_NONE", 32: "SWIZZLE_32B", 64: "SWIZZLE_64B", 128: "SWIZZLE_128B"}


class TensorMaps:
    def __init__(self, spec: KernelSpec):
        self.spec = spec
        index = {t.name: i for i, t in enumerate(spec.tensors)}
        self._params = [(index[m.tensor], spec.tensors[index[m.tensor]], m)
                        for m in spec.tensor_maps]
        self._cache: dict[tuple, list] = {}

    def check(self, fail, sizes: dict[str, int]) -> None:
        """Raises `fail(argument, message, hint)` for a tensor TMA cannot describe."""
        for _, t, m in self._params:
            row_bytes = t.dims[-1].evaluate(sizes) * dtype_info(t.dtype).bytes
            if row_bytes % TMA_ALIGNMENT:
                last = t.dims[-1]
                what = f"{last} = {sizes[last.name]}" if isinstance(last, Sym) else str(last)
                raise fail(t.name, f"rows of {row_bytes} bytes ({what}) are not a multiple of "
                           f"{TMA_ALIGNMENT}, which TMA needs for its row stride",
                           f"pad the last dimension to a multiple of "
                           f"{TMA_ALIGNMENT // dtype_info(t.dtype).bytes} elements")

    def addresses(self, pointers: list[int], sizes: list[int]) -> list[int]:
        """The host addresses of this call's CUtensorMaps, in spec.tensor_maps order."""
        key = (*pointers, *sizes)
        maps = self._cache.get(key)
        if maps is None:
            env = dict(zip(self.spec.size_symbols, sizes))
            maps = [self._encode(pointers[i], t, m, env) for i, t, m in self._params]
            if len(self._cache) >= MAX_CACHED:
                del self._cache[next(iter(self._cache))]
            self._cache[key] = maps
        return [tm.getPtr() for tm in maps]

    @staticmethod
    def _encode(pointer: int, t, m, env: dict[str, int]):
        """A map over the tensor's dimensions (innermost first, as the driver takes them):
        boxes of columns along the last, rows along `rows_dim`, one element deep in the rest."""
        cu = driver.cuda_driver()
        dims = [d.evaluate(env) for d in reversed(t.dims)]
        esize = dtype_info(t.dtype).bytes
        strides, stride = [], esize
        for d in dims[:-1]:
            stride *= d
            strides.append(stride)
        box = [m.box[1]] + [1] * (len(dims) - 1)
        box[-1 - m.rows_dim] = m.box[0]
        return driver.check(cu.cuTensorMapEncodeTiled(
            getattr(cu.CUtensorMapDataType, f"CU_TENSOR_MAP_DATA_TYPE_{_DATA_TYPES[esize]}"),
            len(dims), pointer,
            [cu.cuuint64_t(d) for d in dims], [cu.cuuint64_t(s) for s in strides],
            [cu.cuuint32_t(b) for b in box], [cu.cuuint32_t(1)] * len(dims),
            cu.CUtensorMapInterleave.CU_TENSOR_MAP_INTERLEAVE_NONE,
            getattr(cu.CUtensorMapSwizzle, f"CU_TENSOR_MAP_{_SWIZZLES[m.swizzle]}"),
            cu.CUtensorMapL2promotion.CU_TENSOR_MAP_L2_PROMOTION_L2_256B,
            # Out-of-bounds elements read as zero: ragged M and N tiles need no masking.
            cu.CUtensorMapFloatOOBfill.CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE),
            f"cuTensorMapEncodeTiled({t.name})")
