"""Settings read from the environment, in one place (README "Switches" lists them all)."""
from __future__ import annotations

import logging
import os
import warnings

# Where a folder that cannot be created was already reported (warn once per folder).
_unusable: set[str] = set()


def cache_dir() -> str | None:
    """COMMDSL_CACHE_DIR, else the user's cache directory (XDG_CACHE_HOME or ~/.cache).

    None, after one warning, where the folder cannot be created: commdsl then runs without
    its caches (every kernel compiles) instead of failing."""
    path = os.environ.get("COMMDSL_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"),
        "commdsl")
    try:
        os.makedirs(path, exist_ok=True)
    except OSError as e:
        if path not in _unusable:
            _unusable.add(path)
            warnings.warn(f"commdsl: cannot create the cache folder {path} ({e.strerror}); "
                          "running without a cache (set COMMDSL_CACHE_DIR to a writable "
                          "folder)", stacklevel=2)
        return None
    return path


def dump_dir() -> str | None:
    """COMMDSL_DUMP_DIR: where every compile writes each of its stages (commdsl/dump.py)."""
    return os.environ.get("COMMDSL_DUMP_DIR") or None


def interpret() -> bool:
    """COMMDSL_INTERPRET=1: kernel calls run on the CPU interpreter."""
    return _flag("COMMDSL_INTERPRET")


def always_compile() -> bool:
    """COMMDSL_ALWAYS_COMPILE=1: compile every kernel, even one the compile cache holds."""
    return _flag("COMMDSL_ALWAYS_COMPILE")


def _flag(name: str) -> bool:
    return os.environ.get(name, "").lower() not in ("", "0", "false", "no", "off")


def logger() -> logging.Logger:
    """The "commdsl" logger. COMMDSL_LOG=info|debug gives it a stderr handler at that level;
    without it, logging stays the application's to configure."""
    log = logging.getLogger("commdsl")
    level = os.environ.get("COMMDSL_LOG", "").upper()
    if level and not getattr(log, "_commdsl_configured", False):
        log._commdsl_configured = True
        if level not in ("INFO", "DEBUG", "WARNING", "ERROR"):
            warnings.warn(f"COMMDSL_LOG={level.lower()}: expected info or debug", stacklevel=2)
            level = "INFO"
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("commdsl %(levelname)s: %(message)s"))
        log.addHandler(handler)
        log.setLevel(level)
    return log
