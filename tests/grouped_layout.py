"""DeepGEMM's m-grouped contiguous layout for tests and benches: each group's rows padded to
a multiple of 128, m_idx the group of each row (-1 on padding rows)."""
from __future__ import annotations

import torch

from test_fp8_gemm import quantize_a, quantize_b

ALIGN = 128


def contiguous_layout(rows: list[int], device="cpu") -> torch.Tensor:
    """m_idx for groups of `rows` rows each, every group padded to a multiple of 128."""
    parts = []
    for g, r in enumerate(rows):
        padded = -(-r // ALIGN) * ALIGN
        part = torch.full((padded,), -1, dtype=torch.int32)
        part[:r] = g
        parts.append(part)
    return torch.cat(parts).to(device)


def grouped_operands(rows: list[int], n: int, k: int, seed: int, device="cpu"):
    """(a, sa, b, sb, m_idx): a [M, K] and its 1 x 128 scales, b [G, N, K] and its
    [G, cdiv(N, 128), K / 128] block scales; padding rows of a are zero."""
    g = torch.Generator(device=device).manual_seed(seed)
    m_idx = contiguous_layout(rows, device)
    x = torch.randn(m_idx.numel(), k, generator=g, device=device)
    x[m_idx < 0] = 0
    a, sa = quantize_a(x)
    bs = [quantize_b(torch.randn(n, k, generator=g, device=device)) for _ in rows]
    b = torch.stack([q for q, _ in bs])
    sb = torch.stack([s for _, s in bs])
    return a, sa, b, sb, m_idx


def grouped_reference(a, sa, b, sb, m_idx):
    """float64 d[row] = dequantized a[row] @ dequantized b[m_idx[row]].T; padding rows NaN."""
    from test_fp8_gemm import reference
    m, n = a.shape[0], b.shape[1]
    out = torch.full((m, n), float("nan"), dtype=torch.float64, device=a.device)
    for g in range(b.shape[0]):
        rows = (m_idx == g).nonzero().flatten()
        if rows.numel():
            out[rows] = reference(a[rows], sa[rows], b[g], sb[g])
    return out
