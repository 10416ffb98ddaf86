"""Float64 and torch-bf16 references for examples/attention_varlen.cdsl, sequence by
sequence: shared by the CPU and GPU tests."""
from __future__ import annotations

import torch


def varlen_operands(lens, heads, d, gqa=1, seed=0, device="cpu"):
    """q [T, heads, d], k and v [T, heads / gqa, d] in bf16 with a sharp score in the first
    row, and cu_seqlens (i32 [B + 1]) for sequences of the given lengths."""
    g = torch.Generator(device=device).manual_seed(seed)
    total = sum(lens)
    q = torch.randn(total, heads, d, generator=g, device=device).to(torch.bfloat16)
    k, v = (torch.randn(total, heads // gqa, d, generator=g, device=device).to(torch.bfloat16)
            for _ in range(2))
    q[0, 0, :4] = 8.0
    cu = torch.tensor([0, *lens], device=device).cumsum(0).to(torch.int32)
    return q, k, v, cu


def varlen_errors(q, k, v, cu, o, lse, causal, gqa=1, scale=0.125):
    """Per sequence: (max |o - reference|, max |SDPA in bf16 - reference|, max relative
    LSE error), the references in float64."""
    out = []
    for b in range(len(cu) - 1):
        s0, s1 = int(cu[b]), int(cu[b + 1])
        if s0 == s1:
            continue
        qq = q[s0:s1].transpose(0, 1)
        kk, vv = (x[s0:s1].transpose(0, 1).repeat_interleave(gqa, dim=0) for x in (k, v))
        s = qq.double() @ kk.double().transpose(1, 2) * scale
        if causal:
            n = s1 - s0
            s = s.masked_fill(torch.ones(n, n, dtype=torch.bool, device=q.device).triu(1),
                              float("-inf"))
        ref_o, ref_lse = torch.softmax(s, dim=-1) @ vv.double(), torch.logsumexp(s, dim=-1)
        sdpa = torch.nn.functional.scaled_dot_product_attention(qq, kk, vv, scale=scale,
                                                                is_causal=bool(causal))
        out.append(((o[s0:s1].transpose(0, 1).double() - ref_o).abs().max().item(),
                    (sdpa.double() - ref_o).abs().max().item(),
                    ((lse[:, s0:s1].double() - ref_lse).abs() / ref_lse.abs()).max().item()))
    return out
