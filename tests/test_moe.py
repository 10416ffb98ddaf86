"""MoE dispatch/combine without a GPU: the language and compiler facts of the communication
kernels, their PTX through ptxas, and their semantics on simulated ranks (the IR
interpreter runs every rank at once in one process) against a torch reference."""
import os
import re

import pytest
import torch

from commdsl.compiler import compile_file, compile_source
from commdsl.diagnostics import CompileError
from commdsl.interpreter_comm import InterpreterWaitError, run_ranks
from commdsl.moe import COMBINE_SOURCE, DISPATCH_SOURCE, layout, route_table
from commdsl.runtime.ptxas import assemble

KERNELS = [(DISPATCH_SOURCE, "moe_route", {"C": 16}), (DISPATCH_SOURCE, "moe_dispatch", {}),
           (DISPATCH_SOURCE, "moe_dispatch_fp8", {}), (COMBINE_SOURCE, "moe_combine", {})]


# ---- compiler facts --------------------------------------------------------------------------

@pytest.mark.parametrize("path,kernel,constants", KERNELS)
def test_comm_kernels_ptx_facts_and_ptxas(path, kernel, constants):
    ptx = compile_file(path, kernel=kernel, constants=constants).ptx
    assert "st.release.sys.global.b32" in ptx and "ld.acquire.sys.global.b32" in ptx
    assert "%globaltimer" in ptx and "barrier.red.or.pred" in ptx     # the bounded wait
    if kernel != "moe_route":
        assert re.search(r"ld\.global\.nc\.L1::no_allocate\.L2::256B\.v4\.b32", ptx)
    report = assemble(ptx, arch="sm_90a", entry=kernel).report
    assert report.spill_stores_bytes == 0 and report.spill_loads_bytes == 0


@pytest.mark.parametrize("config", [{"ROWS": 2, "CHUNK": 1792}, {"ROWS": 8, "CHUNK": 7168},
                                    {"ROWS": 4, "CHUNK": 3584, "SMS": 16}])
def test_dispatch_configs_assemble(config):
    for kernel in ("moe_dispatch", "moe_dispatch_fp8"):
        ptx = compile_file(DISPATCH_SOURCE, kernel=kernel, constants=config).ptx
        assemble(ptx, arch="sm_90a", entry=kernel)


def test_peer_loads_volatile_fallback():
    ptx = compile_file(DISPATCH_SOURCE, kernel="moe_dispatch",
                       options={"peer_loads": "volatile"}).ptx
    assert "ld.volatile.global.v4.b32" in ptx
    assert not re.search(r"ld\.global\.nc\.L1::no_allocate", ptx)
    assemble(ptx, arch="sm_90a", entry="moe_dispatch")
    with pytest.raises(CompileError, match="peer_loads"):
        compile_file(DISPATCH_SOURCE, kernel="moe_dispatch", options={"peer_loads": "weak"})


def test_sms_sets_the_grid_and_the_spec_marks_symmetric_tensors():
    compiled = compile_file(COMBINE_SOURCE, constants={"SMS": 20}, emit="ptx")
    assert [str(d) for d in compiled.specs[0].grid] == ["20"]
    assert compiled.specs[0].comm and compiled.specs[0].tensors[0].symmetric


@pytest.mark.parametrize("src,message", [
    ("kernel k(x: bf16[N], y: out bf16[N]) sms(4) { let t = get peer(0).x[0 : +8] }",
     "'x' is not symmetric"),
    ("kernel k(x: sym bf16[N], y: out bf16[N]) sms(4) { store y[0 : +8] = load x[0 : +8] }",
     "'x' is symmetric: say whose copy"),
    ("kernel k(x: sym bf16[N], f: sym f32[W]) sms(4) { wait f[0] >= epoch }", "flags are i32"),
    ("kernel k(x: sym bf16[N]) grid(1) sms(4) { let t = get peer(0).x[0 : +8] }",
     "takes no grid"),
    ("kernel k(x: sym bf16[N, H], r: i32[N]) sms(4) "
     "{ let t = get peer(0).x[0, load r[0 : +4]] }", "innermost"),
    ("kernel k(x: out sym bf16[N]) sms(4) { }", "both 'out' and 'sym'"),
])
def test_comm_mistakes_are_compile_errors(src, message):
    with pytest.raises(CompileError, match=message) as e:
        compile_source(src)
    assert e.value.span is not None and "help:" in e.value.render()


# ---- simulated ranks -------------------------------------------------------------------------

def _ir(path, kernel, **constants):
    return compile_source(open(path).read(), path, kernel=kernel, constants=constants,
                          emit="ir").ir[0]


def _routing(world, tokens, experts, k, seed):
    """Random top-k routing per rank, with some tokens whose experts all sit on one rank."""
    g = torch.Generator().manual_seed(seed)
    per = experts // world
    out = []
    for r in range(world):
        ids = torch.stack([torch.randperm(experts, generator=g)[:k] for _ in range(tokens[r])]) \
            if tokens[r] else torch.zeros(0, k, dtype=torch.long)
        for t in range(0, tokens[r], 3):                       # every third: one rank only
            home = (t + r) % world
            ids[t] = home * per + torch.randperm(per, generator=g)[:k]
        w = torch.rand(tokens[r], k, generator=g)
        out.append((ids, w / w.sum(1, keepdim=True) if tokens[r] else w))
    return out


def _reference_dispatch(xs, routing, experts, world):
    """Per receiving rank: rows (src rank, src token) in DeepEP's order, tokens, local ids."""
    per = experts // world
    result = []
    for r in range(world):
        rows, ids, weights = [], [], []
        for s in range(world):
            for t in range(xs[s].shape[0]):
                e = routing[s][0][t]
                if ((e // per) == r).any():
                    rows.append((s, t))
                    local = (e // per) == r
                    ids.append(torch.where(local, e - r * per, -1))
                    weights.append(torch.where(local, routing[s][1][t], 0.0))
        result.append((rows, ids, weights))
    return result


def _simulate(world, tokens, hidden, experts, k, fp8=False, seed=0, **constants):
    tmax = max(max(tokens), 1)
    routing = _routing(world, tokens, experts, k, seed)
    g = torch.Generator().manual_seed(seed + 1)
    if fp8:
        xs = [(torch.randn(t, hidden, generator=g) * 50).to(torch.float8_e4m3fn) for t in tokens]
        scales = [torch.rand(t, hidden // 128, generator=g) + 0.5 for t in tokens]
    else:
        xs = [torch.randn(t, hidden, generator=g).to(torch.bfloat16) for t in tokens]
    flags = [torch.zeros(world, dtype=torch.int32) for _ in range(world)]
    # 1. the routing exchange
    route = _ir(DISPATCH_SOURCE, "moe_route", C=2 * k, SMS=4, ROWS=32)
    tables = [route_table(*routing[r], tmax) for r in range(world)]
    gathered = [torch.full((world, tmax, 2 * k), 7, dtype=torch.int32) for _ in range(world)]
    run_ranks(route, [dict(route=tables[r], all_route=gathered[r], flags=flags[r])
                      for r in range(world)], [dict(TMAX=tmax, W=world)] * world, epoch=1)
    layouts = [layout(gathered[r], r, experts, tokens[r]) for r in range(world)]
    # 2. dispatch
    name = "moe_dispatch_fp8" if fp8 else "moe_dispatch"
    dispatch = _ir(DISPATCH_SOURCE, name, **constants)
    staged = [torch.zeros(tmax, hidden, dtype=xs[0].dtype) for _ in range(world)]
    for r in range(world):
        staged[r][:tokens[r]] = xs[r]
    recv, args, sizes = [], [], []
    for r in range(world):
        h = layouts[r][0]
        n = h.src_rank.shape[0]
        recv.append(torch.full((n, hidden), 3.0).to(xs[0].dtype))
        a = dict(x=staged[r], src_rank=h.src_rank, src_row=h.src_row, recv_x=recv[r],
                 flags=flags[r])
        if fp8:
            a["xs"] = torch.zeros(tmax, hidden // 128)
            a["xs"][:tokens[r]] = scales[r]
            a["recv_xs"] = torch.full((n, hidden // 128), float("nan"))
        args.append(a)
        sizes.append(dict(TMAX=tmax, H=hidden, R=n, W=world))
    run_ranks(dispatch, args, sizes, epoch=2)
    return routing, xs, (scales if fp8 else None), layouts, recv, args, flags


@pytest.mark.parametrize("world,tokens", [(2, [5, 9]), (4, [1, 0, 7, 12]), (2, [1, 1])])
def test_dispatch_and_combine_match_torch(world, tokens):
    hidden, experts, k = 256, 16, 4
    routing, xs, _, layouts, recv, _, flags = _simulate(
        world, tokens, hidden, experts, k, SMS=3, ROWS=2, CHUNK=1792)
    ref = _reference_dispatch(xs, routing, experts, world)
    for r in range(world):
        rows, ids, weights = ref[r]
        handle, recv_ids, recv_weights, per_expert = layouts[r]
        assert [(int(s), int(t)) for s, t in zip(handle.src_rank, handle.src_row)] == rows
        expected = torch.stack([xs[s][t] for s, t in rows]) if rows else recv[r]
        assert torch.equal(recv[r].view(torch.int16), expected.view(torch.int16))
        if rows:
            assert torch.equal(recv_ids, torch.stack(ids))
            assert torch.equal(recv_weights, torch.stack(weights))
        assert sum(per_expert) == int((recv_ids >= 0).sum())
    # 3. combine: each rank's "experts" weight and sum its local top-k outputs
    combine = _ir(COMBINE_SOURCE, "moe_combine", SMS=3, ROWS=2, CHUNK=1792)
    tmax = max(max(tokens), 1)
    ys, outs, args = [], [], []
    for r in range(world):
        handle, recv_ids, recv_weights, _ = layouts[r]
        scale = (recv_weights * (recv_ids + 1 + r * experts // world)).sum(1, keepdim=True)
        y = (recv[r].float() * scale).to(torch.bfloat16)
        ys.append(y)
        buf = torch.zeros(world * tmax, hidden, dtype=torch.bfloat16)
        buf[:y.shape[0]] = y
        outs.append(torch.full((tokens[r], hidden), float("nan")).to(torch.bfloat16))
        args.append(dict(y=buf, slot=handle.slot, comb_x=outs[r], flags=flags[r]))
    run_ranks(combine, args, [dict(RMAX=world * tmax, H=hidden, T=tokens[r], W=world)
                              for r in range(world)], epoch=3)
    for r in range(world):
        expected = torch.zeros(tokens[r], hidden, dtype=torch.float64)
        for p in range(world):
            for i, (s, t) in enumerate(ref[p][0]):
                if s == r:
                    expected[t] += ys[p][i].double()
        err = (outs[r].double() - expected).abs()
        assert torch.all(err <= 5e-3 * expected.abs() + 1e-6), err.max()


def test_fp8_dispatch_moves_tokens_and_scales_exactly():
    world, tokens, hidden = 2, [6, 4], 256
    routing, xs, scales, layouts, recv, args, _ = _simulate(
        world, tokens, hidden, 16, 4, fp8=True, SMS=2, ROWS=2, CHUNK=3584)
    ref = _reference_dispatch(xs, routing, 16, world)
    for r in range(world):
        rows = ref[r][0]
        assert torch.equal(recv[r].view(torch.uint8),
                           torch.stack([xs[s][t] for s, t in rows]).view(torch.uint8))
        assert torch.equal(args[r]["recv_xs"], torch.stack([scales[s][t] for s, t in rows]))


def test_a_rank_that_never_signals_is_an_error_not_a_hang():
    kernel = _ir(COMBINE_SOURCE, "moe_combine", SMS=1, ROWS=2, CHUNK=1792)
    flags = torch.zeros(2, dtype=torch.int32)
    args = dict(y=torch.zeros(4, 256, dtype=torch.bfloat16), slot=torch.zeros(1, 2, dtype=torch.int32),
                comb_x=torch.zeros(1, 256, dtype=torch.bfloat16), flags=flags)
    # One rank alone in a world of two: rank 1 never announces the epoch.
    from commdsl.interpreter import run
    from commdsl.interpreter_comm import Ranks
    import threading
    done = threading.Event()
    done.set()
    with pytest.raises(InterpreterWaitError, match=r"rank 0 waits for flags\[1\] >= 5"):
        run(kernel, args, dict(RMAX=4, H=256, T=1, W=2),
            Ranks(0, 2, 5, {"y": [args["y"], args["y"]], "flags": [flags, flags.clone()]},
                  timeout_s=5, done=done))


def test_examples_exist_with_headers():
    for path in (DISPATCH_SOURCE, COMBINE_SOURCE):
        assert os.path.exists(path) and open(path).readline().startswith("# MoE")
