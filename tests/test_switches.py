"""The environment switches (README "Switches"), `commdsl cache list|clear`, and the
messages for an unusable cache folder and a missing file."""
import os
import subprocess
import sys

import pytest
import torch

import commdsl
import quant_reference as R
from commdsl import kernel as kernel_module
from commdsl.kernel import InterpretedKernel
from commdsl.cli import main
from commdsl.diagnostics import CompileError, ToolError
from commdsl.passes import PASS_ORDER
from commdsl.runtime.ptxas import find_ptxas

EXAMPLES = os.path.join(os.path.dirname(__file__), "..", "examples")
ACT_QUANT = os.path.join(EXAMPLES, "act_quant.cdsl")
COPY_NC = os.path.join(EXAMPLES, "copy_nc.cdsl")
WEIGHT_QUANT = os.path.join(EXAMPLES, "weight_quant.cdsl")
DEQUANT = os.path.join(EXAMPLES, "dequant.cdsl")
REQUANT_T = os.path.join(EXAMPLES, "requant_t.cdsl")
SWITCHES = ("COMMDSL_DUMP_DIR", "COMMDSL_INTERPRET", "COMMDSL_ALWAYS_COMPILE", "COMMDSL_LOG")


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    for name in SWITCHES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("COMMDSL_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache"


def _count_compiles(monkeypatch) -> list:
    compiled = []
    real = kernel_module.compile_variant

    def counting(*args, **kwargs):
        compiled.append(args[0])
        return real(*args, **kwargs)
    monkeypatch.setattr(kernel_module, "compile_variant", counting)
    return compiled


def test_cache_dir_holds_the_compiled_kernels(private_cache):
    commdsl.load(COPY_NC)
    assert list((private_cache / "kernels").glob("*/*/manifest.json"))


def test_always_compile_skips_the_cache(monkeypatch):
    compiled = _count_compiles(monkeypatch)
    commdsl.load(COPY_NC)
    commdsl.load(COPY_NC)
    assert len(compiled) == 1                  # the second load was a cache hit
    monkeypatch.setenv("COMMDSL_ALWAYS_COMPILE", "1")
    commdsl.load(COPY_NC)
    assert len(compiled) == 2


def test_dump_dir_has_every_stage(tmp_path, monkeypatch):
    monkeypatch.setenv("COMMDSL_DUMP_DIR", str(tmp_path / "dump"))
    kernel = commdsl.load(ACT_QUANT, ROWS=4)
    (folder,) = (tmp_path / "dump").iterdir()
    names = sorted(os.listdir(folder))
    stages = [n.split("-", 1)[1] for n in names]       # without the order prefix
    expected = (["source.cdsl", "act_quant.ast.txt", "act_quant.irgen.ir"]
                + [f"act_quant.{p}.ir" for p in PASS_ORDER] + ["module.ll", "module.ptx"])
    try:
        find_ptxas()
        expected.append("act_quant.ptxas.txt")
    except ToolError:
        pass
    assert stages == expected                           # numbered in pipeline order
    text = {stage: (folder / name).read_text() for stage, name in zip(stages, names)}
    assert text["module.ptx"] == kernel.ptx
    assert text["act_quant.irgen.ir"] != text["act_quant.shared.ir"]
    assert all(text.values())


def test_dump_dir_from_the_command_line(tmp_path, monkeypatch):
    monkeypatch.setenv("COMMDSL_DUMP_DIR", str(tmp_path / "dump"))
    assert main(["compile", COPY_NC, "--emit", "llvm", "-o", str(tmp_path / "k.ll")]) == 0
    (folder,) = (tmp_path / "dump").iterdir()
    names = os.listdir(folder)
    assert any(n.endswith("copy_nc.shared.ir") for n in names)
    assert any(n.endswith("module.ll") for n in names)
    assert not any(n.endswith("module.ptx") for n in names)   # --emit llvm stops before PTX


NUMERICS = [
    ("act_quant", lambda: (commdsl.load(ACT_QUANT, ROWS=4), (R.random_activations(5, 384, 1),),
                           lambda x: R.act_quant(x))),
    ("weight_quant", lambda: (commdsl.load(WEIGHT_QUANT), (R.random_activations(129, 200, 2),),
                              lambda w: R.weight_quant(w))),
    ("dequant", lambda: (commdsl.load(DEQUANT, kernel="dequant_act", ROWS=4),
                         R.act_quant(R.random_activations(64, 256, 3)),
                         lambda x, s: R.dequant(x, s, (1, 128)))),
    ("requant_t", lambda: (commdsl.load(REQUANT_T), R.act_quant(R.random_activations(33, 256, 4)),
                           lambda x, s: R.requant_t(x, s))),
    ("copy_nc", lambda: (commdsl.load(COPY_NC), (R.random_activations(3, 1000, 5).view(-1),),
                         lambda x: x)),
]


@pytest.mark.parametrize("name,case", NUMERICS, ids=[n for n, _ in NUMERICS])
def test_interpret_runs_kernel_calls_on_the_cpu(name, case, monkeypatch):
    """COMMDSL_INTERPRET=1: plain kernel(...) calls on CPU tensors give torch's results."""
    monkeypatch.setenv("COMMDSL_INTERPRET", "1")
    kernel, args, reference = case()
    assert isinstance(kernel, InterpretedKernel)
    got, want = kernel(*args), reference(*args)
    got, want = (got, want) if isinstance(got, tuple) else ((got,), (want,))
    assert all(R.same_bits(g, w) for g, w in zip(got, want, strict=True))


def test_interpret_also_serves_autotune(monkeypatch):
    monkeypatch.setenv("COMMDSL_INTERPRET", "1")
    kernel = commdsl.load(COPY_NC, autotune=True)       # no GPU to time: the defaults run
    x = torch.arange(256, dtype=torch.bfloat16)
    assert torch.equal(kernel(x), x)


def test_log_reports_misses_hits_and_compile_times(tmp_path):
    script = f"import commdsl; commdsl.load({COPY_NC!r}); commdsl.load({COPY_NC!r})"
    env = {**os.environ, "COMMDSL_LOG": "info", "COMMDSL_CACHE_DIR": str(tmp_path / "c")}
    err = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True,
                         text=True, check=True).stderr
    lines = [line for line in err.splitlines() if line.startswith("commdsl INFO")]
    assert "cache miss: copy_nc.cdsl" in lines[0]
    assert "compiled copy_nc in" in lines[1]
    assert "cache hit: copy_nc.cdsl" in lines[2]
    env.pop("COMMDSL_LOG")
    quiet = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True,
                           text=True, check=True).stderr
    assert "commdsl INFO" not in quiet


def test_cache_list_and_clear(capsys, private_cache):
    commdsl.load(COPY_NC)
    commdsl.load(ACT_QUANT)
    capsys.readouterr()
    assert main(["cache", "list"]) == 0
    out = capsys.readouterr().out
    assert "copy_nc" in out and "act_quant" in out and "2 compiled kernels" in out
    (private_cache / "tune").mkdir()
    assert main(["cache", "clear"]) == 0
    assert "removed 2 compiled kernels" in capsys.readouterr().out
    assert not (private_cache / "kernels").exists() and (private_cache / "tune").exists()
    assert main(["cache", "clear", "--all"]) == 0
    assert not (private_cache / "tune").exists()
    main(["cache", "list"])
    assert "0 compiled kernels" in capsys.readouterr().out


def test_a_cache_folder_that_cannot_be_created_means_no_cache(tmp_path, monkeypatch, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    monkeypatch.setenv("COMMDSL_CACHE_DIR", str(blocker / "cache"))
    compiled = _count_compiles(monkeypatch)
    with pytest.warns(UserWarning, match="cannot create the cache folder"):
        assert main(["compile", COPY_NC, "-o", str(tmp_path / "k.ptx")]) == 0
        commdsl.load(COPY_NC)
        commdsl.load(COPY_NC)
    assert len(compiled) == 2                            # nothing was kept between loads
    assert "internal compiler error" not in capsys.readouterr().err


def test_a_missing_file_is_named(tmp_path, capsys):
    missing = str(tmp_path / "nope.cdsl")
    assert main(["compile", missing]) == 1
    assert capsys.readouterr().err.strip() == f"{missing}: error: no such file"
    with pytest.raises(CompileError, match="no such file"):
        commdsl.load(missing)
