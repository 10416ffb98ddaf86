"""Text form of the tile IR, for `--emit ir`, `--print-after` and golden tests."""
from __future__ import annotations

from .ir import Block, KernelIR, Op, Value


def _name(v: Value, names: dict[int, str]) -> str:
    """Parameters keep their source names; other values are numbered from %0 in order."""
    if v.id not in names:
        numbered = sum(1 for n in names.values() if n[1:].isdigit())
        names[v.id] = f"%{v.name}" if v.name else f"%{numbered}"
    return names[v.id]


def _attr(v) -> str:
    if isinstance(v, dict):
        return "{" + ", ".join(f"{k} = {_attr(x)}" for k, x in v.items()) + "}"
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_attr(x) for x in v) + "]"
    if isinstance(v, str):
        return f'"{v}"'
    return str(v)


def print_op(op: Op, names: dict[int, str], indent: str = "  ") -> list[str]:
    lhs = ", ".join(_name(r, names) for r in op.results)
    args = ", ".join(_name(o, names) for o in op.operands)
    attrs = {k: v for k, v in op.attrs.items() if v is not None and not k.startswith("_")}
    text = f"{lhs} = " if lhs else ""
    text += f"{op.name}({args})"
    if attrs:
        text += " " + _attr(attrs)
    if op.results:
        text += " : " + ", ".join(str(r.type) for r in op.results)
    lines = [indent + text]
    for b in op.blocks:
        lines[-1] += " {"
        if b.args:            # block arguments: a loop's induction variable and carried values
            lines[-1] += " ^(" + ", ".join(f"{_name(a, names)}: {a.type}" for a in b.args) + ")"
        lines += print_block(b, names, indent + "  ")
        lines.append(indent + "}")
    return lines


def print_block(block: Block, names: dict[int, str], indent: str = "  ") -> list[str]:
    out = []
    for op in block.ops:
        out += print_op(op, names, indent)
    return out


def print_kernel(k: KernelIR) -> str:
    names: dict[int, str] = {}
    params = [f"{_name(t, names)}: {t.type}" for t in k.tensors]
    params += [f"{_name(s, names)}: i32" for s in k.sizes]
    grid = ", ".join(map(str, k.grid))
    head = f"kernel @{k.name}({', '.join(params)}) grid({grid})"
    if k.num_threads:
        head += f" threads({k.num_threads})"
    if k.shared_bytes:
        head += f" shared({k.shared_bytes})"
    return "\n".join([head + " {", *print_block(k.body, names), "}"]) + "\n"
