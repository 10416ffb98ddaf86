"""The pipeline, stage by stage: source -> ast -> ir -> passes -> llvm -> ptx.

`STAGES` is ordered, so `--emit` can stop after any stage and tests can look at any.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from . import ast
from .check import check_launch_limits, check_signature, did_you_mean
from .diagnostics import CompileError, Source
from .config import logger
from .dump import Dump
from .ir import KernelIR
from .ir_printer import print_kernel
from .spec import SPECIALIZE_DIVISOR, KernelSpec
from .target import DEFAULT_TARGET, Target, get_target

STAGES = ("ast", "ir", "llvm", "ptx")


@dataclass
class Compiled:
    source: Source
    target: str
    specs: list[KernelSpec]
    ir: list[KernelIR] = field(default_factory=list)
    text: dict[str, str] = field(default_factory=dict)     # stage -> its printed form
    dump: Dump | None = None         # where COMMDSL_DUMP_DIR has this compile's stages

    @property
    def ptx(self) -> str:
        return self.text["ptx"]


# Compile options: name -> (allowed values, what it does). Each lands in KernelIR.attrs.
OPTIONS = {
    "peer_loads": (("nc", "volatile"), "how `get ... cache(nc, ...)` reads another rank's "
                   "memory: 'nc' keeps the clause (ld.global.nc.L1::no_allocate...), 'volatile' "
                   "is DeepEP's safe fallback ld.volatile.global; default: nc on sm_90, "
                   "volatile elsewhere"),
    "fast_math": ((True, False), "math functions (exp, log, rsqrt, tanh, sigmoid, silu, sin, "
                  "cos) use PTX's .approx instructions: faster, a few ulp to 2^-11 off "
                  "(docs/ir.md gives each); as fast_math() in the kernel header or --fast-math"),
}
FAST_MATH_HELP = ("enable fast math: fast_math() in the kernel header, --fast-math on the "
                  "command line, or options={'fast_math': True}")


def check_options(options: dict) -> dict:
    for name, value in options.items():
        if name not in OPTIONS:
            raise CompileError(f"unknown compile option '{name}'", None,
                               did_you_mean(name, OPTIONS) or f"options: {', '.join(OPTIONS)}")
        allowed, what = OPTIONS[name]
        if value not in allowed:
            raise CompileError(f"option {name} = {value!r} is not one of "
                               f"{', '.join(map(str, allowed))}", None, what)
    return dict(options)


def _declared(k: ast.Kernel) -> set[str]:
    return {t.name for t in k.tunes} | {c.name for c in k.consts}


def compile_source(text: str, path: str = "<string>", *, constants: dict | None = None,
                   target: str = DEFAULT_TARGET, emit: str = "ptx", kernel: str | None = None,
                   divisible: dict[str, bool] | None = None, print_after: set[str] = frozenset(),
                   printer=print, options: dict | None = None) -> Compiled:
    """Compiles every kernel of a .cdsl source (or the one named `kernel`).

    `options` are compile options (OPTIONS), e.g. {"peer_loads": "volatile"}.

    `divisible` says, per size symbol, whether it is a multiple of 16; sizes it does not name
    are assumed to be (the CLI's default; the runtime always names them all)."""
    from .parser import parse
    source = Source(text, path)
    constants = dict(constants or {})
    try:
        tgt = get_target(target)
        options = check_options(options or {})
        module = parse(text, path)
        kernels = list(module.kernels)
        _check_unique_names(kernels)
        if kernel is not None:
            kernels = [k for k in kernels if k.name == kernel]
            if not kernels:
                names = [k.name for k in module.kernels]
                raise CompileError(f"no kernel named '{kernel}' in {path}", None,
                                   did_you_mean(kernel, names) or f"kernels: {', '.join(names)}")
        declared = set().union(*(_declared(k) for k in kernels))
        for name in constants:
            if name not in declared:
                raise CompileError(f"no kernel declares a constant '{name}'", None,
                                   did_you_mean(name, declared) or
                                   f"declared constants: {', '.join(sorted(declared)) or 'none'}")
        dump = Dump.start(text, path, constants=constants, target=tgt.name, kernel=kernel,
                          divisible=divisible, options=options)
        out = Compiled(source, tgt.name, [], dump=dump)
        if dump:
            for k in kernels:
                dump.write(f"{k.name}.ast.txt", repr(k) + "\n")
        if emit == "ast":
            out.text["ast"] = "\n".join(repr(k) for k in kernels) + "\n"
            return out
        irs = []
        for k in kernels:
            sig = check_signature(k, {n: v for n, v in constants.items() if n in _declared(k)})
            check_launch_limits(k, sig, tgt)
            kir = _lower(sig, k, tgt, divisible)
            kir.attrs.update(options)
            _apply_fast_math(kir, bool(options.get("fast_math")) or sig.fast_math)
            if dump:
                dump.write(f"{k.name}.irgen.ir", print_kernel(kir))
            if emit == "ir":
                irs.append(kir)
                continue
            from commdsl.passes import PassManager
            observe = (lambda name, ir, k=k: dump.write(f"{k.name}.{name}.ir", print_kernel(ir))
                       ) if dump else None
            manager = PassManager(tgt, set(print_after), printer, observe=observe)
            kir = manager.run(kir)
            logger().debug("%s passes: %s", k.name, ", ".join(
                f"{n} {t * 1e3:.1f} ms" for n, t in manager.timings.items()))
            irs.append(kir)
            out.specs.append(KernelSpec(
                name=k.name, tensors=tuple(sig.tensors), size_symbols=tuple(sig.size_symbols),
                grid=kir.grid, num_threads=kir.num_threads, shared_bytes=kir.shared_bytes,
                target=tgt.name, constants=dict(sig.constants), source_path=path,
                comm=bool(kir.attrs.get("comm")) or any(t.symmetric for t in sig.tensors),
                tensor_maps=tuple(kir.attrs.get("tensor_maps", ()))))
        out.ir = irs
        out.text["ir"] = "".join(print_kernel(k) for k in irs)
        if emit == "ir":
            return out
        from commdsl.backends.ptx import to_llvm, to_ptx
        out.text["llvm"] = to_llvm(irs, tgt)
        if dump:
            dump.write("module.ll", out.text["llvm"])
        if emit == "llvm":
            return out
        out.text["ptx"] = to_ptx(out.text["llvm"], tgt)
        if dump:
            dump.write("module.ptx", out.text["ptx"])
        return out
    except CompileError as e:
        raise e.with_source(source) from None


def _check_unique_names(kernels: list[ast.Kernel]):
    seen: dict[str, ast.Kernel] = {}
    for k in kernels:
        if k.name in seen:
            raise CompileError(f"kernel '{k.name}' is defined twice (first on line "
                               f"{seen[k.name].span.line})", k.span,
                               "give each kernel of a file its own name")
        seen[k.name] = k


def _lower(sig, k: ast.Kernel, target: Target, divisible: dict[str, bool] | None) -> KernelIR:
    from .irgen import lower
    kir = lower(sig, k, target)
    divisible = divisible or {}
    kir.attrs["size_divisibility"] = {
        s: SPECIALIZE_DIVISOR for s in sig.size_symbols if divisible.get(s, True)}
    return kir


def _apply_fast_math(kir: KernelIR, enabled: bool) -> None:
    """Under fast math every math op with an approx variant takes it; without, an op that
    asks for it (a `fast_exp(...)`) is an error at its call."""
    from .ops.math import APPROX
    for op in kir.walk():
        if op.name not in APPROX:
            continue
        if enabled:
            op.attrs["approx"] = True
        elif op.attrs.get("approx"):
            raise CompileError(f"fast_{op.name} needs the fast_math option", op.loc,
                               FAST_MATH_HELP)


def compile_file(path: str, **kwargs) -> Compiled:
    return compile_source(Source.read(path).text, path, **kwargs)
