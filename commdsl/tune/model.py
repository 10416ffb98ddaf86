"""The cost model: a config's time for one call shape, estimated without a GPU.

The input is what the compiler knows about the config (tune/profile.py: its threads and
shared memory, and per work unit its bytes, FLOPs and bytes in flight) and the rates of the
part (tune/machine.py). The estimate is a roofline over waves of work units:

    units      output tiles of a persistent loop (tile counts from the loop's extents and
               steps), else the CTAs of the grid
    per SM     how many units an SM runs at once: 1 for a persistent loop (one CTA per SM);
               else the fewest CTAs that threads, shared memory, registers (ptxas's, where
               known) and the SM's CTA slots allow ("occupancy"), and no more than the
               units spread over the SMs
    waves      ceil(units / (SMs x per SM)); the last wave's fill is how full it is. An SM
               with work in the last wave takes as long as in a full one, so a tile count
               that just spills into a new wave costs a whole wave
    compute    per unit, mma FLOPs / (the tensor cores' sustained rate x the tile shape's
               efficiency): wgmma reads its A (64 rows) and B (N rows) from shared memory,
               so up to N = 64 shared memory, not the tensor cores, sets the pace (at
               the 85% of its bank rate measured to reach wgmma); a product promoted once
               a K step whose promotion the passes could not overlap with the next step's
               wgmmas runs at the part's unoverlapped_promotion of that
    stream     per unit, the bytes its loads and stores move between L2 and the SM, at what
               one SM pulls, and at what its bytes in flight cover in one memory latency
               (TMA's, or a plain load's where no load goes through TMA; Little's law),
               the two combined as below; loads a CTA pair shares through TMA multicast
               count half
    SM time    waves x per SM x (compute^p + stream^p)^(1/p), plus the fill/drain overhead
               once a wave of a persistent loop's tiles, once for a grid (its CTAs overlap
               across waves)
    out of     the bytes of TMA boxes that lie past a tensor's edge (a 64-row A tile over
    bounds     M = 1 row), all units, at the part's oob_bytes_per_s: the TMA still moves
               them, and on an H100 they pile onto a few L2 slices (ncu, M = 1: the
               busiest slice served 2.4x the mean sectors, 1.06x at M = 64), so many thin
               tiles over a tiny M are slow
    DRAM       bytes from HBM / its bandwidth. A tensor that fits in half of L2 is read
               from HBM once; otherwise each wave reads what its tiles touch: with a
               rasterized persistent order (GROUP rows at a time) a wave of W tiles spans
               GROUP rows and W / GROUP columns, so loads that depend on the row alone are
               read GROUP times less often than without the raster
    time       launch + (SM time^p + DRAM^p + out of bounds^p)^(1/p), p the part's
               memory_overlap_norm: near a tie each slows the other (a pipeline just deep
               enough stalls on every late load; a 3-stage ring ran 3% slower than a
               4-stage one at 4096 x 2112 x 7168, compute-bound both); "bound" names the
               largest term

Simple on purpose: each term is one line of arithmetic an engineer can check by hand, and
`commdsl tune --explain` prints them all.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from ..target import Target
from .machine import Machine
from .profile import KernelProfile, NotModelled, Work

WGMMA_ROWS = 64                 # rows of A one wgmma takes (one warpgroup)
WGMMA_K_BYTES = 32              # bytes of K one wgmma takes (k32 for 8-bit, k16 for 16-bit)


@dataclass
class Estimate:
    config: dict
    seconds: float | None = None     # None: cannot run (why_not)
    why_not: str | None = None
    units: int = 0
    per_sm: int = 0
    occupancy_limit: str = ""        # what caps per_sm
    waves: int = 0
    last_wave_fill: float = 0.0
    compute_s: float = 0.0           # the SM time's compute part (all waves)
    stream_s: float = 0.0            # its L2 <-> SM part (all waves)
    overhead_s: float = 0.0          # fill and drain, all waves
    dram_s: float = 0.0
    out_of_bounds_s: float = 0.0     # TMA box bytes past the tensors' edges, all units
    bound: str = ""
    unoverlapped: bool = False       # compute charged for a promotion without overlap
    direct_stores: bool = False      # and for consumers storing from registers

    def terms(self) -> str:
        if self.seconds is None:
            return self.why_not or ""
        notes = [note for note, on in (("promotion not overlapped", self.unoverlapped),
                                       ("stores from registers", self.direct_stores)) if on]
        compute = _us(self.compute_s) + (f" ({', '.join(notes)})" if notes else "")
        outside = (f", out of bounds {_us(self.out_of_bounds_s)}"
                   if self.out_of_bounds_s else "")
        return (f"{self.units} units, {self.per_sm}/SM ({self.occupancy_limit}), "
                f"{self.waves} waves, last {self.last_wave_fill:.0%} full; compute "
                f"{compute}, stream {_us(self.stream_s)}, DRAM {_us(self.dram_s)}{outside}"
                f", overhead {_us(self.overhead_s)}: {self.bound}-bound")


def estimate(profile: KernelProfile, sizes: dict[str, int], machine: Machine,
             limits: Target) -> Estimate:
    est = Estimate(dict(profile.config))
    est.why_not = profile.error or _over_limits(profile, limits)
    if est.why_not:
        return est
    try:
        work = profile.work(sizes, machine.sms)
    except NotModelled as e:
        est.why_not = f"not modelled: {e}"
        return est
    est.units = work.units
    est.per_sm, est.occupancy_limit = _per_sm(profile, work, limits)
    if work.units == 0:          # an empty call (M = 0): a launch and nothing else
        est.seconds, est.bound = machine.launch_s, "launch"
        return est
    sms = min(work.sm_budget or machine.sms, machine.sms)
    slots = sms * est.per_sm
    est.waves = max(1, math.ceil(work.units / slots))
    est.last_wave_fill = (work.units - (est.waves - 1) * slots) / slots
    # Units an SM holds at once in a full wave: fewer where there are few units.
    busy = min(est.per_sm, math.ceil(work.units / sms))
    compute = _compute_per_unit(work, machine, limits)
    if profile.promotion_overlapped is False:
        compute /= machine.unoverlapped_promotion
        est.unoverlapped = True
    if profile.staged_stores is False:      # the consumers wait on their own stores
        compute += work.written_bytes / machine.direct_store_bytes_per_s
        est.direct_stores = True
    stream = _stream_per_unit(work, machine, busy)
    est.compute_s = est.waves * busy * compute
    est.stream_s = est.waves * busy * stream
    # A persistent loop's tiles drain and refill together, wave by wave; a grid's CTAs
    # overlap across waves (an SM starts the next as one retires), so it fills once.
    est.overhead_s = (est.waves if work.tiles is not None else 1) * machine.unit_overhead_s
    est.dram_s = _dram_bytes(work, slots, machine) / (machine.hbm_bytes_per_s *
                                                      machine.hbm_efficiency)
    est.out_of_bounds_s = (work.units * sum(a.out_of_bounds_bytes for a in work.accesses) /
                           machine.oob_bytes_per_s)
    p = machine.memory_overlap_norm
    sm_time = _norm((est.compute_s, est.stream_s), p) + est.overhead_s
    # each CTA of a cluster waits on the slowest of its pair, whatever binds them
    paired = machine.cluster_efficiency if work.cluster > 1 else 1.0
    shared = _norm((sm_time, est.dram_s, est.out_of_bounds_s), p)
    est.seconds = machine.launch_s + shared / paired
    est.bound = max((("compute", est.compute_s), ("stream", est.stream_s),
                     ("DRAM", est.dram_s), ("out-of-bounds", est.out_of_bounds_s),
                     ("overhead", est.overhead_s)), key=lambda term: term[1])[0]
    return est


def _over_limits(profile: KernelProfile, limits: Target) -> str | None:
    if profile.shared_bytes > limits.shared_bytes_per_block:
        return (f"does not fit: {profile.shared_bytes} bytes of shared memory > "
                f"{limits.shared_bytes_per_block}")
    if profile.registers and profile.registers * profile.threads > limits.registers_per_block:
        return (f"does not fit: {profile.registers} registers x {profile.threads} threads > "
                f"{limits.registers_per_block}")
    return None


def _per_sm(profile: KernelProfile, work: Work, limits: Target) -> tuple[int, str]:
    """(units an SM runs at once, what limits it)."""
    if work.tiles is not None:
        return 1, "persistent"
    caps = {"CTA slots": limits.max_ctas_per_sm,
            "threads": limits.max_threads_per_sm // max(profile.threads, 1)}
    if profile.shared_bytes:
        caps["shared memory"] = limits.shared_bytes_per_sm // profile.shared_bytes
    if profile.registers:
        caps["registers"] = limits.registers_per_sm // (profile.registers * profile.threads)
    limit = min(caps, key=caps.get)
    return max(1, caps[limit]), limit


def mma_shape_efficiency(n: int, dtype: str, machine: Machine, limits: Target) -> float:
    """The fraction of the tensor cores' rate a wgmma of B-tile width `n` reaches when both
    operands come from shared memory: its math cycles over the cycles shared memory takes to
    deliver A (64 rows) and B (n rows) of one K step, at the part's shared_efficiency."""
    if not limits.has_wgmma:
        return 1.0
    from ..dtypes import dtype as dtype_info
    k = WGMMA_K_BYTES // dtype_info(dtype).bytes
    math_cycles = 2 * WGMMA_ROWS * n * k / machine.mma_flops_per_clock[dtype]
    shared_cycles = (WGMMA_ROWS + n) * WGMMA_K_BYTES / (limits.shared_banks *
                                                         limits.shared_bank_bytes *
                                                         machine.shared_efficiency)
    return math_cycles / max(math_cycles, shared_cycles)


def _compute_per_unit(work: Work, machine: Machine, limits: Target) -> float:
    seconds = 0.0
    for mma in work.mmas:
        rate = (machine.mma_flops_per_clock.get(mma.dtype, 0) * machine.clock_hz *
                machine.mma_efficiency * mma_shape_efficiency(mma.n, mma.dtype, machine, limits)
                if mma.dtype in machine.mma_flops_per_clock else 0.0)
        if rate == 0:
            raise NotModelled(f"no tensor-core rate for {mma.dtype} on {machine.name}")
        seconds += mma.flops / rate
    return seconds


def _stream_per_unit(work: Work, machine: Machine, per_sm: int) -> float:
    """Seconds one SM takes to move one unit's bytes while `per_sm` units share it: what it
    pulls from L2 at its stream rate, and what lands in its shared memory at the rate its
    bytes in flight allow, combined as the model's other near-ties. A multicast tile is
    pulled half by each CTA of a pair, but lands whole in both: it saves L2 reads, not
    latency."""
    moved = received = 0.0
    last_axis = len(work.tiles) - 1 if work.tiles else None
    for a in work.accesses:
        shared_by_pair = (work.cluster > 1 and not a.writes and a.tma
                          and last_axis not in a.axes)
        moved += a.bytes / work.cluster if shared_by_pair else a.bytes
        received += a.bytes
    seconds = moved / machine.sm_load_bytes_per_s
    if work.in_flight_bytes:
        tma = any(a.tma for a in work.accesses if not a.writes)
        latency = machine.memory_latency_s if tma else machine.load_latency_s
        in_flight = per_sm * work.in_flight_bytes / latency
        seconds = _norm((seconds, received / in_flight), machine.memory_overlap_norm)
    return seconds


def _dram_bytes(work: Work, slots: int, machine: Machine) -> float:
    total = 0.0
    for a in work.accesses:
        every_unit = a.bytes * work.units
        if a.writes or every_unit <= a.tensor_bytes or a.tensor_bytes <= machine.l2_bytes / 2:
            total += min(every_unit, a.tensor_bytes)
        else:                    # re-read from HBM: how often depends on the tile order
            total += max(a.tensor_bytes, _per_wave_reads(work, a.axes, slots) * a.bytes *
                         work.units / max(1, min(slots, work.units)))
    return total


def _per_wave_reads(work: Work, axes: frozenset[int], wave: int) -> int:
    """How many distinct index tuples over `axes` a wave of `wave` consecutive units reads."""
    wave = min(wave, work.units)
    if not axes:
        return 1
    if work.tiles is None or len(work.tiles) != 2 or axes == {0, 1}:
        return wave
    rows, cols = work.tiles
    group = max(1, min(work.raster, rows))
    wave_rows = min(rows, group * math.ceil(wave / (group * cols)))
    wave_cols = min(cols, math.ceil(wave / group))
    return wave_rows if axes == {0} else wave_cols


def _norm(terms, p: float) -> float:
    """The p-norm of resource times that overlap: the largest when one dominates, more near
    a tie, where each stalls the other."""
    return sum(t ** p for t in terms) ** (1 / p)


def _us(seconds: float) -> str:
    return f"{seconds * 1e6:.1f} us"
