"""The Python API: `commdsl.load` a .cdsl kernel, call it on torch tensors.

    act_quant = commdsl.load("examples/act_quant.cdsl", ROWS=16)
    y, s = act_quant(x)                  # on the GPU, on torch's current stream
    y, s = act_quant.interpret(x.cpu())  # on the CPU, through the IR interpreter

    act_quant = commdsl.load("examples/act_quant.cdsl", autotune=True)
    y, s = act_quant(x)     # the first call of each shape tunes ROWS and WARPS over the
                            # values the source declares (or reuses a choice saved earlier)

The target is the current GPU's family (runtime/device.py: its compute capability), or
sm_90a on a machine without one, unless `target=` names another. Compiling and calling:
kernel.py. This module wires the compiler, the tuner and the runtime; the runtime never
imports the compiler. Kernels launch on torch's current stream, so they can be captured in
a CUDA graph; call once before capturing, so that loading the module is not part of the
capture:

    act_quant(x, y=y, s=s)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        act_quant(x, y=y, s=s)
    graph.replay()
"""
from __future__ import annotations

from . import config as settings
from .diagnostics import CompileError
from .kernel import InterpretedKernel, Kernel, build, local_target, read_source


CONFIGS = ("source", "model", "declared")


def load(path_or_source: str, *, kernel: str | None = None, target: str | None = None,
         autotune: bool | dict = False, config: str = "source", fast_math: bool = False,
         search: str = "auto", progress: bool = True, **constants):
    """Compiles a kernel from a .cdsl file (or source text) with the given constants, for
    `target` (default: the current GPU's).

    With `autotune=True` the result tunes, on the first call of each shape, the constants the
    source declares with `tune NAME in [...]` (except those set here); `autotune={"ROWS": [8,
    16]}` tunes over that space instead; `search` picks how ("auto", "exhaustive",
    "halving"); `progress=False` silences its progress bars (shown on rank 0 only). See
    `commdsl.autotune` for the details.

    `config` says where the defaults of the tune constants not set here come from:
    "source" (what the source declares; the cost model's pick per call shape for those
    declared `by model`), "model" (the cost model picks every one per call shape, without
    timing: tune/model.py), or "declared" (every one its declared default, `by model` or not:
    one Kernel, the same config for every shape, as a bit-exact reference wants).

    `fast_math=True` lowers math functions to PTX's .approx instructions (the compile option
    fast_math; `fast_math()` in the kernel header does the same)."""
    if search != "auto" and autotune is False:
        raise CompileError(f"search={search!r} says how autotune=True tunes, and autotune is "
                           "off", None, "pass autotune=True too, or drop search=")
    if config not in CONFIGS:
        raise CompileError(f"config={config!r} is not one of {', '.join(map(repr, CONFIGS))}",
                           None, "config='model' lets the cost model pick the tune constants "
                           "per call shape; 'source' keeps the declared defaults")
    if config == "model" and autotune is not False:
        raise CompileError("config='model' picks by the cost model without timing, and "
                           "autotune times", None, "pass one of the two (autotune already "
                           "prunes by the model)")
    text, path = read_source(path_or_source)
    options = {"fast_math": True} if fast_math else None
    if settings.interpret():      # the interpreter times nothing: tune constants keep defaults
        return InterpretedKernel(text, path, kernel, constants, target or local_target(),
                                 options)
    if autotune is False and config != "declared":
        from .tune.space import model_axes
        axes = model_axes(text, path, kernel, constants, every_tune=config == "model")
        if axes:
            if fast_math:
                raise CompileError("fast_math=True does not reach the compiles of the "
                                   "model's choices", None,
                                   "write fast_math() in the kernel header instead")
            from .tune.model_kernel import ModelChosenKernel
            try:
                return ModelChosenKernel(text, path, kernel, constants,
                                         target or local_target(), axes)
            except CompileError as e:
                _name_the_target(e, target)
                raise
    if autotune is False and target is None:
        try:
            return Kernel(text, path, kernel, constants, local_target(), options)
        except CompileError as e:
            _name_the_target(e, target)
            raise
    target = target or local_target()
    if autotune is False:
        return Kernel(text, path, kernel, constants, target, options)
    if fast_math:
        raise CompileError("fast_math=True does not reach the autotuner's compiles", None,
                           "write fast_math() in the kernel header instead")
    from .tune import AutotunedKernel
    space = None if autotune is True else autotune
    return AutotunedKernel(text, path, kernel, constants, target, space, search=search,
                           progress=progress)


def _name_the_target(e: CompileError, target: str | None) -> None:
    """Adds to `e`'s hint why its target, where the caller did not choose one."""
    if target is None:
        e.hint = f"{e.hint + '; ' if e.hint else ''}{local_target()} is the current GPU's family"


def load_comm(comm, path: str, kernel: str, options: dict | None = None, **constants):
    """A communication kernel bound to `comm` (runtime/symmetric.py's Comm), compiled for the
    family of comm's GPU."""
    from .runtime.device import device_target
    from .runtime.symmetric import CommKernel
    text, path = read_source(path)
    target = device_target(comm.device.index).name

    def variant(unaligned: frozenset):
        return build(text, path, kernel, constants, target, unaligned, options)
    return CommKernel(comm, kernel, variant)

