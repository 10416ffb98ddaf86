"""DeepGEMM's grouped layouts for tests and benches. Contiguous: each group's rows padded to
a multiple of 128, m_idx the group of each row (-1 on padding rows). Masked: a fixed
[G, M_max, K] block per group of which the first masked_m[g] rows are valid."""
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


def masked_operands(counts: list[int], m_max: int, n: int, k: int, seed: int, device="cpu"):
    """(a, sa, b, sb, masked_m), DeepGEMM's masked layout: a [G, M_max, K] and its 1 x 128
    scales (every row random, valid or not), b [G, N, K] and its block scales, and the
    valid row count of each group."""
    g = torch.Generator(device=device).manual_seed(seed)
    quantized = [quantize_a(torch.randn(m_max, k, generator=g, device=device))
                 for _ in counts]
    bs = [quantize_b(torch.randn(n, k, generator=g, device=device)) for _ in counts]
    return (torch.stack([q for q, _ in quantized]), torch.stack([s for _, s in quantized]),
            torch.stack([q for q, _ in bs]), torch.stack([s for _, s in bs]),
            torch.tensor(counts, dtype=torch.int32, device=device))


def masked_reference(a, sa, b, sb, masked_m):
    """float64 d[g, row] = dequantized a[g, row] @ dequantized b[g].T for the first
    masked_m[g] rows of each group; the other rows NaN."""
    from test_fp8_gemm import reference
    groups, m_max, n = a.shape[0], a.shape[1], b.shape[1]
    out = torch.full((groups, m_max, n), float("nan"), dtype=torch.float64, device=a.device)
    for g in range(groups):
        rows = min(int(masked_m[g]), m_max)
        if rows > 0:
            out[g, :rows] = reference(a[g, :rows], sa[g, :rows], b[g], sb[g])
    return out


def calc_diff(x: torch.Tensor, y: torch.Tensor) -> float:
    """DeepGEMM's test metric: 1 - cosine similarity of the two outputs."""
    x, y = x.double(), y.double()
    return (1 - 2 * (x * y).sum() / (x * x + y * y).sum()).item()

