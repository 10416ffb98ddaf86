"""From PTX to a launch: ptxas, the CUDA driver, and the launcher that checks arguments."""
from .launcher import Bound, Launcher
from .ptxas import Assembled, ResourceReport, assemble, find_ptxas

__all__ = ["Assembled", "Bound", "Launcher", "ResourceReport", "assemble", "find_ptxas"]
