"""commdsl: a DSL and compiler for communication-aware FP8 GPU kernels (Hopper PTX).

    import commdsl
    act_quant = commdsl.load("examples/act_quant.cdsl", ROWS=16)
    y, s = act_quant(x)

    best = commdsl.autotune("examples/act_quant.cdsl", (x,))   # times ROWS x WARPS
    y, s = best.kernel(x)
"""
from .api import load
from .diagnostics import CommdslError, CompileError, LaunchError, ToolError
from .kernel import Kernel
from .runtime.partition import Partition, partition
from .tune import AutotunedKernel, TuneResult, autotune
from .version import __version__
__all__ = ["AutotunedKernel", "Kernel", "Partition", "TuneResult", "autotune", "load",
           "partition", "compile_file", "compile_source", "CommdslError", "CompileError",
           "LaunchError", "ToolError", "__version__"]


def __getattr__(name: str):
    # The front end loads on first use, so a `load` served by the compile cache never pays
    # for importing it.
    if name in ("compile_file", "compile_source"):
        from . import compiler
        return getattr(compiler, name)
    raise AttributeError(f"module 'commdsl' has no attribute '{name}'")
