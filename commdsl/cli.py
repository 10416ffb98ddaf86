"""`commdsl compile | check | tune | opt`: the command line.

Every user mistake is printed as one diagnostic (file:line:col, the line, a caret, a fix)
and exits with status 1; no Python traceback reaches the user unless COMMDSL_DEBUG is set.
"""
from __future__ import annotations

import argparse
import os
import sys

from .diagnostics import CommdslError, CompileError, Source


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
    if value.startswith("cache("):            # a cache policy: -D XC='cache(nc)'
        from .parser import parse_cache_policy
        return name, parse_cache_policy(value, name).text
    raise CompileError(f"-D {name}: '{value}' is not a number, a dtype or a cache policy",
                       None, f"e.g. -D {name}=128, -D {name}=e5m2 or -D {name}='cache(nc)'")


def _constants(defines: list[str]) -> dict[str, int | float | str]:
    """The -D options as a dict; setting one name twice is an error, not 'the last wins'."""
    constants: dict[str, int | float | str] = {}
    for text in defines:
        name, value = _constant(text)
        if name in constants:
            raise CompileError(f"-D {name} is given twice ({name}={constants[name]} and "
                               f"{name}={value})", None, f"keep one -D {name}=...")
        constants[name] = value
    return constants


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


def _fast_math(p: argparse.ArgumentParser):
    p.add_argument("--fast-math", action="store_true",
                   help="math functions use PTX's .approx instructions (exp, log, rsqrt, "
                   "tanh, sigmoid, silu, sin, cos): faster, less accurate")


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="commdsl", description="Compile communication-aware "
                                 "FP8 GPU kernels written in .cdsl to Hopper PTX.")
    from . import __version__
    ap.add_argument("--version", action="version", version=f"commdsl {__version__}")
    sub = ap.add_subparsers(dest="command", required=True)
    c = sub.add_parser("compile", help="compile a .cdsl file to PTX (or an earlier stage)")
    _common(c)
    _peer_loads(c)
    _fast_math(c)
    c.add_argument("-o", "--output", help="output file ('-' for stdout); default: "
                   "<name>.ptx in the current directory for PTX, stdout for other stages")
    c.add_argument("--emit", choices=("ast", "ir", "llvm", "ptx"), default="ptx",
                   help="the stage to stop at")
    c.add_argument("--print-after", action="append", default=[], metavar="PASS",
                   help="print the IR after this pass ('all' for every pass); may repeat")
    k = sub.add_parser("check", help="compile and run ptxas on the result: registers, spills")
    _common(k)
    k.add_argument("--sass", action="store_true",
                   help="also print each kernel's SASS (cuobjdump -sass) and its opcode counts")
    _peer_loads(k)
    _fast_math(k)
    from .tune.command import add_arguments as add_tune_arguments
    t = sub.add_parser("tune", help="time every config of a kernel's tune space on random "
                       "inputs (on a GPU) and save the best for commdsl.load(..., autotune=True)")
    _common(t)
    add_tune_arguments(t)
    cache = sub.add_parser("cache", help="list or clear the compile cache "
                           "($COMMDSL_CACHE_DIR, default ~/.cache/commdsl)")
    cache.add_argument("action", choices=("list", "clear"))
    cache.add_argument("--all", action="store_true",
                       help="clear: also the tuning choices `commdsl tune` saved")
    o = sub.add_parser("opt", help="run passes on tile IR text (from --emit ir or "
                       "--print-after) and print the IR they give")
    o.add_argument("file", help="a tile IR file")
    o.add_argument("--passes", required=True, metavar="A,B,...",
                   help="the passes to run, in this order")
    o.add_argument("--target", default=None, help="GPU target (default sm_90a)")
    o.add_argument("-o", "--output", help="output file (default: stdout)")
    return ap


def _compile(args, emit: str, print_after=()):
    from .compiler import compile_file
    from .target import DEFAULT_TARGET
    constants = _constants(args.defines)
    peer_loads = getattr(args, "peer_loads", None)       # compile and check take it
    options = {"peer_loads": peer_loads} if peer_loads else {}
    if getattr(args, "fast_math", False):
        options["fast_math"] = True
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
        try:
            with open(out, "w") as f:
                f.write(text)
        except OSError as e:
            raise CompileError(f"cannot write {out}: {e.strerror}", None,
                               "-o names a file in a folder that exists and can be written")
        print(f"wrote {out} ({args.emit}, {result.target}: {', '.join(s.name for s in result.specs)})")
    return 0


def cmd_check(args) -> int:
    from .runtime.ptxas import assemble
    result = _compile(args, "ptx")
    for spec in result.specs:
        assembled = assemble(result.ptx, arch=result.target, entry=spec.name)
        report = assembled.report
        if result.dump:                                  # COMMDSL_DUMP_DIR
            result.dump.ptxas_report(report)
        print(report.summary())
        for w in report.warnings:
            print(f"  warning: {w}")
        if args.sass:
            print(_sass_listing(assembled.cubin, spec.name))
    return 0


def _sass_listing(cubin: bytes, entry: str) -> str:
    from .runtime.sass import disassemble, global_loads, mma_loops, opcodes
    sass = disassemble(cubin, entry)
    counts = opcodes(sass)
    top = ", ".join(f"{name} {n}" for name, n in counts.most_common(12))
    loads, end = global_loads(sass)
    where = (f"\n  global loads: {len(loads)}, at instructions {', '.join(map(str, loads))} of "
             f"the {end} before the last EXIT" if loads else "")
    loops = mma_loops(sass)
    if loops:
        ops, groups = max(loops, key=lambda loop: loop[1])
        where += ("\n  wgmma loops (a warp's instructions an iteration / the wgmma groups it "
                  "commits): " + ", ".join(f"{sum(o.values())} / {g}" for o, g in loops)
                  + f"; a group of the {groups}-group loop: " + ", ".join(
                      f"{name} {n / groups:.3g}" for name, n in ops.most_common(10)))
    return f"  SASS: {sum(counts.values())} instructions ({top}){where}\n{sass.rstrip()}"


def cmd_tune(args) -> int:
    from .tune.command import run
    return run(args, _constants(args.defines), args.target)


def cmd_opt(args) -> int:
    from commdsl.passes.manager import PASS_ORDER, get_pass

    from .check import did_you_mean
    from .diagnostics import Source
    from .ir_parser import parse_module
    from .ir_printer import print_kernel
    from .target import DEFAULT_TARGET, get_target
    try:
        with open(args.file) as f:
            text = f.read()
    except OSError as e:
        raise CompileError(f"cannot read {args.file}: {e.strerror}") from None
    source = Source(text, args.file)
    names = [n.strip() for n in args.passes.split(",") if n.strip()]
    for name in names:
        if name not in PASS_ORDER:
            raise CompileError(f"--passes: no pass named '{name}'", None,
                               did_you_mean(name, PASS_ORDER) or
                               f"passes: {', '.join(PASS_ORDER)}", source)
    target = get_target(args.target or DEFAULT_TARGET)
    for name in PASS_ORDER:      # imported before parsing: passes register attribute classes
        get_pass(name)
    try:
        out = "".join(print_kernel(_run_passes(k, names, target))
                      for k in parse_module(text, args.file))
    except CompileError as e:
        raise e.with_source(source) from None
    if args.output is None or args.output == "-":
        sys.stdout.write(out)
    else:
        with open(args.output, "w") as f:
            f.write(out)
    return 0


def _run_passes(kernel, names: list[str], target):
    """Runs the named passes in order, verifying the IR before and after each."""
    from commdsl.passes.manager import PASS_ORDER, get_pass

    from .ir_verifier import IRVerifyError, verify
    order = list(PASS_ORDER)
    hint = ("each pass takes the IR of its place in the pipeline, after the passes before it: "
            + ", ".join(order))
    ran, layouts = None, False
    try:
        verify(kernel)
        for name in names:
            ran = name
            kernel = get_pass(name)(kernel, target)
            # a pass at or after `tile` in the pipeline gives tiles with layouts
            layouts |= order.index(name) >= order.index("tile")
            verify(kernel, require_layouts=layouts)
    except IRVerifyError as e:
        what = f"the IR after pass '{ran}'" if ran else "the input IR"
        raise CompileError(f"@{kernel.name}: {what} does not verify: {e}", None,
                           hint if ran else None) from None
    except CompileError:
        raise
    except Exception as e:          # a pass given IR of another stage than it expects
        if os.environ.get("COMMDSL_DEBUG"):
            raise
        raise CompileError(f"@{kernel.name}: pass '{ran}' failed: {type(e).__name__}: {e}",
                           None, hint + " (COMMDSL_DEBUG=1 shows the traceback)") from None
    return kernel


def cmd_cache(args) -> int:
    import shutil
    import time

    from .config import cache_dir
    from .runtime.cache import CompileCache
    folder = cache_dir()
    if folder is None:
        return 1                                    # cache_dir warned why
    cache = CompileCache()
    if args.action == "clear":
        count = cache.clear()
        tune = os.path.join(folder, "tune")
        if args.all and os.path.isdir(tune):
            shutil.rmtree(tune, ignore_errors=True)
        print(f"removed {count} compiled kernel{'s' * (count != 1)} from {cache.root}"
              + (" and the saved tuning choices" if args.all else ""))
        return 0
    entries = cache.entries()
    for e in entries:
        when = time.strftime("%Y-%m-%d %H:%M", time.localtime(e["mtime"]))
        print(f"{e['key'][:16]}  {e['kernel']:<24} {e['bytes'] / 1024:8.1f} KiB  {when}")
    total = sum(e["bytes"] for e in entries) / 2**20
    print(f"{len(entries)} compiled kernel{'s' * (len(entries) != 1)}, {total:.1f} MiB, "
          f"in {cache.root}")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return {"compile": cmd_compile, "check": cmd_check, "tune": cmd_tune,
                "opt": cmd_opt, "cache": cmd_cache}[args.command](args)
    except CommdslError as e:
        if isinstance(e, CompileError):        # an option's error: name the file it was for
            e.with_source(Source("", args.file))
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
