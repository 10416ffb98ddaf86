"""The SASS of a cubin (`cuobjdump -sass`) and the opcodes it is made of: what a kernel author
reads after the ptxas report, before tuning (`commdsl check --sass`)."""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from collections import Counter
from pathlib import Path

from ..diagnostics import ToolError
from .ptxas import find_ptxas

# "        /*0120*/                   IMAD.WIDE.U32 R24, R19, UR5, R4 ;"
# -> (address, opcode, operands)
_INSTRUCTION = re.compile(r"^\s*/\*([0-9a-f]{4,})\*/\s+(?:@!?U?P[0-7T]\s+)?([A-Z][A-Z0-9_]*)"
                          r"([^;\n]*)", re.MULTILINE)
_BRANCH_TARGET = re.compile(r"\b0x([0-9a-f]+)\s*$")


def find_tool(name: str) -> str:
    """cuobjdump or nvdisasm: PATH, $CUDA_HOME/bin, /usr/local/cuda/bin, or beside the ptxas
    that commdsl runs (triton's wheel carries all three)."""
    candidates = [shutil.which(name)]
    if os.environ.get("CUDA_HOME"):
        candidates.append(os.path.join(os.environ["CUDA_HOME"], "bin", name))
    candidates.append(f"/usr/local/cuda/bin/{name}")
    try:
        candidates.append(os.path.join(os.path.dirname(find_ptxas()), name))
    except ToolError:
        pass
    for path in candidates:
        if path and os.path.isfile(path) and os.access(path, os.X_OK):
            return path
    raise ToolError(f"{name} not found (looked at PATH, $CUDA_HOME/bin, /usr/local/cuda/bin and "
                    "beside ptxas); install the CUDA toolkit, or `pip install triton`, whose "
                    "wheel carries it")


def disassemble(cubin: bytes, function: str | None = None) -> str:
    """The SASS of `function` in `cubin` (of every function if None)."""
    cuobjdump = find_tool("cuobjdump")
    # cuobjdump runs nvdisasm, which it looks for on PATH
    env = dict(os.environ, PATH=os.pathsep.join(
        [os.path.dirname(find_tool("nvdisasm")), os.environ.get("PATH", "")]))
    with tempfile.TemporaryDirectory(prefix="commdsl-sass-") as tmp:
        path = os.path.join(tmp, "kernel.cubin")
        Path(path).write_bytes(cubin)
        only = ["-fun", function] if function else []
        proc = subprocess.run([cuobjdump, "-sass", *only, path], stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True, env=env)
    if proc.returncode != 0:
        raise ToolError(f"cuobjdump -sass failed (exit {proc.returncode}):\n{proc.stdout.rstrip()}")
    return proc.stdout


def opcodes(sass: str) -> Counter:
    """How many instructions of each opcode (its name before the first modifier) the SASS
    holds, predicated ones included."""
    return Counter(name for _, name, _ in _INSTRUCTION.findall(sass))


def mma_loops(sass: str) -> list[tuple[Counter, int]]:
    """Per innermost loop that issues wgmmas, (its opcodes, how many wgmma groups an
    iteration commits), in the listing's order: what a GEMM's K loop costs a warp, its waits,
    descriptors, scale loads and promotion FFMAs beside the wgmmas. A loop is a backward
    branch and the code it jumps back over, before the last EXIT (after it ptxas puts the
    slow paths of barrier waits, which jump back into the loops); innermost: it holds no
    other such loop. A group's last wgmma (QGMMA fp8, HGMMA f16/bf16/tf32, IGMMA int8)
    carries gsb0. A pass that unrolls a loop makes one iteration several groups, and may
    leave a plain copy beside it (for the last steps)."""
    rows = [(int(a, 16), name, rest) for a, name, rest in _INSTRUCTION.findall(sass)]
    exits = [i for i, (_, name, _) in enumerate(rows) if name == "EXIT"]
    hot = rows[:exits[-1]] if exits else rows
    loops = []
    for end, (address, name, rest) in enumerate(hot):
        target = _BRANCH_TARGET.search(rest.strip()) if name == "BRA" else None
        if target and int(target.group(1), 16) < address:
            start = next(i for i, row in enumerate(hot) if row[0] >= int(target.group(1), 16))
            groups = sum(1 for _, n, r in hot[start:end + 1]
                         if n in ("QGMMA", "HGMMA", "IGMMA") and "gsb0" in r)
            if groups:
                loops.append((start, end, groups))
    innermost = [(s, e, g) for s, e, g in loops
                 if not any(s <= s2 and e2 <= e and (s2, e2) != (s, e) for s2, e2, _ in loops)]
    return [(Counter(name for _, name, _ in hot[s:e + 1]), g) for s, e, g in innermost]


def global_loads(sass: str) -> tuple[list[int], int]:
    """(the position of each global load (LDG) among the instructions, the position of the
    last EXIT): how early ptxas issues a thread's loads. It places a load near its first use
    when it can, so in a kernel of one tile the loads of the later rows wait behind the math
    of the first ones."""
    names = [name for _, name, _ in _INSTRUCTION.findall(sass)]
    exits = [i for i, name in enumerate(names) if name == "EXIT"]
    return [i for i, name in enumerate(names) if name == "LDG"], exits[-1] if exits else len(names)
