"""The layout's rules, checked over the source's syntax trees (no lamina module is imported).

1. No import cycles between lamina's modules, counting imports inside functions too. Imports
   under ``if TYPE_CHECKING:`` are left out: they name a type for the reader, and never run.
2. Data flows one way: a module imports only modules of its own layer or of layers below it
   (``LAYERS``, top first), and the packages of one layer that must not know each other
   (``INDEPENDENT``) do not.
3. No module uses another module's underscored names: neither ``from x import _name`` nor
   ``something._name`` where ``_name`` is defined in another lamina module (``self._x`` and
   ``cls._x`` are a class's own business).
4. The CLI holds no SQL: parsing and printing only.
"""

import ast
import re
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parent.parent / "src"
PACKAGE = SRC / "lamina"

# Top first. A module belongs to the first entry that is its name or a package above it.
LAYERS = [
    ["lamina.cli", "lamina.__main__"],
    ["lamina.api"],
    ["lamina.engine", "lamina"],
    ["lamina.builder"],
    ["lamina.transfer", "lamina.runtime"],
    ["lamina.gc", "lamina.check", "lamina.diskuse", "lamina.analyze", "lamina.cachemounts",
     "lamina.dedup"],
    ["lamina.containers", "lamina.copy"],
    ["lamina.images"],
    ["lamina.leases", "lamina.layers"],
    ["lamina.store"],
    ["lamina.claims", "lamina.volumes", "lamina.uses", "lamina.networks", "lamina.endpoints",
     "lamina.cni"],
    ["lamina.differ", "lamina.content", "lamina.metadata"],
    ["lamina.snapshots", "lamina.union", "lamina.unionfs", "lamina.layertar", "lamina.changes",
     "lamina.mount"],
    ["lamina.errors", "lamina.userns", "lamina.faults", "lamina.digest", "lamina.humanize", "lamina.fsutil",
     "lamina.processes", "lamina.whiteouts", "lamina.rootpath", "lamina.limits", "lamina.tarsplit",
     "lamina.compression", "lamina.image", "lamina.reference", "lamina.events",
     "lamina.runstate", "lamina.records", "lamina.cjson"],
]
# Packages of one layer that must not import each other.
INDEPENDENT = [("lamina.transfer", "lamina.runtime")]

SQL = re.compile(r"\b(SELECT\s.+\sFROM|INSERT\s+(OR\s+\w+\s+)?INTO|UPDATE\s+\w+\s+SET|"
                 r"DELETE\s+FROM|CREATE\s+TABLE)\b", re.IGNORECASE | re.DOTALL)


def module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def parse(name: str) -> ast.Module:
    return ast.parse(MODULES[name].read_text(), str(MODULES[name]))


def _type_checking_only(node: ast.AST) -> bool:
    test = getattr(node, "test", None)
    return isinstance(node, ast.If) and (
        (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING")
        or (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"))


def _walk_runtime(tree: ast.AST):
    """Every node, leaving out the bodies of ``if TYPE_CHECKING:``."""
    stack = [tree]
    while stack:
        node = stack.pop()
        yield node
        for child in ast.iter_child_nodes(node):
            if _type_checking_only(child):
                stack.extend(child.orelse)
            else:
                stack.append(child)


def _known(name: str) -> str | None:
    """The lamina module ``name`` is, or the one it is an attribute of."""
    while name:
        if name in MODULES:
            return name
        name = name.rpartition(".")[0]
    return None


def imports(name: str) -> set[str]:
    """The lamina modules ``name`` imports when it runs (anywhere in it)."""
    is_package = MODULES[name].name == "__init__.py"
    found = set()
    for node in _walk_runtime(parse(name)):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".") if is_package else name.split(".")[:-1]
                base = base[: len(base) - (node.level - 1)]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            # ``from pkg import mod`` imports the module pkg.mod; ``from mod import name`` mod
            targets = [f"{module}.{alias.name}" if f"{module}.{alias.name}" in MODULES else module
                       for alias in node.names]
        else:
            continue
        found.update(known for known in map(_known, targets) if known)
    found.discard(name)
    return found


GRAPH = {name: imports(name) for name in MODULES}


def layer_of(name: str) -> int:
    best, depth = None, -1
    for index, entry in enumerate(LAYERS):
        for prefix in entry:
            if (name == prefix or name.startswith(prefix + ".")) and len(prefix) > depth:
                best, depth = index, len(prefix)
    assert best is not None, f"{name} belongs to no layer: add it to LAYERS"
    return best


def test_every_module_has_a_layer():
    for name in MODULES:
        layer_of(name)


def import_cycles() -> list[list[str]]:
    cycles = []
    state: dict[str, int] = {}

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for target in sorted(GRAPH[node]):
            if state.get(target) == 1:
                cycles.append(path[path.index(target):] + [target])
            elif target not in state:
                visit(target, path + [target])
        state[node] = 2

    for name in sorted(GRAPH):
        if name not in state:
            visit(name, [name])
    return cycles


def upward_imports() -> list[str]:
    return sorted(f"{a} (layer {layer_of(a)}) imports {b} (layer {layer_of(b)})"
                  for a, targets in GRAPH.items() for b in targets if layer_of(b) < layer_of(a))


def test_no_import_cycles():
    cycles = import_cycles()
    assert cycles == [], "import cycles:\n" + "\n".join(" -> ".join(c) for c in cycles)


def test_imports_flow_down_the_layers():
    upward = upward_imports()
    assert upward == [], "imports up the layers:\n" + "\n".join(upward)


@pytest.mark.parametrize("first,second", INDEPENDENT)
def test_independent_packages(first, second):
    crossing = sorted(f"{a} imports {b}" for a, targets in GRAPH.items() for b in targets
                      if (a.startswith(first) and b.startswith(second))
                      or (a.startswith(second) and b.startswith(first)))
    assert crossing == []


def _private_definitions(trees: dict[str, ast.Module]) -> dict[str, set[str]]:
    """Underscored names (not dunders) each module defines: functions, classes, methods,
    module or class attributes, and ``self._x`` assignments."""
    owners: dict[str, set[str]] = {}
    for name, tree in trees.items():
        for node in ast.walk(tree):
            defined = []
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                defined = [node.name]
            elif isinstance(node, (ast.Assign, ast.AnnAssign)):
                for target in node.targets if isinstance(node, ast.Assign) else [node.target]:
                    if isinstance(target, ast.Name):
                        defined.append(target.id)
                    elif isinstance(target, ast.Attribute):
                        defined.append(target.attr)
            for item in defined:
                if item.startswith("_") and not item.startswith("__"):
                    owners.setdefault(item, set()).add(name)
    return owners


# Public API of the standard library that happens to start with an underscore (namedtuple's).
STDLIB_API = {"_replace", "_asdict", "_fields", "_make", "_field_defaults"}


def private_uses(trees: dict[str, ast.Module]) -> list[str]:
    """Where a module uses an underscored name that only other modules define."""
    owners = {name: modules for name, modules in _private_definitions(trees).items()
              if name not in STDLIB_API}
    found = []
    for name, tree in trees.items():
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom):
                for alias in node.names:
                    if alias.name in owners and name not in owners[alias.name]:
                        found.append(f"{name}:{node.lineno} imports {alias.name}")
            elif isinstance(node, ast.Attribute) and node.attr in owners \
                    and not (isinstance(node.value, ast.Name) and node.value.id in ("self", "cls")) \
                    and name not in owners[node.attr]:
                found.append(f"{name}:{node.lineno} uses .{node.attr} "
                             f"(of {', '.join(sorted(owners[node.attr]))})")
    return found


def test_no_module_uses_another_modules_private_names():
    found = private_uses({name: parse(name) for name in MODULES})
    assert found == [], "private names used from outside:\n" + "\n".join(found)


def test_the_cli_holds_no_sql():
    found = []
    for name, path in MODULES.items():
        if not name.startswith("lamina.cli"):
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) \
                    and SQL.search(node.value):
                found.append(f"{name}:{node.lineno}: {node.value[:60]!r}")
            elif isinstance(node, ast.Attribute) and node.attr in ("db", "execute", "executemany"):
                found.append(f"{name}:{node.lineno}: .{node.attr}")
    assert found == [], "SQL in the CLI:\n" + "\n".join(found)


def test_the_checks_can_fail():
    """The rules above find what they look for: a cycle, an upward import, a private use, SQL."""
    global GRAPH
    saved = dict(GRAPH)
    try:
        GRAPH["lamina.errors"] = GRAPH["lamina.errors"] | {"lamina.engine"}
        assert any(c[0] == "lamina.errors" or "lamina.errors" in c for c in import_cycles())
        assert "lamina.errors (layer 13) imports lamina.engine (layer 2)" in upward_imports()
    finally:
        GRAPH = saved
    trees = {"a": ast.parse("class A:\n    def _hidden(self):\n        return self._hidden\n"),
             "b": ast.parse("def f(engine):\n    return engine._hidden()\n"),
             "c": ast.parse("from a import _hidden\n")}
    assert private_uses(trees) == ["b:2 uses ._hidden (of a)", "c:1 imports _hidden"]
    assert SQL.search("SELECT id FROM images WHERE x") and not SQL.search("select a shell")
