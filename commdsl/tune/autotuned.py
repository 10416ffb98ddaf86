"""`commdsl.load(path, autotune=True)`: a kernel that tunes itself once per shape.

    act_quant = commdsl.load("examples/act_quant.cdsl", autotune=True)
    y, s = act_quant(x)          # first call of this shape: tune (or read the saved choice)
    y, s = act_quant(x)          # later calls: the chosen Kernel's fast launch path

The first call with a new call signature runs `tune` on its arguments (tune/tuner.py), which
reuses a choice saved by an earlier run for the same GPU, source and sizes, and remembers the
chosen Kernel for the signature; the call then, and every later one, goes to that Kernel.

It stands in for a Kernel: what holds for every config (the name, the signature, what the
kernel computes) it has, so `.interpret` and `.as_torch_op` work; what belongs to one config
(`.spec`, `.ptx`, `.resources`, `.variant()`) is a PerShapeError located at the tune line,
saying how to get the Kernel of one shape (`kernel_for(*args)`).
"""
from __future__ import annotations

from ..diagnostics import CompileError, Source
from ..kernel import Kernel
from ..runtime.callplan import MAX_PLANS, RecentCall, call_signature


class PerShapeError(CompileError, AttributeError):
    """Something a kernel whose constants are picked per call shape has only per shape. An
    AttributeError too, so hasattr() and getattr(kernel, name, default) keep working."""


class AutotunedKernel:
    how = "the tuner"                  # who picks the constants, as an error says it

    def __init__(self, text: str, path: str, name: str | None, constants: dict, target: str,
                 space: dict | None = None, *, timer=None, progress: bool = True,
                 search: str = "auto"):
        from .search import check_search
        from .space import search_space
        check_search(search)
        self.source, self.path, self.target = text, path, target
        self.constants = dict(constants)
        # Checked now, so a mistake in the space is reported by `load`, not by a first call.
        self._space = None if space is None else search_space(text, path, name, constants,
                                                                space)
        self._name = name
        self._timer, self._progress, self._search = timer, progress, search
        self._chosen: dict[tuple, Kernel] = {}
        self._recent: RecentCall | None = None     # the last call's choice, checked in C++
        self._declared_kernel: Kernel | None = None
        self.tunings: dict[tuple, object] = {}   # sizes -> TuneResult, one per shape tuned

    def __call__(self, *args, **kwargs):
        recent = self._recent
        kernel = recent.get(args, kwargs) if recent is not None else None
        if kernel is None:
            kernel = self.kernel_for(*args, **kwargs)
            self._recent = RecentCall.of(args, kwargs, kernel)
        return kernel(*args, **kwargs)

    def kernel_for(self, *args, **kwargs) -> Kernel:
        """The Kernel a call with these arguments runs, its config picked first if the call
        signature is new."""
        try:
            key = call_signature(args, kwargs)
        except AttributeError:      # not all tensors: let a Kernel's checks name the argument
            key = None
        kernel = self._chosen.get(key)
        if kernel is None:
            kernel = self._choose(args, kwargs)
            if key is not None:
                if len(self._chosen) >= MAX_PLANS:
                    del self._chosen[next(iter(self._chosen))]
                self._chosen[key] = kernel
        return kernel

    def _choose(self, args: tuple, kwargs: dict) -> Kernel:
        from .tuner import tune
        result = tune(self.source, self.path, self._name, self.constants, self.target,
                      self._space, args, kwargs, timer=self._timer, progress=self._progress,
                      search=self._search)
        self.tunings[tuple(result.shape.items())] = result
        return result.kernel

    # -- what every config shares ----------------------------------------------------------

    def _declared(self) -> Kernel:
        """The Kernel with the source's declared defaults: its signature and meaning are
        every config's."""
        if self._declared_kernel is None:
            self._declared_kernel = Kernel(self.source, self.path, self._name, self.constants,
                                           self.target)
        return self._declared_kernel

    @property
    def name(self) -> str:
        return self._declared().name

    def interpret(self, *args, **kwargs):
        """Runs the kernel on CPU tensors with the IR interpreter, at the declared defaults: a
        config changes the schedule, not what the kernel computes, and nothing is timed."""
        return self._declared().interpret(*args, **kwargs)

    def as_torch_op(self, name: str):
        """Registers this kernel as the PyTorch custom op `name`, as Kernel.as_torch_op does;
        each call of the op goes through this kernel, so each shape gets its own config."""
        from ..torch_op import register
        return register(self, name, self._declared().spec)

    # -- what only one config has ----------------------------------------------------------

    @property
    def spec(self):
        raise self._per_shape_error("spec")

    @property
    def ptx(self):
        raise self._per_shape_error("ptx")

    @property
    def resources(self):
        raise self._per_shape_error("resources")

    def variant(self, unaligned_sizes):
        raise self._per_shape_error("variant()")

    def _per_shape_error(self, what: str) -> PerShapeError:
        from ..parser import parse
        from .space import _pick_kernel, search_space
        space = self._space or search_space(self.source, self.path, self._name,
                                            self.constants, None)
        picked = [name for name, _ in space.axes]
        k = _pick_kernel(parse(self.source, self.path).kernels, self._name, self.path)
        line = next((t for t in k.tunes if t.name in picked), None)
        return PerShapeError(f"{k.name} has no single .{what}: {self.how} picks "
                             f"{', '.join(picked)} per call shape", line and line.span,
                             f"take one shape's Kernel: {self._one_shape_hint()}.{what}",
                             Source(self.source, self.path))

    def _one_shape_hint(self) -> str:
        return "kernel.kernel_for(<a call's arguments>)"

    def __repr__(self):
        return f"<commdsl autotuned kernel from {self.path} for {self.target}>"
