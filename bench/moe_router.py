"""DeepSeek-V3's MoE router (examples/moe_router.cdsl) against the model's own torch gate
(inference/model.py's Gate after its linear: sigmoid, group top-2 sums, top-4 groups, top-8
experts, weights normalized times 2.5) run eagerly and under torch.compile, in one run, for
a decode batch and two prefill sizes. Every commdsl config must choose the float64
reference's experts and match its weights (relative 1e-5) before it is timed. The kernel is
bound by its arithmetic (twelve rounds of max and min over each token's 256 scores), so the
table's fraction of copy bandwidth is no target.

    python bench/moe_router.py [--tokens 128,4096,16384]
"""
from __future__ import annotations

import argparse
import os
import sys

import torch

HERE = os.path.dirname(__file__)
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, "..", "tests"))
import common  # noqa: E402
import peers  # noqa: E402
from test_moe_router import SCALE, inputs, reference  # noqa: E402

import commdsl  # noqa: E402

EXAMPLE = os.path.join(HERE, "..", "examples", "moe_router.cdsl")


def torch_gate(logits, bias):
    """The model's gate in float32, as DeepSeek-V3's inference code writes it."""
    scores = logits.sigmoid()
    original = scores
    scores = (scores + bias).view(logits.shape[0], 8, -1)
    groups = scores.topk(2, dim=-1)[0].sum(dim=-1).topk(4, dim=-1)[1]
    mask = scores.new_ones(logits.shape[0], 8, dtype=torch.bool).scatter_(1, groups, False)
    ids = scores.masked_fill(mask.unsqueeze(-1), float("-inf")).flatten(1).topk(8, dim=-1)[1]
    weights = original.gather(1, ids)
    return ids, weights / weights.sum(dim=-1, keepdim=True) * SCALE


def bench_tokens(t, copy):
    logits, bias = inputs(t, 0)
    want_ids, want_w = (v.cuda() for v in reference(logits, bias))
    logits, bias = logits.cuda(), bias.cuda()
    ids = torch.empty(t, 8, dtype=torch.int32, device="cuda")
    w = torch.empty(t, 8, device="cuda")
    nbytes = logits.numel() * 4 + bias.numel() * 4 + ids.numel() * 4 + w.numel() * 4
    results = {"tokens": t, "commdsl": {}}

    def launch(cfg):
        kernel = commdsl.load(EXAMPLE, **cfg)
        ids.fill_(-1)
        w.fill_(float("nan"))
        return lambda: kernel(logits, bias, idx=ids, w=w)

    def check():
        assert torch.equal(ids.long(), want_ids), "commdsl chose other experts"
        torch.testing.assert_close(w.double(), want_w, rtol=1e-5, atol=1e-6)

    mine = peers.sweep("commdsl", [dict(R=r) for r in (1, 2, 4, 8)], launch, check, nbytes,
                       results["commdsl"])
    got_ids, _ = torch_gate(logits, bias)
    agree = (got_ids == want_ids).all(-1).float().mean().item()
    print(f"torch gate (float32) chooses the float64 reference's experts for {agree:.4f} "
          "of the tokens")
    found = {"torch_eager": common.gbs(nbytes, common.time_ms(lambda: torch_gate(logits, bias))),
             "torch_compile": peers.compiled_gbs(torch_gate, (logits, bias), nbytes)}
    peers.report(f"moe_router-{t}", f"MoE router, {t} tokens", nbytes, copy, mine, found,
                 results, copy_target=None, targets={"torch_eager": 1.0, "torch_compile": 1.0})


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--tokens", default="128,4096,16384")
    args = ap.parse_args()
    copy = common.copy_bandwidth_gbs()
    for t in args.tokens.split(","):
        bench_tokens(int(t), copy)


if __name__ == "__main__":
    main()
