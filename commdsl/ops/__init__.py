"""Every op of the tile IR, declared once (see registry.py); importing this package
registers them all, one module per family."""
from . import arith, asynchronous, comm, control, logic, math, memory, mma, tiles  # noqa: F401
from .registry import (ACQUIRE, ANY_NONNEGATIVE, ASYNC, BARRIER, COMM, CONSTANT,  # noqa: F401
                       ELEMENTWISE, INDEX, KEEPS_NONNEGATIVE, LAYOUT, MEMORY, MMA, NONNEGATIVE, OPS,
                       PER_CTA, PROMOTES, READS, REDUCTION, REGION, RELEASE, SHARED, SIDE_EFFECTS,
                       TERMINATOR, TRAITS, WRITES, Builtin, IRVerifyError, OpDef, declare, fail,
                       has_trait, lookup, with_trait)
