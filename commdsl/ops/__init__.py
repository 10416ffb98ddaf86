"""Every op of the tile IR, declared once (see registry.py); importing this package
registers them all."""
from .registry import (IRVerifyError, OPS, OpDef, declare, fail, has_trait, lookup,  # noqa: F401
                       with_trait)
