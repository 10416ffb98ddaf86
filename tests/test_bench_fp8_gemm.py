"""bench/fp8_gemm.py's arithmetic on the CPU (bench/fp8_gemm_report.py): the shapes, the
ratios' direction, issue 18's criteria over a run, the numbers recorded before, the chart."""
import importlib
import json
import os
import sys

ROOT = os.path.join(os.path.dirname(__file__), "..")
sys.path.insert(0, os.path.join(ROOT, "bench"))
report = importlib.import_module("fp8_gemm_report")
plot = importlib.import_module("plot")


def timed(ms, **more):
    return {"ms": ms, "tflops": 1.0 / ms, **more}


def entry(shape, model, tuned=None, cublas=None, deepgemm=None, recorded=None):
    return {"shape": list(shape), "model": model, "tuned": tuned, "cublas": cublas,
            "deepgemm": deepgemm, "recorded_tflops": recorded}


def test_deepgemms_eighteen_shapes_and_8192_cubed():
    assert len(report.DEEPGEMM_SHAPES) == len(set(report.DEEPGEMM_SHAPES)) == 18
    assert report.SHAPES[-1] == (8192, 8192, 8192) and len(report.SHAPES) == 19


def test_random_shapes_are_fixed_new_and_spread_over_m():
    shapes = report.random_shapes(8)
    assert shapes == report.random_shapes(8) != report.random_shapes(8, seed=1)
    assert len(set(shapes)) == 8 and not set(shapes) & set(report.SHAPES)
    assert all(1 <= m <= 8192 and (n, k) in report.NK_PAIRS for m, n, k in shapes)
    assert min(m for m, _, _ in shapes) <= 128 < 1024 <= max(m for m, _, _ in shapes)


def test_ratios_are_of_throughput_and_fall_back_to_the_model_default():
    e = entry((64, 2112, 7168), timed(2.0), tuned=timed(1.0, unflushed_tflops=3.0),
              cublas=timed(4.0), deepgemm=timed(0.5), recorded=2.0)
    e["before"] = timed(1.25)
    assert report.ratios(e) == {"model_vs_tuned": 0.5, "vs_cublas": 4.0, "vs_deepgemm": 0.5,
                                "vs_recorded": 1.5, "vs_before": 1.25}
    untuned = entry((64, 2112, 7168), timed(2.0), cublas=timed(4.0))
    assert report.ratios(untuned) == {"model_vs_tuned": None, "vs_cublas": 2.0,
                                      "vs_deepgemm": None, "vs_recorded": None,
                                      "vs_before": None}
    wrong = entry((64, 2112, 7168), {"rel_err": 1.0, "error": "not timed"}, cublas=timed(4.0))
    assert report.ratios(wrong)["vs_cublas"] is None


def run_of(model_ms=1.0, tune_s=10.0):
    """A whole run where commdsl ties DeepGEMM and beats cuBLAS on every shape."""
    return [entry(s, timed(model_ms), tuned=timed(1.0, tune_s=tune_s, from_cache=False),
                  cublas=timed(1.5), deepgemm=timed(1.0)) for s in report.SHAPES]


def verdicts(entries):
    return {name: (passed, numbers) for name, passed, numbers in report.criteria(entries)}


def test_criteria_name_the_worst_shape_and_what_was_not_measured():
    good = verdicts(run_of())
    assert good["1: model default / tuned, fixed shapes"][0] is True
    assert good["3: geomean commdsl / DeepGEMM >= 0.95"] == (True, "1.000 over 18 shapes")
    assert good["5: M <= 128 vs recorded (unflushed)"] == (None, "not measured")
    assert good["3: 4096x7168x16384 >= 1400 TFLOP/s"][0] is False       # 1 TFLOP/s here
    run = run_of()
    run[6]["model"] = timed(1.06)                 # 6% slower than tuned on one shape
    run[3]["tuned"]["tune_s"] = 75.0
    bad = verdicts(run)
    passed, numbers = bad["1: model default / tuned, fixed shapes"]
    assert passed is False and numbers.startswith("worst 0.943 at 128x2112x7168")
    assert bad["2: tuning a new shape < 60 s"] == (False, "longest 75.0 s at 64x7168x16384")
    run[3]["tuned"]["from_cache"] = True          # a saved choice says nothing of tuning time
    assert verdicts(run)["2: tuning a new shape < 60 s"][0] is True
    run[0]["deepgemm"] = None
    passed, numbers = verdicts(run)["3: every shape >= 0.85x DeepGEMM"]
    assert passed is False and "1 shapes not measured" in numbers


def test_criterion_5_compares_with_the_commit_before_where_it_ran_in_this_run():
    run = run_of()
    for e in run:
        if e["shape"][0] <= 128:
            e["recorded_tflops"], e["before"] = 0.5, timed(1.1)
    assert verdicts(run)["5: M <= 128 vs the commit before (same run)"] == \
        (True, "worst 1.100 at 64x2112x7168 (needs >= 1.0)")
    run[7]["before"] = timed(0.8)                 # the old code 1.25x faster on one shape
    passed, numbers = verdicts(run)["5: M <= 128 vs the commit before (same run)"]
    assert passed is False and numbers.startswith("worst 0.800 at 128x24576x1536")
    for e in run:
        e["before"] = None                        # not run: the recorded numbers decide
    assert "5: M <= 128 vs recorded (unflushed)" in verdicts(run)


def test_recorded_numbers_from_the_file_before_issue_18_and_from_this_bench():
    path = os.path.join(ROOT, "bench", "results", "before-18", "fp8_gemm-h100-80gb-hbm3.json")
    with open(path) as f:
        committed = json.load(f)
    before = report.recorded_tflops(committed)
    assert len(before) == 11 and all(m in (128, 4096, 8192) for m, _, _ in before)
    assert before[(128, 2112, 7168)] == committed["shapes"][0]["best"]["tflops"]
    ours = {"shapes": [entry((64, 512, 512), timed(1.0), tuned=timed(1.0, unflushed_tflops=7.0)),
                       entry((128, 512, 512), timed(1.0), tuned=None)]}
    assert report.recorded_tflops(ours) == {(64, 512, 512): 7.0}


def test_the_chart_shows_model_default_tuned_cublas_and_deepgemm():
    payload = {"benchmark": "fp8_gemm", "device": "h100",
               "shapes": [entry((64, 2112, 7168), timed(2.0), tuned=timed(1.0),
                                cublas=timed(4.0))]}
    bars = plot.chart(payload).groups["64x2112x7168"]
    assert list(bars) == ["commdsl, model default", "commdsl, tuned", "cuBLAS", "DeepGEMM"]
    assert bars["commdsl, tuned"] == 1.0 and bars["cuBLAS"] == 0.25
    assert bars["DeepGEMM"] != bars["DeepGEMM"]                          # NaN: no bar
