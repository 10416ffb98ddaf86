"""A long fuzz run:
    python tests/fuzz/run.py --count 1000000 --seed 1                  # front end, passes, LLVM IR
    python tests/fuzz/run.py --stream valid --emit cubin --until-ok 20000   # through ptxas

Prints a count per outcome and one line per distinct crash signature (exception type and
the innermost commdsl frame), and writes each signature's first input, and the slowest
inputs, to --out.
"""
from __future__ import annotations

import argparse
import collections
import os
import sys
import time
import traceback

sys.path.insert(0, os.path.dirname(__file__))
from fuzzgen import InputTimeout, PtxasRejected, inputs, outcome  # noqa: E402


def signature(exc: BaseException) -> str:
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if "commdsl" in f.filename
              or "passes" in f.filename or "backends" in f.filename]
    where = f"{os.path.basename(frames[-1].filename)}:{frames[-1].lineno}" if frames else "?"
    return f"{type(exc).__name__} at {where}"


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--count", type=int, default=10000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--emit", default="llvm", choices=("ir", "llvm", "ptx", "cubin"),
                    help="how far each input goes; cubin runs ptxas on every kernel that compiles")
    ap.add_argument("--limit", type=float, default=5.0,
                    help="seconds an input may take before it counts as a hang")
    ap.add_argument("--slow", type=float, default=5.0,
                    help="inputs that finish but take longer are counted and kept apart")
    ap.add_argument("--out", default="fuzz-crashes")
    ap.add_argument("--stream", default="mixed", choices=("mixed", "valid"),
                    help="mixed: generated and mutated inputs; valid: gentle mutants that "
                    "mostly compile, for runs through ptxas")
    ap.add_argument("--start", type=int, default=0,
                    help="skip the stream's first inputs (to replay a stretch of a long run)")
    ap.add_argument("--until-ok", type=int, default=0,
                    help="stop once this many inputs compiled (with --emit cubin: passed ptxas)")
    args = ap.parse_args()
    counts: collections.Counter = collections.Counter()
    crashes: dict[str, str] = {}
    slowest: dict[str, float] = {}
    start, done = time.time(), 0
    for i, item in enumerate(inputs(args.seed, args.count, args.stream)):
        if i < args.start:
            continue
        done = i + 1 - args.start
        if i and i % 1000 == 0:
            print(f"{i} inputs, {time.time() - start:.0f} s: {dict(counts)}", flush=True)
        began = time.time()
        try:
            result = outcome(item, args.limit, args.emit)
            counts[result] += 1
            if time.time() - began > args.slow:
                counts[f"{result}, over {args.slow:g} s"] += 1
                slowest[str(item)] = time.time() - began
        except InputTimeout:
            counts["timeout"] += 1
            sig, text = f"timeout ({item.origin})", str(item)
            print(f"input {i}: over {args.limit:g} s ({item.origin})", flush=True)
            slowest[text] = float("inf")
        except PtxasRejected as e:
            counts["ptxas rejected"] += 1
            sig, text = f"ptxas rejected: {str(e).splitlines()[-3][:80]}", f"{item}\n{e}"
        except Exception as e:          # an internal compiler error: what we look for
            counts["internal"] += 1
            sig, text = signature(e), str(item)
        else:
            if args.until_ok and counts["ok"] >= args.until_ok:
                break
            continue
        if sig not in crashes:
            print(f"input {i}: {sig}", flush=True)
            crashes[sig] = text
    print(f"{done} inputs in {time.time() - start:.0f} s: {dict(counts)}")
    os.makedirs(args.out, exist_ok=True)
    for n, (text, seconds) in enumerate(sorted(slowest.items(), key=lambda kv: -kv[1])[:20]):
        took = f"{seconds:.1f} s" if seconds != float("inf") else f"over {args.limit:g} s"
        print(f"  slow: {took}, kept as slow{n}.txt")
        with open(os.path.join(args.out, f"slow{n}.txt"), "w") as f:
            f.write(f"# {took}\n{text}")
    if crashes:
        for n, (sig, text) in enumerate(sorted(crashes.items())):
            print(f"  {sig}")
            with open(os.path.join(args.out, f"crash{n}.txt"), "w") as f:
                f.write(f"# {sig}\n{text}")
    return 1 if crashes else 0


if __name__ == "__main__":
    sys.exit(main())
