"""On a GPU: commdsl.partition keeps kernels to its SMs. A kernel of many programs records
`smid` per program; launched on a partition's stream it runs on at most `p.sms` SMs, on
`p.rest`'s stream on at most `p.rest.sms` others, and on the default stream on more SMs
than the partition has (so the counts could fail). A GEMM with `persistent(sms = S)` on the
rest gives the product it gives alone."""
import warnings

import pytest
import torch

import commdsl
from test_fp8_gemm import FP8_GEMM, mn_major, quantize_a, quantize_b, reference, relative_error

pytestmark = pytest.mark.gpu

# Each program streams ROWS rows of 4096 floats (128 KiB), enough that the programs of a
# large grid spread over every SM they are allowed instead of finishing on the first few.
WHERE_RUN = """
kernel where_run(x: f32[R, 4096], y: out f32[R, 4096], sm: out i32[R / ROWS])
  const ROWS = 8
  grid(R / ROWS)
  warps(4)
{
  for r in pid.0 * ROWS .. pid.0 * ROWS + ROWS {
    store y[r, 0 : +4096] = load x[r, 0 : +4096] * 2.0 + 1.0
  }
  store sm[pid.0] = smid
}
"""
PROGRAMS = 2048


def partition(sms: int):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        p = commdsl.partition(sms)
    if not p.guaranteed:
        pytest.skip(f"no green contexts here: {caught[0].message}")
    return p


def sms_used(stream) -> set[int]:
    """The SMs the programs of one launch of where_run on `stream` ran on."""
    kernel = commdsl.load(WHERE_RUN)
    x = torch.randn(PROGRAMS * 8, 4096, device="cuda")
    torch.cuda.synchronize()
    with torch.cuda.stream(stream):
        y, sm = kernel(x)
    stream.synchronize()
    assert torch.equal(y, x * 2.0 + 1.0)
    return set(sm.tolist())


@pytest.mark.parametrize("sms", [16, 20, 32])
def test_a_partitions_kernels_keep_to_its_sms_and_the_rest_to_the_others(sms):
    p = partition(sms)
    assert sms <= p.sms < torch.cuda.get_device_properties(0).multi_processor_count
    everywhere = sms_used(torch.cuda.default_stream())
    assert len(everywhere) > p.sms            # unconfined, the grid spreads wider
    inside = sms_used(p.stream)
    assert 0 < len(inside) <= p.sms
    assert p.rest is not None and p.rest.guaranteed
    rest = sms_used(p.rest.stream)
    assert 0 < len(rest) <= p.rest.sms
    assert not inside & rest, f"SMs in both: {sorted(inside & rest)}"


def test_a_budgeted_gemm_on_the_rest_matches_the_reference():
    """fp8_gemm with persistent(sms = p.rest.sms), CTA pairs included, on the rest's stream."""
    p = partition(20)
    source = open(FP8_GEMM).read().replace(
        "persistent(raster = GROUP, cluster = CLUSTER)",
        "persistent(raster = GROUP, cluster = CLUSTER, sms = SMS)").replace(
        "  tune PROMOTE", "  const SMS = 1\n  tune PROMOTE")
    m, n, k = 1024, 2112, 1024
    a, sa = quantize_a(torch.randn(m, k, device="cuda"))
    b, sb = quantize_b(torch.randn(n, k, device="cuda"))
    ref = reference(a, sa, b, sb)
    for cluster in (1, 2):
        kernel = commdsl.load(source, CLUSTER=cluster, SMS=p.rest.sms - p.rest.sms % cluster)
        d = torch.full((m, n), float("nan"), dtype=torch.bfloat16, device="cuda")
        torch.cuda.synchronize()
        with torch.cuda.stream(p.rest.stream):
            kernel(a, mn_major(sa), b, sb, d=d)
        p.rest.stream.synchronize()
        assert relative_error(d, ref) <= 2e-3, f"CLUSTER={cluster}"
