"""A compiled kernel and its variants: `Kernel` compiles (through the compile cache) and
launches; `commdsl.load` (api.py) makes one.

Compiling. A Kernel has one variant per size specialization (which sizes are multiples of
16, as Triton does), made when a call first needs it. A variant comes from the on-disk
compile cache ($COMMDSL_CACHE_DIR, default ~/.cache/commdsl; runtime/cache.py) when it is
there, and then nothing is parsed and neither lark nor llvmlite is imported; otherwise it is
compiled, assembled by ptxas when ptxas is found (else the driver JIT-compiles the PTX), and
stored.

Calling. The first call with a new signature (the shapes, dtypes, devices and strides of the
arguments) runs every argument check; later calls with it check only alignment and that passed
outputs alias no other argument, allocate the outputs not passed, and launch
(runtime/callplan.py).
"""
from __future__ import annotations

import os
import time
import warnings

from . import config
from .diagnostics import CompileError, Source
from .runtime.callplan import CallPlan, CallPlans, RecentCall, call_signature
from .spec import SPECIALIZE_DIVISOR
from .target import DEFAULT_TARGET


def read_source(path_or_source: str) -> tuple[str, str]:
    """(text, path) of a .cdsl file, or of source text given directly."""
    if "{" in path_or_source or "\n" in path_or_source:
        return path_or_source, "<string>"
    return Source.read(path_or_source).text, path_or_source


class Kernel:
    """A compiled kernel: call it on CUDA tensors, or `.interpret` it on CPU tensors.

    `constants` are the ones the caller set; `spec.constants` holds every constant's value."""

    def __init__(self, text: str, path: str, name: str | None, constants: dict, target: str,
                 options: dict | None = None):
        self.source, self.path, self.target = text, path, target
        self.constants, self.options = dict(constants), options
        self._default = _Variant(build(text, path, name, self.constants, target,
                                       options=options))
        self._variants = {frozenset(): self._default}
        self.name = self._default.spec.name
        self._plans = CallPlans()
        self._recent: RecentCall | None = None      # the last call's plan, checked in C++

    @property
    def spec(self):
        return self._default.spec

    @property
    def ptx(self) -> str:
        """The PTX of the variant for sizes that are all multiples of 16."""
        return self._default.artifact.ptx

    @property
    def resources(self):
        """ptxas's ResourceReport (registers, spills, static smem), or None without ptxas."""
        return self._default.artifact.resources

    def variant(self, unaligned_sizes: frozenset[str]) -> "_Variant":
        """The variant for sizes of which exactly `unaligned_sizes` are not multiples of 16."""
        if unaligned_sizes not in self._variants:
            self._variants[unaligned_sizes] = _Variant(build(
                self.source, self.path, self.name, self.constants, self.target, unaligned_sizes,
                self.options))
        return self._variants[unaligned_sizes]

    def __call__(self, *args, **kwargs):
        values = args + tuple(kwargs.values()) if kwargs else args
        recent = self._recent                  # inlined RecentCall.get: this is the hot path
        if recent is not None and len(args) == recent.arg_count and \
                tuple(kwargs) == recent.keywords and recent.check(*values):
            return recent.value(values, args, kwargs)
        try:
            key = call_signature(args, kwargs)
        except AttributeError:      # not all tensors: the full checks name the argument
            key = None
        plan = self._plans.get(key)
        if plan is None:
            return self._first_call(key, args, kwargs)
        self._recent = plan.recent
        return plan(args + tuple(kwargs.values()), args, kwargs)

    def _first_call(self, key, args: tuple, kwargs: dict):
        """Every check, the launch, and a plan that lets later calls skip the checks."""
        checker = self._default.launcher
        bound = checker.bind(*args, **kwargs)
        unaligned = frozenset(s for s in self.spec.size_symbols
                              if bound.sizes[s] % SPECIALIZE_DIVISOR)
        launcher = self.variant(unaligned).launcher
        launcher.check_tensor_maps(bound)
        launcher.launch(bound)
        if key is not None:
            plan = self._plans.remember(key, CallPlan(checker, launcher, bound, args, kwargs))
            self._recent = plan.recent
        return checker.results(bound)

    def interpret(self, *args, **kwargs):
        """Runs the kernel on CPU tensors with the IR interpreter; same arguments and results."""
        from . import interpreter
        from .compiler import compile_source
        launcher = self._default.launcher
        bound = launcher.bind(*args, require_cuda=False, **kwargs)
        kir = compile_source(self.source, self.path, constants=self.constants, target=self.target,
                             emit="ir", kernel=self.name).ir[0]
        interpreter.run(kir, {t.name: v for t, v in zip(self.spec.tensors, bound.tensors)},
                        bound.sizes)
        return launcher.results(bound)

    def as_torch_op(self, name: str):
        """Registers this kernel as the PyTorch custom op `name` ("namespace::op") and returns
        a function calling it: inputs in, fresh outputs back, usable under torch.compile and
        torch.export (torch_op.py)."""
        from .torch_op import register
        return register(self, name)

    def __repr__(self):
        consts = ", ".join(f"{k}={v}" for k, v in self.spec.constants.items())
        return f"<commdsl kernel {self.name}({consts}) for {self.target}>"


class InterpretedKernel(Kernel):
    """What `load` gives under COMMDSL_INTERPRET=1: calls run on the CPU interpreter (a
    subclass, so that Kernel's call path stays free of the check)."""

    def __call__(self, *args, **kwargs):
        return self.interpret(*args, **kwargs)


class _Variant:
    """One compiled specialization and, once asked for, its launcher."""

    def __init__(self, artifact):
        self.artifact = artifact
        self.spec = artifact.spec
        self._launcher = None

    @property
    def launcher(self):
        if self._launcher is None:
            from .runtime.launcher import Launcher
            self._launcher = Launcher.from_image(self.spec, self._image())
        return self._launcher

    def _image(self):
        if self.artifact.cubin is None or os.environ.get("COMMDSL_JIT") == "driver":
            return self.artifact.ptx              # the driver's JIT compiles PTX too
        return self.artifact.cubin


def build(text: str, path: str, kernel: str | None, constants: dict, target: str,
          unaligned_sizes: frozenset[str] = frozenset(), options: dict | None = None):
    """One variant's CachedKernel: from the compile cache, else compiled, assembled, stored.
    `options`: compile options (compiler.OPTIONS)."""
    from .runtime.cache import CompileCache, cache_key
    log = config.logger()
    cache = CompileCache()
    key = cache_key(text, path, kernel, constants, target, unaligned_sizes, options)
    what = f"{kernel or os.path.basename(path)} {constants} (key {key[:12]})"
    cached = None if config.always_compile() else cache.get(key)
    if cached is not None:
        log.info("cache hit: %s", what)
        return cached
    log.info("cache miss: %s%s", what, ", COMMDSL_ALWAYS_COMPILE" if config.always_compile()
             else "" if cache.root else ", no cache folder")
    start = time.perf_counter()
    built = compile_variant(text, path, kernel, constants, target, unaligned_sizes, options)
    log.info("compiled %s in %.0f ms%s", built.spec.name, (time.perf_counter() - start) * 1e3,
             "" if built.cubin is not None else " (no ptxas: the driver JITs the PTX)")
    try:
        cache.put(key, built)
    except OSError as e:
        warnings.warn(f"commdsl: could not write the compile cache in {cache.root} ({e}); "
                      "set COMMDSL_CACHE_DIR to a writable folder", stacklevel=3)
    return built


def compile_variant(text: str, path: str, kernel: str | None, constants: dict, target: str,
                    unaligned_sizes: frozenset[str], options: dict | None = None):
    """Compile one kernel to PTX and, where ptxas is found, to a cubin with its report."""
    from .compiler import compile_source
    from .diagnostics import ToolError
    from .runtime.cache import CachedKernel
    from .runtime.ptxas import assemble, find_ptxas
    compiled = compile_source(text, path, constants=constants, target=target, kernel=kernel,
                              divisible={s: False for s in unaligned_sizes}, options=options)
    if len(compiled.specs) > 1:
        names = ", ".join(s.name for s in compiled.specs)
        raise CompileError(f"{path} holds several kernels ({names})", None,
                           "pick one: commdsl.load(path, kernel='NAME')")
    spec = compiled.specs[0]
    try:
        find_ptxas()
    except ToolError:
        return CachedKernel(spec, compiled.ptx, None, None)
    assembled = assemble(compiled.ptx, arch=spec.target, entry=spec.name)
    if compiled.dump:
        compiled.dump.ptxas_report(assembled.report)
    return CachedKernel(spec, compiled.ptx, assembled.cubin, assembled.report)


def local_target() -> str:
    """The current GPU's target; the default one on a machine without a GPU."""
    from .runtime.device import current_target
    here = current_target()
    return DEFAULT_TARGET if here is None else here.name
