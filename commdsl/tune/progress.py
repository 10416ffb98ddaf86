"""Progress on stderr: one bar per phase (compiling, timing) with its count, the time it has
taken and an estimate of the time left. On a terminal the bar is tqdm's where tqdm is
installed, else redrawn in place by this module; elsewhere one line per step (so logs stay
readable). In a distributed job only rank 0 prints, so that eight ranks tuning one kernel
show one bar: torch.distributed's rank once it is initialized, else RANK (else LOCAL_RANK)
as torchrun sets them.

    compiling [########................] 480/1440  12.0 s, ETA 24.0 s  BM=128,BN=64,...: ok
    timing    [###.....................] 310/2095  3.1 s, ETA 21.5 s  BM=...: 0.2114 ms
"""
from __future__ import annotations

import os
import sys
import time

WIDTH = 24


def is_rank_zero() -> bool:
    dist = sys.modules.get("torch.distributed")      # not imported: not initialized either
    if dist is not None and dist.is_available() and dist.is_initialized():
        return dist.get_rank() == 0
    rank = os.environ.get("RANK", os.environ.get("LOCAL_RANK", "0"))
    return rank.strip() in ("", "0")


def _tqdm():
    """tqdm's bar class, or None where it is not installed (an optional dependency)."""
    try:
        from tqdm import tqdm
    except ImportError:
        return None
    return tqdm


class Progress:
    def __init__(self, title: str, enabled: bool = True, stream=None, clock=time.monotonic):
        self.enabled = enabled and is_rank_zero()
        self.stream = stream or sys.stderr
        self.clock = clock
        self.live = self.enabled and self.stream.isatty()
        self.tqdm = _tqdm() if self.live else None
        self.bar = None                 # the phase's tqdm bar
        self.drawn = False              # a live line of our own is on screen
        self.phase("", 0)
        if self.enabled:
            print(title, file=self.stream, flush=True)

    def phase(self, name: str, total: int, work: float | None = None) -> None:
        """Start a phase of `total` steps that cost `work` in all (default: one per step);
        the estimate of the time left assumes the work goes at the rate it has gone."""
        self._end_line()
        self.name, self.total = name, total
        self.work = float(total if work is None else work)
        self.done, self.done_work, self.started = 0, 0.0, self.clock()
        if self.tqdm is not None and name:
            # smoothing=0: the ETA from the average rate, as this module's own bar has it
            self.bar = self.tqdm(total=self.work, desc=f"  {name:<9}", file=self.stream,
                                 smoothing=0, bar_format="{desc} |{bar:24}| {elapsed}, ETA "
                                 "{remaining}{postfix}")     # tqdm puts ", " before a postfix

    def step(self, label: str, work: float = 1.0) -> None:
        self.done += 1
        self.done_work += work
        if not self.enabled:
            return
        if self.bar is not None:
            self.bar.set_postfix_str(f"{self.done}/{self.total}  {label}", refresh=False)
            self.bar.update(work)
            return
        elapsed = self.clock() - self.started
        fraction = min(1.0, self.done_work / self.work) if self.work > 0 else 1.0
        left = elapsed * (1 - fraction) / fraction if fraction > 0 else None
        filled = int(WIDTH * fraction)
        eta = "" if left is None else f", ETA {_seconds(left)}"
        line = (f"  {self.name:<9} [{'#' * filled}{'.' * (WIDTH - filled)}] "
                f"{self.done}/{self.total}  {_seconds(elapsed)}{eta}  {label}")
        if self.live:
            self.stream.write(f"\r{line:<110}")
            self.stream.flush()
            self.drawn = True
        else:
            print(line, file=self.stream, flush=True)

    def close(self, summary: str) -> None:
        if self.enabled:
            self._end_line()
            print(f"  {summary}", file=self.stream, flush=True)

    def _end_line(self) -> None:
        """Leave the phase's last line on screen, under its own line end."""
        if self.bar is not None:
            self.bar.close()
            self.bar = None
        if self.drawn:
            self.stream.write("\n")
            self.drawn = False


def _seconds(s: float) -> str:
    if s < 60:
        return f"{s:.1f} s"
    minutes, seconds = divmod(round(s), 60)
    return f"{minutes}m{seconds:02d}s"
