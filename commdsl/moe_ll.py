"""MoE dispatch and combine for decoding (DeepEP's low-latency mode) between the GPUs of one
host: examples/moe_low_latency.cdsl's kernels (the wheel ships them as package data) place
every token on the device, so no call synchronizes with the host and a CUDA graph captures
them.

    buf = LowLatencyBuffer(group, max_tokens=128, hidden=7168, num_experts=256, topk=8)
    out = buf.dispatch(x, topk_idx)          # x: bf16 [T, H], T <= max_tokens; ids: i32
    # out.recv_x: bf16 [E / W, W * max_tokens, H]; expert le's first out.recv_count[le] rows
    # are its tokens, by source rank then token (out.recv_src: rank * max_tokens + token)
    buf.y.view(out.recv_x.shape).copy_(experts(out.recv_x, out.recv_count))  # bf16 rows
    combined = buf.combine(topk_idx, topk_weights)                         # bf16 [T, H]

With `fp8=True` dispatch quantizes the tokens as act_quant does before they cross NVLink
and delivers e4m3 rows with their 1 x 128 scales (out.recv_x_scales, f32 [E / W, H / 128,
W * max_tokens]), the layout examples/grouped_fp8_gemm_masked.cdsl reads.

Experts are split evenly, rank r holding [r * E / W, (r + 1) * E / W). Calls are collective:
every rank makes them in the same order, each one kernel launch (top-k ids other than i32
are converted first). Dispatch copies the tokens and ids into symmetric buffers itself;
combine reads the experts' outputs from `buf.y`, where the experts write them.
A wait that times out leaves a status `buf.check()` turns into a CommError (a host sync, so
the calls themselves never check).
"""
from __future__ import annotations

from dataclasses import dataclass
from importlib import resources

from .api import load_comm
from .diagnostics import LaunchError
from .runtime.symmetric import Comm, CommError, RegionSpec

SOURCE = str(resources.files("commdsl") / "kernels" / "moe_low_latency.cdsl")
MAX_TOKENS = 256


@dataclass
class LowLatencyDispatched:
    recv_x: object          # bf16 (fp8: e4m3) [E / W, W * max_tokens, H]
    recv_count: object      # i32 [E / W]: the valid rows of each local expert
    recv_src: object        # i32 [E / W, W * max_tokens]: source rank * max_tokens + token
    recv_x_scales: object = None    # fp8: f32 [E / W, H / 128, W * max_tokens], MN-major


def sms(kernel: str, config: dict) -> int:
    """A dispatch kernel's CTA count (its flags hold one per CTA and rank)."""
    from .compiler import compile_file
    kir = compile_file(SOURCE, kernel=kernel, constants=config, emit="ir").ir[0]
    return kir.grid[0].value


class LowLatencyBuffer:
    """Symmetric buffers and the two kernels among the ranks of `group` (one host).
    `dispatch_config` / `combine_config`: the kernels' tune constants (SMS, ROWS, CHUNK).
    `fp8`: dispatch quantizes the tokens (1 x 128 groups, as act_quant) before they cross
    NVLink and delivers e4m3 rows and their scales; combine stays bf16."""

    def __init__(self, group=None, *, max_tokens: int = 128, hidden: int, num_experts: int,
                 topk: int, fp8: bool = False, timeout_s: float = 30.0,
                 dispatch_config: dict | None = None, combine_config: dict | None = None,
                 backend: str | None = None):
        import torch
        import torch.distributed as dist
        if not 1 <= max_tokens <= MAX_TOKENS:
            raise CommError(f"max_tokens = {max_tokens}: the low-latency kernels take 1 to "
                            f"{MAX_TOKENS} tokens a rank (DeepEP's limit; past it combine "
                            "spills): use MoeBuffer for more")
        world = dist.get_world_size(group)
        dispatch_config, combine_config = dispatch_config or {}, combine_config or {}
        if num_experts % world:
            raise CommError(f"num_experts = {num_experts} does not split over {world} ranks")
        if fp8 and hidden % 128:
            raise CommError(f"FP8 tokens carry one scale per 128 channels; hidden = {hidden}")
        self.fp8 = fp8
        name = "moe_dispatch_ll_fp8" if fp8 else "moe_dispatch_ll"
        self.max_tokens, self.hidden, self.num_experts, self.topk = (
            max_tokens, hidden, num_experts, topk)
        self.world, self.local_experts = world, num_experts // world
        rows = world * max_tokens
        # One copy each: every launch's handshake orders a buffer's next write after its
        # last read on every rank (docs/multinode.md, "Ordering").
        token = "e4m3" if fp8 else "bf16"
        regions = [RegionSpec("x", (max_tokens, hidden), token, 1),
                   RegionSpec("topk", (max_tokens, topk), "i32", 1),
                   RegionSpec("y", (self.local_experts * rows, hidden), "bf16", 1),
                   RegionSpec("recv_base", (self.local_experts, world), "i32", 1),
                   RegionSpec("dispatch_flags", (world, sms(name, dispatch_config)), "i32", 1),
                   RegionSpec("combine_flags", (world,), "i32", 1)]
        if fp8:
            regions.append(RegionSpec("xs", (max_tokens, hidden // 128), "f32", 1))
        config = {"max_tokens": max_tokens, "hidden": hidden, "num_experts": num_experts,
                  "topk": topk, "fp8": fp8, "mode": "low_latency"}
        self.comm = Comm(group, "moe_ll", config, regions, timeout_s=timeout_s, backend=backend)
        view = {r.name: self.comm.region(r.name).next() for r in regions}
        self.x, self.topk_idx, self.y = view["x"], view["topk"], view["y"]
        self.recv_base, self.xs = view["recv_base"], view.get("xs")
        self.flags = (view["dispatch_flags"], view["combine_flags"])
        for f in self.flags:
            f.zero_()
        self.dispatch_kernel = load_comm(self.comm, SOURCE, name, TMAX=max_tokens, K=topk,
                                         **dispatch_config)
        self.combine_kernel = load_comm(self.comm, SOURCE, "moe_combine_ll", TMAX=max_tokens,
                                        K=topk, **combine_config)
        device = self.comm.device
        # each CTA's launch count (the kernels' epochs, read and bumped on the device)
        self.epochs = [torch.zeros(k.spec.constants["SMS"], dtype=torch.int32, device=device)
                       for k in (self.dispatch_kernel, self.combine_kernel)]
        # the received tokens live here until the next dispatch, as in DeepEP
        el = self.local_experts
        self.recv_x = torch.empty(el, rows, hidden, device=device,
                                  dtype=torch.float8_e4m3fn if fp8 else torch.bfloat16)
        self.recv_xs = (torch.empty(el, hidden // 128, rows, dtype=torch.float32, device=device)
                        if fp8 else None)
        self.recv_src = torch.empty(el, rows, dtype=torch.int32, device=device)
        self.recv_count = torch.empty(el, dtype=torch.int32, device=device)
        self.combined = torch.empty(max_tokens, hidden, dtype=torch.bfloat16, device=device)
        torch.cuda.synchronize(device)
        dist.barrier(group=self.comm.group)         # flags zeroed on every rank

    def _ids(self, name: str, topk_idx, t: int):
        import torch
        if tuple(topk_idx.shape) != (t, self.topk):
            raise LaunchError(name, "topk_idx", f"must be [{t}, {self.topk}] (one row per "
                              f"token), got {tuple(topk_idx.shape)}")
        return topk_idx if topk_idx.dtype == torch.int32 else topk_idx.to(torch.int32)

    def dispatch(self, x, topk_idx) -> LowLatencyDispatched:
        """Every rank's tokens to the ranks of their experts. The result's tensors are this
        buffer's: valid until the next dispatch."""
        t = x.shape[0]
        if x.dim() != 2 or x.shape[1] != self.hidden or t > self.max_tokens:
            raise LaunchError("moe_dispatch_ll", "x", f"must be [T, {self.hidden}] with T <= "
                              f"max_tokens = {self.max_tokens}, got {tuple(x.shape)}")
        args = dict(x_in=x, topk_in=self._ids("moe_dispatch_ll", topk_idx, t), x=self.x,
                    topk=self.topk_idx, recv_x=self.recv_x, recv_src=self.recv_src,
                    recv_count=self.recv_count, recv_base=self.recv_base, ep=self.epochs[0],
                    flags=self.flags[0])
        if self.fp8:
            args.update(xs=self.xs, recv_xs=self.recv_xs)
        self.dispatch_kernel(**args)
        return LowLatencyDispatched(self.recv_x, self.recv_count, self.recv_src, self.recv_xs)

    def combine(self, topk_idx, topk_weights):
        """Each of this rank's tokens (those of the last dispatch, with the same ids): the
        sum of its experts' rows of `buf.y` times `topk_weights` (f32 [T, topk]); bf16
        [T, H], a view of this buffer's output (valid until the next combine)."""
        t = topk_idx.shape[0]
        if t > self.max_tokens:
            raise LaunchError("moe_combine_ll", "topk_idx", f"{t} tokens, but the buffer holds "
                              f"at most max_tokens = {self.max_tokens}")
        ids = self._ids("moe_combine_ll", topk_idx, t)
        if tuple(topk_weights.shape) != (t, self.topk):
            raise LaunchError("moe_combine_ll", "topk_weights", f"must be [{t}, {self.topk}] "
                              f"like topk_idx, got {tuple(topk_weights.shape)}")
        self.combine_kernel(y=self.y, recv_base=self.recv_base, topk=ids, weights=topk_weights,
                            combined=self.combined[:t], ep=self.epochs[1], flags=self.flags[1])
        return self.combined[:t]

    def check(self) -> None:
        """Waits for this rank's launches; raises CommError if a wait timed out."""
        self.comm.check()
