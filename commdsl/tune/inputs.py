"""Arguments for a kernel from sizes alone: what `commdsl tune --shape M=...,K=...` runs on."""
from __future__ import annotations

from ..diagnostics import CompileError


def parse_shape(text: str) -> dict[str, int]:
    """'M=4096,K=7168' -> {'M': 4096, 'K': 7168}."""
    sizes = {}
    for item in text.split(","):
        name, eq, value = item.strip().partition("=")
        if not eq or not name.isidentifier() or not value.strip().isdigit():
            raise CompileError(f"--shape expects NAME=SIZE[,NAME=SIZE...], got '{text}'", None,
                               "e.g. --shape M=4096,K=7168")
        sizes[name] = int(value)
    return sizes


def check_sizes(spec, sizes: dict[str, int]) -> None:
    """Every size the kernel has is given, and nothing else."""
    declared = list(spec.size_symbols)
    example = ",".join(f"{s}={sizes.get(s, 4096)}" for s in declared)
    for name in sizes:
        if name not in declared:
            raise CompileError(f"--shape gives '{name}', which is not a size of kernel "
                               f"{spec.name}", None,
                               f"its sizes: {', '.join(declared)}; e.g. --shape {example}")
    missing = [s for s in declared if s not in sizes]
    if missing:
        raise CompileError(f"--shape does not give {', '.join(missing)}", None,
                           f"kernel {spec.name} needs every size: --shape {example}")


def random_arguments(spec, sizes: dict[str, int], device) -> dict:
    """Random inputs and empty outputs of the declared dtypes and shapes, by name."""
    import torch
    from ..dtypes import DTYPES, torch_dtype
    args = {}
    for t in spec.tensors:
        shape = [d.evaluate(sizes) for d in t.dims]
        dtype = torch_dtype(t.dtype)
        if t.is_out:
            args[t.name] = torch.empty(shape, dtype=dtype, device=device)
        elif DTYPES[t.dtype].is_float:
            args[t.name] = torch.randn(shape, device=device).to(dtype)
        else:
            # Integer inputs are often indices; 0 and 1 are in bounds of any non-empty dim.
            args[t.name] = torch.randint(0, 2, shape, device=device).to(dtype)
    return args
