"""Writes docs/ir.md, the op reference, from the declarations:

    python -m commdsl.ops.docgen > docs/ir.md
"""
from __future__ import annotations

import importlib

from . import OPS

# Sections in pipeline order: what irgen makes first, what the late passes add last.
FAMILIES = ("arith", "math", "logic", "tiles", "memory", "control", "asynchronous", "mma", "comm")
COMMAND = "python -m commdsl.ops.docgen > docs/ir.md"


def _entry(d) -> list[str]:
    lines = [f"### `{d.name}`", "", f"    {d.syntax}", "", d.doc, ""]
    lines.append("Traits: " + (", ".join(sorted(d.traits)) or "none") + ".")
    if d.builtin:
        lines += ["", f"Called in commdsl as `{d.builtin.usage}`" +
                  (", on floats only." if d.builtin.floats_only else ".")]
    if d.attrs:
        lines += ["", "Attributes:", ""] + [f"- `{a}`: {m}" for a, m in d.attrs.items()]
    return lines + [""]


def generate() -> str:
    out = ["# The tile IR: op reference", "",
           f"Generated from the declarations in commdsl/ops/ by `{COMMAND}`; do not edit.",
           "An op's traits are what passes select it by (commdsl/ops/registry.py).", ""]
    for family in FAMILIES:
        module = importlib.import_module(f"{__package__}.{family}")
        out += [f"## {family}", "", module.__doc__.strip(), ""]
        for d in OPS.values():           # in declaration order: related ops side by side
            if d.family == family:
                out += _entry(d)
    return "\n".join(out).rstrip("\n") + "\n"


if __name__ == "__main__":
    print(generate(), end="")
