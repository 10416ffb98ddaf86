"""Processes that compile one kernel at once into an empty cache leave an entry the next load
uses. They all write the entry's files, so those must be the same bytes in every process:
an entry whose manifest vouches for another process's spec file is a miss, and the next
load compiles again."""
import json
import os
import subprocess
import sys

import pytest

import commdsl
from commdsl import kernel as kernel_module
from commdsl.runtime.cache import CompileCache
from commdsl.runtime.ptxas import reproducible_log

COPY_NC = os.path.join(os.path.dirname(__file__), "..", "examples", "copy_nc.cdsl")
PROCESSES, ROUNDS = 8, 3

# Each child compiles (COMMDSL_ALWAYS_COMPILE: no child takes another's entry, so all of them
# write it at about the same time), then stores its result in a private cache as well and
# prints that manifest: the checksums of exactly what it wrote into the shared one.
CHILD = """
import json, os, sys, time
import commdsl
from commdsl.runtime.cache import CompileCache, compiler_fingerprint
compiler_fingerprint()
go, private = sys.argv[1], sys.argv[2]
while not os.path.exists(go):
    time.sleep(0.001)
kernel = commdsl.load(sys.argv[3])
CompileCache(private).put("00", kernel._default.artifact)
with open(os.path.join(private, "00", "00", "manifest.json")) as f:
    print(json.dumps(json.load(f)["files"], sort_keys=True))
"""


def compile_at_once(cache: str, folder) -> list[str]:
    """PROCESSES children compiling copy_nc into `cache`, started together; their manifests."""
    go = folder / "go"
    children = []
    for i in range(PROCESSES):
        # A distinct hash seed each: set or dict order that depends on it must not leak out.
        env = {**os.environ, "COMMDSL_CACHE_DIR": cache, "COMMDSL_ALWAYS_COMPILE": "1",
               "PYTHONHASHSEED": str(i)}
        children.append(subprocess.Popen(
            [sys.executable, "-c", CHILD, str(go), str(folder / f"private{i}"), COPY_NC],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    go.touch()
    manifests = []
    for child in children:
        out, err = child.communicate(timeout=120)
        assert child.returncode == 0, err
        manifests.append(out.strip())
    return manifests


@pytest.mark.parametrize("round_", range(ROUNDS))
def test_processes_compiling_at_once_leave_an_entry_the_next_load_uses(round_, tmp_path,
                                                                      monkeypatch):
    cache = str(tmp_path / "cache")
    manifests = compile_at_once(cache, tmp_path)
    assert len(set(manifests)) == 1, "processes wrote different bytes:\n" + "\n".join(
        json.dumps(json.loads(m), indent=1) for m in set(manifests))

    store = CompileCache(os.path.join(cache, "kernels"))
    entries = store.entries()
    assert len(entries) == 1 and entries[0]["kernel"] == "copy_nc"
    assert store.get(entries[0]["key"]) is not None, "the entry fails its checksums"

    def compile_variant(*args, **kwargs):
        raise AssertionError("the next load compiled the kernel again")

    monkeypatch.setenv("COMMDSL_CACHE_DIR", cache)
    monkeypatch.setattr(kernel_module, "compile_variant", compile_variant)
    assert commdsl.load(COPY_NC).name == "copy_nc"


def test_the_ptxas_report_keeps_nothing_that_differs_between_runs():
    folder = os.path.join("/tmp", "commdsl-ptxas-k2x9")
    log = (f"ptxas {folder}/kernel.ptx, line 12; warning : Unused register\n"
           "ptxas info    : Used 8 registers, used 0 barriers\n"
           "ptxas info    : Compile time = 12.177 ms\n")
    assert reproducible_log(log, folder) == ("ptxas kernel.ptx, line 12; warning : Unused "
                                             "register\nptxas info    : Used 8 registers, used "
                                             "0 barriers\n")
