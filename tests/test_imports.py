"""The import graph of the project's packages: layers, no cycles, imports at the module top.

Every ``.py`` file of :data:`PACKAGES` is read with :mod:`ast` (nothing is imported, so this runs
in a fraction of a second). Imports under ``if TYPE_CHECKING:`` are skipped: they never run.

(a) layers: a module imports only its own package and the layers listed for it in :data:`LAYERS`;
(b) no import cycle among project modules (module-level imports);
(c) no import inside a function, except the heavy ones that must stay off the driver's start-up
    path: :data:`HEAVY_LIBRARIES`, project modules that import one of them at module level
    (computed), and :data:`ALLOWED`.
"""

from __future__ import annotations

import ast
import itertools
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("mcnn_base", "explorer", "launchers", "search_spaces", "dashboards", "devsupport",
            "bench")

# Libraries imported inside functions on purpose -> why: start-up that the driver, the CLI and
# the tests that never train must not pay. Project modules that import one of them at module
# level are allowed too (computed: Graph.heavy).
HEAVY_LIBRARIES = {
    "tensorflow": "seconds to import; only the training job, shard building and bench use it",
    "keras": "TensorFlow's Keras: the same cost, only the job's model needs it",
    "horovod": "loads TensorFlow and MPI; only a job under mpirun initialises it",
}

# Any other import inside a function: (file, imported module) -> why. Keep it short (empty now).
ALLOWED: dict[tuple[str, str], str] = {}

# Files that import modules by name (importlib): file -> the assignment holding those names -> why.
DYNAMIC_IMPORTS = {
    "explorer/cli.py": (
        "SUBCOMMANDS",
        "the subcommand modules import Optuna, MLflow and plotly (seconds): the parser imports "
        "only the module of the command on the command line, so `mcnn-explore --help` stays fast",
    ),
}

BELOW_EXPLORER = frozenset({"mcnn_base", "explorer.mcnn", "launchers", "search_spaces"})
LAYERS: dict[str, frozenset[str]] = {
    "mcnn_base": frozenset({"mcnn_base"}),
    "explorer.mcnn": frozenset({"mcnn_base", "explorer.mcnn"}),
    "launchers": frozenset({"mcnn_base", "launchers"}),
    "search_spaces": frozenset({"mcnn_base", "explorer.mcnn", "launchers", "search_spaces"}),
    "explorer": BELOW_EXPLORER | {"explorer"},
    "dashboards": BELOW_EXPLORER | {"explorer", "dashboards"},
    "cli": BELOW_EXPLORER | {"explorer", "dashboards", "cli"},
    "devsupport": frozenset(),  # anything (see test_layers)
    "bench": frozenset(),
}
OPEN_LAYERS = frozenset({"devsupport", "bench"})
# libraries a layer must not import, anywhere
FORBIDDEN_LIBRARIES = {"explorer.mcnn": frozenset({"optuna", "mlflow"})}


def layer(module: str) -> str:
    """The layer of a project module (dotted name)."""
    if module in ("explorer", "explorer.mcnn") or module.startswith("explorer.mcnn."):
        # explorer/__init__.py runs on every import of explorer.mcnn: it keeps the job's rules
        return "explorer.mcnn"
    if module == "explorer.demo" or re.fullmatch(r"explorer\.cli(_\w+)?", module):
        return "cli"
    return module.split(".")[0]


@dataclass(frozen=True)
class Import:
    source: str  # the importing module
    where: str  # path:line
    target: str  # the imported module (project module or library, dotted)
    statement: str
    in_function: bool
    dynamic: bool = False  # by name, through importlib (see DYNAMIC_IMPORTS)

    def __str__(self) -> str:
        return f"{self.where}: {self.statement}"


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def project_files() -> dict[str, Path]:
    return {module_name(p): p for pkg in PACKAGES for p in sorted((ROOT / pkg).rglob("*.py"))}


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _walk(node: ast.AST, in_function: bool) -> Iterator[tuple[ast.Import | ast.ImportFrom, bool]]:
    for child in ast.iter_child_nodes(node):
        if isinstance(child, ast.Import | ast.ImportFrom):
            yield child, in_function
        elif isinstance(child, ast.If) and _is_type_checking(child.test):
            for stmt in child.orelse:  # the body never runs
                yield from _walk(ast.Module(body=[stmt], type_ignores=[]), in_function)
        else:
            nested = isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda)
            yield from _walk(child, in_function or nested)


def imports_of(source: str, tree: ast.Module, rel: str, modules: set[str]) -> list[Import]:
    """Every import of one file, resolved to the module it loads."""
    out = []
    package = source if rel.endswith("__init__.py") else source.rpartition(".")[0]
    for node, in_function in _walk(tree, False):
        where = f"{rel}:{node.lineno}"
        if isinstance(node, ast.Import):
            for alias in node.names:
                out.append(Import(source, where, alias.name, f"import {alias.name}", in_function))
            continue
        base = node.module or ""
        if node.level:
            anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
            base = ".".join([*anchor, *([base] if base else [])])
        names = ", ".join(a.name for a in node.names)
        statement = f"from {'.' * node.level}{node.module or ''} import {names}"
        for alias in node.names:
            full = f"{base}.{alias.name}"
            out.append(Import(source, where, full if full in modules else base, statement,
                              in_function))
    return out


def dynamic_imports(tree: ast.Module) -> list[int]:
    """Lines that call ``importlib.import_module`` or ``__import__``."""
    lines = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            fn = node.func
            name = fn.attr if isinstance(fn, ast.Attribute) else getattr(fn, "id", "")
            if name in ("import_module", "__import__"):
                lines.append(node.lineno)
    return lines


def lazy_modules(tree: ast.Module, assignment: str) -> list[str]:
    """The module names in ``assignment`` (a dict literal: command -> (module, help))."""
    for node in tree.body:
        targets: list[ast.expr]
        if isinstance(node, ast.AnnAssign) and node.value is not None:
            targets, value = [node.target], node.value
        elif isinstance(node, ast.Assign):
            targets, value = node.targets, node.value
        else:
            continue
        if any(isinstance(t, ast.Name) and t.id == assignment for t in targets):
            table = ast.literal_eval(value)
            return sorted({module for module, _help in table.values()})
    raise AssertionError(f"no {assignment} = {{...}} assignment found")


@dataclass
class Graph:
    files: dict[str, Path]
    imports: list[Import]
    dynamic: dict[str, list[int]]  # path -> lines that import by name

    def project(self, imp: Import) -> str | None:
        """The project module ``imp`` loads (None for a library)."""
        top = imp.target.split(".")[0]
        if top not in PACKAGES:
            return None
        name = imp.target
        while name and name not in self.files:  # `import a.b.c` of an attribute: its module
            name = name.rpartition(".")[0]
        return name or imp.target

    def heavy(self) -> set[str]:
        """Project modules that import a heavy library at module level, directly or through
        another such module."""
        heavy: set[str] = set()
        changed = True
        while changed:
            changed = False
            for imp in self.imports:
                if imp.in_function or imp.source in heavy:
                    continue
                if imp.target.split(".")[0] in HEAVY_LIBRARIES or self.project(imp) in heavy:
                    heavy.add(imp.source)
                    changed = True
        return heavy


_GRAPH: Graph | None = None


def graph() -> Graph:
    global _GRAPH
    if _GRAPH is None:
        files = project_files()
        modules = set(files)
        imports: list[Import] = []
        dynamic: dict[str, list[int]] = {}
        for name, path in files.items():
            rel = str(path.relative_to(ROOT))
            tree = ast.parse(path.read_text(), rel)
            imports += imports_of(name, tree, rel, modules)
            lines = dynamic_imports(tree)
            if lines:
                dynamic[rel] = lines
            if rel in DYNAMIC_IMPORTS and lines:
                for target in lazy_modules(tree, DYNAMIC_IMPORTS[rel][0]):
                    imports.append(Import(name, f"{rel}:{lines[0]}", target,
                                          f"importlib.import_module({target!r})", True,
                                          dynamic=True))
        _GRAPH = Graph(files, imports, dynamic)
    return _GRAPH


def _report(what: str, problems: list[str]) -> str:
    problems = list(dict.fromkeys(problems))  # one line per statement, in file order
    return f"{what} ({len(problems)}):\n  " + "\n  ".join(problems)


def test_layers() -> None:
    g = graph()
    problems = []
    for imp in g.imports:
        src_layer = layer(imp.source)
        target = g.project(imp)
        if target is None:
            banned = FORBIDDEN_LIBRARIES.get(src_layer, frozenset())
            if imp.target.split(".")[0] in banned:
                problems.append(f"{imp}  ({src_layer} must not import {imp.target.split('.')[0]})")
            continue
        dst_layer = layer(target)
        if src_layer in OPEN_LAYERS or dst_layer in LAYERS[src_layer]:
            continue
        problems.append(f"{imp}  ({src_layer} must not import {dst_layer}: {target})")
    for imp in g.imports:  # nothing installed depends on the test and bench support
        target = g.project(imp)
        if target and layer(target) in OPEN_LAYERS and layer(imp.source) not in OPEN_LAYERS:
            problems.append(f"{imp}  (installed code imports {target})")
    assert not problems, _report("imports across the layers", problems)


def find_cycles(edges: Mapping[str, Mapping[str, object]]) -> list[list[str]]:
    """One cycle per back edge of a depth-first search (each cycle listed once)."""
    cycles: list[list[str]] = []
    seen: set[frozenset[str]] = set()
    state: dict[str, int] = {}  # 1 on the stack, 2 done
    stack: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(edges.get(node, {})):
            if state.get(nxt) == 1:
                cycle = stack[stack.index(nxt):]
                if frozenset(cycle) not in seen:
                    seen.add(frozenset(cycle))
                    cycles.append([*cycle, nxt])
            elif nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = 2

    for node in sorted(edges):
        if node not in state:
            visit(node)
    return cycles


def module_edges(g: Graph) -> dict[str, dict[str, Import]]:
    """Module-level imports between project modules, with the packages each import runs."""
    edges: dict[str, dict[str, Import]] = {}
    for imp in g.imports:
        target = g.project(imp)
        if imp.in_function or target is None:
            continue
        parts = target.split(".")
        for i in range(1, len(parts) + 1):  # `import a.b.c` runs a/__init__ and a/b/__init__
            name = ".".join(parts[:i])
            own_package = imp.source == name or imp.source.startswith(name + ".")
            if name in g.files and name != imp.source and not (i < len(parts) and own_package):
                edges.setdefault(imp.source, {}).setdefault(name, imp)
    return edges


def test_no_import_cycles() -> None:
    edges = module_edges(graph())
    problems = []
    for cycle in find_cycles(edges):
        steps = [f"{a} -> {b} ({edges[a][b]})" for a, b in itertools.pairwise(cycle)]
        problems.append(" -> ".join(cycle) + "\n      " + "\n      ".join(steps))
    assert not problems, _report("import cycles among project modules", problems)


def test_imports_at_module_top() -> None:
    g = graph()
    heavy = g.heavy()
    problems = []
    for imp in g.imports:
        if not imp.in_function or imp.target.split(".")[0] in HEAVY_LIBRARIES:
            continue
        rel = imp.where.rpartition(":")[0]
        if imp.dynamic or g.project(imp) in heavy or (rel, imp.target) in ALLOWED:
            continue
        problems.append(f"{imp}  (inside a function: move it to the top of the module)")
    for rel, lines in g.dynamic.items():
        if rel not in DYNAMIC_IMPORTS:
            problems += [f"{rel}:{line}: an import by name (only {sorted(DYNAMIC_IMPORTS)} may)"
                         for line in lines]
    assert not problems, _report("imports inside functions", problems)


def test_allowlists_are_current() -> None:
    """Every allowance still matches an import: stale ones would hide the next real one."""
    g = graph()
    function_level = {(imp.where.rpartition(":")[0], imp.target) for imp in g.imports
                      if imp.in_function}
    assert not set(ALLOWED) - function_level, set(ALLOWED) - function_level
    for rel in DYNAMIC_IMPORTS:
        assert rel in g.dynamic, f"{rel} no longer imports by name"


def test_checker_sees_what_it_must() -> None:
    text = (
        "from __future__ import annotations\n"
        "from typing import TYPE_CHECKING\n"
        "import os\n"
        "if TYPE_CHECKING:\n"
        "    from launchers.base import Job\n"
        "else:\n"
        "    import json\n"
        "class C:\n"
        "    import re\n"
        "    def f(self):\n"
        "        from explorer import driver\n"
        "        g = lambda: __import__('x')\n"
        "try:\n"
        "    from . import sibling\n"
        "except ImportError:\n"
        "    pass\n"
    )
    modules = {"explorer.driver", "explorer.mcnn.sibling"}
    tree = ast.parse(text)
    got = [(i.target, i.in_function) for i in
           imports_of("explorer.mcnn.model", tree, "explorer/mcnn/model.py", modules)]
    assert got == [("__future__", False), ("typing", False), ("os", False), ("json", False),
                   ("re", False), ("explorer.driver", True), ("explorer.mcnn.sibling", False)]
    assert dynamic_imports(tree) == [12]
    assert find_cycles({"a": {"b": None}, "b": {"c": None, "a": None}, "c": {}}) == [
        ["a", "b", "a"]]
    heavy = Graph({"bench.a": ROOT, "bench.b": ROOT, "bench.c": ROOT}, [
        Import("bench.a", "bench/a.py:1", "tensorflow", "import tensorflow", False),
        Import("bench.b", "bench/b.py:1", "bench.a", "import bench.a", False),
        Import("bench.c", "bench/c.py:2", "bench.b", "import bench.b", True),
    ], {})
    assert heavy.heavy() == {"bench.a", "bench.b"}

