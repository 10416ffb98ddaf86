"""JSON for the dataclasses the compile cache stores (KernelSpec, ResourceReport and theirs).

The encoding is generic, so a field or a dataclass added to the spec later is stored without
touching this file: a dataclass becomes its qualified class name and its fields, a tuple and
an enum keep their type. Decoding rebuilds only dataclasses and enums defined inside commdsl,
so a cache directory cannot make `load` construct arbitrary objects. A value of any other
type fails loudly at encoding time, naming the type, rather than being stored wrong.
"""
from __future__ import annotations

import dataclasses
import enum
import importlib

_PACKAGE = "commdsl."


def encode(value):
    """A JSON-serializable form of `value` that `decode` turns back into an equal value."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, enum.Enum):
        return {"__enum__": _qualified(type(value)), "value": encode(value.value)}
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        fields = {f.name: encode(getattr(value, f.name))
                  for f in dataclasses.fields(value) if f.init}
        return {"__dataclass__": _qualified(type(value)), "fields": fields}
    if isinstance(value, tuple):
        return {"__tuple__": [encode(v) for v in value]}
    if isinstance(value, list):
        return [encode(v) for v in value]
    if isinstance(value, dict):
        return {"__dict__": [[encode(k), encode(v)] for k, v in value.items()]}
    raise TypeError(f"the compile cache cannot store a {type(value).__qualname__}; "
                    "give it a dataclass, enum, tuple, list, dict or scalar instead")


def decode(data):
    if isinstance(data, list):
        return [decode(v) for v in data]
    if not isinstance(data, dict):
        return data
    if "__dataclass__" in data:
        cls = _resolve(data["__dataclass__"])
        if not dataclasses.is_dataclass(cls):
            raise ValueError(f"{data['__dataclass__']} is not a dataclass")
        return cls(**{name: decode(v) for name, v in data["fields"].items()})
    if "__enum__" in data:
        cls = _resolve(data["__enum__"])
        if not issubclass(cls, enum.Enum):
            raise ValueError(f"{data['__enum__']} is not an enum")
        return cls(decode(data["value"]))
    if "__tuple__" in data:
        return tuple(decode(v) for v in data["__tuple__"])
    if "__dict__" in data:
        return {decode(k): decode(v) for k, v in data["__dict__"]}
    raise ValueError(f"not an encoded value: {sorted(data)}")


def _qualified(cls: type) -> str:
    """'module:QualName', which `_resolve` finds again (a class in a function could not be)."""
    if not cls.__module__.startswith(_PACKAGE) or "<locals>" in cls.__qualname__:
        raise TypeError(f"the compile cache stores only classes defined at the top of commdsl's "
                        f"modules, not {cls.__module__}.{cls.__qualname__}")
    return f"{cls.__module__}:{cls.__qualname__}"


def _resolve(qualified: str) -> type:
    module_name, _, qualname = qualified.partition(":")
    if not module_name.startswith(_PACKAGE):
        raise ValueError(f"refusing to rebuild {qualified}: not a commdsl class")
    found = importlib.import_module(module_name)
    for part in qualname.split("."):
        found = getattr(found, part)
    return found
