"""`commdsl.load(path, autotune=True)`: a kernel that tunes itself once per shape.

    act_quant = commdsl.load("examples/act_quant.cdsl", autotune=True)
    y, s = act_quant(x)          # first call of this shape: tune (or read the saved choice)
    y, s = act_quant(x)          # later calls: the chosen Kernel's fast launch path

The first call with a new call signature runs `tune` on its arguments (tune/tuner.py), which
reuses a choice saved by an earlier run for the same GPU, source and sizes, and remembers the
chosen Kernel for the signature; the call then, and every later one, goes to that Kernel.
"""
from __future__ import annotations

from ..kernel import Kernel
from ..runtime.callplan import MAX_PLANS, RecentCall, call_signature


class AutotunedKernel:
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
        self.tunings: dict[tuple, object] = {}   # sizes -> TuneResult, one per shape tuned

    def __call__(self, *args, **kwargs):
        recent = self._recent
        kernel = recent.get(args, kwargs) if recent is not None else None
        if kernel is None:
            try:
                key = call_signature(args, kwargs)
            except AttributeError:  # not all tensors: let a Kernel's checks name the argument
                key = None
            kernel = self._chosen.get(key)
            if kernel is None:
                kernel = self._choose(args, kwargs)
                if key is not None:
                    if len(self._chosen) >= MAX_PLANS:
                        del self._chosen[next(iter(self._chosen))]
                    self._chosen[key] = kernel
            self._recent = RecentCall.of(args, kwargs, kernel)
        return kernel(*args, **kwargs)

    def _choose(self, args: tuple, kwargs: dict) -> Kernel:
        from .tuner import tune
        result = tune(self.source, self.path, self._name, self.constants, self.target,
                      self._space, args, kwargs, timer=self._timer, progress=self._progress,
                      search=self._search)
        self.tunings[tuple(result.shape.items())] = result
        return result.kernel

    def __repr__(self):
        return f"<commdsl autotuned kernel from {self.path} for {self.target}>"
