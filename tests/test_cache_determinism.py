"""Processes that compile one kernel at once into an empty cache leave an entry the next load
uses. They all write the entry's files, so those must be the same bytes in every process:
an entry whose manifest vouches for another process's spec file is a miss, and the next
load compiles again.

In CI: 8 processes x 3 rounds all compiling, and 4 x 3 loading as users do (each compiles
or takes a finished entry). Issue 17's 8 processes x 20 rounds, both ways (about 3 minutes
on 2 cores):  COMMDSL_CACHE_ROUNDS=20 pytest tests/test_cache_determinism.py"""
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
LONG = os.environ.get("COMMDSL_CACHE_ROUNDS")
PROCESSES, ROUNDS = 8, int(LONG or 3)
LOADING_PROCESSES = 8 if LONG else 4

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


def assert_one_valid_entry_the_next_load_uses(cache: str, monkeypatch):
    store = CompileCache(os.path.join(cache, "kernels"))
    entries = store.entries()
    assert len(entries) == 1 and entries[0]["kernel"] == "copy_nc"
    assert store.get(entries[0]["key"]) is not None, "the entry fails its checksums"

    def compile_variant(*args, **kwargs):
        raise AssertionError("the next load compiled the kernel again")

    monkeypatch.setenv("COMMDSL_CACHE_DIR", cache)
    monkeypatch.setattr(kernel_module, "compile_variant", compile_variant)
    assert commdsl.load(COPY_NC).name == "copy_nc"


@pytest.mark.parametrize("round_", range(ROUNDS))
def test_processes_compiling_at_once_leave_an_entry_the_next_load_uses(round_, tmp_path,
                                                                      monkeypatch):
    cache = str(tmp_path / "cache")
    manifests = compile_at_once(cache, tmp_path)
    assert len(set(manifests)) == 1, "processes wrote different bytes:\n" + "\n".join(
        json.dumps(json.loads(m), indent=1) for m in set(manifests))
    assert_one_valid_entry_the_next_load_uses(cache, monkeypatch)


# A user's load: from the cache where an entry is already whole, else compiled and stored.
LOADER = """
import os, sys, time
import commdsl
from commdsl.runtime.cache import compiler_fingerprint
compiler_fingerprint()
while not os.path.exists(sys.argv[1]):
    time.sleep(0.001)
print(commdsl.load(sys.argv[2]).name)
"""


@pytest.mark.parametrize("round_", range(ROUNDS))
def test_processes_loading_at_once_into_an_empty_cache(round_, tmp_path, monkeypatch):
    """Each process compiles or takes the entry; none fails, and every round leaves one
    valid entry that the next load takes without compiling (0 recompiles)."""
    cache, go = str(tmp_path / "cache"), tmp_path / "go"
    env = {**os.environ, "COMMDSL_CACHE_DIR": cache, "COMMDSL_LOG": "info"}
    env.pop("COMMDSL_ALWAYS_COMPILE", None)
    children = [subprocess.Popen([sys.executable, "-c", LOADER, str(go), COPY_NC], env=env,
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                for _ in range(LOADING_PROCESSES)]
    go.touch()
    for child in children:
        out, err = child.communicate(timeout=120)
        assert child.returncode == 0 and out.strip() == "copy_nc", err
        assert ("cache hit" in err) != ("cache miss" in err), err
        assert "Warning" not in err and "could not write" not in err, err
    assert_one_valid_entry_the_next_load_uses(cache, monkeypatch)


def test_the_ptxas_report_keeps_nothing_that_differs_between_runs():
    folder = os.path.join("/tmp", "commdsl-ptxas-k2x9")
    log = (f"ptxas {folder}/kernel.ptx, line 12; warning : Unused register\n"
           "ptxas info    : Used 8 registers, used 0 barriers\n"
           "ptxas info    : Compile time = 12.177 ms\n")
    assert reproducible_log(log, folder) == ("ptxas kernel.ptx, line 12; warning : Unused "
                                             "register\nptxas info    : Used 8 registers, used "
                                             "0 barriers\n")
