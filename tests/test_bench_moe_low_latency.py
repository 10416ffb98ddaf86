"""bench/moe_low_latency.py's arithmetic (issue 20, criterion 2) apart from the GPUs: each
figure is the slowest rank's, and dispatch + combine passes at 40 us or less."""
import importlib
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "bench"))
moe_low_latency = importlib.import_module("moe_low_latency")


def rank(both, nccl):
    return {"both_us": both, "dispatch_us": both / 2, "combine_us": both / 2, "nccl_us": nccl}


def test_the_slowest_rank_counts():
    s = moe_low_latency.summarize([rank(30.0, 60.0), rank(38.0, 50.0)])
    assert s["both_us"] == 38.0 and s["nccl_us"] == 60.0
    assert s["vs_nccl"] == 60.0 / 38.0 and s["pass"]


def test_past_40_us_fails():
    assert not moe_low_latency.summarize([rank(41.0, 90.0)])["pass"]
