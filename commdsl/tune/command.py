"""`commdsl tune FILE --shape M=4096,K=7168`: tune a kernel on random inputs of that shape.

    commdsl tune examples/act_quant.cdsl --shape M=4096,K=7168
    commdsl tune examples/copy_nc.cdsl --shape N=67108864 --space BLOCK=2048,4096 -D WARPS=4

Prints every config's time (or why it was pruned; with `--search halving`, a dropped config's
time is from a shorter timing) and saves the best where `commdsl.load(...,
autotune=True)` and `commdsl.autotune` find it; an identical later run prints the saved choice.
`--explain` times nothing and needs no GPU: it prints the cost model's estimate of every
config, with its terms (waves, last-wave fill, CTAs per SM, compute or memory bound), and the
config the model picks (tune/model.py).
"""
from __future__ import annotations

import re

from ..diagnostics import CompileError
from .search import SEARCHES


def add_arguments(p) -> None:
    p.add_argument("--shape", required=True, metavar="NAME=SIZE,...",
                   help="every size of the kernel, e.g. M=4096,K=7168")
    p.add_argument("--space", action="append", default=[], metavar="NAME=V1,V2,...",
                   help="values to try for one constant instead of the declared ones; may repeat")
    p.add_argument("--retune", action="store_true", help="time again even if a result is saved")
    p.add_argument("--search", choices=SEARCHES, default="auto",
                   help="time every config fully (exhaustive), weed out by successive halving "
                   "(halving), or the first up to 64 configs and the second above (auto)")
    p.add_argument("--explain", action="store_true",
                   help="time nothing: print the cost model's estimate and terms for every "
                   "config, and its choice (no GPU needed)")


def parse_space(items: list[str]) -> dict | None:
    if not items:
        return None
    space = {}
    for item in items:
        name, eq, values = item.partition("=")
        try:
            # a cache policy keeps the commas inside its parentheses
            parsed = ([v if v.startswith("cache(") else _number(v)
                       for v in re.findall(r"cache\([^)]*\)|[^,]+", values)]
                      if eq and values else None)
        except ValueError:
            parsed = None
        if not name.isidentifier() or not parsed:
            raise CompileError(f"--space expects NAME=V1,V2,..., got '{item}'", None,
                               "e.g. --space ROWS=8,16,32 or --space 'XC=cache(),cache(nc)'")
        space[name] = parsed
    return space


def _number(text: str):
    try:
        return int(text)
    except ValueError:
        return float(text)


def run(args, constants: dict, target: str | None) -> int:
    """`target`: None for the GPU's own."""
    from ..kernel import Kernel, local_target, read_source
    from .inputs import check_sizes, parse_shape, random_arguments
    from .space import search_space
    from .tuner import tune
    sizes = parse_shape(args.shape)
    space_arg = parse_space(args.space)
    text, path = read_source(args.file)
    target = target or local_target()
    default = Kernel(text, path, args.kernel, constants, target)
    check_sizes(default.spec, sizes)
    space = None if space_arg is None else search_space(text, path, default.name, constants,
                                                        space_arg)
    if args.explain:
        return explain(text, path, default, constants, target, space, sizes)
    import torch
    if not torch.cuda.is_available():
        raise CompileError("commdsl tune times kernels on a CUDA GPU, and torch sees none", None,
                           "run it on a machine with an NVIDIA GPU (Hopper for sm_90a)")
    named = random_arguments(default.spec, sizes, torch.device("cuda"))
    result = tune(text, path, default.name, constants, target, space, (), named,
                  retune=args.retune, search=args.search)
    print(f"{default.name} {args.shape}:")
    print(result.table(retune="--retune"))
    return 0


def explain(text: str, path: str, default, constants: dict, target: str, space,
            sizes: dict[str, int]) -> int:
    from .model_choice import default_machine, model_choice
    from .space import search_space
    space = space or search_space(text, path, default.name, constants, None)
    machine = default_machine(target, *_local_device())
    choice = model_choice(text, path, default.name, constants, target, space, sizes, machine,
                          use_records=False)
    shape = ",".join(f"{k}={v}" for k, v in sizes.items())
    print(f"{default.name} {shape}: {len(space)} configs, estimated without timing")
    print(choice.table())
    return 0


def _local_device() -> tuple[str | None, int | None]:
    """(name, SM count) of the current GPU, or (None, None) without one."""
    import torch
    if not torch.cuda.is_available():
        return None, None
    props = torch.cuda.get_device_properties(torch.cuda.current_device())
    return props.name, props.multi_processor_count
