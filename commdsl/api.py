"""The Python API: `commdsl.load` a .cdsl kernel, call it on torch tensors.

    act_quant = commdsl.load("examples/act_quant.cdsl", ROWS=16)
    y, s = act_quant(x)                  # on the GPU
    y, s = act_quant.interpret(x.cpu())  # on the CPU, through the IR interpreter

A Kernel compiles one variant per size specialization (which sizes are multiples of 16, as
Triton does) the first time a call needs it, assembles it with ptxas when ptxas is found
(else the driver JIT-compiles the PTX), and reuses it for every later call.
"""
from __future__ import annotations

import os

from .compiler import SPECIALIZE_DIVISOR, Compiled, compile_source
from .diagnostics import CompileError
from .target import DEFAULT_TARGET


def _read(path_or_source: str) -> tuple[str, str]:
    if "{" in path_or_source or "\n" in path_or_source:
        return path_or_source, "<string>"
    try:
        with open(path_or_source) as f:
            return f.read(), path_or_source
    except OSError as e:
        raise CompileError(f"cannot read {path_or_source}: {e.strerror}") from None


class Kernel:
    def __init__(self, text: str, path: str, name: str | None, constants: dict, target: str):
        self._text, self._path, self._target = text, path, target
        self._constants = dict(constants)
        first = self._compile(emit="ir", kernel=name)
        if name is None and len(first.ir) > 1:
            names = ", ".join(k.name for k in first.ir)
            raise CompileError(f"{path} holds several kernels ({names})", None,
                               "pick one: commdsl.load(path, kernel='NAME')")
        self.name = first.ir[0].name
        self._variants: dict[tuple[bool, ...], object] = {}
        self._default = self.variant(None)

    def _compile(self, **kwargs) -> Compiled:
        return compile_source(self._text, self._path, constants=self._constants,
                              target=self._target, **kwargs)

    @property
    def spec(self):
        return self._default.compiled.specs[0]

    @property
    def ptx(self) -> str:
        """The PTX of the variant for sizes that are all multiples of 16."""
        return self._default.compiled.ptx

    def variant(self, divisible: tuple[bool, ...] | None) -> "_Variant":
        if divisible not in self._variants:
            symbols = self._symbols() if divisible is not None else ()
            compiled = self._compile(kernel=self.name, divisible=dict(zip(symbols, divisible or ())))
            self._variants[divisible] = _Variant(compiled)
        return self._variants[divisible]

    def _symbols(self):
        return self.spec.size_symbols

    def __call__(self, *args, **kwargs):
        launcher = self._default.launcher
        bound = launcher.bind(*args, **kwargs)
        key = tuple(bound.sizes[s] % SPECIALIZE_DIVISOR == 0 for s in self.spec.size_symbols)
        variant = self._default if all(key) else self.variant(key)
        variant.launcher.launch(bound)
        return launcher.results(bound)

    def interpret(self, *args, **kwargs):
        """Runs the kernel on CPU tensors with the IR interpreter; same arguments and results."""
        from . import interpreter
        launcher = self._default.launcher
        bound = launcher.bind(*args, require_cuda=False, **kwargs)
        kir = self._compile(emit="ir", kernel=self.name).ir[0]
        interpreter.run(kir, {t.name: v for t, v in zip(self.spec.tensors, bound.tensors)},
                        bound.sizes)
        return launcher.results(bound)

    def __repr__(self):
        consts = ", ".join(f"{k}={v}" for k, v in self.spec.constants.items())
        return f"<commdsl kernel {self.name}({consts}) for {self._target}>"


class _Variant:
    """One compiled specialization and, once asked for, its launcher."""

    def __init__(self, compiled: Compiled):
        self.compiled = compiled
        self._launcher = None

    @property
    def launcher(self):
        if self._launcher is None:
            from .runtime.launcher import Launcher
            self._launcher = Launcher.from_image(self.compiled.specs[0], self._image())
        return self._launcher

    def _image(self):
        from .diagnostics import ToolError
        from .runtime.ptxas import assemble, find_ptxas
        if os.environ.get("COMMDSL_JIT") == "driver":
            return self.compiled.ptx
        try:
            find_ptxas()
        except ToolError:
            return self.compiled.ptx              # the driver's JIT compiles PTX too
        spec = self.compiled.specs[0]
        return assemble(self.compiled.ptx, arch=spec.target, entry=spec.name).cubin


def load(path_or_source: str, *, kernel: str | None = None, target: str = DEFAULT_TARGET,
         **constants) -> Kernel:
    """Compiles a kernel from a .cdsl file (or source text) with the given constants."""
    text, path = _read(path_or_source)
    return Kernel(text, path, kernel, constants, target)
