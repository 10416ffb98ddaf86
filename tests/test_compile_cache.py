"""The on-disk compile cache: keys, hits that skip the compiler, corruption, concurrency."""
import glob
import hashlib
import json
import os
import subprocess
import sys
import textwrap

import pytest

import commdsl
from commdsl import kernel as kernel_module
from commdsl.runtime import cache as cache_module
from commdsl.runtime.cache import CachedKernel, CompileCache, cache_key
from commdsl.runtime.codec import decode, encode

EXAMPLES = os.path.join(os.path.dirname(__file__), "..", "examples")
ACT_QUANT = os.path.join(EXAMPLES, "act_quant.cdsl")
COPY_NC = os.path.join(EXAMPLES, "copy_nc.cdsl")
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("COMMDSL_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache"


def entries(root) -> list[str]:
    return sorted(glob.glob(os.path.join(root, "kernels", "*", "*")))


def forbid_compiling(monkeypatch):
    def fail(*args, **kwargs):
        raise AssertionError("the compiler ran on a cache hit")
    monkeypatch.setattr(kernel_module, "compile_variant", fail)


def test_second_load_is_served_from_the_cache(monkeypatch, private_cache):
    first = commdsl.load(ACT_QUANT, ROWS=4)
    assert len(entries(private_cache)) == 1
    forbid_compiling(monkeypatch)
    second = commdsl.load(ACT_QUANT, ROWS=4)
    assert second.ptx == first.ptx
    assert second.spec == first.spec
    assert second._default.artifact.cubin == first._default.artifact.cubin
    assert second.resources == first.resources


def test_cached_load_in_a_new_process_imports_no_compiler(private_cache):
    commdsl.load(COPY_NC)
    script = textwrap.dedent(f"""
        import sys, commdsl
        kernel = commdsl.load({COPY_NC!r})
        heavy = [m for m in ("lark", "llvmlite", "commdsl.compiler", "commdsl.parser", "torch")
                 if m in sys.modules]
        print(kernel.name, heavy)
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         env={**os.environ, "COMMDSL_CACHE_DIR": str(private_cache)}, check=True)
    assert out.stdout.strip() == "copy_nc []", out.stderr


def test_key_covers_everything_that_changes_the_output(monkeypatch):
    text = open(ACT_QUANT).read()
    base = dict(text=text, path=ACT_QUANT, kernel=None, constants={"ROWS": 4},
                target="sm_90a", unaligned_sizes=frozenset())
    key = cache_key(**base)
    assert cache_key(**base) == key
    variations = [
        dict(text=text + "\n"), dict(path="other.cdsl"), dict(kernel="act_quant"),
        dict(constants={"ROWS": 8}), dict(constants={"ROWS": 4.0}),
        dict(constants={"ROWS": 4, "WARPS": 4}), dict(target="sm_90"),
        dict(unaligned_sizes=frozenset({"K"})),
    ]
    keys = {cache_key(**{**base, **change}) for change in variations}
    assert len(keys) == len(variations) and key not in keys
    # A change to the compiler itself (or to llvmlite or ptxas) is a new key too.
    monkeypatch.setattr(cache_module, "compiler_fingerprint", lambda: "a different compiler")
    assert cache_key(**base) != key


def test_fingerprint_hashes_the_compiler_sources_and_toolchain():
    files = cache_module._compiler_files()
    names = {os.path.basename(path) for path in files.values()}
    assert {"compiler.py", "codegen.py", "manager.py", "commdsl.lark"} <= names
    assert "ptxas" in cache_module._ptxas_identity()
    assert cache_module._llvmlite_identity().startswith("llvmlite ")


def test_spec_round_trips_through_json():
    spec = commdsl.load(ACT_QUANT).spec
    data = json.loads(json.dumps(encode(spec)))
    assert decode(data) == spec
    assert any(t.quant is not None for t in decode(data).tensors)


def test_codec_refuses_what_it_cannot_rebuild():
    with pytest.raises(TypeError, match="cannot store a bytearray"):
        encode(bytearray(b"x"))
    with pytest.raises(ValueError, match="not a commdsl class"):
        decode({"__dataclass__": "os:PathLike", "fields": {}})


@pytest.mark.parametrize("damage", ["truncate cubin", "flip ptx", "drop spec", "bad manifest",
                                    "foreign key"])
def test_a_damaged_entry_is_a_miss_and_is_rebuilt(damage, private_cache):
    kernel = commdsl.load(COPY_NC, BLOCK=2048)
    (folder,) = entries(private_cache)
    key = os.path.basename(folder)
    path = {"truncate cubin": "copy_nc.cubin", "flip ptx": "copy_nc.ptx",
            "drop spec": "copy_nc.spec.json"}.get(damage, "manifest.json")
    path = os.path.join(folder, path)
    data = open(path, "rb").read()
    if damage == "truncate cubin":
        data = data[: len(data) // 2]
    elif damage == "flip ptx":
        data = data.replace(b"ld.global", b"ld.glabol", 1)
    elif damage == "bad manifest":
        data = data[:-5]
    elif damage == "foreign key":
        data = data.replace(key.encode(), b"0" * len(key))
    if damage == "drop spec":
        os.unlink(path)
    else:
        open(path, "wb").write(data)
    assert CompileCache().get(key) is None
    rebuilt = commdsl.load(COPY_NC, BLOCK=2048)
    assert rebuilt.ptx == kernel.ptx
    assert CompileCache().get(key) is not None


def test_entry_without_cubin_round_trips(tmp_path):
    spec = commdsl.load(COPY_NC).spec
    store = CompileCache(str(tmp_path / "k"))
    store.put("ab" * 32, CachedKernel(spec, ".version 8.0\n", None, None))
    got = store.get("ab" * 32)
    assert (got.spec, got.ptx, got.cubin, got.resources) == (spec, ".version 8.0\n", None, None)


def test_unaligned_size_variant_is_cached_separately(monkeypatch, private_cache):
    kernel = commdsl.load(COPY_NC)
    scalar = kernel.variant(frozenset({"N"}))
    assert ".v4.b32" not in scalar.artifact.ptx and ".v4.b32" in kernel.ptx
    assert len(entries(private_cache)) == 2
    forbid_compiling(monkeypatch)
    again = commdsl.load(COPY_NC).variant(frozenset({"N"}))
    assert again.artifact.ptx == scalar.artifact.ptx


CONCURRENT = textwrap.dedent("""
    import hashlib, sys
    import commdsl
    print("ready", flush=True)
    sys.stdin.readline()                       # both start compiling when the test says go
    kernel = commdsl.load(sys.argv[1], ROWS=2, WARPS=2)
    compiled = "lark" in sys.modules           # it parsed: it did not find the other's entry
    print(hashlib.sha256(kernel._default.artifact.cubin + kernel.ptx.encode()).hexdigest(),
          compiled)
""")


def test_two_processes_compiling_one_kernel_both_succeed(private_cache):
    env = {**os.environ, "COMMDSL_CACHE_DIR": str(private_cache)}
    procs = [subprocess.Popen([sys.executable, "-c", CONCURRENT, ACT_QUANT], env=env,
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(2)]
    for p in procs:
        assert p.stdout.readline().strip() == "ready", p.stderr.read()
    for p in procs:
        p.stdin.write("go\n")
        p.stdin.flush()
    outs = [p.communicate(timeout=120) for p in procs]
    for p, (out, err) in zip(procs, outs):
        assert p.returncode == 0, err
    results = [out.split() for out, _ in outs]
    assert [compiled for _, compiled in results] == ["True", "True"], "no race was exercised"
    digests = {digest for digest, _ in results}
    assert len(digests) == 1
    (folder,) = entries(private_cache)
    assert not [n for n in os.listdir(folder) if n.endswith(".tmp")]
    entry = CompileCache().get(os.path.basename(folder))
    assert entry is not None
    assert hashlib.sha256(entry.cubin + entry.ptx.encode()).hexdigest() == digests.pop()


def test_unwritable_cache_warns_and_still_loads(monkeypatch):
    def refuse(self, key, entry):
        raise PermissionError(13, "Permission denied")
    monkeypatch.setattr(CompileCache, "put", refuse)
    with pytest.warns(UserWarning, match="COMMDSL_CACHE_DIR"):
        kernel = commdsl.load(COPY_NC, BLOCK=1024)
    assert kernel.name == "copy_nc"
