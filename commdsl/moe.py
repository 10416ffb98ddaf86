"""MoE dispatch and combine between the GPUs of one host (DeepEP's normal mode), with the
data moved by commdsl kernels (commdsl/kernels/moe_dispatch.cdsl, moe_combine.cdsl; the
wheel ships them as package data, examples/ links to them).

    buf = MoeBuffer(group, max_tokens=4096, hidden=7168, num_experts=256, topk=8)
    out = buf.dispatch(x, topk_idx, topk_weights)          # x: bf16 [T, H] (or e4m3 + scales)
    y = experts(out.recv_x, out.recv_topk_idx, out.recv_topk_weights)   # [R, H] bf16, each
                                     # row already weighted and summed over this rank's experts
    combined = buf.combine(y, out.handle)                   # [T, H] bf16 on the home rank

Semantics (DeepEP, intranode): experts are split evenly, rank r holding experts
[r * E / W, (r + 1) * E / W). A token goes once to every rank holding one of its top-k
experts; a rank receives its tokens grouped by source rank, each group in token order.
recv_topk_idx gives the local expert ids (-1 for experts elsewhere), recv_topk_weights their
weights (0 elsewhere). combine returns, for each token, the sum over the ranks it went to of
their y row, added in f32.

Layout: every rank publishes its routing in a symmetric table, the `moe_route` kernel gathers
all tables onto every rank, and torch ops below derive the same layout everywhere: which rows
each rank receives and where each token's rows sit for combine. Calls are collective: every
rank of the group makes the same calls in the same order (a missing call ends in a CommError
after the timeout, not a hang).
"""
from __future__ import annotations

from dataclasses import dataclass
from importlib import resources

from .api import load_comm
from .diagnostics import LaunchError
from .runtime.symmetric import Comm, CommError, RegionSpec

# Paths, not text: diagnostics and the compile cache name the file. pip installs a wheel's
# package data as plain files, so the resource is a real path.
KERNELS = resources.files("commdsl") / "kernels"
DISPATCH_SOURCE = str(KERNELS / "moe_dispatch.cdsl")
COMBINE_SOURCE = str(KERNELS / "moe_combine.cdsl")


@dataclass
class Handle:
    """What combine needs from dispatch (DeepEP's handle)."""
    rank_prefix_matrix: object   # i32 [W, W]: [s, r] = rows rank r receives from ranks <= s
    is_token_in_rank: object     # bool [T, W]: this rank's tokens
    src_rank: object             # i32 [R]: the rank each received row came from
    src_row: object              # i32 [R]: its token index there (DeepEP's recv_src_idx)
    slot: object                 # i32 [T, W]: row of this rank's token t in rank p's y, or -1
    num_tokens: int


@dataclass
class Dispatched:
    recv_x: object
    recv_x_scales: object | None
    recv_topk_idx: object        # int64 [R, K]
    recv_topk_weights: object    # f32 [R, K]
    num_recv_tokens_per_expert: list[int]
    handle: Handle


def route_table(topk_idx, topk_weights, max_tokens: int):
    """i32 [max_tokens, 2K]: each token's expert ids, then its weights' bits; rows past the
    tokens hold id -1 (they go nowhere)."""
    import torch
    t, k = topk_idx.shape
    table = torch.full((max_tokens, 2 * k), -1, dtype=torch.int32, device=topk_idx.device)
    table[:t, :k] = topk_idx.to(torch.int32)
    table[:t, k:] = topk_weights.to(torch.float32).contiguous().view(torch.int32)
    return table


def layout(all_routes, rank: int, num_experts: int, num_tokens: int):
    """From every rank's route table (i32 [W, TMAX, 2K]): this rank's Handle, the received
    tokens' local expert ids and weights, and how many tokens each local expert receives."""
    import torch
    world, _, width = all_routes.shape
    k = width // 2
    ids = all_routes[..., :k].long()
    weights = all_routes[..., k:].contiguous().view(torch.float32)
    per_rank = num_experts // world
    dest = torch.where(ids >= 0, ids // per_rank, -1)                      # [W, TMAX, K]
    in_rank = (dest[..., None] == torch.arange(world, device=ids.device)).any(2)  # [W, TMAX, W]
    counts = in_rank.sum(1)                                                # [s, r]
    src_rank, src_row = in_rank[:, :, rank].nonzero(as_tuple=True)         # s-major, t ascending
    local = dest[src_rank, src_row] == rank
    recv_ids = torch.where(local, ids[src_rank, src_row] - rank * per_rank, -1)
    recv_weights = torch.where(local, weights[src_rank, src_row], 0.0)
    per_expert = torch.bincount(recv_ids[recv_ids >= 0], minlength=per_rank)
    mine = in_rank[rank]                                                   # [TMAX, W]
    before = counts[:rank].sum(0)                                          # rows of ranks < me
    slot = torch.where(mine, before + mine.cumsum(0) - 1, -1)
    handle = Handle(counts.cumsum(0).to(torch.int32), mine[:num_tokens],
                    src_rank.to(torch.int32), src_row.to(torch.int32),
                    slot[:num_tokens].to(torch.int32).contiguous(), num_tokens)
    return handle, recv_ids, recv_weights, per_expert.tolist()


class MoeBuffer:
    """Symmetric buffers and kernels for dispatch/combine among the ranks of `group` (one
    host). `dispatch_config`/`combine_config` set the kernels' tune constants (SMS, ROWS,
    CHUNK); `tune()` picks them on the device. `backend`: torch's symmetric-memory backend,
    "CUDA" or "NVSHMEM" (runtime/symmetric.py; default COMMDSL_SYMM_BACKEND, else CUDA)."""

    def __init__(self, group=None, *, max_tokens: int, hidden: int, num_experts: int,
                 topk: int, fp8: bool = False, timeout_s: float = 30.0,
                 dispatch_config: dict | None = None, combine_config: dict | None = None,
                 peer_loads: str | None = None, backend: str | None = None):
        import torch.distributed as dist
        world = dist.get_world_size(group)
        if num_experts % world:
            raise CommError(f"num_experts = {num_experts} does not split over {world} ranks")
        if fp8 and hidden % 128:
            raise CommError(f"FP8 tokens carry one scale per 128 channels; hidden = {hidden}")
        self.max_tokens, self.hidden, self.num_experts, self.topk = (
            max_tokens, hidden, num_experts, topk)
        self.fp8, self.world = fp8, world
        self.options = {"peer_loads": peer_loads} if peer_loads else None
        config = {"max_tokens": max_tokens, "hidden": hidden, "num_experts": num_experts,
                  "topk": topk, "fp8": fp8, "peer_loads": peer_loads}
        regions = [RegionSpec("route", (max_tokens, 2 * topk), "i32"),
                   RegionSpec("x", (max_tokens, hidden), "e4m3" if fp8 else "bf16"),
                   RegionSpec("y", (world * max_tokens, hidden), "bf16")]
        if fp8:
            regions.append(RegionSpec("xs", (max_tokens, hidden // 128), "f32"))
        self.comm = Comm(group, "moe", config, regions, timeout_s=timeout_s, backend=backend)
        self.route_kernel = load_comm(self.comm, DISPATCH_SOURCE, "moe_route", self.options,
                                      C=2 * topk)
        self.dispatch_kernel = self.combine_kernel = None
        self.configure(dispatch_config or {}, combine_config or {})

    @property
    def dispatch_name(self) -> str:
        return "moe_dispatch_fp8" if self.fp8 else "moe_dispatch"

    def configure(self, dispatch: dict | None = None, combine: dict | None = None) -> None:
        """Loads the data kernels with these tune constants (None: keep the current ones)."""
        if dispatch is not None:
            self.dispatch_kernel = load_comm(self.comm, DISPATCH_SOURCE, self.dispatch_name,
                                             self.options, **dispatch)
        if combine is not None:
            self.combine_kernel = load_comm(self.comm, COMBINE_SOURCE, "moe_combine",
                                            self.options, **combine)

    # ---- dispatch -------------------------------------------------------------------------

    def get_layout(self, topk_idx, topk_weights):
        """Exchanges the routing and derives the layout; synchronizes (R is needed on the
        host to allocate the received tokens, as in DeepEP's normal mode)."""
        import torch
        t = topk_idx.shape[0]
        if t > self.max_tokens:
            raise LaunchError("dispatch", "topk_idx", f"{t} tokens, but the buffer holds at "
                              f"most max_tokens = {self.max_tokens}")
        if topk_idx.shape != (t, self.topk) or topk_weights.shape != (t, self.topk):
            raise LaunchError("dispatch", "topk_idx", f"topk_idx and topk_weights must be "
                              f"[T, {self.topk}], got {tuple(topk_idx.shape)} and "
                              f"{tuple(topk_weights.shape)}")
        route = self.comm.region("route").next()
        route.copy_(route_table(topk_idx, topk_weights, self.max_tokens))
        all_routes = torch.empty((self.world, *route.shape), dtype=torch.int32,
                                 device=route.device)
        self.route_kernel(route=route, all_route=all_routes, flags=self.comm.flags)
        self.comm.check()
        return layout(all_routes, self.comm.rank, self.num_experts, t)

    def stage(self, x, x_scales=None) -> None:
        """Copies this rank's tokens into its symmetric buffer for the next dispatch."""
        t = x.shape[0]
        if x.dim() != 2 or x.shape[1] != self.hidden or t > self.max_tokens:
            raise LaunchError(self.dispatch_name, "x", f"must be [T, {self.hidden}] with T <= "
                              f"max_tokens = {self.max_tokens}, got {tuple(x.shape)}")
        self.comm.region("x").next()[:t].copy_(x)
        if self.fp8:
            if x_scales is None:
                raise LaunchError(self.dispatch_name, "x_scales", "FP8 tokens need their "
                                  "1x128 scales", f"pass x_scales: f32 [T, {self.hidden // 128}]")
            self.comm.region("xs").next()[:t].copy_(x_scales)

    def launch_dispatch(self, handle: Handle, recv_x=None, recv_x_scales=None):
        """The data kernel alone, on what `stage` wrote; returns (recv_x, recv_x_scales)."""
        args = dict(x=self.comm.region("x").current, src_rank=handle.src_rank,
                    src_row=handle.src_row, recv_x=recv_x, flags=self.comm.flags)
        if self.fp8:
            args.update(xs=self.comm.region("xs").current, recv_xs=recv_x_scales)
            return self.dispatch_kernel(**args)
        return self.dispatch_kernel(**args), None

    def dispatch(self, x, topk_idx, topk_weights, x_scales=None, check: bool = True):
        if x.shape[0] != topk_idx.shape[0]:
            raise LaunchError("dispatch", "topk_idx", f"{topk_idx.shape[0]} rows for "
                              f"{x.shape[0]} tokens")
        self.stage(x, x_scales)           # checks x before anything is launched
        handle, recv_ids, recv_weights, per_expert = self.get_layout(topk_idx, topk_weights)
        recv_x, recv_xs = self.launch_dispatch(handle)
        if check:
            self.comm.check()
        return Dispatched(recv_x, recv_xs, recv_ids, recv_weights, per_expert, handle)

    # ---- combine --------------------------------------------------------------------------

    def stage_y(self, y, handle: Handle) -> None:
        r = handle.src_rank.shape[0]
        if tuple(y.shape) != (r, self.hidden):
            raise LaunchError("moe_combine", "y", f"must be [{r}, {self.hidden}] (one row per "
                              f"received token), got {tuple(y.shape)}")
        self.comm.region("y").next()[:r].copy_(y)

    def launch_combine(self, handle: Handle, out=None):
        return self.combine_kernel(y=self.comm.region("y").current, slot=handle.slot,
                                   comb_x=out, flags=self.comm.flags)

    def combine(self, y, handle: Handle, check: bool = True):
        self.stage_y(y, handle)
        out = self.launch_combine(handle)
        if check:
            self.comm.check()
        return out


def tune_lockstep(comm: Comm, path: str, kernel: str, fixed: dict, prepare, launch,
                  options: dict | None = None, warmup: int = 3, iters: int = 10):
    """Times every config of `kernel`'s declared tune space (commdsl.tune.space) on every
    rank at once and returns (best config, trials) that all ranks agree on: the same configs
    run in the same order (each launch waits for the other ranks' launch of the same epoch),
    and each config's time is the slowest rank's, taken with an all-reduce. A config that
    does not compile scores infinity everywhere, as in Triton's autotuner.
    `prepare()` runs before each launch and is not timed; `launch(kernel)` is timed."""
    import statistics

    import torch
    import torch.distributed as dist

    from .diagnostics import CompileError
    from .kernel import read_source
    from .tune.space import search_space
    text, _ = read_source(path)
    space = search_space(text, path, kernel, fixed, None)
    trials = []
    for config in space.configs():
        try:
            k = load_comm(comm, path, kernel, options, **fixed, **config)
        except CompileError:
            trials.append((config, float("inf")))
            continue
        times = []
        for i in range(warmup + iters):
            prepare()
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            launch(k)
            end.record()
            if i >= warmup:
                times.append((start, end))
        torch.cuda.synchronize()
        comm.check()
        trials.append((config, statistics.median(s.elapsed_time(e) for s, e in times)))
    ms = torch.tensor([t for _, t in trials], dtype=torch.float64, device=comm.device)
    dist.all_reduce(ms, op=dist.ReduceOp.MAX, group=comm.group)
    trials = [(c, float(t)) for (c, _), t in zip(trials, ms.tolist())]
    best = min(trials, key=lambda ct: ct[1])
    return best[0], trials
