"""Imports follow the pipeline: no cycles, and no module imports a layer it must not.

The graph is read from the source with `ast` (every import, function-level ones included,
relative ones resolved), over the packages pyproject.toml installs, through its package-dir
mapping (commdsl.passes lives in passes/, commdsl.backends in backends/).
"""
import ast
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

# Each module's layer: exact names first, then the longest matching prefix.
LAYERS = {
    # Small modules every layer may use: errors, settings, element types, symbolic sizes,
    # the compiler-runtime contract (spec), the GPU families (target).
    "commdsl.diagnostics": "base", "commdsl.config": "base", "commdsl.version": "base",
    "commdsl.dtypes": "base", "commdsl.dims": "base", "commdsl.spec": "base",
    "commdsl.target": "base",
    # Front end: source -> IR.
    "commdsl.ast": "front end", "commdsl.parser": "front end", "commdsl.grammar": "front end",
    "commdsl.check": "front end", "commdsl.irgen": "front end", "commdsl.folding": "front end",
    "commdsl.ragged": "front end",
    # The IR: its data, ops, verifier, text form, meaning (interpreter), layouts.
    "commdsl.ir": "IR", "commdsl.ops": "IR", "commdsl.interpreter": "IR",
    "commdsl.layout": "IR", "commdsl.fragments": "IR", "commdsl.regions": "IR",
    "commdsl.facts": "IR",
    "commdsl.cpu_numerics": "IR",
    "commdsl.passes": "passes",
    "commdsl.backends": "backends",
    "commdsl.runtime": "runtime",
    # Wiring: the API, the CLI and the tools built on all the rest.
    "commdsl": "wiring", "commdsl.api": "wiring", "commdsl.kernel": "wiring",
    "commdsl.compiler": "wiring", "commdsl.cli": "wiring", "commdsl.tune": "wiring",
    "commdsl.moe": "wiring",
}
PREFIXES = {"commdsl.ir_": "IR", "commdsl.irgen_": "front end", "commdsl.interpreter_": "IR"}

# The layers each layer may import. Passes and backends both stand on the IR alone: a
# backend reads what passes wrote into the IR, never a pass's internals; the runtime knows
# the compiled kernel only through spec.
EVERY = {"base", "front end", "IR", "passes", "backends", "runtime", "wiring"}
MAY_IMPORT = {
    "base": {"base"},
    "IR": {"base", "IR"},
    "front end": {"base", "IR", "front end"},
    "passes": {"base", "IR", "passes"},
    "backends": {"base", "IR", "backends"},
    "runtime": {"base", "runtime"},
    "wiring": EVERY,
}

def modules() -> dict[str, Path]:
    tools = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    found = {}
    for package in tools["packages"]:
        folder = REPO / tools["package-dir"].get(package, package.replace(".", "/"))
        for f in folder.glob("*.py"):
            found[package if f.stem == "__init__" else f"{package}.{f.stem}"] = f
    return found


def imports(name: str, path: Path, known) -> set[str]:
    """The package's modules `name` imports anywhere in its body."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    targets = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.split(".")[:len(package.split(".")) - node.level + 1]
                base = ".".join(parent + ([node.module] if node.module else []))
            # `from pkg import name`: the submodule pkg.name where there is one.
            targets.update(f"{base}.{a.name}" if f"{base}.{a.name}" in known else base
                           for a in node.names)
    found = set()
    for t in targets:
        while t not in known and "." in t:       # `import a.b.c` or `from a.b import obj`
            t = t.rpartition(".")[0]
        if t in known and t != name:
            found.add(t)
    return found


def graph() -> dict[str, set[str]]:
    known = modules()
    return {name: imports(name, path, known) for name, path in known.items()}


def layer(module: str) -> str:
    name = module
    while name not in LAYERS:
        for prefix, which in PREFIXES.items():
            if name.startswith(prefix):
                return which
        assert "." in name, f"{module} has no layer: add it to LAYERS in {__file__}"
        name = name.rpartition(".")[0]
    return LAYERS[name]


def strongly_connected(g: dict[str, set[str]]) -> list[set[str]]:
    """Tarjan's components of more than one module."""
    index, low, stack, on_stack, out = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(g[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = set()
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.add(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(component)

    for v in sorted(g):
        if v not in index:
            visit(v)
    return out


def cycle_through(g: dict[str, set[str]], start: str, within: set[str]) -> list[str]:
    """A shortest import path from `start` back to itself inside one component."""
    paths, seen = [[start]], {start}
    while paths:
        path = paths.pop(0)
        for w in sorted(g[path[-1]] & within):
            if w == start:
                return path + [start]
            if w not in seen:
                seen.add(w)
                paths.append(path + [w])
    raise AssertionError(f"{start} is on no cycle")


def test_the_graph_sees_late_relative_and_mapped_imports():
    g = graph()
    assert "commdsl.passes.pipeline" in g and "commdsl.backends.ptx.sm90" in g
    assert "commdsl.passes.prefetch" in g["commdsl.passes.pipeline"]   # absolute, mapped dir
    assert "commdsl.runtime.driver" in g["commdsl.runtime.launcher"]   # from . import driver
    assert "commdsl.compiler" in g["commdsl.kernel"]                   # inside a function


def test_no_import_cycles():
    g = graph()
    cycles = [" -> ".join(cycle_through(g, min(c), c)) for c in strongly_connected(g)]
    assert not cycles, "import cycles:\n  " + "\n  ".join(cycles)


def test_no_module_imports_a_layer_it_must_not():
    g = graph()
    wrong = [f"{a} ({layer(a)}) imports {b} ({layer(b)})"
             for a in sorted(g) for b in sorted(g[a]) if layer(b) not in MAY_IMPORT[layer(a)]]
    assert not wrong, "backward imports:\n  " + "\n  ".join(wrong)


def test_passes_import_only_passes_that_run_before_them():
    from commdsl.passes.manager import PASS_ORDER
    order = {f"commdsl.passes.{module}": i for i, module in enumerate(PASS_ORDER.values())}
    g = graph()
    wrong = [f"{a} imports {b}, which runs after it" for a in order for b in g[a]
             if b in order and order[b] > order[a]]
    assert not wrong, "\n".join(wrong)
