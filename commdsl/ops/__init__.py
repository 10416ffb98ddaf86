"""Every op of the tile IR, declared once (see registry.py); importing this package
registers them all, one module per family."""
from . import arith, asynchronous, comm, control, logic, math, memory, mma, tiles  # noqa: F401
from .registry import (ASYNC, BARRIER, COMM, CONSTANT, ELEMENTWISE, INDEX, LAYOUT,  # noqa: F401
                       MEMORY, MMA, OPS, READS, REDUCTION, REGION, SHARED, SIDE_EFFECTS,
                       TERMINATOR, TRAITS, WRITES, Builtin, IRVerifyError, OpDef, declare, fail,
                       has_trait, lookup, with_trait)
