"""commdsl: a DSL and compiler for communication-aware FP8 GPU kernels (Hopper PTX).

    import commdsl
    act_quant = commdsl.load("examples/act_quant.cdsl", ROWS=16)
    y, s = act_quant(x)
"""
from .api import Kernel, load
from .compiler import compile_file, compile_source
from .diagnostics import CommdslError, CompileError, LaunchError, ToolError

__version__ = "0.1.0"
__all__ = ["Kernel", "load", "compile_file", "compile_source", "CommdslError", "CompileError",
           "LaunchError", "ToolError", "__version__"]
