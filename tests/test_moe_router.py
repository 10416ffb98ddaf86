"""examples/moe_router.cdsl, DeepSeek-V3's group-limited router, against a float64 torch
version of its reference (sigmoid scores, a bias for the choice only, the 4 best of 8 groups
by their two best scores, the 8 best experts of those, weights normalized times 2.5): at
the front end and after every pass in the interpreter, through ptxas, and on a GPU."""
import os

import pytest
import torch

import commdsl
from commdsl.compiler import compile_source
from commdsl.interpreter import run
from commdsl.passes import PASS_ORDER, get_pass
from commdsl.runtime.ptxas import assemble, find_ptxas
from commdsl.target import get_target

ROUTER = os.path.join(os.path.dirname(__file__), "..", "examples", "moe_router.cdsl")
SCALE = 2.5


def reference(logits, bias):
    """(expert ids, weights) of each token, best first, in float64."""
    score = torch.sigmoid(logits.double())
    biased = score + bias.double()
    t = logits.shape[0]
    group = biased.view(t, 8, 32).topk(2, dim=-1)[0].sum(-1)
    chosen = torch.zeros(t, 8, dtype=torch.bool).scatter_(1, group.topk(4, dim=-1)[1], True)
    ids = biased.masked_fill(~chosen.repeat_interleave(32, 1), -torch.inf).topk(8, dim=-1)[1]
    w = score.gather(1, ids)
    return ids, w / w.sum(-1, keepdim=True) * SCALE


def inputs(t, seed):
    """Logits with outliers (a few tokens far more confident) and a small bias."""
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(t, 256, generator=g) * 2
    logits[::5] *= 8
    return logits, torch.randn(256, generator=g) * 0.1


def interpret(kir, logits, bias):
    t = logits.shape[0]
    ids = torch.full((t, 8), -7, dtype=torch.int32)
    w = torch.full((t, 8), float("nan"))
    run(kir, dict(logits=logits, bias=bias, idx=ids, w=w), dict(T=t))
    return ids, w


def check(ids, w, logits, bias):
    want_ids, want_w = reference(logits, bias)
    assert torch.equal(ids.long(), want_ids)
    torch.testing.assert_close(w.double(), want_w, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("r", [1, 4, 8])
def test_the_router_chooses_as_deepseek_v3_at_every_stage(r):
    source = open(ROUTER).read()
    kir = compile_source(source, ROUTER, emit="ir", constants=dict(R=r)).ir[0]
    logits, bias = inputs(13, r)               # 13 tokens: the last program is ragged
    for stage in ["irgen", *PASS_ORDER]:
        if stage != "irgen":
            kir = get_pass(stage)(kir, get_target("sm_90a"))
        check(*interpret(kir, logits, bias), logits, bias)


def test_a_tie_goes_to_the_lower_group_and_expert():
    source = open(ROUTER).read()
    kir = compile_source(source, ROUTER, emit="ir", constants=dict(R=4)).ir[0]
    logits, bias = torch.full((4, 256), -4.0), torch.zeros(256)
    # groups 0, 1, 2, 3 and 5 tie (two top experts each; group 3 has three): the first four
    # win, and of their nine top experts the eight lowest
    logits[:, [3, 5, 40, 41, 77, 80, 100, 101, 102, 170, 171]] = 2.0
    ids, w = interpret(kir, logits, bias)
    assert ids.tolist() == [[3, 5, 40, 41, 77, 80, 100, 101]] * 4
    torch.testing.assert_close(w, torch.full((4, 8), SCALE / 8))


def test_nan_and_inf_logits_rank_as_torch_ranks_them():
    source = open(ROUTER).read()
    kir = compile_source(source, ROUTER, emit="ir", constants=dict(R=4)).ir[0]
    logits, bias = inputs(6, 7)
    logits[1, 77] = float("nan")                # ranks first; the token's weights are NaN
    logits[2, 5], logits[2, 200] = float("inf"), -float("inf")
    logits[3] = -float("inf")          # every score 0: chosen by the bias, weights 0 / 0
    ids, w = interpret(kir, logits, bias)
    want_ids, want_w = reference(logits, bias)
    assert ids[1, 0] == 77 and w[1].isnan().all()
    rows = [0, 2, 3, 4, 5]
    assert torch.equal(ids[rows].long(), want_ids[rows])
    torch.testing.assert_close(w[rows].double(), want_w[rows], rtol=1e-5, atol=1e-6,
                               equal_nan=True)
    assert w[3].isnan().all() and not w[[0, 2, 4, 5]].isnan().any()


@pytest.mark.parametrize("r", [1, 2, 4, 8])
def test_every_router_config_assembles_without_spills(r):
    if not find_ptxas():
        pytest.skip("no ptxas")
    ptx = compile_source(open(ROUTER).read(), ROUTER, constants=dict(R=r)).ptx
    report = assemble(ptx, arch="sm_90a", entry="moe_router").report
    assert report.spill_stores_bytes == 0 and report.spill_loads_bytes == 0, report.summary()


@pytest.mark.gpu
@pytest.mark.parametrize("r", [1, 4, 8])
def test_the_router_on_the_gpu(r):
    logits, bias = inputs(1001, r)
    ids, w = commdsl.load(ROUTER, R=r)(logits.cuda(), bias.cuda())
    check(ids.cpu(), w.cpu(), logits, bias)
