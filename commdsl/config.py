"""Settings read from the environment, in one place."""
from __future__ import annotations

import os


def cache_dir() -> str:
    """COMMDSL_CACHE_DIR, else the user's cache directory (XDG_CACHE_HOME or ~/.cache)."""
    path = os.environ.get("COMMDSL_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"),
        "commdsl")
    os.makedirs(path, exist_ok=True)
    return path
