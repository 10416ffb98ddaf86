"""Passes over the tile IR, one module each, run in order by the PassManager."""
from .manager import PASS_ORDER, PassManager, get_pass

__all__ = ["PASS_ORDER", "PassManager", "get_pass"]
