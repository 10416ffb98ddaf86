"""Operands and float64 / torch references for examples/mla_decode.cdsl, shared by the CPU
and GPU tests: a paged cache with a shuffled block table, the keys gathered per sequence."""
from __future__ import annotations

import torch

SCALE = 0.072168784


def mla_operands(heads: int, s_q: int, lens: list[int], seed: int = 0, device="cpu"):
    """q [B, s_q, heads, 576], kv [blocks, 64, 1, 576] (bf16, one sharp score), a block
    table [B, max blocks] naming distinct shuffled blocks, and cache_seqlens [B]."""
    g = torch.Generator(device="cpu").manual_seed(seed)
    batch, most = len(lens), max(1, max((n + 63) // 64 for n in lens))
    blocks = batch * most + 3
    q = torch.randn(batch, s_q, heads, 576, generator=g).to(torch.bfloat16)
    q[0, 0, 0, :8] = 4.0                                   # a sharp row
    kv = torch.randn(blocks, 64, 1, 576, generator=g).to(torch.bfloat16)
    table = torch.randperm(blocks, generator=g)[:batch * most].view(batch, most)
    lens_t = torch.tensor(lens, dtype=torch.int32)
    return [t.to(device) for t in (q, kv, table.to(torch.int32), lens_t)]


def mla_errors(q, kv, table, lens, o, lse, causal: int):
    """Per (sequence, query token): (max |o - float64|, max |SDPA in bf16 on the gathered
    pages - float64|, max LSE error relative to max(|LSE|, 1)): a few keys with small scores
    give an LSE near 0 (0.0004 in the tests), where a relative error measures nothing."""
    batch, s_q = q.shape[:2]
    out = []
    for b in range(batch):
        n = int(lens[b])
        idx = torch.arange(n, device=q.device)
        keys = kv[table[b, idx // 64].long(), idx % 64, 0]                      # [n, 576]
        for s in range(s_q):
            seen = n - (s_q - 1 - s) * causal
            scores = q[b, s].double() @ keys[:seen].double().T * SCALE
            ref_o = torch.softmax(scores, dim=-1) @ keys[:seen, :512].double()
            ref_lse = torch.logsumexp(scores, dim=-1)
            sdpa = torch.nn.functional.scaled_dot_product_attention(
                q[b, s][None], keys[:seen][None], keys[:seen, :512][None], scale=SCALE)[0]
            out.append(((o[b, s].double() - ref_o).abs().max().item(),
                        (sdpa.double() - ref_o).abs().max().item(),
                        ((lse[b, :, s].double() - ref_lse).abs()
                         / ref_lse.abs().clamp(min=1)).max().item()))
    return out
