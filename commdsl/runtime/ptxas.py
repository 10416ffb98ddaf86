"""Assemble PTX to a cubin with ptxas and read back what the kernel costs.

`assemble` is the one place the runtime shells out to ptxas. Its `-v` report (registers,
spills, stack, static smem) and its performance notes (C75xx: serialized wgmma, ignored
setmaxnreg, injected warpgroup.arrive) are what a kernel author looks at first, so they come
back parsed in a `ResourceReport`.
"""
from __future__ import annotations

import hashlib
import importlib.util
import os
import re
import shlex
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from ..diagnostics import ToolError


def find_ptxas() -> str:
    """The ptxas to run: $COMMDSL_PTXAS, PATH, $CUDA_HOME, /usr/local/cuda, triton's copy."""
    override = os.environ.get("COMMDSL_PTXAS")
    if override:
        # An explicit setting that is wrong should fail loudly, not fall back silently.
        if not _is_executable(override):
            raise ToolError(f"COMMDSL_PTXAS={override} is not an executable ptxas")
        return override
    candidates = [shutil.which("ptxas")]
    if os.environ.get("CUDA_HOME"):
        candidates.append(os.path.join(os.environ["CUDA_HOME"], "bin", "ptxas"))
    candidates.append("/usr/local/cuda/bin/ptxas")
    candidates.append(_triton_ptxas())
    for path in candidates:
        if path and _is_executable(path):
            return path
    raise ToolError(
        "ptxas not found (looked at $COMMDSL_PTXAS, PATH, $CUDA_HOME/bin, /usr/local/cuda/bin "
        "and the triton wheel); install the CUDA toolkit (12.4 or newer), "
        "or `pip install nvidia-cuda-nvcc-cu12` / `pip install triton` and set "
        "COMMDSL_PTXAS=/path/to/ptxas")


def _triton_ptxas() -> str | None:
    # find_spec locates the package without importing it (importing triton is slow).
    spec = importlib.util.find_spec("triton")
    if spec is None or not spec.submodule_search_locations:
        return None
    return os.path.join(spec.submodule_search_locations[0], "backends", "nvidia", "bin", "ptxas")


def _is_executable(path: str) -> bool:
    return os.path.isfile(path) and os.access(path, os.X_OK)


@dataclass
class ResourceReport:
    """What ptxas -v says one entry function uses."""
    entry: str
    registers: int
    spill_stores_bytes: int
    spill_loads_bytes: int
    stack_bytes: int
    shared_bytes: int                 # static smem only; dynamic smem is the launch's business
    warnings: list[str] = field(default_factory=list)
    log: str = ""

    def summary(self) -> str:
        return (f"{self.entry}: {self.registers} registers, "
                f"{self.spill_stores_bytes} bytes spill stores, "
                f"{self.spill_loads_bytes} bytes spill loads, "
                f"{self.stack_bytes} bytes stack, {self.shared_bytes} bytes smem")


@dataclass
class Assembled:
    cubin: bytes
    report: ResourceReport


def assemble(ptx: str, arch: str = "sm_90a", entry: str | None = None) -> Assembled:
    """Run ptxas on `ptx`; return the cubin and the resource report of `entry`.

    `entry` may be omitted when the PTX has exactly one entry function."""
    ptxas = find_ptxas()
    with tempfile.TemporaryDirectory(prefix="commdsl-ptxas-") as tmp:
        ptx_path, cubin_path = os.path.join(tmp, "kernel.ptx"), os.path.join(tmp, "kernel.cubin")
        Path(ptx_path).write_text(ptx)
        cmd = [ptxas, f"-arch={arch}", "-v", "--warn-on-spills", "-o", cubin_path, ptx_path]
        proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        log = proc.stdout
        if proc.returncode != 0:
            saved = _save_failed(ptx, entry)
            # Point the log's line references and the repro command at the kept copy.
            log = log.replace(ptx_path, saved)
            repro = shlex.join([ptxas, f"-arch={arch}", "-v", "-o", os.devnull, saved])
            raise ToolError(f"ptxas failed (exit {proc.returncode}) for {arch}:\n{log.rstrip()}\n"
                            f"PTX saved to {saved}\nreproduce: {repro}")
        cubin = Path(cubin_path).read_bytes()
    return Assembled(cubin, parse_report(reproducible_log(log, tmp), entry))


# ptxas -v reports how long each entry took to compile: "ptxas info : Compile time = 12.2 ms".
_TIMING = re.compile(r"^[^\n]*Compile time = [^\n]*\n?", re.MULTILINE)


def reproducible_log(log: str, folder: str) -> str:
    """The log without what differs between runs on the same PTX: the timing lines and the
    temporary folder in file references. The compile cache stores the report, and processes
    that compile one kernel at once must write the same bytes (runtime/cache.py)."""
    return _TIMING.sub("", log).replace(folder + os.sep, "")


def _save_failed(ptx: str, entry: str | None) -> str:
    folder = Path(tempfile.gettempdir()) / "commdsl-failed"
    folder.mkdir(parents=True, exist_ok=True)
    name = entry or (_entry_names(ptx) or ["kernel"])[0]
    digest = hashlib.sha1(ptx.encode()).hexdigest()[:10]
    path = folder / f"{name}-{digest}.ptx"
    path.write_text(ptx)
    return str(path)


def _entry_names(ptx: str) -> list[str]:
    return re.findall(r"\.entry\s+([A-Za-z_$][\w$]*)", ptx)


_COMPILING = re.compile(r"Compiling entry function '([^']+)'")
# Performance notes come as "info" lines with a C-code, e.g. "(C7511) Potential Performance Loss".
_NOTE = re.compile(r"warning|\(C\d{4}\)", re.IGNORECASE)


def parse_report(log: str, entry: str | None = None) -> ResourceReport:
    """The ResourceReport of `entry` from a `ptxas -v` log."""
    entries = _COMPILING.findall(log)
    if entry is None:
        if len(entries) != 1:
            raise ToolError(f"ptxas compiled entries {entries}; say which one to report on "
                            f"(assemble(..., entry=NAME))\n{log}")
        entry = entries[0]
    elif entry not in entries:
        raise ToolError(f"ptxas did not compile an entry named '{entry}' "
                        f"(it compiled {entries})\n{log}")
    # The entry's own block runs from its "Compiling" line to the next one.
    start = log.index(f"Compiling entry function '{entry}'")
    following = _COMPILING.search(log, start + 1)
    block = log[start:following.start() if following else len(log)]

    props = re.search(rf"Function properties for {re.escape(entry)}\s*\n\s*(\d+) bytes stack frame,"
                      rf" (\d+) bytes spill stores, (\d+) bytes spill loads", block)
    used = re.search(r"Used (\d+) registers", block)
    smem = re.search(r"Used \d+ registers[^\n]*?(\d+) bytes smem", block)
    if props is None or used is None:
        raise ToolError(f"could not read the resource usage of '{entry}' from the ptxas log:\n{log}")
    stack, stores, loads = (int(g) for g in props.groups())
    warnings = [line.strip() for line in log.splitlines() if _NOTE.search(line)]
    return ResourceReport(entry=entry, registers=int(used.group(1)), spill_stores_bytes=stores,
                          spill_loads_bytes=loads, stack_bytes=stack,
                          shared_bytes=int(smem.group(1)) if smem else 0,
                          warnings=warnings, log=log)
