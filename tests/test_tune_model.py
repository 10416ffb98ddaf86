"""The cost model (tune/model.py) on the CPU: its choices for given shapes and limits, its
agreement with the timings recorded on an H100, `by model` and `config="model"`, the tuner's
pruning by it, and `commdsl tune --explain`."""
import dataclasses
import math
import os
import sys

import pytest
import torch

import commdsl
from commdsl.cli import main
from commdsl.target import get_target
from commdsl.tune import tuner
from commdsl.tune.machine import H100
from commdsl.tune.model import estimate, mma_shape_efficiency
from commdsl.tune.model_choice import model_choice
from commdsl.tune.profile import profile
from commdsl.tune.space import model_axes, search_space
from diagnostic_checks import compile_error, points_at

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "bench"))
import model_agreement  # noqa: E402

EXAMPLES = os.path.join(os.path.dirname(__file__), "..", "examples")
FP8_GEMM = os.path.join(EXAMPLES, "fp8_gemm.cdsl")
ACT_QUANT = os.path.join(EXAMPLES, "act_quant.cdsl")
SM90A = get_target("sm_90a")

BY_MODEL = """kernel scale(x: f32[M, N], y: out f32[M, N])
  tune ROWS = 4 in [1, 4, 16] by model
  tune COLS = 128 in [128, 256]
  grid(cdiv(M, ROWS), cdiv(N, COLS))
{
  let t = load x[pid.0 * ROWS : +ROWS, pid.1 * COLS : +COLS]
  store y[pid.0 * ROWS : +ROWS, pid.1 * COLS : +COLS] = t * 2.0
}
"""


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("COMMDSL_CACHE_DIR", str(tmp_path / "cache"))


def gemm_choice(space: dict, **sizes):
    text = open(FP8_GEMM).read()
    return model_choice(text, FP8_GEMM, None, {}, "sm_90a",
                        search_space(text, FP8_GEMM, None, {}, space), sizes, H100,
                        use_records=False)


def gemm_estimate(sizes, **config):
    return estimate(profile(open(FP8_GEMM).read(), FP8_GEMM, None, config, "sm_90a"), sizes,
                    H100, SM90A)


# -- the model's choices -----------------------------------------------------------------

@pytest.mark.parametrize("m", [64, 4096])
def test_small_m_picks_the_small_row_tile(m):
    choice = gemm_choice({"BM": [64, 128, 192], "BN": [64, 128]}, M=m, N=7168, K=7168)
    assert (choice.config["BM"] == 64) == (m <= 64), choice.table()


def test_a_config_whose_shared_memory_does_not_fit_is_never_chosen():
    sizes = {"M": 4096, "N": 7168, "K": 7168}
    too_big = gemm_estimate(sizes, BM=192, BN=128, STAGES=8)
    assert too_big.seconds is None and "shared memory" in too_big.why_not
    choice = gemm_choice({"BM": [192], "BN": [128], "STAGES": [4, 8]}, **sizes)
    assert choice.config["STAGES"] == 4


def test_wave_quantization_prefers_the_tile_count_that_fills_the_last_wave():
    sizes = {"M": 4096, "N": 2112, "K": 7168}
    estimates = {bm: gemm_estimate(sizes, BM=bm, BN=128) for bm in (128, 192)}
    for bm, e in estimates.items():
        tiles = math.ceil(4096 / bm) * math.ceil(2112 / 128)
        assert e.units == tiles and e.waves == math.ceil(tiles / H100.sms)
        assert e.last_wave_fill == pytest.approx((tiles - (e.waves - 1) * H100.sms) / H100.sms)
    # the same FLOPs: 128 rows leave the fifth wave nearly empty, 192 fill three
    assert estimates[128].last_wave_fill < 0.2 < estimates[192].last_wave_fill


def test_a_promotion_the_passes_cannot_overlap_is_charged_at_the_fitted_rate():
    """Three warpgroups of 160 registers have no room for the second partial accumulator
    passes/overlap.py needs, so each promotes after its step's wgmmas; the part's
    unoverlapped_promotion scales their tensor-core rate. Fitted, it is 1.0 on an H100: 192
    rows ran 1100 TFLOP/s at 4096x2112x7168 where 128 rows ran 1000 (2026-12-07), filling
    their last wave. Split promotion (PROMOTE = 64) overlaps within the step: not charged."""
    def overlapped(**config):
        return profile(open(FP8_GEMM).read(), FP8_GEMM, None, config,
                       "sm_90a").promotion_overlapped
    assert overlapped(BM=128, BN=128) is True and overlapped(BM=192, BN=128) is False
    assert overlapped(BM=128, BN=128, PROMOTE=64) is None
    sizes = {"M": 4096, "N": 2112, "K": 7168}
    charging = dataclasses.replace(H100, unoverlapped_promotion=0.8)
    uncharged = dataclasses.replace(H100, unoverlapped_promotion=1.0)
    for bm, factor in ((128, 1.0), (192, 0.8)):
        p = profile(open(FP8_GEMM).read(), FP8_GEMM, None, dict(BM=bm, BN=128, STAGES=3),
                    "sm_90a")
        assert p.staged_stores is True           # no stores from registers charged here
        charged, full = (estimate(p, sizes, m, SM90A).compute_s for m in (charging, uncharged))
        assert charged * factor == pytest.approx(full)
    assert gemm_choice({"BM": [128, 192], "BN": [128]}, **sizes).config["BM"] == 192


def test_consumers_storing_from_registers_wait_on_their_stores():
    """256 x 128 at 4 stages leaves no room for passes/epilogue.py's staging buffer, so the
    consumers store their fragments themselves: on an H100 it ran 820 TFLOP/s at
    4096x7168x2048 where 3 stages (staged, TMA stores) ran 1148 (2026-12-07)."""
    text, sizes = open(FP8_GEMM).read(), {"M": 4096, "N": 7168, "K": 2048}
    staged, direct = (profile(text, FP8_GEMM, None, dict(BM=256, BN=128, STAGES=s), "sm_90a")
                      for s in (3, 4))
    assert staged.staged_stores is True and direct.staged_stores is False
    fast, slow = (estimate(p, sizes, H100, SM90A) for p in (staged, direct))
    assert not fast.direct_stores and slow.direct_stores
    assert slow.compute_s - fast.compute_s == pytest.approx(
        slow.waves * 256 * 128 * 2 / H100.direct_store_bytes_per_s)
    assert gemm_choice({"BM": [256], "BN": [128], "STAGES": [3, 4]},
                       **sizes).config["STAGES"] == 3


def test_a_cluster_pays_for_its_lockstep_and_multicast_saves_no_latency():
    """On an H100 (bench/fp8_gemm_sweep.py, 2026-12-07) cluster 2 ran 3-13% slower than 1
    at 128 x 4096 x 7168 with every tile width: each CTA of a pair waits on the slower, and a
    multicast A tile, pulled half by each, still lands whole in both CTAs' shared memory, so
    where bytes in flight bind the load it saves nothing."""
    sizes = {"M": 128, "N": 4096, "K": 7168}
    for bn in (16, 32, 64, 128):
        one, two = (gemm_estimate(sizes, BM=64, BN=bn, STAGES=8, CLUSTER=c) for c in (1, 2))
        assert two.seconds > one.seconds, bn


def test_more_stages_keep_more_bytes_in_flight_where_loads_bind():
    """128x4096x7168, BM = BN = 64: 8 stages ran at 0.88x the time of 5 on an H100."""
    sizes = {"M": 128, "N": 4096, "K": 7168}
    five, eight = (gemm_estimate(sizes, BM=64, BN=64, STAGES=s) for s in (5, 8))
    assert five.bound == "stream" and eight.seconds < five.seconds


def test_tma_boxes_past_the_edge_count_and_make_thin_tiles_slow_at_tiny_m():
    """An H100 sweep (2026-12-07) at 1 x 4096 x 7168: BM = 64 tiles 16 wide ran 1.7x the time
    they take at M = 64, 128 wide as fast: the 63 rows of each A box past M are still moved,
    by a few L2 slices; the more tiles, the more such rows."""
    text = open(FP8_GEMM).read()
    prof = profile(text, FP8_GEMM, None, {"BM": 64, "BN": 16, "STAGES": 8}, "sm_90a")
    work = prof.work({"M": 3, "N": 4096, "K": 7168}, H100.sms)
    a = next(x for x in work.accesses if x.tensor == "a")
    assert a.out_of_bounds_bytes == a.bytes * 61 // 64
    b = next(x for x in work.accesses if x.tensor == "b")
    assert b.out_of_bounds_bytes == 0
    wide = {"M": 64, "N": 4096, "K": 7168}
    assert gemm_estimate(wide, BM=64, BN=16, STAGES=8).out_of_bounds_s == 0
    tiny = {"M": 1, "N": 4096, "K": 7168}
    thin, broad = (gemm_estimate(tiny, BM=64, BN=bn, STAGES=8) for bn in (16, 128))
    assert thin.bound == "out-of-bounds" and "out of bounds" in thin.terms()
    assert thin.seconds > 1.5 * broad.seconds
    choice = gemm_choice({"BM": [64], "BN": [16, 32, 64, 128]}, **tiny)
    assert choice.config["BN"] >= 64, choice.table()


def test_a_pipeline_just_deep_enough_still_costs_where_compute_binds():
    """4096 x 2112 x 7168, BM = 192, BN = 128: 4 stages ran 3% faster than 3 on an H100
    (2026-12-07), though the tensor cores bind both: a near tie of the SM's terms slows it,
    as a near tie with DRAM does."""
    sizes = {"M": 4096, "N": 2112, "K": 7168}
    three, four = (gemm_estimate(sizes, BM=192, BN=128, STAGES=s) for s in (3, 4))
    assert three.bound == four.bound == "compute"
    assert four.seconds < three.seconds < four.seconds * 1.05
    choice = gemm_choice({"BM": [192], "BN": [128], "STAGES": [3, 4]}, **sizes)
    assert choice.config["STAGES"] == 4, choice.table()


def test_an_empty_call_costs_a_launch_and_keeps_the_declared_config():
    """M = 0 gives no tiles: each config costs one launch (it divided by zero before), so the
    choice is the source's defaults, and --explain prints it."""
    est = gemm_estimate({"M": 0, "N": 4096, "K": 7168}, BM=64, BN=16, STAGES=8)
    assert est.units == 0 and est.seconds == H100.launch_s and est.bound == "launch"
    choice = gemm_choice({"BM": [64, 128], "BN": [16, 128]}, M=0, N=4096, K=7168)
    assert (choice.config["BM"], choice.config["BN"]) == (128, 128), choice.table()


def test_narrow_mma_tiles_are_slower_per_flop():
    eff = [mma_shape_efficiency(n, "e4m3", H100, SM90A) for n in (16, 32, 64, 128)]
    assert eff == sorted(eff) and eff[0] < 0.5 and eff[-1] == 1.0
    assert mma_shape_efficiency(16, "e4m3", H100, get_target("sm_80")) == 1.0   # no wgmma


def test_memory_bound_kernels_are_bound_by_memory_and_fill_the_sm():
    text = open(ACT_QUANT).read()
    sizes = {"M": 16384, "K": 7168}
    one_row = estimate(profile(text, ACT_QUANT, None, {"ROWS": 1, "WARPS": 8}, "sm_90a"),
                       sizes, H100, SM90A)
    many = estimate(profile(text, ACT_QUANT, None, {"ROWS": 16, "WARPS": 8}, "sm_90a"),
                    sizes, H100, SM90A)
    assert many.bound == "DRAM" and one_row.seconds > 1.5 * many.seconds
    assert one_row.per_sm == SM90A.max_threads_per_sm // 256 and one_row.occupancy_limit == \
        "threads"


def test_a_grid_fills_once_and_plain_loads_wait_a_plain_loads_latency():
    """act_quant on an H100 (2026-12-07): 8-warp CTAs of 16 rows ran fastest at both recorded
    shapes. Charged a fill per wave of CTAs (55 at 16384 x 7168) and TMA's round trip per
    load, they looked 1.6x slower and the model picked 1-warp CTAs, 2-3% slower."""
    text = open(ACT_QUANT).read()
    sizes = {"M": 16384, "K": 7168}
    est = estimate(profile(text, ACT_QUANT, None, {"ROWS": 16, "WARPS": 8}, "sm_90a"), sizes,
                   H100, SM90A)
    assert est.waves > 50 and est.overhead_s == H100.unit_overhead_s
    assert est.seconds < 1.05 * est.dram_s + H100.launch_s
    space = search_space(text, ACT_QUANT, None, {}, {"ROWS": [8, 16, 32], "WARPS": [1, 8]})
    choice = model_choice(text, ACT_QUANT, None, {}, "sm_90a", space, sizes, H100,
                          use_records=False)
    assert (choice.config["ROWS"], choice.config["WARPS"]) == (16, 8), choice.table()


def test_the_model_agrees_with_the_timings_recorded_on_an_h100():
    """Per recorded shape, the model's pick among the recorded configs against the measured
    best: no pick is far off, and on most shapes it is the best."""
    rows = model_agreement.agreement(model_agreement.Model(), model_agreement.recorded_shapes())
    slowdowns = [r["slowdown"] for r in rows]
    assert len(rows) >= 40
    assert max(slowdowns) < 1.10, rows
    assert math.exp(sum(map(math.log, slowdowns)) / len(slowdowns)) < 1.05
    assert sum(s < 1.03 for s in slowdowns) >= len(rows) * 2 // 3


# -- by model, config="model" ------------------------------------------------------------

def test_by_model_marks_the_axes_the_model_picks():
    assert model_axes(BY_MODEL, "k.cdsl", None, {}) == {"ROWS": [1, 4, 16]}
    assert model_axes(BY_MODEL, "k.cdsl", None, {"ROWS": 4}) is None
    assert model_axes(BY_MODEL, "k.cdsl", None, {}, every_tune=True) == {
        "ROWS": [1, 4, 16], "COLS": [128, 256]}
    assert model_axes(open(ACT_QUANT).read(), ACT_QUANT, None, {}) is None


def test_by_anything_but_model_is_a_located_error():
    source = BY_MODEL.replace("by model", "by timing")
    text = compile_error(source)
    points_at(text, source, 2, "timing")
    assert "'by timing' is not a way to pick a default" in text
    assert "help: write 'by model'" in text


def test_load_picks_by_model_per_shape_and_saves_the_choice(launches):
    kernel = commdsl.load(BY_MODEL, target="sm_90a")
    for m in (64, 65536):
        kernel(torch.zeros(m, 1024), y=torch.empty(m, 1024))
    space = search_space(BY_MODEL, "<string>", None, {}, {"ROWS": [1, 4, 16]})
    for m, grid in zip((64, 65536), (call[3] for call in launches["launches"])):
        choice = kernel.model_choices[(("M", m), ("N", 1024))]
        direct = model_choice(BY_MODEL, "<string>", None, {}, "sm_90a", space,
                              {"M": m, "N": 1024}, H100, use_records=False)
        assert choice.config == direct.config and list(choice.config) == ["ROWS"]
        assert grid[:2] == (math.ceil(m / choice.config["ROWS"]), 1024 // 128)  # COLS: 128
    again = commdsl.load(BY_MODEL, target="sm_90a")
    again(torch.zeros(64, 1024), y=torch.empty(64, 1024))
    assert again.model_choices[(("M", 64), ("N", 1024))].from_cache


def test_a_choice_is_in_milliseconds_fresh_and_read_back_from_its_record():
    text = open(FP8_GEMM).read()
    space = search_space(text, FP8_GEMM, None, {}, {"BM": [64, 128], "BN": [64, 128]})
    sizes = {"M": 128, "N": 2112, "K": 7168}
    fresh = model_choice(text, FP8_GEMM, None, {}, "sm_90a", space, sizes, H100)
    chosen = next(e for e in fresh.estimates if e.config == fresh.config)
    assert fresh.ms == pytest.approx(chosen.seconds * 1e3)
    saved = model_choice(text, FP8_GEMM, None, {}, "sm_90a", space, sizes, H100)
    assert saved.from_cache and saved.config == fresh.config
    assert saved.ms == pytest.approx(fresh.ms)
    assert f"({fresh.ms * 1e3:.1f} us)" in fresh.table()


def test_a_choice_saved_by_another_version_of_the_model_is_not_read_back(monkeypatch):
    """The record's key holds a digest of the model's code: after a change to the model, a
    shape is modelled afresh, not answered by the old model's choice."""
    from commdsl.tune import model_choice as choices
    text = open(FP8_GEMM).read()
    space = search_space(text, FP8_GEMM, None, {}, {"BM": [64, 128], "BN": [64, 128]})
    sizes = {"M": 256, "N": 2112, "K": 7168}
    model_choice(text, FP8_GEMM, None, {}, "sm_90a", space, sizes, H100)
    assert model_choice(text, FP8_GEMM, None, {}, "sm_90a", space, sizes, H100).from_cache
    monkeypatch.setattr(choices, "model_version", lambda: "another")
    assert not model_choice(text, FP8_GEMM, None, {}, "sm_90a", space, sizes, H100).from_cache


def test_config_model_and_its_mistakes():
    from commdsl.tune.model_kernel import ModelChosenKernel
    assert isinstance(commdsl.load(ACT_QUANT, config="model", target="sm_90a"),
                      ModelChosenKernel)
    assert isinstance(commdsl.load(ACT_QUANT, target="sm_90a"), commdsl.Kernel)
    with pytest.raises(commdsl.CompileError, match="config='models' is not one of"):
        commdsl.load(ACT_QUANT, config="models")
    with pytest.raises(commdsl.CompileError, match="autotune times"):
        commdsl.load(ACT_QUANT, config="model", autotune=True)


# -- the tuner prunes by it ----------------------------------------------------------------

def test_the_tuner_does_not_compile_or_time_what_the_model_rates_clearly_worse():
    timed = []

    def timer(run, config):
        timed.append(config)
        return 1.0 + config["ROWS"] / 100
    x = torch.randn(16384, 1024).to(torch.bfloat16)
    result = commdsl.autotune(ACT_QUANT, (x,), timer=timer, progress=False, target="sm_90a")
    pruned = [t for t in result.trials if t.pruned and t.pruned.startswith("model estimate")]
    assert pruned and len(timed) == len(result.trials) - len(pruned)
    for trial in pruned:
        ratio = float(trial.pruned.split()[2].rstrip("x"))         # rounded to 0.1
        assert ratio >= tuner.MODEL_PRUNE
    assert "pruned: model estimate" in result.table()


# -- commdsl tune --explain ----------------------------------------------------------------

def test_explain_prints_every_estimate_its_terms_and_the_choice(capsys):
    assert main(["tune", FP8_GEMM, "--shape", "M=4096,N=2112,K=7168", "--explain",
                 "--space", "BM=128,192", "--space", "BN=128"]) == 0
    out = capsys.readouterr().out
    rows = [line for line in out.splitlines() if line.startswith("BM=")]
    assert len(rows) == 2
    for line in rows:
        assert "waves, last" in line and "-bound" in line and "/SM (persistent)" in line
    # sorted by estimate: 192 rows fill their last wave (promoted without overlap, and at
    # the source's 5 stages with no room to stage their stores)
    assert rows[0].startswith("BM=192") and rows[1].startswith("BM=128")
    assert "(promotion not overlapped, stores from registers)" in rows[0]
    assert "not overlapped" not in rows[1]
    assert out.strip().splitlines()[-1].startswith("model's choice: BM=192,BN=128")


def test_a_large_space_is_estimated_in_workers_as_in_the_caller(monkeypatch):
    from commdsl.tune import model_choice as mc
    text = open(FP8_GEMM).read()
    configs = search_space(text, FP8_GEMM, None, {}, None).configs()[::12][:80]
    sizes = {"M": 4096, "N": 7168, "K": 7168}
    args = (text, FP8_GEMM, None, {}, "sm_90a", configs, sizes, H100)
    monkeypatch.setattr(mc, "_workers", lambda count: 2)
    seen = []
    pooled = mc.estimate_space(*args, on_estimate=seen.append)
    monkeypatch.setattr(mc, "_workers", lambda count: 1)
    alone = mc.estimate_space(*args)
    assert [e.config for e in pooled] == configs and len(seen) == len(configs)
    assert [(e.seconds, e.why_not) for e in pooled] == [(e.seconds, e.why_not) for e in alone]
    assert sum(e.seconds is not None for e in alone) > 10
