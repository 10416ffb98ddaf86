"""The tuner's search and its parallel compiles, on the CPU.

Successive halving runs on a synthetic landscape (a seeded stub timer whose noise grows as its
measurement shortens), where it must find the optimum at a fraction of exhaustive's cost; the
tuner runs it on a real kernel (act_quant) to show the wiring: pruning, effort= reaching the
timer, and the same winner whether configs compile in worker processes or in the parent.
"""
import io
import itertools
import math
import os
import random
import re
from concurrent.futures import ProcessPoolExecutor

import pytest
import torch

import commdsl
import commdsl.kernel
from commdsl.cli import main
from commdsl.runtime.cache import CompileCache, cache_key
from commdsl.tune import parallel_compile, search, tuner
from commdsl.tune.progress import Progress
from commdsl.tune.tuner import Trial

ACT_QUANT = os.path.join(os.path.dirname(__file__), "..", "examples", "act_quant.cdsl")
FULL_RUNS = 100          # launches in a full measurement: the unit repetitions are counted in


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("COMMDSL_CACHE_DIR", str(tmp_path / "cache"))


@pytest.fixture(autouse=True)
def no_model_pruning(monkeypatch):
    """The stub timers here draw landscapes of their own, which the cost model does not
    know: it must not prune them (tests/test_tune_model.py tests the pruning)."""
    monkeypatch.setattr(tuner, "MODEL_PRUNE", math.inf)


# -- a synthetic landscape ---------------------------------------------------------------

AXES = {"A": range(8), "B": range(8), "C": range(4), "D": range(2)}     # 512 configs


def landscape(seed: int = 7) -> dict[tuple, float]:
    """A smooth bowl with an optimum at A=5, B=2, C=1, D=0, and up to 3% of ruggedness per
    config, so the runner-up is close."""
    rugged = random.Random(seed)
    return {values: (1.0 + 0.02 * (values[0] - 5) ** 2 + 0.015 * (values[1] - 2) ** 2
                     + 0.05 * abs(values[2] - 1) + 0.03 * values[3]) * (1 + 0.03 * rugged.random())
            for values in itertools.product(*AXES.values())}


class NoisyTimer:
    """The landscape's time with Gaussian noise: 0.5% for a full measurement, growing as
    1/sqrt(effort), as a median of fewer launches does. Counts the launches it stands for."""

    def __init__(self, times: dict, seed: int = 0, fails=lambda config: False):
        self.times, self.noise, self.fails = times, random.Random(seed), fails
        self.repetitions, self.timed = 0, []

    def __call__(self, config: dict, effort: float | None) -> float | None:
        effort = 1.0 if effort is None else effort
        self.repetitions += max(1, round(FULL_RUNS * effort))
        self.timed.append((tuple(config.values()), effort))
        if self.fails(config):
            return None
        sigma = 0.005 / math.sqrt(effort)
        return self.times[tuple(config.values())] * (1 + self.noise.gauss(0, sigma))


def run_search(method: str, timer: NoisyTimer, configs=None):
    configs = configs or [dict(zip(AXES, v)) for v in itertools.product(*AXES.values())]
    trials = [Trial(c) for c in configs]

    def measure(trial, effort):
        trial.ms = timer(trial.config, effort)
        if trial.ms is None:
            trial.pruned = "failed to run"
    search.run_plan(trials, search.plan(method, len(trials)), measure)
    return trials, search.best(trials)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_halving_finds_the_optimum_at_a_fraction_of_exhaustives_cost(seed):
    times = landscape(seed + 10)
    optimum = min(times.values())
    exhaustive, halving = NoisyTimer(times, seed), NoisyTimer(times, seed)
    _, full_winner = run_search("exhaustive", exhaustive)
    trials, winner = run_search("halving", halving)
    assert len(times) >= 500 and exhaustive.repetitions == len(times) * FULL_RUNS
    assert times[tuple(winner.config.values())] <= 1.02 * optimum
    assert times[tuple(full_winner.config.values())] <= 1.02 * optimum
    assert halving.repetitions < 0.25 * exhaustive.repetitions
    assert winner.effort == 1.0
    # Every config got a short timing; only the last rung's got full ones.
    assert len({c for c, _ in halving.timed}) == len(times)
    assert sum(1 for _, e in halving.timed if e == 1.0) == search.plan("halving", 512)[-1].count


def test_halving_is_deterministic_under_a_fixed_seed():
    times = landscape()
    first, second = run_search("halving", NoisyTimer(times, 3)), run_search(
        "halving", NoisyTimer(times, 3))
    assert [(t.config, t.ms, t.effort) for t in first[0]] == \
        [(t.config, t.ms, t.effort) for t in second[0]]
    assert first[1].config == second[1].config


def test_a_huge_space_is_sampled_the_same_way_every_time():
    configs = [{"I": i} for i in range(5000)]
    chosen = search.sample(configs, 300)
    assert chosen == search.sample(configs, 300) and len(chosen) == 300
    assert chosen != search.sample(configs, 300, seed=1)
    assert [c["I"] for c in chosen] == sorted(c["I"] for c in chosen)     # the space's order
    assert search.sample(configs[:10], 300) == configs[:10]


def test_configs_that_fail_to_run_leave_the_search():
    times = landscape()
    timer = NoisyTimer(times, 0, fails=lambda c: c["A"] == 5)             # the optimum's row
    trials, winner = run_search("halving", timer)
    failed = [t for t in trials if t.config["A"] == 5]
    assert all(t.ms is None and t.pruned == "failed to run" for t in failed)
    assert {c for c, e in timer.timed if c[0] == 5} == {tuple(t.config.values()) for t in failed}
    assert all(e == search.plan("halving", 512)[0].effort for c, e in timer.timed if c[0] == 5)
    assert winner.config["A"] != 5 and winner.effort == 1.0


def test_the_plan_shrinks_by_a_third_and_ends_with_full_timings():
    rungs = search.plan("halving", 500)
    assert [r.count for r in rungs] == [500, 167, 56, 19, 7]
    assert [r.effort for r in rungs] == [1 / 81, 1 / 27, 1 / 9, 1 / 3, 1.0]
    assert search.planned_work(rungs) < 0.07 * 500
    assert search.plan("exhaustive", 500) == [search.Rung(500, None)]
    assert search.plan("halving", 3) == [search.Rung(3, None)]


def two_argument_timer(run, config):
    return 1.0


def test_auto_is_exhaustive_for_small_spaces_and_for_timers_without_effort():
    assert search.pick_search("auto", search.EXHAUSTIVE_MAX, None) == "exhaustive"
    assert search.pick_search("auto", search.EXHAUSTIVE_MAX + 1, None) == "halving"
    assert search.pick_search("auto", 1000, lambda run, config, effort=1.0: 1.0) == "halving"
    assert search.pick_search("auto", 1000, two_argument_timer) == "exhaustive"
    assert search.pick_search("halving", 4, None) == "halving"
    with pytest.raises(commdsl.CompileError, match="takes no effort= keyword"):
        search.pick_search("halving", 1000, two_argument_timer)
    with pytest.raises(commdsl.CompileError, match="search must be one of auto, exhaustive, "
                       "halving, got 'fast'"):
        search.pick_search("fast", 10, None)


# -- the tuner with halving, on act_quant -------------------------------------------------

def x_bf16():
    return torch.randn(64, 256).to(torch.bfloat16)


class EffortTimer:
    def __init__(self, fail_rows=None):
        self.calls, self.fail_rows = [], fail_rows

    def __call__(self, run, config, effort=1.0):
        self.calls.append((dict(config), effort))
        if config["ROWS"] == self.fail_rows:
            raise commdsl.LaunchError("act_quant", "x", "launch failed")
        return abs(config["ROWS"] - 8) + config.get("WARPS", 4) / 100 + 0.05


def test_the_tuner_halves_prunes_and_keeps_the_best_full_timing():
    timer = EffortTimer(fail_rows=4)
    result = commdsl.autotune(ACT_QUANT, (x_bf16(),), timer=timer, progress=False,
                              search="halving", space={"ROWS": [1, 2, 4, 8, 16, 32],
                                                       "WARPS": [1, 2, 64]})
    assert result.config == {"ROWS": 8, "WARPS": 1} and result.ms == pytest.approx(0.06)
    assert all(c["WARPS"] != 64 for c, _ in timer.calls)
    by_config = {tuple(t.config.values()): t for t in result.trials}
    assert all("more than a CTA can hold" in by_config[(r, 64)].pruned for r in
               [1, 2, 4, 8, 16, 32])
    assert by_config[(4, 1)].pruned == "failed to run: launch failed"
    assert sorted({e for _, e in timer.calls}) == [1 / 3, 1.0]        # 12 configs: 2 rungs
    # The last rung: the best third of the first, and the cost model's pick for this shape
    # (ROWS = 16, WARPS = 1), timed in every rung whatever its rank.
    assert [c for c, e in timer.calls if e == 1.0] == [{"ROWS": 8, "WARPS": 1},
                                                       {"ROWS": 8, "WARPS": 2},
                                                       {"ROWS": 2, "WARPS": 1},
                                                       {"ROWS": 2, "WARPS": 2},
                                                       {"ROWS": 16, "WARPS": 1}]


def test_a_kept_trial_is_timed_in_every_rung_and_can_win():
    """Its short measurement ranks it last (noise); the full one makes it the best."""
    trials = [Trial({"A": a}) for a in range(27)]
    favourite = trials[20]

    def measure(trial, effort):
        if trial is favourite:
            trial.ms = 0.5 if effort == 1.0 else 9.0
        else:
            trial.ms = 1.0 + trial.config["A"] / 100

    rungs = search.plan("halving", len(trials))
    search.run_plan(trials, rungs, measure)
    assert search.best(trials) is not favourite
    search.run_plan(trials, rungs, measure, keep=[favourite])
    assert search.best(trials) is favourite and favourite.effort == 1.0


def test_the_models_pick_keeps_its_place_unless_beaten_by_more_than_noise():
    trials = [Trial({"A": a}) for a in range(3)]
    incumbent, challenger, slow = trials
    for trial, ms in zip(trials, (1.0, 0.995, 1.2)):
        trial.ms, trial.effort = ms, 1.0
    assert search.best(trials) is challenger
    assert search.best(trials, incumbent=incumbent) is incumbent
    challenger.ms = 0.98
    assert search.best(trials, incumbent=incumbent) is challenger
    incumbent.effort = 1 / 3                       # dropped before the last rung: not compared
    challenger.ms = 0.995
    assert search.best(trials, incumbent=incumbent) is challenger


def test_a_saved_choice_is_per_search():
    timer = EffortTimer()
    for method in ["exhaustive", "halving", "halving"]:
        commdsl.autotune(ACT_QUANT, (x_bf16(),), space={"ROWS": [4, 8]}, timer=timer,
                         progress=False, search=method)
    assert len(timer.calls) == 4


def test_search_is_checked_where_it_is_given():
    with pytest.raises(commdsl.CompileError, match="search must be one of"):
        commdsl.autotune(ACT_QUANT, (x_bf16(),), search="greedy")
    with pytest.raises(commdsl.CompileError, match="search must be one of"):
        commdsl.load(ACT_QUANT, autotune=True, search="greedy")
    with pytest.raises(commdsl.CompileError, match="autotune is off"):
        commdsl.load(ACT_QUANT, search="halving")


def test_tune_command_rejects_an_unknown_search(capsys):
    with pytest.raises(SystemExit):
        main(["tune", ACT_QUANT, "--shape", "M=64,K=256", "--search", "greedy"])
    assert "invalid choice: 'greedy'" in capsys.readouterr().err


# -- parallel compiles ---------------------------------------------------------------------

def pool_starts() -> bool:
    try:
        with ProcessPoolExecutor(1, parallel_compile.multiprocessing.get_context("fork")) as p:
            return p.submit(os.getpid).result() != os.getpid()
    except (OSError, RuntimeError, ValueError):
        return False


@pytest.fixture
def build_pids(tmp_path, monkeypatch):
    """The ids of the processes that ran kernel.build (forked workers inherit the patch);
    ROWS=2 makes the compiler fail in a way no CommdslError covers."""
    log = tmp_path / "pids"
    real_build = commdsl.kernel.build

    def build(text, path, name, constants, *rest, **options):
        with open(log, "a") as f:
            f.write(f"{os.getpid()}\n")
        if constants.get("ROWS") == 2:
            raise ValueError("a compiler bug")
        return real_build(text, path, name, constants, *rest, **options)
    monkeypatch.setattr(commdsl.kernel, "build", build)
    return lambda: {int(p) for p in log.read_text().split()} if log.exists() else set()


def tune_act_quant(timer, retune=False):
    return commdsl.autotune(ACT_QUANT, (x_bf16(),), timer=timer, progress=False,
                            retune=retune, space={"ROWS": [1, 2, 4, 8, 16], "WARPS": [2, 64]})


def test_parallel_compiles_pick_the_same_winner_as_serial(build_pids, monkeypatch):
    parallel = tune_act_quant(EffortTimer())
    workers = build_pids() - {os.getpid()}
    if pool_starts():
        assert workers, "no config compiled in a worker process"
    # Compiling each config anew in the parent: no pool, since the parent would compile again.
    monkeypatch.setenv("COMMDSL_ALWAYS_COMPILE", "1")
    serial = tune_act_quant(EffortTimer(), retune=True)
    assert build_pids() - workers == {os.getpid()}
    assert parallel.config == serial.config == {"ROWS": 8, "WARPS": 2}
    assert [(t.config, t.ms, t.pruned) for t in parallel.trials] == \
        [(t.config, t.ms, t.pruned) for t in serial.trials]
    by_config = {tuple(t.config.values()): t.pruned for t in parallel.trials}
    assert by_config[(2, 2)] == "the compiler failed: ValueError: a compiler bug"
    assert "more than a CTA can hold" in by_config[(8, 64)]


def test_a_pool_that_cannot_start_leaves_the_compiles_to_the_parent(build_pids, monkeypatch):
    def no_pool(*args, **kwargs):
        raise PermissionError("no semaphores here")
    monkeypatch.setattr(parallel_compile, "ProcessPoolExecutor", no_pool)
    monkeypatch.setattr(parallel_compile, "worker_count", lambda configs: 4)
    result = tune_act_quant(EffortTimer())
    assert result.config == {"ROWS": 8, "WARPS": 2} and build_pids() == {os.getpid()}


def test_compile_configs_reports_each_config_once(monkeypatch):
    default = commdsl.load(ACT_QUANT, WARPS=2)
    configs = [{"ROWS": r} for r in [1, 4, 8]] + [{"ROWS": 8, "WARPS": 64}]
    seen = []
    results = parallel_compile.compile_configs(default, configs,
                                               lambda c, why: seen.append((c, why)), workers=2)
    assert sorted(map(str, seen)) == sorted(map(str, [(c, w) for c, (_, w) in
                                                      zip(configs, results)]))
    assert [k.spec.constants["ROWS"] for k, _ in results[:3]] == [1, 4, 8]
    assert results[3][0] is None and results[3][1].startswith("does not compile: ")


def test_the_pool_compiles_the_variant_the_tuned_call_needs():
    """M = 5 is not a multiple of 16: each config's first launch needs its variant for an
    unaligned M, which the workers compile with the rest (in the parent, one after another,
    it took 180 s of a tuning run)."""
    default = commdsl.load(ACT_QUANT, WARPS=2)
    configs = [{"ROWS": r} for r in [1, 4, 8]]
    results = parallel_compile.compile_configs(default, configs, lambda c, why: None,
                                               workers=2, unaligned=frozenset({"M"}))
    cache = CompileCache()
    for kernel, why in results:
        assert why is None
        key = cache_key(kernel.source, kernel.path, kernel.name, kernel.constants,
                        kernel.target, frozenset({"M"}), None)
        assert cache.get(key) is not None, kernel.constants


# -- progress ------------------------------------------------------------------------------

class Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


def test_progress_shows_counts_elapsed_and_eta():
    stream, clock = io.StringIO(), Clock()
    bar = Progress("tuning k", stream=stream, clock=clock)
    bar.phase("compiling", 4)
    clock.now += 2.0
    bar.step("A=1: ok")
    bar.phase("timing", 3, work=1.5)
    clock.now += 1.0
    bar.step("A=1: 0.5 ms", work=0.5)
    bar.close("best A=1")
    lines = stream.getvalue().splitlines()
    assert lines[0] == "tuning k"
    assert "compiling [######..................] 1/4  2.0 s, ETA 6.0 s  A=1: ok" in lines[1]
    assert "timing    [########................] 1/3  1.0 s, ETA 2.0 s  A=1: 0.5 ms" in lines[2]
    assert lines[3] == "  best A=1"


@pytest.mark.parametrize("env,shown", [({}, True), ({"RANK": "0", "LOCAL_RANK": "0"}, True),
                                       ({"RANK": "3", "LOCAL_RANK": "0"}, False),
                                       ({"LOCAL_RANK": "1"}, False)])
def test_progress_prints_on_rank_zero_only(env, shown, monkeypatch):
    for name in ("RANK", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    stream = io.StringIO()
    bar = Progress("tuning k", stream=stream)
    bar.phase("timing", 1)
    bar.step("A=1: 0.5 ms")
    bar.close("best A=1")
    assert bool(stream.getvalue()) == shown


class Terminal(io.StringIO):
    def isatty(self):
        return True


def test_on_a_terminal_with_tqdm_installed_the_bar_is_tqdms():
    pytest.importorskip("tqdm")
    stream = Terminal()
    bar = Progress("tuning k", stream=stream)
    bar.phase("compiling", 2)
    bar.step("A=1: ok")
    bar.step("A=2: ok")
    bar.close("best A=1")
    shown = stream.getvalue()
    assert shown.startswith("tuning k\n") and shown.endswith("\n  best A=1\n")
    assert "  compiling |########################| 00:00, ETA 00:00, 2/2  A=2: ok" in shown


@pytest.mark.parametrize("rank", [0, 1])
def test_autotune_prints_elapsed_and_eta_on_rank_zero_of_an_initialized_group(
        rank, monkeypatch, capsys):
    import torch.distributed as dist
    # The initialized group's rank is what counts; RANK says the opposite here.
    monkeypatch.setenv("RANK", "1" if rank == 0 else "0")
    monkeypatch.setattr(dist, "is_initialized", lambda: True)
    monkeypatch.setattr(dist, "get_rank", lambda group=None: rank)
    commdsl.autotune(ACT_QUANT, (x_bf16(),), space={"ROWS": [4, 8]},
                     timer=lambda run, config: 0.1)
    err = capsys.readouterr().err
    if rank:
        assert err == ""
    else:
        assert re.search(r"compiling \[#+\] 2/2  [\d.]+ s, ETA 0\.0 s", err), err
        assert re.search(r"timing    \[#+\] 2/2  [\d.]+ s, ETA 0\.0 s", err), err


def test_load_passes_progress_to_the_tuning(launches, monkeypatch, capsys):
    from commdsl.tune import timer
    monkeypatch.setattr(timer, "cuda_event_timer", lambda run, config, effort=1.0: 0.1)
    for rows, progress in (([4, 8], True), ([4, 16], False)):    # new spaces: both tune
        kernel = commdsl.load(ACT_QUANT, autotune={"ROWS": rows}, progress=progress)
        kernel(x_bf16())
        err = capsys.readouterr().err
        assert ("ETA" in err) == progress and (err == "") == (not progress), err
    assert len(launches["launches"]) == 2
