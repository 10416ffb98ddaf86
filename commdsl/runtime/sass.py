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
_INSTRUCTION = re.compile(r"^\s*/\*[0-9a-f]{4,}\*/\s+(?:@!?U?P[0-7T]\s+)?([A-Z][A-Z0-9_]*)",
                          re.MULTILINE)


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
    return Counter(_INSTRUCTION.findall(sass))


def global_loads(sass: str) -> tuple[list[int], int]:
    """(the position of each global load (LDG) among the instructions, the position of the
    last EXIT): how early ptxas issues a thread's loads. It places a load near its first use
    when it can, so in a kernel of one tile the loads of the later rows wait behind the math
    of the first ones."""
    names = _INSTRUCTION.findall(sass)
    exits = [i for i, name in enumerate(names) if name == "EXIT"]
    return [i for i, name in enumerate(names) if name == "LDG"], exits[-1] if exits else len(names)
