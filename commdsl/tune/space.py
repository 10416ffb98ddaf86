"""The search space of a tuning run: what the kernel declares, or what the caller gives.

    kernel act_quant(...)
      tune ROWS = 16 in [1, 2, 4, 8, 16, 32, 64]      # declared in the source
      tune WARPS = 4 in [1, 2, 4, 8]

    space={"ROWS": [8, 16, 32]}      # given: replaces the declared space, and only the
                                     # names it lists are tuned (the rest keep their defaults)

Constants the caller sets (`commdsl.load(path, WARPS=4, autotune=True)`) are left out of the
declared space. Every mistake is one CompileError naming the constant and the fix.
"""
from __future__ import annotations

import itertools
import re
from dataclasses import dataclass

from ..diagnostics import CompileError, Source


@dataclass(frozen=True)
class SearchSpace:
    kernel: str
    axes: tuple[tuple[str, tuple], ...]     # (constant, its values), in declaration order

    def configs(self) -> list[dict]:
        """Every combination of values, the first axis varying slowest."""
        names = [name for name, _ in self.axes]
        return [dict(zip(names, values))
                for values in itertools.product(*(values for _, values in self.axes))]

    def __len__(self) -> int:
        n = 1
        for _, values in self.axes:
            n *= len(values)
        return n

    def __str__(self) -> str:
        return ", ".join(f"{name} in {list(values)}" for name, values in self.axes)


def search_space(text: str, path: str, kernel: str | None, fixed: dict,
                 space: dict | None) -> SearchSpace:
    """The space to tune kernel `kernel` of `text` over, with the `fixed` constants set."""
    try:
        return _search_space(text, path, kernel, fixed, space)
    except CompileError as e:
        raise e.with_source(Source(text, path)) from None


def _search_space(text, path, kernel, fixed, space) -> SearchSpace:
    from ..check import check_signature, did_you_mean, fold_constant, is_cache_policy
    from ..parser import parse, parse_cache_policy
    k = _pick_kernel(parse(text, path).kernels, kernel, path)
    tunes = {t.name: t for t in k.tunes}
    declared = list(tunes) + [c.name for c in k.consts]
    for name in fixed:
        if name not in declared:
            raise CompileError(f"kernel {k.name} has no constant '{name}' to set", None,
                               did_you_mean(name, declared) or _declared_text(declared))
    if space is None:
        env = check_signature(k, fixed).constants
        axes = tuple((t.name, tuple(fold_constant(v, env, f"value of '{t.name}'")
                                    for v in t.values))
                     for t in k.tunes if t.name not in fixed)
        if not axes:
            what = (f"every tunable constant of {k.name} is set ({', '.join(tunes)})" if tunes
                    else f"kernel {k.name} declares no tunable constants")
            raise CompileError(f"nothing to tune: {what}", None,
                               "declare some in the source ('tune ROWS in [1, 2, 4]'), "
                               "or pass space={'ROWS': [1, 2, 4]}")
        return SearchSpace(k.name, axes)
    if not isinstance(space, dict) or not space:
        raise CompileError(f"the space must be a non-empty dict of constant -> values, got "
                           f"{space!r}", None, "e.g. space={'ROWS': [8, 16, 32]}")
    for name, values in space.items():
        if name not in declared:
            raise CompileError(f"space names '{name}', which kernel {k.name} does not declare",
                               None, did_you_mean(name, declared) or _declared_text(declared))
        if name in fixed:
            raise CompileError(f"'{name}' is both set ({name}={fixed[name]}) and tuned "
                               f"(space['{name}'])", None, "drop one of the two")
        if not isinstance(values, (list, tuple)):
            raise CompileError(f"space['{name}'] must be a list of values, got {values!r}",
                               None, f"e.g. space={{'{name}': [{values!r}]}}")
        if not values:
            raise CompileError(f"space['{name}'] is empty", None,
                               f"give it at least one value, e.g. space={{'{name}': [16]}}")
        for v in values:
            if is_cache_policy(v):
                continue
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                raise CompileError(f"space['{name}'] holds {v!r}, which is not a number or a "
                                   "cache policy", None, f"constants are numbers, e.g. "
                                   f"space={{'{name}': [8, 16]}}, or cache policies, e.g. "
                                   f"space={{'{name}': ['cache()', 'cache(nc)']}}")
    # a cache policy as written one way, as a compile binds it and a record keeps it
    return SearchSpace(k.name, tuple(
        (name, tuple(parse_cache_policy(v, name).text if is_cache_policy(v) else v
                     for v in values)) for name, values in space.items()))


def model_axes(text: str, path: str, kernel: str | None, fixed: dict,
               every_tune: bool = False) -> dict | None:
    """{constant: declared values} the cost model picks per call shape: those declared
    `by model` (every tunable one with `every_tune`), less the `fixed`; None if none."""
    if not every_tune and not re.search(r"\bby\s+model\b", text):
        return None                    # the common case, decided without parsing
    try:
        from ..check import check_signature, fold_constant
        from ..parser import parse
        k = _pick_kernel(parse(text, path).kernels, kernel, path)
        env = check_signature(k, fixed).constants
        axes = {t.name: [fold_constant(v, env, f"value of '{t.name}'") for v in t.values]
                for t in k.tunes if (every_tune or t.by_model) and t.name not in fixed}
    except CompileError as e:
        raise e.with_source(Source(text, path)) from None
    return axes or None


def _pick_kernel(kernels, name: str | None, path: str):
    from ..check import did_you_mean
    if name is None:
        if len(kernels) > 1:
            names = ", ".join(k.name for k in kernels)
            raise CompileError(f"{path} holds several kernels ({names})", None,
                               "pick one: kernel='NAME' (--kernel NAME on the command line)")
        return kernels[0]
    for k in kernels:
        if k.name == name:
            return k
    names = [k.name for k in kernels]
    raise CompileError(f"no kernel named '{name}' in {path}", None,
                       did_you_mean(name, names) or f"kernels: {', '.join(names)}")


def _declared_text(declared: list[str]) -> str:
    if not declared:
        return "it declares no constants; add one with 'tune NAME in [...]'"
    return f"its constants: {', '.join(declared)}"
