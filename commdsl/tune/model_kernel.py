"""A kernel whose defaults the cost model picks per call shape, without timing.

    gemm = commdsl.load("examples/fp8_gemm.cdsl", config="model")   # every tune constant
    d = gemm(a, sa, b, sb)        # first call of this shape: the model's choice, compiled

A kernel with `tune NAME = ... in [...] by model` lines gets one from a plain
`commdsl.load(path)`: those constants are the model's per shape, the others keep their
declared defaults. The choice is saved (tune/model_choice.py), so a later process with the
same shape reads it; `model_choices` holds this object's, by shape.
"""
from __future__ import annotations

from ..kernel import Kernel
from .autotuned import AutotunedKernel


class ModelChosenKernel(AutotunedKernel):
    def __init__(self, text: str, path: str, name: str | None, constants: dict, target: str,
                 space: dict):
        super().__init__(text, path, name, constants, target, space, progress=False)
        self.model_choices: dict[tuple, object] = {}    # sizes -> ModelChoice

    def _choose(self, args: tuple, kwargs: dict) -> Kernel:
        from .model_choice import default_machine, model_choice
        default = Kernel(self.source, self.path, self._name, self.constants, self.target)
        bound = default._default.launcher.bind(*args, require_cuda=False, **kwargs)
        sizes = {s: bound.sizes[s] for s in default.spec.size_symbols}
        machine = default_machine(self.target, *_device(bound.device))
        choice = model_choice(self.source, self.path, default.name, self.constants,
                              self.target, self._space, sizes, machine)
        self.model_choices[tuple(sizes.items())] = choice
        return Kernel(self.source, self.path, default.name,
                      {**self.constants, **choice.config}, self.target)

    def __repr__(self):
        return f"<commdsl kernel from {self.path} for {self.target}, defaults by the model>"


def _device(device) -> tuple[str | None, int | None]:
    """(name, SM count) of a CUDA device; (None, None) elsewhere."""
    if device.type != "cuda":
        return None, None
    import torch
    props = torch.cuda.get_device_properties(device)
    return props.name, props.multi_processor_count
