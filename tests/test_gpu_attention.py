"""examples/attention.cdsl on a GPU: O within twice the error of torch's
scaled_dot_product_attention in bf16 against a float64 reference, LSE within 1e-4 relative,
on fresh random data with a sharp row, ragged lengths (1, not a multiple of 64), causal and
not, outputs poisoned first."""
from __future__ import annotations

import os

import pytest

torch = pytest.importorskip("torch")
pytestmark = pytest.mark.gpu
if not torch.cuda.is_available():
    pytest.skip("needs a CUDA GPU", allow_module_level=True)

import commdsl  # noqa: E402

ATTENTION = os.path.join(os.path.dirname(__file__), "..", "examples", "attention.cdsl")


@pytest.mark.parametrize("bh,length", [(16, 4096), (3, 1000), (2, 1), (1, 64)])
@pytest.mark.parametrize("d,stages", [(64, 2), (64, 3), (128, 2)])
@pytest.mark.parametrize("causal", [0, 1], ids=["full", "causal"])
def test_within_twice_torchs_error(bh, length, d, stages, causal):
    g = torch.Generator(device="cuda").manual_seed(bh * length + stages)
    q, k, v = (torch.randn(bh, length, d, generator=g, device="cuda").to(torch.bfloat16)
               for _ in range(3))
    q[0, 0, :4] = 8.0                                     # a row with a sharp peak
    o = torch.full((bh, length, d), float("nan"), dtype=torch.bfloat16, device="cuda")
    lse = torch.full((bh, length), float("nan"), device="cuda")
    commdsl.load(ATTENTION, STAGES=stages, CAUSAL=causal, D=d)(q, k, v, o=o, lse=lse)
    s = (q.double() @ k.double().transpose(1, 2)) * 0.125
    if causal:
        s = s.masked_fill(torch.ones(length, length, dtype=torch.bool, device="cuda").triu(1),
                          float("-inf"))
    ref_o, ref_lse = torch.softmax(s, dim=-1) @ v.double(), torch.logsumexp(s, dim=-1)
    sdpa = torch.nn.functional.scaled_dot_product_attention(q, k, v, scale=0.125,
                                                            is_causal=bool(causal))
    assert not o.isnan().any()
    assert (o.double() - ref_o).abs().max() <= 2 * (sdpa.double() - ref_o).abs().max() + 1e-6
    assert ((lse.double() - ref_lse).abs() <= 1e-4 * ref_lse.abs() + 1e-6).all()


def test_gqa_heads_share_their_kv_head():
    bh, length, gqa = 16, 1000, 4
    g = torch.Generator(device="cuda").manual_seed(7)
    q = torch.randn(bh, length, 64, generator=g, device="cuda").to(torch.bfloat16)
    k, v = (torch.randn(bh // gqa, length, 64, generator=g, device="cuda").to(torch.bfloat16)
            for _ in range(2))
    o, lse = commdsl.load(ATTENTION, GQA=gqa)(q, k, v)
    kk, vv = k.repeat_interleave(gqa, dim=0), v.repeat_interleave(gqa, dim=0)
    s = (q.double() @ kk.double().transpose(1, 2)) * 0.125
    ref_o, ref_lse = torch.softmax(s, dim=-1) @ vv.double(), torch.logsumexp(s, dim=-1)
    sdpa = torch.nn.functional.scaled_dot_product_attention(q, kk, vv, scale=0.125)
    assert (o.double() - ref_o).abs().max() <= 2 * (sdpa.double() - ref_o).abs().max() + 1e-6
    assert ((lse.double() - ref_lse).abs() <= 1e-4 * ref_lse.abs() + 1e-6).all()
