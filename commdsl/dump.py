"""COMMDSL_DUMP_DIR: every compile writes each stage of each kernel to files, as Triton's
TRITON_KERNEL_DUMP does. One folder per compile, named by the source file and a hash of what
was compiled; the files are numbered in pipeline order:

    act_quant-3f2a9c0d1e4b/00-source.cdsl
                           01-act_quant.ast.txt
                           02-act_quant.irgen.ir          the tile IR from irgen
                           03-act_quant.legalize.ir ...   the IR after each pass
                           16-module.ll, 17-module.ptx
                           18-act_quant.ptxas.txt          when ptxas ran

A kernel the compile cache holds is not compiled, so it is not dumped: add
COMMDSL_ALWAYS_COMPILE=1 to see it.
"""
from __future__ import annotations

import hashlib
import json
import os

from .config import dump_dir


class Dump:
    def __init__(self, folder: str):
        self.folder = folder
        self._count = 0

    @classmethod
    def start(cls, text: str, path: str, **what) -> "Dump | None":
        """The dump of one compile of `text` (with the settings `what`), or None when
        COMMDSL_DUMP_DIR is not set."""
        root = dump_dir()
        if root is None:
            return None
        described = json.dumps({"source": text, "path": path, **what}, sort_keys=True,
                               default=repr)
        digest = hashlib.sha256(described.encode()).hexdigest()[:12]
        stem = os.path.splitext(os.path.basename(path))[0].strip("<>") or "source"
        folder = os.path.join(root, f"{stem}-{digest}")
        os.makedirs(folder, exist_ok=True)
        dump = cls(folder)
        dump.write("source.cdsl", text)
        return dump

    def write(self, name: str, text: str) -> str:
        path = os.path.join(self.folder, f"{self._count:02d}-{name}")
        self._count += 1
        with open(path, "w") as f:
            f.write(text)
        return path

    def ptxas_report(self, report) -> str:
        """ptxas's ResourceReport: the summary, then its whole log."""
        return self.write(f"{report.entry}.ptxas.txt", f"{report.summary()}\n\n{report.log}")
