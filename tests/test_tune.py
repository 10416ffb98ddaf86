"""The autotuner on the CPU: spaces, pruning, the pick, the saved result, the CLI verb.

The timer is injected (a stub that scores each config from a table and counts its calls),
so nothing launches; configs still go through the real compiler and ptxas for pruning.
"""
import dataclasses
import math
import os

import pytest
import torch

import commdsl
from commdsl.cli import main
from commdsl.target import get_target
from commdsl.tune import AutotunedKernel, tuner
from commdsl.tune.inputs import random_arguments
from commdsl.tune.space import search_space

EXAMPLES = os.path.join(os.path.dirname(__file__), "..", "examples")
ACT_QUANT = os.path.join(EXAMPLES, "act_quant.cdsl")
COPY_NC = os.path.join(EXAMPLES, "copy_nc.cdsl")


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("COMMDSL_CACHE_DIR", str(tmp_path / "cache"))


@pytest.fixture(autouse=True)
def no_model_pruning(monkeypatch):
    """The stub timers here draw landscapes of their own, which the cost model does not
    know: it must not prune them (tests/test_tune_model.py tests the pruning)."""
    monkeypatch.setattr(tuner, "MODEL_PRUNE", math.inf)


class StubTimer:
    """Scores a config by a formula, counts the calls, never launches."""

    def __init__(self, score):
        self.score, self.timed = score, []

    def __call__(self, run, config):
        self.timed.append(dict(config))
        return self.score(config)


def rows_near_8(config):
    return abs(config.get("ROWS", 8) - 8) + config.get("WARPS", 4) / 100 + 0.05


def x_bf16(m=64, k=256):
    return torch.randn(m, k).to(torch.bfloat16)


def space_of(path, space=None, **fixed):
    text = open(path).read()
    return search_space(text, path, None, fixed, space)


# -- the space ---------------------------------------------------------------------------

def test_declared_space_is_the_tune_lines_minus_fixed_constants():
    space = space_of(COPY_NC)
    assert space.axes == (("BLOCK", (1024, 2048, 4096, 8192, 16384)), ("WARPS", (2, 4, 8)))
    assert len(space) == 15 and len(space.configs()) == 15
    assert space.configs()[0] == {"BLOCK": 1024, "WARPS": 2}
    assert space_of(COPY_NC, WARPS=4).axes == (("BLOCK", (1024, 2048, 4096, 8192, 16384)),)


def test_given_space_replaces_the_declared_one():
    space = space_of(COPY_NC, {"BLOCK": [2048, 4096]}, WARPS=8)
    assert space.configs() == [{"BLOCK": 2048}, {"BLOCK": 4096}]


@pytest.mark.parametrize("space,fixed,message,hint", [
    ({"BLOK": [1024]}, {}, "space names 'BLOK', which kernel copy_nc does not declare",
     "did you mean 'BLOCK'?"),
    ({"BLOCK": []}, {}, "space['BLOCK'] is empty", "space={'BLOCK': [16]}"),
    ({"BLOCK": 1024}, {}, "space['BLOCK'] must be a list of values, got 1024",
     "space={'BLOCK': [1024]}"),
    ({"BLOCK": ["big"]}, {}, "space['BLOCK'] holds 'big', which is not a number", "[8, 16]"),
    ({"BLOCK": [1024]}, {"BLOCK": 2048}, "'BLOCK' is both set (BLOCK=2048) and tuned", "drop"),
    ({}, {}, "must be a non-empty dict", "space={'ROWS'"),
    (None, {"BLOCK": 1024, "WARPS": 4}, "nothing to tune: every tunable constant of copy_nc "
     "is set (BLOCK, WARPS)", "space={'ROWS'"),
    (None, {"WARP": 4}, "kernel copy_nc has no constant 'WARP' to set", "did you mean 'WARPS'?"),
])
def test_space_mistakes_are_one_clear_error(space, fixed, message, hint):
    with pytest.raises(commdsl.CompileError) as info:
        space_of(COPY_NC, space, **fixed)
    assert message in info.value.message
    assert hint in info.value.hint
    assert info.value.render().startswith(f"{COPY_NC}: error: ")


def test_load_with_a_bad_space_fails_at_load():
    with pytest.raises(commdsl.CompileError, match="space\\['ROWS'\\] is empty"):
        commdsl.load(ACT_QUANT, autotune={"ROWS": []})


# -- tuning ------------------------------------------------------------------------------

def test_picks_the_fastest_and_prunes_what_cannot_compile():
    timer = StubTimer(rows_near_8)
    result = commdsl.autotune(ACT_QUANT, (x_bf16(),), space={"ROWS": [4, 8, 16],
                                                               "WARPS": [2, 64]},
                              timer=timer, progress=False)
    assert result.config == {"ROWS": 8, "WARPS": 2}
    assert result.kernel.spec.constants["ROWS"] == 8 and not result.from_cache
    assert result.shape == {"M": 64, "K": 256}
    assert all(c["WARPS"] == 2 for c in timer.timed) and len(timer.timed) == 3
    pruned = [t for t in result.trials if t.pruned]
    assert len(pruned) == 3 and all("more than a CTA can hold" in t.pruned for t in pruned)


def test_the_result_prints_as_a_table_of_every_config():
    space = {"ROWS": [4, 8, 16], "WARPS": [2, 64]}
    result = commdsl.autotune(ACT_QUANT, (x_bf16(),), space=space, timer=StubTimer(rows_near_8),
                              progress=False)
    lines = result.table().splitlines()
    assert lines[0] == "config                           ms"
    assert lines[1] == "ROWS=8, WARPS=2                  0.0700"           # fastest first
    assert [line.split()[:2] for line in lines[2:4]] == [["ROWS=4,", "WARPS=2"],
                                                         ["ROWS=16,", "WARPS=2"]]
    assert all("WARPS=64" in line and "pruned: " in line for line in lines[4:7])
    assert lines[7] == "best: ROWS=8, WARPS=2 (0.0700 ms)" and len(lines) == 8
    saved = commdsl.autotune(ACT_QUANT, (x_bf16(),), space=space, timer=StubTimer(rows_near_8),
                             progress=False)
    assert saved.table() == ("ROWS=8, WARPS=2 (0.0700 ms when tuned; saved earlier, nothing "
                             "timed; retune=True to time again)")


def test_configs_over_the_register_budget_are_not_timed(monkeypatch):
    # A register file that just holds the 2-warp config: 1 and 2 warps fit, 4 warps do not.
    probe = commdsl.load(ACT_QUANT, ROWS=4, WARPS=2)
    budget = probe.resources.registers * 64
    small = dataclasses.replace(get_target("sm_90a"), registers_per_block=budget)
    monkeypatch.setattr(tuner, "get_target", lambda name: small)
    timer = StubTimer(rows_near_8)
    result = commdsl.autotune(ACT_QUANT, (x_bf16(),), space={"WARPS": [1, 2, 4]}, ROWS=4,
                              timer=timer, progress=False)
    assert [c["WARPS"] for c in timer.timed] == [1, 2]
    (over,) = [t for t in result.trials if t.pruned]
    assert over.config == {"WARPS": 4} and "registers x 128 threads >" in over.pruned


def test_second_identical_call_reads_the_saved_choice_and_times_nothing():
    args = (x_bf16(),)
    first = commdsl.autotune(COPY_NC, (torch.zeros(8192, dtype=torch.bfloat16),),
                             timer=StubTimer(lambda c: c["BLOCK"] / 1000 + c["WARPS"]),
                             progress=False)
    assert first.config == {"BLOCK": 1024, "WARPS": 2}
    timer = StubTimer(rows_near_8)
    commdsl.autotune(ACT_QUANT, args, timer=timer, progress=False, XC="cache()")
    assert len(timer.timed) == 28
    again = StubTimer(rows_near_8)
    result = commdsl.autotune(ACT_QUANT, args, timer=again, progress=False, XC="cache()")
    assert again.timed == [] and result.from_cache
    assert result.config == {"ROWS": 8, "WARPS": 1}
    assert result.kernel.spec.constants == {"ROWS": 8, "WARPS": 1, "XC": "cache()"}


def test_what_changes_the_choice_tunes_again():
    timer = StubTimer(rows_near_8)
    commdsl.autotune(ACT_QUANT, (x_bf16(64, 256),), space={"ROWS": [4, 8]}, timer=timer,
                     progress=False)
    commdsl.autotune(ACT_QUANT, (x_bf16(64, 512),), space={"ROWS": [4, 8]}, timer=timer,
                     progress=False)                                   # another shape
    commdsl.autotune(ACT_QUANT, (x_bf16(64, 256),), space={"ROWS": [4, 16]}, timer=timer,
                     progress=False)                                   # another space
    commdsl.autotune(ACT_QUANT, (x_bf16(64, 256),), space={"ROWS": [4, 8]}, timer=timer,
                     progress=False, retune=True)                      # asked to
    assert len(timer.timed) == 8


def test_a_damaged_record_is_ignored(tmp_path):
    timer = StubTimer(rows_near_8)
    commdsl.autotune(ACT_QUANT, (x_bf16(),), space={"ROWS": [4, 8]}, timer=timer,
                     progress=False)
    (record,) = (tmp_path / "cache" / "tune").iterdir()
    record.write_text(record.read_text()[:-10])
    result = commdsl.autotune(ACT_QUANT, (x_bf16(),), space={"ROWS": [4, 8]}, timer=timer,
                              progress=False)
    assert not result.from_cache and len(timer.timed) == 4


def test_tuning_a_loaded_kernel_keeps_its_constants():
    kernel = commdsl.load(ACT_QUANT, WARPS=2, XC="cache(nc)")
    timer = StubTimer(rows_near_8)
    result = commdsl.autotune(kernel, (x_bf16(),), timer=timer, progress=False)
    assert result.config == {"ROWS": 8}
    assert result.kernel.spec.constants == {"ROWS": 8, "WARPS": 2, "XC": "cache(nc)"}
    assert len(timer.timed) == 7


def test_tuning_never_writes_the_callers_outputs():
    x = x_bf16()
    y = torch.full((64, 256), 3.0).to(torch.float8_e4m3fn)
    seen = []

    def looking_timer(run, config):
        seen.append(run)
        return rows_near_8(config)
    commdsl.autotune(ACT_QUANT, {"x": x, "y": y}, space={"ROWS": [4, 8]}, timer=looking_timer,
                     progress=False)
    assert torch.equal(y.float(), torch.full((64, 256), 3.0)) and len(seen) == 2


def test_progress_goes_to_stderr(capsys):
    commdsl.autotune(ACT_QUANT, (x_bf16(),), space={"ROWS": [4, 8]},
                     timer=StubTimer(rows_near_8))
    err = capsys.readouterr().err
    assert "tuning act_quant (M=64, K=256) over ROWS in [4, 8]: 2 configs" in err
    assert "2/2" in err and "best ROWS=8: 0.0900 ms" in err


def test_autotuned_kernel_tunes_once_per_shape(monkeypatch):
    from commdsl.runtime.launcher import Launcher
    original_bind = Launcher.bind
    monkeypatch.setattr(Launcher, "bind", lambda self, *a, require_cuda=True, **k:
                        original_bind(self, *a, require_cuda=False, **k))
    launched = []
    monkeypatch.setattr(Launcher, "launch_checked",
                        lambda self, pointers, sizes, grid, index: launched.append(self.spec))
    monkeypatch.setattr(Launcher, "prepared", lambda self, grid, index: (
        lambda pointers, sizes: launched.append(self.spec)))
    timer = StubTimer(rows_near_8)
    text = open(ACT_QUANT).read()
    kernel = AutotunedKernel(text, ACT_QUANT, None, {"WARPS": 4}, "sm_90a", {"ROWS": [4, 8]},
                             timer=timer, progress=False)
    kernel(x_bf16(64, 256))
    kernel(x_bf16(64, 256))
    assert len(timer.timed) == 2 and len(launched) == 2
    assert all(spec.constants == {"ROWS": 8, "WARPS": 4, "XC": "cache(nc, L2 = 256B)"}
               for spec in launched)
    kernel(x_bf16(32, 256))                  # a new shape tunes again
    assert len(timer.timed) == 4
    assert set(kernel.tunings) == {(("M", 64), ("K", 256)), (("M", 32), ("K", 256))}


def test_load_autotune_true_returns_an_autotuned_kernel():
    kernel = commdsl.load(COPY_NC, autotune=True, WARPS=4)
    assert isinstance(kernel, AutotunedKernel)


# -- inputs and the CLI ------------------------------------------------------------------

def test_random_arguments_follow_the_declaration():
    spec = commdsl.load(ACT_QUANT).spec
    args = random_arguments(spec, {"M": 3, "K": 256}, torch.device("cpu"))
    assert args["x"].dtype == torch.bfloat16 and args["x"].shape == (3, 256)
    assert args["x"].float().std() > 0.5
    assert args["s"].shape == (3, 2) and args["y"].dtype == torch.float8_e4m3fn


@pytest.mark.parametrize("argv,message", [
    (["--shape", "M4096"], "--shape expects NAME=SIZE[,NAME=SIZE...], got 'M4096'"),
    (["--shape", "M=4096,K=lots"], "e.g. --shape M=4096,K=7168"),
    (["--shape", "M=4096"], "--shape does not give K"),
    (["--shape", "M=4096,K=7168,Q=1"], "--shape gives 'Q', which is not a size of kernel "
     "act_quant"),
    (["--shape", "M=64,K=256", "--space", "ROWS"], "--space expects NAME=V1,V2,..., got 'ROWS'"),
    (["--shape", "M=64,K=256", "--space", "ROWZ=1,2"], "space names 'ROWZ'"),
    (["--shape", "M=64,K=256"], "commdsl tune times kernels on a CUDA GPU"),
])
def test_tune_command_mistakes(argv, message, capsys):
    if "CUDA GPU" in message and torch.cuda.is_available():
        pytest.skip("a GPU is present")
    assert main(["tune", ACT_QUANT, *argv]) == 1
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
