"""On a GPU: an FP8 GEMM whose B tiles (BN = 144, 160: DeepGEMM's) straddle B's 128-row scale
blocks, each column picking its block's scale (a scale per element fused into the wgmmas'
promotion; passes/chunk.py's per-chunk comparison), stored through TMA with a narrower last
box (32 or 64 bytes, 32B/64B-swizzled) and, under a row mask, by the warpgroup's vote or by
predicated stores. Against float64 on fresh random inputs, the output poisoned first and the
rows past the count left alone."""
import random

import pytest
import torch

import commdsl
from grouped_layout import calc_diff

pytestmark = pytest.mark.gpu

SOURCE = """
kernel column_scales(a: e4m3[M, K], b: e4m3[N, K], sb: f32[cdiv(N, 128), K / 128],
                     count: i32[1], d: out bf16[M, N])
  tune BN = 160 in [144, 160]
{
  for m0 in 0 .. M step 128, n0 in 0 .. N step BN persistent(raster = 8) {
    let rows = m0 + iota(128) < load count[0]
    let first = iota(BN) < 128 - n0 % 128
    let acc = zeros(f32, 128, BN)
    for k in 0 .. K step 128 pipeline(4) {
      let ta = load a[m0 : +128, k : +128] via tma
      let tb = load b[n0 : +BN, k : +128] via tma
      let s = where(first[None, :], load sb[n0 / 128, k / 128], load sb[n0 / 128 + 1, k / 128])
      acc += mma(ta, tb.T) * s
    }
    store d[m0 : +128, n0 : +BN] mask(rows[:, None]) = cast<bf16>(acc)
  }
}
"""


@pytest.mark.parametrize("bn", [144, 160])
@pytest.mark.parametrize("m,n,k,past", [(1024, 4096, 1024, 0), (300, 440, 384, 37)])
def test_column_scales_against_float64(bn, m, n, k, past):
    seed = random.randrange(2 ** 31)
    print(f"seed {seed}")
    gen = torch.Generator(device="cuda").manual_seed(seed)
    a = (torch.randn(m, k, generator=gen, device="cuda") * 4).to(torch.float8_e4m3fn)
    b = (torch.randn(n, k, generator=gen, device="cuda") * 4).to(torch.float8_e4m3fn)
    b[:, :3] = 448.0                                    # outliers
    sb = torch.rand((n + 127) // 128, k // 128, generator=gen, device="cuda") + 0.25
    count = torch.tensor([m - past], dtype=torch.int32, device="cuda")
    d = torch.full((m, n), float("nan"), dtype=torch.bfloat16, device="cuda")
    commdsl.load(SOURCE, BN=bn)(a, b, sb, count, d=d)
    scale = sb.double().repeat_interleave(128, 0)[:n].repeat_interleave(128, 1)
    ref = torch.einsum("mk,nk->mn", a.double(), b.double() * scale)
    rows = m - past
    assert d[rows:].isnan().all()
    assert calc_diff(d[:rows], ref[:rows]) < 1e-5      # columns on the wrong block: ~1e-3
