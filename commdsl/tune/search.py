"""Which configs to time, and how long: the whole space once, or successive halving.

exhaustive: every config once, with the timer's full measurement (timer.py: ~25 ms of
warm-up, ~100 ms of launches).

halving: successive halving. Every config is timed with a short measurement (a small
`effort`, the fraction of a full one), the best third is timed again three times as long,
and so on, until the last rung times the few left with a full measurement; the winner is the
best of that rung. The cost model's pick, which the tuner passes as `keep`, is timed in
every rung whatever its rank, and stays the winner unless another beats it by more than
timing noise (INCUMBENT_MARGIN), in either search. Each rung costs about as much as the
last, so tuning n configs costs about (rungs x n / 3^(rungs - 1)) full measurements: 500
configs, 5 rungs, ~6% of exhaustive. A space over SAMPLE_MAX configs is first cut to a
random sample of that many (seeded: the same space gives the same sample).

auto: exhaustive up to EXHAUSTIVE_MAX configs, halving above. Up to 64 configs, exhaustive
timing takes ~8 s on the GPU (64 x ~125 ms), no more than compiling them does, while halving
would save at most two thirds of it and can drop the best config on a short, noisy first
measurement. From a few hundred configs exhaustive timing takes minutes; halving, seconds.

The search never sees a GPU: `measure(trial, effort)` times one config (effort None: the
timer's own full measurement), and the tuner supplies it.
"""
from __future__ import annotations

import inspect
import math
import random
from dataclasses import dataclass

from ..diagnostics import CompileError

SEARCHES = ("auto", "exhaustive", "halving")
EXHAUSTIVE_MAX = 64
KEEP = 3                    # each rung keeps the best 1/KEEP, timed KEEP times as long
MIN_EFFORT = 1 / 81         # the first rung's measurement: ~1.2 ms of launches (timer.MIN_RUNS
                            # keeps at least 10), enough to tell a 2x slower config
FINAL_CONFIGS = 3           # the last rung keeps at least this many: one noisy full
                            # measurement should not decide alone
SAMPLE_MAX = 2048
SEED = 0
# A challenger must beat the incumbent (the model's pick) by more than this to win: two
# full measurements of one config differ by up to ~1% run to run (H100, 2026-12-07), and at
# 4096 x 7168 x 16384 halving twice chose cluster 2, which then ran 0.7-1.4% slower than
# the model's cluster 1 in bench/fp8_gemm.py's alternating rounds.
INCUMBENT_MARGIN = 0.01


@dataclass(frozen=True)
class Rung:
    count: int                  # how many configs this rung times (the best of the last)
    effort: float | None        # the fraction of a full measurement; None: the timer's own


def check_search(search: str) -> None:
    if search not in SEARCHES:
        raise CompileError(f"search must be one of {', '.join(SEARCHES)}, got {search!r}",
                           None, "search='auto' times small spaces exhaustively and large "
                           "ones by successive halving")


def pick_search(search: str, configs: int, timer) -> str:
    """'exhaustive' or 'halving' for a space of `configs` configs. Halving passes the timer
    an `effort=` keyword; under 'auto' a timer without it gets the exhaustive search."""
    check_search(search)
    if search == "exhaustive" or (search == "auto" and configs <= EXHAUSTIVE_MAX):
        return "exhaustive"
    if timer is None or takes_effort(timer):
        return "halving"
    if search == "auto":
        return "exhaustive"
    raise CompileError("search='halving' times configs with shorter and longer measurements, "
                       "and this timer takes no effort= keyword", None,
                       "give the timer an effort=1.0 parameter (the fraction of a full "
                       "measurement to spend), or use search='exhaustive'")


def takes_effort(timer) -> bool:
    try:
        parameters = inspect.signature(timer).parameters.values()
    except (TypeError, ValueError):          # no signature to read: assume the old protocol
        return False
    return any(p.name == "effort" or p.kind is p.VAR_KEYWORD for p in parameters)


def sample(configs: list, limit: int = SAMPLE_MAX, seed: int = SEED) -> list:
    """At most `limit` of `configs`, drawn at random with `seed`, in their original order."""
    if len(configs) <= limit:
        return list(configs)
    chosen = sorted(random.Random(seed).sample(range(len(configs)), limit))
    return [configs[i] for i in chosen]


def plan(search: str, configs: int) -> list[Rung]:
    """The rungs that time `configs` configs ('exhaustive' or 'halving')."""
    if search == "exhaustive" or configs <= FINAL_CONFIGS:
        return [Rung(configs, None)]
    halvings = min(int(math.log(configs / FINAL_CONFIGS, KEEP) + 1e-9),
                   round(math.log(1 / MIN_EFFORT, KEEP)))
    return [Rung(math.ceil(configs / KEEP ** k), float(KEEP) ** (k - halvings))
            for k in range(halvings + 1)]


def planned_work(rungs: list[Rung]) -> float:
    """The plan's cost in full measurements."""
    return sum(r.count * (1.0 if r.effort is None else r.effort) for r in rungs)


def run_plan(trials: list, rungs: list[Rung], measure, keep: list = ()) -> None:
    """Time `trials` (objects with .ms and .effort) rung by rung, each rung the fastest of
    the last; ties keep the space's order. `measure(trial, effort)` sets trial.ms, None when
    the config failed to run, which leaves the search. `keep`: trials timed in every rung
    whatever their rank (the cost model's pick), unless they fail."""
    alive, kept = list(trials), list(keep)
    for rung in rungs:
        head = alive[:rung.count]
        alive = head + [t for t in kept if all(t is not h for h in head)]
        for trial in alive:
            trial.effort = 1.0 if rung.effort is None else rung.effort
            measure(trial, rung.effort)
        alive = sorted((t for t in alive if t.ms is not None), key=lambda t: t.ms)
        kept = [t for t in kept if t.ms is not None]


def best(trials: list, incumbent=None):
    """The fastest of the trials timed the longest (the last rung that timed any), or None;
    `incumbent`, where it was timed as long, unless the fastest beats it by more than
    INCUMBENT_MARGIN."""
    timed = [t for t in trials if t.ms is not None]
    if not timed:
        return None
    longest = max(t.effort for t in timed)
    fastest = min((t for t in timed if t.effort == longest), key=lambda t: t.ms)
    if (incumbent is not None and incumbent.ms is not None and incumbent.effort == longest
            and fastest.ms * (1 + INCUMBENT_MARGIN) >= incumbent.ms):
        return incumbent
    return fastest
