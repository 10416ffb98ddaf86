"""A progress bar on stderr, without a dependency: redrawn in place on a terminal, one line
per step elsewhere (so logs stay readable)."""
from __future__ import annotations

import sys

WIDTH = 24


class Progress:
    def __init__(self, title: str, total: int, enabled: bool = True, stream=None):
        self.title, self.total, self.enabled = title, total, enabled
        self.stream = stream or sys.stderr
        self.done = 0
        self.live = enabled and self.stream.isatty()
        if enabled:
            print(title, file=self.stream, flush=True)

    def step(self, label: str) -> None:
        self.done += 1
        if not self.enabled:
            return
        filled = WIDTH * self.done // max(self.total, 1)
        line = f"  [{'#' * filled}{'.' * (WIDTH - filled)}] {self.done}/{self.total}  {label}"
        if self.live:
            self.stream.write(f"\r{line:<100}")
            self.stream.flush()
        else:
            print(line, file=self.stream, flush=True)

    def close(self, summary: str) -> None:
        if self.enabled:
            if self.live:
                self.stream.write("\r" + " " * 100 + "\r")
            print(f"  {summary}", file=self.stream, flush=True)
