"""examples/moe_low_latency.cdsl (DeepEP's low-latency mode, written in commdsl): on simulated
ranks (the interpreter runs every rank at once), after every pass, dispatch places each
token in its experts' rows in order of source rank and token with the counts and sources
torch computes, and combine gives back each token's weighted sum of its experts' outputs;
two rounds in a row (the per-CTA launch counters advance the handshake); FP8 dispatch
delivers torch's 1 x 128 quantization bit for bit. Every tune config passes ptxas with no
spills."""
import os

import pytest
import torch

from commdsl.compiler import compile_source
from commdsl.interpreter import run_ranks
from commdsl.passes import PASS_ORDER, get_pass
from commdsl.runtime.ptxas import assemble
from commdsl.target import get_target

PATH = os.path.join(os.path.dirname(__file__), "..", "examples", "moe_low_latency.cdsl")
SMALL = dict(TMAX=16, K=4, SMS=3, CHUNK=128)


def _lowered(kernel, **constants):
    """The kernel's IR after every pass: what the backend emits."""
    kir = compile_source(open(PATH).read(), PATH, kernel=kernel, constants=constants,
                         emit="ir").ir[0]
    for name in PASS_ORDER:
        kir = get_pass(name)(kir, get_target("sm_90a"))
    return kir


def _routing(world, tokens, experts, k, seed):
    """Each rank's T tokens' top-k ids (every third token on one rank's experts) and
    weights."""
    g = torch.Generator().manual_seed(seed)
    per = experts // world
    ids = [torch.zeros(tokens[r], k, dtype=torch.int32) for r in range(world)]
    weights = [torch.rand(tokens[r], k, generator=g) for r in range(world)]
    for r in range(world):
        for t in range(tokens[r]):
            ids[r][t] = (torch.randperm(experts, generator=g)[:k] if t % 3 else
                         (t + r) % world * per + torch.randperm(per, generator=g)[:k]).int()
    return ids, weights


def _reference(ids, world, tokens, experts):
    """Per rank and local expert: the (source rank, token) pairs it receives, in order."""
    per = experts // world
    return [[[(p, t) for p in range(world) for t in range(tokens[p])
              if (ids[p][t] == r * per + le).any()] for le in range(per)]
            for r in range(world)]


class Ranks:
    """Every rank's buffers, kept across rounds as the runtime would keep them."""

    def __init__(self, world, tmax, hidden, experts, k):
        self.world, self.tmax, self.hidden, self.k = world, tmax, hidden, k
        self.el, self.rows = experts // world, world * tmax
        z = lambda *shape: [torch.zeros(*shape, dtype=torch.int32) for _ in range(world)]
        self.dispatch_ep, self.combine_ep = z(SMALL["SMS"]), z(SMALL["SMS"])
        self.dispatch_flags, self.combine_flags = z(world, SMALL["SMS"]), z(world)
        self.x = [torch.full((tmax, hidden), 5.0).bfloat16() for _ in range(world)]
        self.topk = z(tmax, k)
        self.recv_base = z(self.el, world)

    def round(self, xs, ids, weights, scale):
        """xs, ids, weights: each rank's T tokens (T may differ between ranks)."""
        w, el, rows, hidden = self.world, self.el, self.rows, self.hidden
        recv_x = [torch.full((el, rows, hidden), 3.0).bfloat16() for _ in range(w)]
        recv_src = [torch.full((el, rows), -7, dtype=torch.int32) for _ in range(w)]
        recv_count = [torch.full((el,), -7, dtype=torch.int32) for _ in range(w)]
        sizes = [dict(H=hidden, EL=el, R=rows, W=w, ER=el * rows, T=len(xs[r]))
                 for r in range(w)]
        run_ranks(_lowered("moe_dispatch_ll", **SMALL, ROWS=2),
                  [dict(x_in=xs[r], topk_in=ids[r], x=self.x[r], topk=self.topk[r],
                        recv_x=recv_x[r], recv_src=recv_src[r], recv_count=recv_count[r],
                        recv_base=self.recv_base[r], ep=self.dispatch_ep[r],
                        flags=self.dispatch_flags[r]) for r in range(w)], sizes, epoch=0)
        # the experts: expert le of rank r scales its rows by scale[r][le]
        ys = [(recv_x[r].float() * scale[r][:, None, None]).bfloat16().reshape(el * rows, hidden)
              for r in range(w)]
        combined = [torch.full((len(xs[r]), hidden), float("nan")).bfloat16() for r in range(w)]
        run_ranks(_lowered("moe_combine_ll", **SMALL),
                  [dict(y=ys[r], recv_base=self.recv_base[r], topk=ids[r], weights=weights[r],
                        combined=combined[r], ep=self.combine_ep[r],
                        flags=self.combine_flags[r]) for r in range(w)], sizes, epoch=0)
        return recv_x, recv_src, recv_count, ys, combined


@pytest.mark.parametrize("world,tokens", [(2, [5, 16]), (4, [1, 0, 7, 16])])
def test_low_latency_dispatch_and_combine_match_torch(world, tokens):
    tmax, hidden, experts, k = SMALL["TMAX"], 256, 16, SMALL["K"]
    ranks = Ranks(world, tmax, hidden, experts, k)
    for seed in (0, 1):                                      # two rounds: the counters advance
        ids, weights = _routing(world, tokens, experts, k, seed)
        g = torch.Generator().manual_seed(seed + 10)
        xs = [torch.randn(t, hidden, generator=g).bfloat16() for t in tokens]
        scale = [torch.rand(ranks.el, generator=g) + 0.5 for _ in range(world)]
        recv_x, recv_src, recv_count, ys, combined = ranks.round(xs, ids, weights, scale)
        expected = _reference(ids, world, tokens, experts)
        for r in range(world):
            for le, pairs in enumerate(expected[r]):
                n = len(pairs)
                assert recv_count[r][le].item() == n
                assert recv_src[r][le, :n].tolist() == [p * tmax + t for p, t in pairs]
                for j, (p, t) in enumerate(pairs):
                    assert torch.equal(recv_x[r][le, j], xs[p][t])
                assert (recv_src[r][le, n:] == -7).all() and (recv_x[r][le, n:] == 3.0).all()
        for r in range(world):
            assert (ranks.topk[r][tokens[r]:] == -1).all()       # staged: -1 past the tokens
            for t in range(tokens[r]):
                want = torch.zeros(hidden, dtype=torch.float64)
                for e, w in zip(ids[r][t].tolist(), weights[r][t].tolist()):
                    if e >= 0:
                        owner, le = divmod(e, experts // world)
                        want += w * (xs[r][t].float() * scale[owner][le]).bfloat16().double()
                got = combined[r][t].double()
                assert torch.allclose(got, want, rtol=2e-2, atol=1e-2), (r, t)
        assert all(int(c.min()) == seed + 1 for c in ranks.dispatch_ep + ranks.combine_ep)


@pytest.mark.parametrize("kernel", ["moe_dispatch_ll", "moe_dispatch_ll_fp8", "moe_combine_ll"])
def test_low_latency_kernels_assemble_without_spills(kernel):
    """Every config of the tune lists."""
    from commdsl.tune.space import search_space
    text = open(PATH).read()
    for config in search_space(text, PATH, kernel, {}, None).configs():
        ptx = compile_source(text, PATH, kernel=kernel, constants=config).ptx
        assert "ld.global.nc.L1::no_allocate.L2::256B" in ptx
        report = assemble(ptx, arch="sm_90a", entry=kernel).report
        assert report.spill_stores_bytes == 0 and report.spill_loads_bytes == 0, config


def _quantized(x):
    """act_quant's 1 x 128 groups: (e4m3 bytes, f32 scales)."""
    g = x.float().view(x.shape[0], x.shape[1] // 128, 128)
    s = g.abs().amax(-1).clamp(min=1e-4) / 448.0
    return (g / s[..., None]).view(x.shape).to(torch.float8_e4m3fn), s


@pytest.mark.parametrize("world,tokens", [(2, [5, 16]), (4, [1, 0, 7, 16])])
def test_low_latency_fp8_dispatch_quantizes_and_places_like_torch(world, tokens):
    """The staging quantizes as act_quant does; each received row's bytes and scales (the
    scales MN-major, [EL, H / 128, R]) are its token's, bit for bit."""
    tmax, hidden, experts, k = SMALL["TMAX"], 256, 16, SMALL["K"]
    el, rows = experts // world, world * tmax
    ids, _ = _routing(world, tokens, experts, k, seed=3)
    g = torch.Generator().manual_seed(7)
    xs = [(torch.randn(t, hidden, generator=g) * 10).bfloat16() for t in tokens]
    z = lambda *shape: [torch.zeros(*shape, dtype=torch.int32) for _ in range(world)]
    recv_x = [torch.full((el, rows, hidden), 1.0).to(torch.float8_e4m3fn) for _ in range(world)]
    recv_xs = [torch.full((el, hidden // 128, rows), -1.0) for _ in range(world)]
    recv_src, recv_count = z(el, rows), z(el)
    run_ranks(_lowered("moe_dispatch_ll_fp8", **SMALL, ROWS=2),
              [dict(x_in=xs[r], topk_in=ids[r], x=torch.zeros(tmax, hidden).to(
                    torch.float8_e4m3fn), xs=torch.zeros(tmax, hidden // 128),
                    topk=torch.zeros(tmax, k, dtype=torch.int32), recv_x=recv_x[r],
                    recv_xs=recv_xs[r], recv_src=recv_src[r], recv_count=recv_count[r],
                    recv_base=torch.zeros(el, world, dtype=torch.int32),
                    ep=torch.zeros(SMALL["SMS"], dtype=torch.int32),
                    flags=torch.zeros(world, SMALL["SMS"], dtype=torch.int32))
               for r in range(world)],
              [dict(H=hidden, EL=el, R=rows, W=world, T=tokens[r]) for r in range(world)],
              epoch=0)
    quantized = [_quantized(x) for x in xs]
    for r, pairs_of in enumerate(_reference(ids, world, tokens, experts)):
        for le, pairs in enumerate(pairs_of):
            assert recv_count[r][le].item() == len(pairs)
            for j, (p, t) in enumerate(pairs):
                q, s = quantized[p]
                assert torch.equal(recv_x[r][le, j].view(torch.uint8), q[t].view(torch.uint8))
                assert torch.equal(recv_xs[r][le, :, j], s[t])
            assert (recv_xs[r][le, :, len(pairs):] == -1.0).all()


@pytest.mark.parametrize("max_tokens", [0, 257])
def test_a_low_latency_buffer_past_its_token_range_is_a_clear_error(max_tokens):
    from commdsl.moe_ll import LowLatencyBuffer
    from commdsl.runtime.symmetric import CommError
    with pytest.raises(CommError, match=f"max_tokens = {max_tokens}: the low-latency kernels "
                                        "take 1 to 256 tokens a rank"):
        LowLatencyBuffer(max_tokens=max_tokens, hidden=7168, num_experts=256, topk=8)
