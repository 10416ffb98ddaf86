"""Decides each global access's cache policy from its `cache(...)` clause and rejects
illegal ones.

    cache(nc, L1 = no_allocate, L2 = 256B)  ->  {nc = True, L1 = "no_allocate", L2 = "256B"}

The rules are the PTX ISA's for sm_90 (checked with ptxas 13): `.nc` only on loads and not
with `volatile`; a cache operator (ca/cg/cs, wb/wt) and an L1 eviction priority exclude each
other; `volatile` takes neither; the L2 prefetch size is for loads only; L2 eviction
priorities on ld/st and 256-bit accesses need sm_100. Each load, store, get and put gets
`cache_policy`, a dict with the keys given of `volatile` (True), `operator` (ca, cg, cs, wb,
wt), `nc` (True), `L1` (an eviction policy) and `L2` (a prefetch size); `{}` is a plain
access. The backend spells it (backends/ptx/asm.py: ld.global.nc.L1::no_allocate.L2::256B).

Reads of other ranks' memory (`get`) follow the same rules; with the compile option
`peer_loads = volatile` a `get ... cache(nc, ...)` becomes DeepEP's fallback, a volatile
load and nothing else (passes/cache.py is where every cache policy is decided).
"""
from __future__ import annotations

from commdsl.diagnostics import CompileError
from commdsl.ir import KernelIR, Op
from commdsl.ops import ASYNC, COMM, MEMORY, READS, has_trait
from commdsl.target import L1_EVICTION, L2_PREFETCH, NC_PEER_LOADS, Target

L1_POLICIES = ("evict_normal", "evict_unchanged", "evict_first", "evict_last", "no_allocate")
L2_SIZES = ("64B", "128B", "256B")
LOAD_OPERATORS = ("ca", "cg", "cs")
STORE_OPERATORS = ("wb", "cg", "cs", "wt")
FLAGS = ("nc", "volatile") + LOAD_OPERATORS + STORE_OPERATORS

SPELLING = ("cache(nc, L1 = no_allocate, L2 = 256B) for loads; "
            "cache(L1 = evict_first) or cache(cs) for stores")


def _error(op: Op, i: int | None, message: str, hint: str) -> CompileError:
    spans = op.attrs.get("_cache_spans") or ()
    span = spans[i] if i is not None and i < len(spans) else op.loc
    return CompileError(message, span, hint)


def policy(op: Op, target: Target) -> dict:
    is_load = has_trait(op, READS)
    seen: dict[str, tuple[str | None, int]] = {}
    for i, (key, value) in enumerate(op.attrs.get("cache") or ()):
        if key in seen:
            raise _error(op, i, f"'{key}' is given twice in the cache clause", "keep one")
        seen[key] = (value, i)
        if key in FLAGS and value is not None:
            raise _error(op, i, f"'{key}' takes no value", f"write just '{key}'")
        if key not in FLAGS + ("L1", "L2"):
            raise _error(op, i, f"unknown cache option '{key}'",
                         f"options: nc, volatile, L1 = ..., L2 = ..., ca/cg/cs (loads), "
                         f"wb/cg/cs/wt (stores); e.g. {SPELLING}")
        if key in ("L1", "L2") and value is None:
            raise _error(op, i, f"'{key}' needs a value", f"e.g. {SPELLING}")

    def flag(name):
        return name in seen

    def pos(name):
        return seen[name][1]

    if flag("nc") and not is_load:
        raise _error(op, pos("nc"), "'nc' (the non-coherent read-only path) is for loads only",
                     "drop 'nc' from the store; use cache(L1 = no_allocate) for streaming stores")
    operators = LOAD_OPERATORS if is_load else STORE_OPERATORS
    given_ops = [k for k in seen if k in LOAD_OPERATORS + STORE_OPERATORS]
    for k in given_ops:
        if k not in operators:
            kind = "loads" if is_load else "stores"
            raise _error(op, pos(k), f"cache operator '{k}' does not apply to {kind}",
                         f"{kind} take one of: {', '.join(operators)}")
    if len(given_ops) > 1:
        raise _error(op, pos(given_ops[1]), "only one cache operator per access",
                     f"keep one of {', '.join(given_ops)}")
    l1 = seen.get("L1", (None, None))[0]
    l2 = seen.get("L2", (None, None))[0]
    if l1 is not None and l1 not in L1_POLICIES:
        raise _error(op, pos("L1"), f"'L1 = {l1}' is not an L1 policy",
                     f"L1 takes {', '.join(L1_POLICIES)}")
    if l2 is not None:
        if l2.startswith("evict_"):
            raise _error(op, pos("L2"), f"'L2 = {l2}' on a load or store needs sm_100",
                         f"on {target.name} L2 takes a prefetch size: {', '.join(L2_SIZES)}")
        if l2 not in L2_SIZES:
            raise _error(op, pos("L2"), f"'L2 = {l2}' is not an L2 prefetch size",
                         f"L2 takes {', '.join(L2_SIZES)}")
        if not is_load:
            raise _error(op, pos("L2"), "the L2 prefetch size is for loads only",
                         "drop 'L2 = ...' from the store")
        if not target.has(L2_PREFETCH):
            raise _error(op, pos("L2"), f"{target.name} has no {L2_PREFETCH}",
                         "drop 'L2 = ...'")
    if l1 is not None and given_ops:
        raise _error(op, pos("L1"), f"a cache operator ('{given_ops[0]}') and an L1 policy "
                     "exclude each other", "keep one of them")
    if flag("volatile"):
        others = [k for k in seen if k not in ("volatile", "L2")]
        if others:
            raise _error(op, pos(others[0]), f"'volatile' cannot be combined with '{others[0]}'",
                         "volatile accesses take only an L2 prefetch size")
    if l1 is not None and not target.has(L1_EVICTION):
        raise _error(op, pos("L1"), f"{target.name} has no {L1_EVICTION}", "drop 'L1'")

    decided = {"volatile": flag("volatile"), "operator": given_ops[0] if given_ops else None,
               "nc": flag("nc"), "L1": l1, "L2": l2}
    return {k: v for k, v in decided.items() if v not in (None, False)}


# DeepEP's safe form of a read of another GPU's memory, for when the non-coherent path is
# not trusted there (its DISABLE_AGGRESSIVE_PTX_INSTRS): PTX leaves `.nc` on data another
# agent may write undefined, and only Hopper was found to honour it with L1::no_allocate.
VOLATILE_PEER_LOAD = {"volatile": True}


def peer_load_policy(kernel: KernelIR, target: Target) -> str:
    """The compile option `peer_loads`, by default 'nc' where the target is known to honour
    it (Hopper only, as DeepEP's build)."""
    return kernel.attrs.get("peer_loads") or ("nc" if target.has(NC_PEER_LOADS) else "volatile")


def run(kernel: KernelIR, target: Target) -> KernelIR:
    peer_loads = peer_load_policy(kernel, target)
    for op in kernel.walk():
        if has_trait(op, MEMORY) and not has_trait(op, ASYNC):     # a TMA copy takes none
            op.attrs["cache_policy"] = policy(op, target)
            peer_nc = has_trait(op, COMM) and op.attrs["cache_policy"].get("nc")   # a get
            if peer_nc and peer_loads == "volatile":
                op.attrs["cache_policy"] = dict(VOLATILE_PEER_LOAD)
    return kernel
