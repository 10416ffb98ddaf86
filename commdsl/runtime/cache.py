"""The on-disk compile cache: a second `commdsl.load` of a kernel reads files, compiles nothing.

An entry holds one compiled kernel variant: its PTX, its cubin (when ptxas was found), its
KernelSpec and ptxas's resource report. It lives under `cache_dir()/kernels` ($COMMDSL_CACHE_DIR,
default ~/.cache/commdsl):

    kernels/<key[:2]>/<key>/manifest.json     the entry's files and the sha256 of each
                           /<name>.ptx, <name>.cubin, <name>.spec.json

The key (`cache_key`) hashes everything that changes those files: the source text and path,
the kernel asked for, the constants, the target, which sizes are not multiples of 16, and
`compiler_fingerprint()` (commdsl's version, the compiler's own source files, llvmlite, and
the ptxas binary), as Triton's cache does. So an entry is never stale, only unused; nothing is
evicted, and deleting the folder is always safe.

Concurrency: each file is written under a temporary name and moved into place with
os.replace, which is atomic, and the manifest goes last, so a reader sees whole files or no
entry. Two processes building one key write identical bytes, so their writes may interleave
(which is why ptxas's report is kept without its timing lines: runtime/ptxas.py).
A reader checks every checksum; any mismatch (a truncated file, a rebuild half done) is a
miss, and the caller rebuilds and rewrites the entry.
"""
from __future__ import annotations

import functools
import glob
import hashlib
import json
import os
import secrets
import shutil
from dataclasses import dataclass
from importlib import util as importlib_util

from . import codec

FORMAT = 1
# Where the compiler's own code lives (the package-dir mapping makes these separate folders
# in a source checkout); any edit there changes what a kernel compiles to.
_COMPILER_PACKAGES = ("commdsl", "commdsl.passes", "commdsl.backends", "commdsl.grammar")
_COMPILER_SUFFIXES = (".py", ".lark")


@dataclass
class CachedKernel:
    """One compiled variant, as the cache stores it."""
    spec: object                # KernelSpec
    ptx: str
    cubin: bytes | None         # None where no ptxas was found; the driver JIT takes the PTX
    resources: object | None    # ptxas's ResourceReport, with the cubin


def cache_key(text: str, path: str, kernel: str | None, constants: dict, target: str,
              unaligned_sizes: frozenset[str], options: dict | None = None) -> str:
    """The entry name of one compile: sha256 of everything its output depends on."""
    parts = {
        "compiler": compiler_fingerprint(),
        "source": hashlib.sha256(text.encode()).hexdigest(),
        "path": path,                        # the spec records it, for messages
        "kernel": kernel,
        # repr keeps the type: ROWS=16 and ROWS=16.0 compile differently.
        "constants": sorted((name, repr(value)) for name, value in constants.items()),
        "target": target,
        "unaligned": sorted(unaligned_sizes),
    }
    if options:                              # compile options (compiler.OPTIONS)
        parts["options"] = sorted(options.items())
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()


@functools.cache
def compiler_fingerprint() -> str:
    """sha256 of commdsl's version, its compiler sources, llvmlite and ptxas (once a process)."""
    from ..version import __version__
    h = hashlib.sha256(f"commdsl {__version__}\n".encode())
    for name, path in sorted(_compiler_files().items()):
        h.update(name.encode() + b"\0")
        with open(path, "rb") as f:
            h.update(hashlib.sha256(f.read()).digest())
    h.update(_llvmlite_identity().encode())
    h.update(_ptxas_identity().encode())
    return h.hexdigest()


def _compiler_files() -> dict[str, str]:
    """Relative name -> path of every compiler source file (found without importing them)."""
    files = {}
    for package in _COMPILER_PACKAGES:
        spec = importlib_util.find_spec(package)
        for root in spec.submodule_search_locations or ():
            for folder, subfolders, names in os.walk(root):
                subfolders[:] = [d for d in subfolders if d != "__pycache__"]
                for name in names:
                    if name.endswith(_COMPILER_SUFFIXES):
                        path = os.path.join(folder, name)
                        files[os.path.join(package, os.path.relpath(path, root))] = path
    return files


def _llvmlite_identity() -> str:
    # importlib.metadata would cost ~20 ms; llvmlite's version file and its native library
    # (the LLVM that emits the PTX) identify it as well.
    spec = importlib_util.find_spec("llvmlite")
    if spec is None:
        return "llvmlite: none"
    root = spec.submodule_search_locations[0]
    with open(os.path.join(root, "_version.py"), "rb") as f:
        version = hashlib.sha256(f.read()).hexdigest()
    return f"llvmlite {version} {_stat_identity(os.path.join(root, 'binding', 'libllvmlite.so'))}"


def _ptxas_identity() -> str:
    # `ptxas --version` costs a process start; the binary's path, size and mtime change
    # whenever the ptxas that would run changes.
    from ..diagnostics import ToolError
    from .ptxas import find_ptxas
    try:
        path = find_ptxas()
    except ToolError:
        return "ptxas: none"
    return f"ptxas {os.path.realpath(path)} {_stat_identity(path)}"


def _stat_identity(path: str) -> str:
    try:
        st = os.stat(path)
    except OSError:
        return "missing"
    return f"{st.st_size}:{st.st_mtime_ns}"


class CompileCache:
    """Compiled kernel variants on disk, by `cache_key`."""

    def __init__(self, root: str | None = None):
        if root is None:
            from ..config import cache_dir
            folder = cache_dir()
            root = os.path.join(folder, "kernels") if folder else None
        self.root = root            # None: no usable cache folder, nothing is kept

    def entry_dir(self, key: str) -> str:
        return os.path.join(self.root, key[:2], key)

    def entries(self) -> list[dict]:
        """Every complete entry: {"key", "kernel", "bytes", "mtime"}, newest first."""
        found = []
        for manifest in glob.glob(os.path.join(self.root or "", "??", "*", "manifest.json")):
            folder = os.path.dirname(manifest)
            try:
                with open(manifest, "rb") as f:
                    kernel = json.loads(f.read()).get("kernel", "?")
                names = os.listdir(folder)
                size = sum(os.path.getsize(os.path.join(folder, n)) for n in names)
                mtime = os.path.getmtime(manifest)
            except (OSError, ValueError, AttributeError):
                continue            # removed or rewritten meanwhile
            found.append({"key": os.path.basename(folder), "kernel": kernel, "bytes": size,
                          "mtime": mtime})
        return sorted(found, key=lambda e: -e["mtime"])

    def clear(self) -> int:
        """Delete every entry; the number deleted."""
        count = len(self.entries())
        if self.root is not None:
            shutil.rmtree(self.root, ignore_errors=True)
        return count

    def get(self, key: str) -> CachedKernel | None:
        """The entry, or None if it is missing or fails any check."""
        if self.root is None:
            return None
        folder = self.entry_dir(key)
        try:
            with open(os.path.join(folder, "manifest.json"), "rb") as f:
                manifest = json.loads(f.read())
            if manifest.get("format") != FORMAT or manifest.get("key") != key:
                return None
            data = {role: _read_checked(folder, item)
                    for role, item in manifest["files"].items()}
            stored = json.loads(data["spec"])
            return CachedKernel(spec=codec.decode(stored["spec"]), ptx=data["ptx"].decode(),
                                cubin=data.get("cubin"),
                                resources=codec.decode(stored["resources"]))
        except (OSError, ValueError, KeyError, TypeError, AttributeError, ImportError):
            # A damaged or foreign entry is a miss: the caller rebuilds it.
            return None

    def put(self, key: str, entry: CachedKernel) -> None:
        """Write the entry: its files first, the manifest that vouches for them last."""
        if self.root is None:
            return
        folder = self.entry_dir(key)
        os.makedirs(folder, exist_ok=True)
        name = entry.spec.name
        stored = {"spec": codec.encode(entry.spec), "resources": codec.encode(entry.resources)}
        contents = {"ptx": (f"{name}.ptx", entry.ptx.encode()),
                    "spec": (f"{name}.spec.json", json.dumps(stored, indent=1).encode())}
        if entry.cubin is not None:
            contents["cubin"] = (f"{name}.cubin", entry.cubin)
        files = {}
        for role, (filename, data) in contents.items():
            atomic_write(os.path.join(folder, filename), data)
            files[role] = {"file": filename, "sha256": hashlib.sha256(data).hexdigest()}
        manifest = {"format": FORMAT, "key": key, "kernel": name, "files": files}
        atomic_write(os.path.join(folder, "manifest.json"),
                     json.dumps(manifest, indent=1).encode())


def _read_checked(folder: str, item: dict) -> bytes:
    if os.sep in item["file"] or item["file"].startswith("."):
        raise ValueError(f"bad file name in manifest: {item['file']!r}")
    with open(os.path.join(folder, item["file"]), "rb") as f:
        data = f.read()
    if hashlib.sha256(data).hexdigest() != item["sha256"]:
        raise ValueError(f"checksum mismatch: {item['file']}")
    return data


def atomic_write(path: str, data: bytes) -> None:
    """Replace `path` by `data` so no reader ever sees a partial file."""
    folder, name = os.path.split(path)
    # Unique per writer, in the same folder so os.replace stays a rename on one filesystem.
    tmp = os.path.join(folder, f".{name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
