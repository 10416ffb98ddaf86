"""A kernel as a PyTorch custom operator (`Kernel.as_torch_op`), so that torch.compile and
torch.export see one opaque op instead of the launcher's Python.

The op takes the kernel's inputs and returns fresh outputs (nothing is mutated, so
`mutates_args=()`): outputs allocated by the op are what torch's functionalization expects
of a pure op. Passing outputs in (`mutates_args` naming them) is left to a later form. Its
fake implementation allocates the outputs from the shapes and dtypes the spec declares, so
kernels whose outputs have a size no input carries cannot be ops in this form.
"""
from __future__ import annotations

import warnings

from .dims import Sym
from .dtypes import torch_dtype
from .spec import KernelSpec


class TorchOpError(ValueError):
    """A kernel that cannot be registered as a custom op in this form."""


def schema(spec: KernelSpec) -> str:
    """The op's schema: one Tensor per input, the outputs in declaration order."""
    args = ", ".join(f"Tensor {t.name}" for t in spec.inputs)
    outs = ["Tensor"] * len(spec.outputs)
    returns = outs[0] if len(outs) == 1 else f"({', '.join(outs)})"
    return f"({args}) -> {returns}"


def output_shapes(spec: KernelSpec, inputs) -> list[tuple]:
    """Each output's shape from the inputs' shapes (ints, or SymInts under fake tensors)."""
    sizes = {}
    for t, value in zip(spec.inputs, inputs):
        for i, d in enumerate(t.dims):
            if isinstance(d, Sym):
                sizes.setdefault(d.name, value.shape[i])
    return [tuple(d.evaluate(sizes) for d in t.dims) for t in spec.outputs]


def check_registrable(spec: KernelSpec) -> None:
    if spec.comm:
        raise TorchOpError(f"{spec.name} is a communication kernel; it launches through a Comm")
    if not spec.outputs:
        raise TorchOpError(f"{spec.name} has no outputs; an op that only writes its inputs "
                           "needs mutates_args, which as_torch_op does not support yet")
    bound = {d.name for t in spec.inputs for d in t.dims if isinstance(d, Sym)}
    for t in spec.outputs:
        missing = sorted(set().union(*(d.symbols() for d in t.dims)) - bound)
        if missing:
            raise TorchOpError(f"output {t.name} of {spec.name} has size {missing[0]}, which "
                               "no input's shape gives; the op allocates every output")


def register(kernel, name: str, spec: KernelSpec | None = None):
    """Registers `kernel` as the custom op `name` ("namespace::op"); returns a function that
    calls the op (and warns, once, when an input requires grad: the op has no backward).
    `spec` gives the op's signature where the kernel has no single one (a config per shape:
    tune/autotuned.py); default kernel.spec."""
    import torch
    spec = spec or kernel.spec
    check_registrable(spec)

    def run(*inputs):
        if all(x.device.type == "cpu" for x in inputs):   # the IR interpreter runs CPU tensors
            outs = kernel.interpret(*inputs)
        else:
            outs = kernel(*inputs)
        return outs

    op = torch.library.custom_op(name, run, mutates_args=(), schema=schema(spec))

    @op.register_fake
    def fake(*inputs):
        device = inputs[0].device
        outs = tuple(torch.empty(shape, dtype=torch_dtype(t.dtype), device=device)
                     for t, shape in zip(spec.outputs, output_shapes(spec, inputs)))
        return outs[0] if len(outs) == 1 else outs

    warned = []

    def call(*inputs):
        if not warned and any(x.requires_grad for x in inputs):
            warned.append(True)
            warnings.warn(f"commdsl: {name} ({spec.name}) has no backward: gradients do not "
                          "flow through it", stacklevel=2)
        return op(*inputs)
    call.op = op
    return call
