"""The rates the cost model (tune/model.py) divides work by: one `Machine` per GPU part.

A Target (commdsl/target.py) is a family and holds limits; a part of a family has its own
SM count, clock and memory, so the rates live here. Datasheet numbers carry their source;
the few efficiencies were fitted once to the timings recorded in bench/results (every shape
and config of fp8_gemm and act_quant on an H100 at once, never one shape):
`python bench/model_agreement.py --fit` repeats the fit and prints the agreement. The GEMM's
rates were refitted on 2026-12-07 to bench/fp8_gemm_sweep.py's H100 sweep (every BM x BN x
STAGES x CLUSTER at 19 shapes, 2584 times): the memory terms (an SM's L2 stream 120 GB/s,
1 us load latency, so that small-M tiles gain from deeper pipelines as measured) and the
cluster's lockstep (cluster_efficiency) chosen by the picks they give (bench/model_agreement.py
table: every pick within 1.09x of the measured best, 16 of 21 within 3%), the rms error of
all times 0.36: the model ranks configs, it does not predict microseconds well at small M,
and its small-M picks move with memory_latency_s (at 1.5 us the worst is 1.54x). The same
day the sweep grew M = 1 to 32 (43 shapes) and the out-of-bounds rate joined: every pick
of the 45 recorded shapes within 1.08x of the measured best, 41 within 3%, rms error 0.30.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

GB = 1e9
MIB = 1024 * 1024


@dataclass(frozen=True)
class Machine:
    name: str
    sms: int
    clock_hz: float                    # the boost clock the datasheet's peak rates assume
    hbm_bytes_per_s: float
    l2_bytes: int
    # Dense tensor-core FLOPs per clock per SM by operand dtype: the datasheet's peak over
    # sms x clock (H100 SXM: 1979 TFLOP/s FP8, 989 BF16, 132 SMs at 1.83 GHz).
    mma_flops_per_clock: dict
    # -- fitted (bench/model_agreement.py --fit) ------------------------------------------
    mma_efficiency: float = 0.70       # of the tensor cores' peak, sustained in a GEMM: the
                                       # card sits at its power limit (docs/perf-notes.md)
    hbm_efficiency: float = 0.90       # of the datasheet bandwidth a copy reaches (3.03 TB/s
                                       # measured, DESIGN.md); not fitted
    sm_load_bytes_per_s: float = 120 * GB  # what one SM pulls from L2 when it streams tiles
    shared_efficiency: float = 0.85    # of shared memory's bank rate that feeds wgmma: on an
                                       # H100 (2026-12-06) 4096x2112x7168 ran BN = 64 at 0.85x
                                       # BN = 128's TFLOP/s, where the full rate predicts 1.0
    # Of the tensor cores' rate a product promoted once a K step keeps where its promotion
    # cannot overlap the next step's wgmmas (passes/overlap.py: no registers for a second
    # partial accumulator, as at BM = 192 and 256). Fitted to 0.80 while 256-row tiles
    # spilled; 1.0 since (2026-12-07): no cost the timings show
    unoverlapped_promotion: float = 1.00
    # What one SM's consumer warpgroups store per second straight from wgmma fragments
    # (4-byte pairs, eight rows apart), where the epilogue cannot go through TMA; they
    # wait on it, so it adds to the tile's compute time
    direct_store_bytes_per_s: float = 15 * GB
    # Of an SM's rate a CTA keeps in a cluster: the pair's stages are refilled only when
    # both CTAs released them, so each waits on the slower (H100 sweep, 2026-12-07: cluster
    # 2 ran 3-13% slower than 1 at every tile, except where halving A's L2 reads paid more)
    cluster_efficiency: float = 0.92
    # The SMs' time and DRAM's combine as a p-norm, not a max: near a tie each slows the
    # other (a partly full last wave pulls less than DRAM can give). H100 sweep
    # (2026-12-07): with the max, 64x24576x1536's configs all tied on DRAM and the pick ran
    # 1.08x the best; at p = 6, 1.04x at worst over the 19 shapes; p <= 4 misranks act_quant
    memory_overlap_norm: float = 6.0
    # What the whole part moves per second of TMA box bytes past a tensor's edge: zeros, but
    # moved and served by a few L2 slices (H100, 2026-12-07: bench/fp8_gemm_sweep.py at M =
    # 1 to 32, where thin tiles ran up to 1.7x slower than at M = 64)
    oob_bytes_per_s: float = 2.5e12
    memory_latency_s: float = 1.0e-6   # from issuing a TMA load to its data in a consumer's
                                       # hands (the mbarrier round trip included), under load
    # From issuing a plain ld.global to its data, under load: no TMA unit or mbarrier on the
    # way. Fitted with act_quant's sweeps (2026-12-07): at 1 us its 8-warp CTAs looked short
    # of bytes in flight and the model picked 1-warp ones, 2-3% slower
    load_latency_s: float = 0.75e-6
    unit_overhead_s: float = 2.0e-6    # per tile wave, or once for a grid: pipeline fill and
                                       # epilogue drain (a grid's next CTA starts as one retires)
    launch_s: float = 6e-6             # one launch: its ramp, and the host cost the recorded
                                       # act_quant benches did not hide (5.9-21 us in DESIGN.md)

    def with_sms(self, sms: int) -> "Machine":
        return replace(self, sms=sms)


# H100 SXM5 80GB: NVIDIA H100 Tensor Core GPU datasheet (3.35 TB/s HBM3, 50 MB L2,
# 1979 / 989 TFLOP/s dense FP8 / BF16) and the CUDA guide's 132 SMs.
H100 = Machine("H100 SXM", sms=132, clock_hz=1.83e9, hbm_bytes_per_s=3.35e12,
               l2_bytes=50 * MIB,
               mma_flops_per_clock={"e4m3": 8192, "e5m2": 8192, "bf16": 4096, "f16": 4096})
# H200: the same SMs and clock as H100 SXM, 4.8 TB/s HBM3e (NVIDIA H200 datasheet).
H200 = replace(H100, name="H200", hbm_bytes_per_s=4.8e12)
# A100 SXM 80GB: 108 SMs at 1.41 GHz, 2.04 TB/s, 40 MB L2, 312 TFLOP/s dense BF16 (A100
# datasheet); no FP8 tensor cores.
A100 = Machine("A100 SXM", sms=108, clock_hz=1.41e9, hbm_bytes_per_s=2.04e12,
               l2_bytes=40 * MIB, mma_flops_per_clock={"bf16": 2048, "f16": 2048})

_BY_SM = {90: H100, 89: H100, 80: A100, 86: A100}


def machine_for(target_sm: int, device_name: str | None = None,
                sms: int | None = None) -> Machine:
    """The part to model: the named device's where it is known (an H200 by its name), else
    the family's reference part; `sms` (the device's own count, or an SM budget) replaces
    the part's."""
    machine = _BY_SM.get(target_sm, H100)
    if device_name and "H200" in device_name.upper():
        machine = H200
    return machine.with_sms(sms) if sms else machine
