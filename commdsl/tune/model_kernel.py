"""A kernel whose defaults the cost model picks per call shape, without timing.

    gemm = commdsl.load("examples/fp8_gemm.cdsl", config="model")   # every tune constant
    d = gemm(a, sa, b, sb)        # first call of this shape: the model's choice, compiled
    gemm.for_shape(M=128, N=2112, K=7168).ptx      # one shape's Kernel

A kernel with `tune NAME = ... in [...] by model` lines gets one from a plain
`commdsl.load(path)`: those constants are the model's per shape, the others keep their
declared defaults. The choice is saved (tune/model_choice.py), so a later process with the
same shape reads it; `model_choices` holds this object's, by shape. It stands in for a
Kernel as an autotuned one does (tune/autotuned.py): `.as_torch_op` and `.interpret` work,
and `.ptx` and the like name `for_shape`.
"""
from __future__ import annotations

from ..diagnostics import CompileError, Source
from ..kernel import Kernel
from .autotuned import AutotunedKernel


class ModelChosenKernel(AutotunedKernel):
    how = "the cost model"

    def __init__(self, text: str, path: str, name: str | None, constants: dict, target: str,
                 space: dict):
        super().__init__(text, path, name, constants, target, space, progress=False)
        self.model_choices: dict[tuple, object] = {}    # sizes -> ModelChoice
        self._by_sizes: dict[tuple, Kernel] = {}
        # Compiled now, as a Kernel is: a kernel this target cannot run fails at load.
        self._declared()

    def for_shape(self, **sizes: int) -> Kernel:
        """The Kernel the model picks for these sizes (every size symbol of the signature),
        on the current GPU's part, else the target family's reference part."""
        symbols = self._declared().spec.size_symbols
        if set(sizes) != set(symbols):
            raise CompileError(f"for_shape of {self.name} takes the sizes {', '.join(symbols)}"
                               f", got {', '.join(sizes) or 'none'}", None,
                               "e.g. for_shape(" + ", ".join(f"{s}=128" for s in symbols) + ")",
                               Source(self.source, self.path))
        return self._kernel_at({s: sizes[s] for s in symbols}, *_current_device())

    def _choose(self, args: tuple, kwargs: dict) -> Kernel:
        # Checks every argument, CUDA included, before the model spends time on the shape.
        bound = self._declared()._default.launcher.bind(*args, **kwargs)
        sizes = {s: bound.sizes[s] for s in self._declared().spec.size_symbols}
        return self._kernel_at(sizes, *_device(bound.device))

    def _kernel_at(self, sizes: dict, device_name: str | None, sms: int | None) -> Kernel:
        from .model_choice import default_machine, model_choice
        key = tuple(sizes.items())
        if key not in self._by_sizes:
            choice = model_choice(self.source, self.path, self.name, self.constants,
                                  self.target, self._space, sizes,
                                  default_machine(self.target, device_name, sms))
            self.model_choices[key] = choice
            self._by_sizes[key] = Kernel(self.source, self.path, self.name,
                                         {**self.constants, **choice.config}, self.target)
        return self._by_sizes[key]

    def _one_shape_hint(self) -> str:
        symbols = self._declared().spec.size_symbols
        return "kernel.for_shape(" + ", ".join(f"{s}=..." for s in symbols) + ")"

    def __repr__(self):
        return f"<commdsl kernel from {self.path} for {self.target}, defaults by the model>"


def _device(device) -> tuple[str | None, int | None]:
    """(name, SM count) of a CUDA device; (None, None) elsewhere."""
    if device.type != "cuda":
        return None, None
    import torch
    props = torch.cuda.get_device_properties(device)
    return props.name, props.multi_processor_count


def _current_device() -> tuple[str | None, int | None]:
    import torch
    return _device(torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu"))
