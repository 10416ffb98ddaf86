"""bench/overlap_multi.py's arithmetic (issue 20, criterion 3) apart from the GPUs: what each
side keeps together of its speed alone, the slowest rank's, against 93% and 90%; a run
where no dispatch lay inside the GEMMs' window fails; and its chart."""
import importlib
import math
import os
import sys

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "bench"))
overlap_multi = importlib.import_module("overlap_multi")
plot = importlib.import_module("plot")


def rank(gemm_alone=1.0, gemm_together=1.05, dispatch_alone=0.1, dispatch_together=0.105):
    return {"rank": 0, "sms": 24, "gemm_sms": 108, "gemm_all_sms_ms": 0.7,
            "gemm_alone_ms": gemm_alone, "gemm_together_ms": gemm_together,
            "dispatch_alone_ms": dispatch_alone, "dispatch_together_ms": dispatch_together,
            "dispatch_bytes": 30_000_000, "covered": True}


def test_both_sides_keeping_enough_pass():
    s = overlap_multi.summarize([rank(), rank(gemm_together=1.06)])
    assert s["gemm_kept"] == pytest.approx(1 / 1.06) and s["pass"]
    assert s["dispatch_alone_gbs"] == pytest.approx(300.0)
    assert s["gemm_all_sms_tflops"] == pytest.approx(2 * 4096 * 7168 * 16384 / 0.7 / 1e9)


@pytest.mark.parametrize("slow", [dict(gemm_together=1.1),          # the GEMM keeps 91%
                                  dict(dispatch_together=0.115),    # the dispatch keeps 87%
                                  dict(dispatch_together=math.nan)])  # none inside the window
def test_one_rank_short_on_either_side_fails(slow):
    s = overlap_multi.summarize([rank(), rank(**slow)])
    assert not s["pass"]


def test_the_chart_shows_what_each_side_keeps():
    ranks = [rank()]
    chart = plot.chart({"benchmark": "overlap_multi", "device": "h100", "ranks": ranks,
                        "summary": overlap_multi.summarize(ranks),
                        "targets": overlap_multi.TARGETS})
    (bars,) = chart.groups.values()
    assert set(bars) == {"fp8_gemm (needs 0.93)", "moe_dispatch (needs 0.90)"}
