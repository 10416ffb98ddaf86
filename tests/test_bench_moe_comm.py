"""bench/moe_comm.py's arithmetic (issue 20, criterion 1) apart from the GPUs: each kernel's
figures are its slowest rank's, held to the SMs' pull ceiling at its own SM count and to
NCCL; and the chart shows the ceilings beside the kernels."""
import importlib
import os
import sys

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "bench"))
moe_comm = importlib.import_module("moe_comm")
plot = importlib.import_module("plot")


def rank(gbs, pull, nccl, tuned_ms=1.0, best_ms=1.0):
    kernel = {"gbs": gbs, "nccl_busbw_gbs": nccl, "tuned": {"SMS": 20, "ROWS": 4},
              "tuned_ms": tuned_ms, "sweep_best_ms": best_ms}
    return {"rank": 0, "tokens": 4096, "hidden": 7168, "copy_engine_gbs": 370.0,
            **{name: dict(kernel) for name in moe_comm.KERNELS},
            "ceilings": {name: {"sms": 20, "pull_gbs": pull, "push_gbs": pull + 10}
                         for name in moe_comm.KERNELS}}


def test_a_kernel_at_the_ceiling_and_past_nccl_passes():
    checks = moe_comm.summarize([rank(300.0, 320.0, 250.0), rank(310.0, 325.0, 255.0)])
    for c in checks.values():
        assert c["gbs"] == 300.0 and c["pull_gbs"] == 320.0 and c["nccl_gbs"] == 250.0
        assert c["of_ceiling"] == pytest.approx(300 / 320) and c["pass"]


@pytest.mark.parametrize("gbs,pull,nccl", [(290.0, 320.0, 250.0),    # 90.6% of the ceiling
                                           (300.0, 320.0, 270.0)])   # 1.11x NCCL
def test_short_of_either_bar_fails(gbs, pull, nccl):
    checks = moe_comm.summarize([rank(gbs, pull, nccl)])
    assert not any(c["pass"] for c in checks.values())


def test_the_slowest_rank_decides_and_the_tuners_miss_is_reported():
    checks = moe_comm.summarize([rank(330.0, 340.0, 250.0), rank(280.0, 340.0, 250.0,
                                                                 tuned_ms=1.1, best_ms=1.0)])
    assert checks["dispatch"]["gbs"] == 280.0 and not checks["dispatch"]["pass"]
    assert checks["combine"]["tuned_vs_sweep_best"] == pytest.approx(0.1)


def test_the_chart_puts_the_ceiling_beside_each_kernel():
    chart = plot.chart({"benchmark": "moe_comm", "device": "h200",
                        "ranks": [rank(300.0, 320.0, 250.0)]})
    assert list(chart.groups) == list(moe_comm.KERNELS)
    assert chart.groups["dispatch_fp8"]["SMs' pull ceiling, same SMs"] == 320.0
