"""Maps tiles onto the threads of a CTA: picks the CTA size and a layout for every tile.

All tiles of one shape share one Blocked layout, so elementwise ops need no data movement.
Its innermost elements per thread are the narrowest vector any load or store of that shape
may use (passes/vectorize.py). A reduction's result is the Sliced layout of its operand,
and `t[:, None]` of such a result takes the parent layout back, which is what makes the
per-row scale of a quantization group free to broadcast.
"""
from __future__ import annotations

from commdsl.diagnostics import CompileError
from commdsl.ir import KernelIR, TileType
from commdsl.layout import Blocked, Sliced, choose_blocked
from commdsl.target import Target

DEFAULT_WARPS = 4


def _shape_vectors(kernel: KernelIR) -> dict[tuple[int, ...], int]:
    vec: dict[tuple[int, ...], int] = {}
    for op in kernel.walk():
        if op.name in ("load", "store"):
            tile = op.result.type if op.name == "load" else op.operands[-1].type
            if tile.shape:
                vec[tile.shape] = min(vec.get(tile.shape, 16), op.attrs["vec"])
    return vec


def run(kernel: KernelIR, target: Target) -> KernelIR:
    warps = kernel.attrs.get("warps") or DEFAULT_WARPS
    vectors = _shape_vectors(kernel)
    by_shape: dict[tuple[int, ...], Blocked] = {}
    splats = {op.result.id for op in kernel.walk() if op.name == "splat"}

    def blocked(shape):
        if shape not in by_shape:
            by_shape[shape] = choose_blocked(shape, vectors.get(shape, 1), warps)
        return by_shape[shape]

    for op in kernel.walk():
        for r in op.results:
            t = r.type
            if not isinstance(t, TileType):
                continue
            layout = blocked(t.shape)
            if op.name == "reduce":
                layout = Sliced(op.operands[0].type.layout, op.attrs["axis"])
            elif op.name in ("expand_dims", "broadcast", "convert", "abs", "neg", "recip") or (
                    op.name in ("add", "sub", "mul", "div", "rem", "max", "min", "fma")):
                layout = _propagated(op, layout, splats)
            r.type = t.with_layout(layout)
    kernel.num_threads = 32 * warps
    return kernel


def _propagated(op, default, splats: set[int]):
    """The layout an op's result inherits from its operands."""
    src = op.operands[0].type.layout
    if op.name == "expand_dims":
        if isinstance(src, Sliced) and src.axis == op.attrs["axis"]:
            return src.parent
        raise CompileError("this reshape needs data to move between threads, which commdsl "
                           "cannot do yet", op.loc,
                           "add the new axis where a reduction removed one, e.g. "
                           "amax(t, axis = 1)[:, None]")
    if op.name == "broadcast":
        if src != default:
            raise CompileError("this broadcast needs data to move between threads, which "
                               "commdsl cannot do yet", op.loc,
                               "broadcast a reduction's result back along its own axis")
        return default
    tiles = [o for o in op.operands if isinstance(o.type, TileType)]
    layouts = {o.type.layout for o in tiles if o.id not in splats}
    if len(layouts) == 1:
        # A splat of a scalar can take any layout: give it its partner's.
        for o in tiles:
            if o.id in splats:
                o.type = o.type.with_layout(next(iter(layouts)))
    if len(layouts) > 1:
        raise CompileError("operands are spread over threads differently", op.loc,
                           "combine tiles of the same shape, or a reduction's result "
                           "re-expanded with [:, None]")
    return layouts.pop() if layouts else default
