"""bench/overlap.py on the CPU: its help, the stand-in's load policies in PTX, the GEMM's SM
budget, and the table and chart its results give (the measurement itself needs a GPU)."""
import importlib
import os
import re
import subprocess
import sys

import pytest

from commdsl.compiler import compile_source

ROOT = os.path.join(os.path.dirname(__file__), "..")
sys.path.insert(0, os.path.join(ROOT, "bench"))
overlap = importlib.import_module("overlap")
plot = importlib.import_module("plot")

LOADS = {"plain": "ld.global.v4", "nc": "ld.global.nc.v4",
         "nc+L1::no_allocate": "ld.global.nc.L1::no_allocate.v4",
         "nc+L1::no_allocate+L2::256B": "ld.global.nc.L1::no_allocate.L2::256B.v4",
         "L1::evict_first": "ld.global.L1::evict_first.v4"}


def run(n, shape, policy, gemm_ratio, standin_ratio):
    return {"n": n, "standin_sms": 24, "gemm_sms": 108, "shape": shape, "policy": policy,
            "gemm_alone_tflops": 900.0, "gemm_together_tflops": 900.0 * gemm_ratio,
            "gemm_ratio": gemm_ratio, "standin_alone_gbs": 1500.0,
            "standin_together_gbs": 1500.0 * standin_ratio, "standin_ratio": standin_ratio,
            "covered": True}


DEEPEP = overlap.DEEPEP
RESULTS = {"benchmark": "overlap", "device": "h100", "date": "2026-12-06", "sms_total": 132,
           "deepep_policy": DEEPEP, "targets": overlap.TARGETS,
           "gemm_full": {"4096x7168x16384": {"tflops": 1060.0}},
           "runs": [run(20, [4096, 7168, 16384], DEEPEP, 0.97, 0.93),
                    run(20, [4096, 2112, 7168], DEEPEP, 0.96, 0.88),
                    run(20, [4096, 2112, 7168], "plain", 0.90, 0.80)],
           "moe": [{"n": 20, "shape": [4096, 7168, 16384], "skipped": "RuntimeError: no NCCL"}]}


def test_help_runs_without_a_gpu():
    out = subprocess.run([sys.executable, os.path.join(ROOT, "bench", "overlap.py"), "--help"],
                         capture_output=True, text=True, check=True).stdout
    assert "--quick" in out and "--doc-from" in out


@pytest.mark.parametrize("policy", list(overlap.POLICIES))
def test_each_policy_is_the_stand_ins_load(policy):
    ptx = compile_source(overlap.standin_source(policy), "standin.cdsl", target="sm_90a",
                         constants={"SMS": 24}).ptx
    loads = set(re.findall(r"ld\.global[\w:.]*\.v4", ptx))
    assert loads == {LOADS[policy]}


def test_the_gemm_takes_the_rests_sms_as_its_budget():
    kir = compile_source(overlap.budgeted_gemm_source(), "fp8_gemm.cdsl", emit="ir",
                         constants={"SMS": 108}).ir[0]
    tiles = next(op for op in kir.walk() if op.name == "tiles")
    assert tiles.attrs["sms"] == 108


def test_the_check_at_n_20_takes_the_worst_shape():
    assert overlap.deepep_n20(RESULTS) == {"gemm_ratio": 0.96, "standin_ratio": 0.88,
                                           "meets_targets": False}
    assert overlap.deepep_n20({"runs": RESULTS["runs"][2:]}) is None
    ended_first = {**RESULTS["runs"][1], "covered": False}       # its ratios measure nothing
    check = overlap.deepep_n20({"runs": [RESULTS["runs"][0], ended_first]})
    assert check["standin_ratio"] == 0.93


def test_the_table_goes_between_the_docs_markers(tmp_path):
    doc = tmp_path / "overlap.md"
    doc.write_text(f"# head\n{overlap.TABLE_START}\nold\n{overlap.TABLE_END}\ntail\n")
    overlap.fill_doc({**RESULTS, "deepep_n20": overlap.deepep_n20(RESULTS)}, str(doc))
    text = doc.read_text()
    assert text.startswith("# head\n") and text.endswith(f"{overlap.TABLE_END}\ntail\n")
    assert "old" not in text and "| 20 | 24 | 108 | 4096x2112x7168 | plain | 900 | 810 | 0.900 | 1500 | 1200 | 0.800 | yes |" in text
    assert "skipped, RuntimeError: no NCCL" in text
    assert "GEMM together / alone 0.96, stand-in together / alone 0.88" in text
    with open(overlap.DOC) as f:
        real = f.read()
    assert real.index(overlap.TABLE_START) < real.index(overlap.TABLE_END)


def test_the_chart_is_deepeps_ratios_by_n_against_the_gemm_target():
    c = plot.chart(RESULTS)
    assert c.unit == "% of alone" and c.line == ("GEMM target", 95.0)
    assert c.groups == {"N = 20": {"GEMM 4096x7168x16384": 97.0,
                                   "stand-in beside 4096x7168x16384": 93.0,
                                   "GEMM 4096x2112x7168": 96.0,
                                   "stand-in beside 4096x2112x7168": 88.0}}


def test_without_deepeps_loads_the_chart_shows_the_policy_run(tmp_path):
    pytest.importorskip("matplotlib")
    plain = {**RESULTS, "runs": RESULTS["runs"][2:]}
    c = plot.chart(plain)
    assert "plain loads" in c.title
    assert c.groups == {"N = 20": {"GEMM 4096x2112x7168": 90.0,
                                   "stand-in beside 4096x2112x7168": 80.0}}
    assert plot.write_png(str(tmp_path / "overlap-h100.json"), plain) is not None
