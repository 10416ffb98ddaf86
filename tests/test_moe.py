"""MoE dispatch/combine without a GPU: the language and compiler facts of the communication
kernels, their PTX through ptxas, and their semantics on simulated ranks (the IR
interpreter runs every rank at once in one process) against a torch reference."""
import itertools
import os
import re

import pytest
import torch

from commdsl.compiler import compile_file, compile_source
from commdsl.diagnostics import CompileError
from commdsl.interpreter import Program, run_ranks
from commdsl.interpreter_comm import InterpreterWaitError
from commdsl.moe import COMBINE_SOURCE, DISPATCH_SOURCE, layout, route_table
from commdsl.passes import PASS_ORDER, get_pass
from commdsl.runtime.ptxas import assemble
from commdsl.target import get_target

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


@pytest.mark.parametrize("kernel", ["moe_dispatch", "moe_dispatch_fp8"])
def test_dispatch_configs_assemble_without_spills(kernel):
    """Every ROWS x CHUNK of the tune lists, with two steps in flight (pipeline(2)): at
    ROWS = 8, CHUNK = 7168 the bf16 kernel runs 1024 threads, so 64 registers each."""
    for rows, chunk in itertools.product([2, 4, 8], [1792, 3584, 7168]):
        ptx = compile_file(DISPATCH_SOURCE, kernel=kernel,
                           constants={"ROWS": rows, "CHUNK": chunk}).ptx
        report = assemble(ptx, arch="sm_90a", entry=kernel).report
        assert report.spill_stores_bytes == 0 and report.spill_loads_bytes == 0, (rows, chunk)


@pytest.mark.parametrize("kernel,loads,gets", [("moe_dispatch", 2, 1), ("moe_dispatch_fp8", 4, 2)])
def test_dispatch_issues_the_next_steps_gets_before_this_steps_stores(kernel, loads, gets):
    kir = _ir(DISPATCH_SOURCE, kernel, "prefetch")
    loop = [op for op in kir.body.ops if op.name == "for"][-1]          # the chunk loop
    lo, hi, step = loop.operands[:3]
    body = loop.blocks[0]
    iv, carried = body.args[0], body.args[1:]
    names = [op.name for op in body.ops]
    assert names.count("load") == loads and names.count("get") == gets  # each index load once
    assert max(i for i, n in enumerate(names) if n == "get") < names.index("store")
    # The gets read step w + SMS (guard hi - (w + SMS)); the stores write the carried tiles.
    producer = {r.id: op for op in body.ops for r in op.results}
    nxt, guard = body.ops[:2]
    assert nxt.name == "add" and nxt.operands == [iv, step]
    assert guard.name == "sub" and guard.operands == [hi, nxt.result]
    accesses = [op for op in body.ops if op.name in ("load", "get")]
    assert all(op.attrs.get("guard") and op.operands[-1] is guard.result for op in accesses)
    for get in (op for op in accesses if op.name == "get"):
        assert {producer[get.operands[i].id].name for i in (1, 3)} == {"load"}   # rows, ranks
    stores = [op for op in body.ops if op.name == "store"]
    assert [op.operands[-1] for op in stores] == carried
    assert body.ops[-1].operands == [op.result for op in accesses if op.name == "get"]
    # The first step's, before the loop, guarded by hi - lo (programs without a step).
    before = kir.body.ops[:kir.body.ops.index(loop)]
    first = [op for op in before if op.attrs.get("guard")]
    assert [op.name for op in first] == [op.name for op in accesses]
    guard0 = next(op for op in before if op.results and op.result is first[0].operands[-1])
    assert guard0.name == "sub" and guard0.operands == [hi, lo]
    assert loop.operands[3:] == [op.result for op in first if op.name == "get"]


_PREDICATE = re.compile(r"^\s*(and\.pred|setp\.[\w.]+)\s+(%p\d+), ([^;]*);", re.M)


def _conditions(defs: dict, pred: str) -> set:
    """The setp comparisons whose conjunction is predicate `pred`: {(setp, operands)}."""
    op, args = defs[pred]
    if op != "and.pred":
        return {(op, args)}
    return set().union(*(_conditions(defs, a) for a in args.split(", ")))


@pytest.mark.parametrize("pipelined", [True, False])
def test_prefetched_peer_loads_are_predicated_on_the_guard(pipelined):
    """ROWS = 8, CHUNK = 7168: 7 peer loads of 16 bytes per thread and step. pipeline(2)
    issues them for the first step before the loop and for the next one in it, each on
    `guard > 0` as well as in bounds; without it, one step's, on bounds alone."""
    source = open(DISPATCH_SOURCE).read()
    source = source if pipelined else source.replace(" pipeline(2)", "")
    ptx = compile_source(source, DISPATCH_SOURCE, kernel="moe_dispatch",
                         constants={"ROWS": 8, "CHUNK": 7168}).ptx
    defs = {m[2]: (m[1], m[3]) for m in _PREDICATE.finditer(ptx)}
    peer = re.findall(r"@(%p\d+) ld\.global\.nc\.L1::no_allocate\.L2::256B\.v4\.b32", ptx)
    assert len(peer) == (14 if pipelined else 7)
    for p in peer:
        guarded = any(op == "setp.gt.s32" and args.endswith(", 0")
                      for op, args in _conditions(defs, p))
        assert guarded == pipelined
    report = assemble(ptx, arch="sm_90a", entry="moe_dispatch").report
    assert report.spill_stores_bytes == 0 and report.registers <= 64       # 1024 threads


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

def _ir(path, kernel, after=None, source=None, **constants):
    """The kernel's IR from irgen, or after the passes up to `after`."""
    kir = compile_source(source or open(path).read(), path, kernel=kernel, constants=constants,
                         emit="ir").ir[0]
    for name in PASS_ORDER if after else ():
        kir = get_pass(name)(kir, get_target("sm_90a"))
        if name == after:
            break
    return kir


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


def _simulate(world, tokens, hidden, experts, k, fp8=False, seed=0, after=None, **constants):
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
    dispatch = _ir(DISPATCH_SOURCE, name, after, **constants)
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


@pytest.fixture
def peer_reads(monkeypatch) -> list:
    """The ranks whose copies `get` ops read (Program.peer_copy, per row moved)."""
    reads = []
    copy = Program.peer_copy

    def counted(self, op, rank):
        if op.name == "get":
            reads.append(rank)
        return copy(self, op, rank)
    monkeypatch.setattr(Program, "peer_copy", counted)
    return reads


@pytest.mark.parametrize("fp8,world,tokens,sms", [
    (False, 2, [5, 9], 3), (False, 4, [1, 0, 7, 12], 5), (True, 2, [6, 4], 2),
    (False, 2, [1, 1], 4)])                  # 4 programs, 1 step: three never run the loop
def test_prefetched_dispatch_moves_the_same_rows(fp8, world, tokens, sms, peer_reads):
    """The IR after passes/prefetch.py (each step's index loads and gets issued in the step
    before, guarded past the last) on simulated ranks: the bytes the IR from irgen receives,
    and not one more peer read, so the steps past the end (or of programs without a step)
    move nothing."""
    runs = []
    for after in (None, "prefetch"):
        peer_reads.clear()
        *_, recv, args, _ = _simulate(world, tokens, 256, 16, 4, fp8=fp8, after=after, SMS=sms,
                                      ROWS=2, CHUNK=3584 if fp8 else 1792)
        runs.append((recv, [a.get("recv_xs") for a in args], len(peer_reads)))
    (recv0, xs0, reads0), (recv1, xs1, reads1) = runs
    assert reads0 == reads1
    for a, b in zip(recv0, recv1):
        assert torch.equal(a.view(torch.uint8), b.view(torch.uint8))
    for a, b in zip(xs0, xs1):
        assert a is None or torch.equal(a.view(torch.int32), b.view(torch.int32))


@pytest.mark.parametrize("outer", [False, True])
def test_prefetch_in_combines_loop_over_ranks(outer, peer_reads):
    """pipeline(2) on an inner loop that carries an accumulator: rank p + 1's get is issued
    before rank p's rows are added (the first one before the loop, inside the chunk loop,
    and with pipeline(2) on the chunk loop too, that one a chunk step ahead, under both
    guards). Same sums, bit for bit, and the same peer reads as without it."""
    source = open(COMBINE_SOURCE).read().replace("    for p in 0 .. world {\n",
                                                 "    for p in 0 .. world pipeline(2) {\n")
    if outer:
        source = source.replace("step SMS {", "step SMS pipeline(2) {")
    assert source.count("pipeline(2)") == 1 + outer
    world, tokens, rmax, hidden = 3, 5, 8, 256
    g = torch.Generator().manual_seed(3)
    ys = [torch.randn(rmax, hidden, generator=g).to(torch.bfloat16) for _ in range(world)]
    slots = [torch.randint(-1, rmax, (tokens, world), generator=g, dtype=torch.int32)
             for _ in range(world)]
    runs = []
    for after in (None, "prefetch"):
        kernel = _ir(COMBINE_SOURCE, "moe_combine", after, source, SMS=2, ROWS=2, CHUNK=1792)
        guarded = [op.name for op in kernel.walk() if op.attrs.get("guard")]
        assert guarded == ([] if after is None else ["load", "get"] * (2 + outer))
        outs = [torch.zeros(tokens, hidden, dtype=torch.bfloat16) for _ in range(world)]
        flags = [torch.zeros(world, dtype=torch.int32) for _ in range(world)]
        peer_reads.clear()
        run_ranks(kernel, [dict(y=ys[r], slot=slots[r], comb_x=outs[r], flags=flags[r])
                           for r in range(world)],
                  [dict(RMAX=rmax, H=hidden, T=tokens, W=world)] * world, epoch=1)
        runs.append((outs, len(peer_reads)))
    (outs0, reads0), (outs1, reads1) = runs
    assert reads0 == reads1 > 0
    for a, b in zip(outs0, outs1):
        assert torch.equal(a.view(torch.int16), b.view(torch.int16))
    # Gets of a scalar rank under a guard (rank p + 1 is out of range past the last one).
    ptx = compile_source(source, COMBINE_SOURCE, kernel="moe_combine").ptx
    report = assemble(ptx, arch="sm_90a", entry="moe_combine").report
    assert report.spill_stores_bytes == 0 and report.spill_loads_bytes == 0


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
