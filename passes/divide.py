"""Division by a broadcast divisor: one correctly rounded reciprocal per divisor, then a
multiply and an FMA correction per element, instead of a full division per element.

    q = x / b   where b = broadcast(d) or splat(d)   (a group's scale over its elements, or
                                                  a 128 x 128 block's one scale)
 -> r = recip(d)                (rcp.rn: the correctly rounded 1/d, once per divisor)
    q0 = x * r;  e = -fma(q0, b, -x);  q = fma(e, r, q0)

Markstein's theorem makes this exact: when r = RN(1/b) and q0 is within one ulp of x/b, the
residual e is computed exactly and q = RN(x/b), the IEEE quotient `/` promises, barring
underflow of e. Zeros keep their sign: FP8 data holds -0 (0x80), and -0 / b is -0. That only happens for |x/b| far below anything an FP8 or bf16 result can
represent, where both quotients convert to the same value. The per-element division was
the bottleneck of act_quant: about 10 instructions and a reciprocal per element.
"""
from __future__ import annotations

from commdsl.ir import Block, Builder, KernelIR, Op, TileType
from commdsl.target import Target


def _rewrite(op: Op, producers: dict[int, Op]) -> list[Op] | None:
    x, b = op.operands
    bcast = producers.get(b.id)
    if (op.result.type.dtype != "f32" or not isinstance(b.type, TileType)
            or bcast is None or bcast.name not in ("broadcast", "splat")):
        return None
    block = Block()
    builder = Builder(block, op.loc)
    if bcast.name == "splat":
        if producers.get(bcast.operands[0].id) is None or producers[bcast.operands[0].id].name == "const":
            return None                 # a literal divisor: one division per value is cheap
        rb = builder.value("splat", [builder.value("recip", [bcast.operands[0]],
                                                   bcast.operands[0].type)], b.type)
        return _correct(builder, op, x, b, rb)
    inner = bcast.operands[0]
    chain = [inner]
    while producers.get(chain[-1].id) is not None and producers[chain[-1].id].name == "expand_dims":
        chain.append(producers[chain[-1].id].operands[0])
    # The reciprocal is taken before any expand_dims/broadcast: once per divisor value.
    source = chain[-1]
    r = builder.value("recip", [source], source.type)
    for expand in reversed([producers[v.id] for v in chain[:-1]]):
        r = builder.value("expand_dims", [r], expand.result.type, axis=expand.attrs["axis"])
    rb = builder.value("broadcast", [r], b.type)
    return _correct(builder, op, x, b, rb)


def _correct(builder: Builder, op: Op, x, b, rb) -> list[Op]:
    """q0 = x * r, then one exact FMA correction; `op`'s result becomes q."""
    q0 = builder.value("mul", [x, rb], x.type)
    # e = x - q0 * b, written -(q0 * b - x) so that x = -0 gives e = -0 and q = -0, as
    # IEEE division does (fma(-q0, b, x) would give +0 + -0 = +0 and lose the sign).
    e = builder.value("neg", [builder.value("fma", [q0, b, builder.value("neg", [x], x.type)],
                                            x.type)], x.type)
    q = builder.op("fma", [e, rb, q0], [x.type])
    q.results = op.results                      # users keep reading the same value
    return builder.block.ops


def run(kernel: KernelIR, target: Target) -> KernelIR:
    producers = {r.id: op for op in kernel.walk() for r in op.results}
    new_ops: list[Op] = []
    for op in kernel.body.ops:
        replacement = _rewrite(op, producers) if op.name == "div" else None
        new_ops += replacement if replacement is not None else [op]
    kernel.body.ops = new_ops
    return kernel
