"""`commdsl compile | check | tune`: the command line.

Every user mistake is printed as one diagnostic (file:line:col, the line, a caret, a fix)
and exits with status 1; no Python traceback reaches the user unless COMMDSL_DEBUG is set.
"""
from __future__ import annotations

import argparse
import os
import sys

from .diagnostics import CommdslError, CompileError


def _constant(text: str) -> tuple[str, int | float | str]:
    name, eq, value = text.partition("=")
    if not eq or not name.isidentifier():
        raise CompileError(f"-D expects NAME=VALUE, got '{text}'", None, "e.g. -D ROWS=8")
    for parse in (int, float):
        try:
            return name, parse(value)
        except ValueError:
            pass
    from .dtypes import DTYPES
    if value in DTYPES:                       # a dtype constant: -D FMT=e5m2
        return name, value
    raise CompileError(f"-D {name}: '{value}' is not a number or a dtype", None,
                       f"e.g. -D {name}=128 or -D {name}=e5m2")


def _common(p: argparse.ArgumentParser):
    p.add_argument("file", help="a .cdsl source file")
    p.add_argument("--target", default=None,
                   help="GPU target (default sm_90a; tune: the GPU's own)")
    p.add_argument("-D", dest="defines", action="append", default=[], metavar="NAME=VALUE",
                   help="set a tune/const constant; may repeat")
    p.add_argument("--kernel", help="compile only this kernel of the file")


def _peer_loads(p: argparse.ArgumentParser):
    p.add_argument("--peer-loads", choices=("nc", "volatile"), default=None,
                   help="how get ... cache(nc, ...) reads other GPUs: keep the clause (nc, the "
                   "default on sm_90) or DeepEP's fallback ld.volatile.global")


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="commdsl", description="Compile communication-aware "
                                 "FP8 GPU kernels written in .cdsl to Hopper PTX.")
    sub = ap.add_subparsers(dest="command", required=True)
    c = sub.add_parser("compile", help="compile a .cdsl file to PTX (or an earlier stage)")
    _common(c)
    _peer_loads(c)
    c.add_argument("-o", "--output", help="output file ('-' for stdout); default: "
                   "<name>.ptx in the current directory for PTX, stdout for other stages")
    c.add_argument("--emit", choices=("ast", "ir", "llvm", "ptx"), default="ptx",
                   help="the stage to stop at")
    c.add_argument("--print-after", action="append", default=[], metavar="PASS",
                   help="print the IR after this pass ('all' for every pass); may repeat")
    k = sub.add_parser("check", help="compile and run ptxas on the result: registers, spills")
    _common(k)
    _peer_loads(k)
    from .tune.command import add_arguments as add_tune_arguments
    t = sub.add_parser("tune", help="time every config of a kernel's tune space on random "
                       "inputs (on a GPU) and save the best for commdsl.load(..., autotune=True)")
    _common(t)
    add_tune_arguments(t)
    return ap


def _compile(args, emit: str, print_after=()):
    from .compiler import compile_file
    from .target import DEFAULT_TARGET
    constants = dict(_constant(d) for d in args.defines)
    peer_loads = getattr(args, "peer_loads", None)       # compile and check take it
    options = {"peer_loads": peer_loads} if peer_loads else None
    return compile_file(args.file, constants=constants, target=args.target or DEFAULT_TARGET,
                        emit=emit, kernel=args.kernel, print_after=set(print_after),
                        printer=lambda text: print(text, file=sys.stderr), options=options)


def cmd_compile(args) -> int:
    from commdsl.passes import PASS_ORDER
    for name in args.print_after:
        if name != "all" and name not in PASS_ORDER:
            raise CompileError(f"--print-after: no pass named '{name}'", None,
                               f"passes: {', '.join(PASS_ORDER)}, or 'all'")
    result = _compile(args, args.emit, args.print_after)
    text = result.text[args.emit]
    out = args.output
    if out is None and args.emit == "ptx":
        out = os.path.splitext(os.path.basename(args.file))[0] + ".ptx"
    if out is None or out == "-":
        sys.stdout.write(text)
    else:
        with open(out, "w") as f:
            f.write(text)
        print(f"wrote {out} ({args.emit}, {result.target}: {', '.join(s.name for s in result.specs)})")
    return 0


def cmd_check(args) -> int:
    from .runtime.ptxas import assemble
    result = _compile(args, "ptx")
    for spec in result.specs:
        report = assemble(result.ptx, arch=result.target, entry=spec.name).report
        print(report.summary())
        for w in report.warnings:
            print(f"  warning: {w}")
    return 0


def cmd_tune(args) -> int:
    from .tune.command import run
    return run(args, dict(_constant(d) for d in args.defines), args.target)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return {"compile": cmd_compile, "check": cmd_check, "tune": cmd_tune}[args.command](args)
    except CommdslError as e:
        print(e.render(), file=sys.stderr)
        return 1
    except Exception:
        if os.environ.get("COMMDSL_DEBUG"):
            raise
        import traceback
        print("commdsl: internal compiler error (a bug in commdsl; please report it with the "
              "file that caused it)\n" + traceback.format_exc(limit=-3), file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
