"""Tuning results on disk, so the next run of the same tuning call times nothing.

One small JSON file per tuning call under `cache_dir()/tune`, named by the hash of what
identifies the call: the GPU's name, the kernel, the hash of its source, the shape key (the
sizes), the target, the constants the caller fixed, the space (or "declared", which the
source hash covers), the search asked for (tune/search.py), how configs are timed
(tune/timer.py) and commdsl's version. The file repeats those fields, and a file that does
not match them or does not parse is ignored, so a damaged record costs a re-tune, never a
wrong config. Writes are atomic (runtime/cache.atomic_write).
"""
from __future__ import annotations

import hashlib
import json
import os

from ..check import is_cache_policy
from .timer import TIMING
from ..runtime.cache import atomic_write


def record_fields(gpu: str, kernel: str, text: str, shape: dict, target: str, fixed: dict,
                  space, search: str) -> dict:
    """What identifies a tuning call, as plain JSON values."""
    from ..version import __version__
    fields = {"gpu": gpu, "kernel": kernel, "source": hashlib.sha256(text.encode()).hexdigest(),
              "shape": shape, "target": target,
              "fixed": {name: repr(value) for name, value in sorted(fixed.items())},
              "space": "declared" if space is None else [[n, list(v)] for n, v in space.axes],
              "search": search,
              "timing": TIMING,
              "commdsl": __version__}
    return json.loads(json.dumps(fields))    # as a reader will see them: tuples become lists


class TuneRecords:
    def __init__(self, root: str | None = None):
        if root is None:
            from ..config import cache_dir
            folder = cache_dir()
            root = os.path.join(folder, "tune") if folder else None   # None: nothing saved
        self.root = root

    def path(self, fields: dict) -> str:
        digest = hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()
        return os.path.join(self.root, f"{fields['kernel']}-{digest[:32]}.json")

    def get(self, fields: dict) -> dict | None:
        """The saved record {"config": {...}, "ms": ..., ...}, or None."""
        if self.root is None:
            return None
        try:
            with open(self.path(fields)) as f:
                record = json.load(f)
        except (OSError, ValueError):
            return None
        if not isinstance(record, dict) or record.get("key") != fields:
            return None
        config = record.get("config")
        if not isinstance(config, dict) or not all(
                isinstance(v, (int, float)) and not isinstance(v, bool) or is_cache_policy(v)
                for v in config.values()):
            return None
        return record

    def put(self, fields: dict, config: dict, ms: float, trials: list[dict]) -> str | None:
        if self.root is None:
            return None
        os.makedirs(self.root, exist_ok=True)
        path = self.path(fields)
        record = {"key": fields, "config": config, "ms": ms, "trials": trials}
        atomic_write(path, json.dumps(record, indent=1).encode())
        return path
