"""examples/attention.cdsl on a GPU: O within twice the error of torch's
scaled_dot_product_attention in bf16 against a float64 reference, LSE within 1e-4 relative,
on fresh random data with a sharp row, ragged lengths (1, not a multiple of 64), causal and
not, outputs poisoned first; examples/attention_varlen.cdsl the same way, sequence by
sequence, on batches of ragged lengths (cu_seqlens)."""
from __future__ import annotations

import os

import pytest

torch = pytest.importorskip("torch")
pytestmark = pytest.mark.gpu
if not torch.cuda.is_available():
    pytest.skip("needs a CUDA GPU", allow_module_level=True)

import commdsl  # noqa: E402

from varlen_reference import varlen_errors, varlen_operands  # noqa: E402

ATTENTION = os.path.join(os.path.dirname(__file__), "..", "examples", "attention.cdsl")
VARLEN = os.path.join(os.path.dirname(__file__), "..", "examples", "attention_varlen.cdsl")


@pytest.mark.parametrize("bh,length", [(16, 4096), (3, 1000), (2, 1), (1, 64)])
@pytest.mark.parametrize("d,stages,kb", [(64, 2, 64), (64, 3, 64), (128, 2, 64), (64, 3, 128),
                                          (128, 2, 128), (128, 3, 128)])
@pytest.mark.parametrize("causal", [0, 1], ids=["full", "causal"])
def test_within_twice_torchs_error(bh, length, d, stages, kb, causal):
    g = torch.Generator(device="cuda").manual_seed(bh * length + stages)
    q, k, v = (torch.randn(bh, length, d, generator=g, device="cuda").to(torch.bfloat16)
               for _ in range(3))
    q[0, 0, :4] = 8.0                                     # a row with a sharp peak
    o = torch.full((bh, length, d), float("nan"), dtype=torch.bfloat16, device="cuda")
    lse = torch.full((bh, length), float("nan"), device="cuda")
    commdsl.load(ATTENTION, STAGES=stages, CAUSAL=causal, D=d, KB=kb)(q, k, v, o=o, lse=lse)
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


@pytest.mark.parametrize("lens,heads,d,gqa", [([1, 70, 0, 4096, 64, 1000], 16, 64, 1),
                                               ([129, 2000, 3], 8, 128, 4)])
@pytest.mark.parametrize("causal", [0, 1], ids=["full", "causal"])
def test_varlen_within_twice_torchs_error(lens, heads, d, gqa, causal):
    q, k, v, cu = varlen_operands(lens, heads, d, gqa, seed=len(lens) + d, device="cuda")
    total = sum(lens)
    o = torch.full((total, heads, d), float("nan"), dtype=torch.bfloat16, device="cuda")
    lse = torch.full((heads, total), float("nan"), device="cuda")
    commdsl.load(VARLEN, CAUSAL=causal, D=d, GQA=gqa)(q, k, v, cu, o=o, lse=lse)
    assert not o.isnan().any() and not lse.isnan().any()
    for o_err, sdpa_err, lse_err in varlen_errors(q, k, v, cu, o, lse, causal, gqa):
        assert o_err <= 2 * sdpa_err + 1e-6 and lse_err <= 1e-4
