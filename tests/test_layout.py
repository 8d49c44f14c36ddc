"""The package is a map: subpackages by concept, imports that only point down, no circles, small modules.

Imports are read with `ast` (never executed): `import` and `from` statements anywhere in a module, and the module
names of a package's lazy re-exports (`_HEAVY`), since those load a module too. An `EngineSpec` names its engine's
module as a plugin: the engine module imports the search layer, never the reverse. Imports under
`if TYPE_CHECKING:` name types only: they count for direction, not for circles.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent.parent / "bench"
CORE = {"errors", "paths", "images", "text", "registry", "validation", "lazy", "quiet", "machine"}
# Layer of each subpackage: a module may import only from a lower layer (or its own subpackage, or the core).
LAYERS = {"core": 0, "metrics": 1, "data": 1, "models": 1, "serving": 1, "training": 2, "tracking": 2,
          "reporting": 3, "search": 4, "benchmark": 5, "top": 6}
# What a layer may import besides the core, where narrower than "everything below" (the contract).
ONLY = {"data": set(), "models": set(), "metrics": set(), "serving": set(),
        "training": {"data", "models", "metrics"}}
MAX_LINES = 350


def module_name(path: Path) -> str:
    parts = path.relative_to(BENCH.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in sorted(BENCH.rglob("*.py"))}


def area(module: str) -> str:
    parts = module.split(".")
    if len(parts) == 1 or parts[1] in ("cli", "__main__"):
        return "top"
    return "core" if parts[1] in CORE else parts[1]


def _resolve(name: str) -> str | None:
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def imports(module: str) -> list[tuple[str, bool]]:
    """(imported bench module, type-only) pairs of `module`."""
    tree = ast.parse(MODULES[module].read_text())
    type_only: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            type_only.update(id(n) for child in node.body for n in ast.walk(child))
    lazy: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "_HEAVY" for t in node.targets):
            lazy.update(id(key) for key in node.value.keys)  # {module: names}
    found = []
    for node in ast.walk(tree):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [f"{node.module}.{a.name}" for a in node.names]
        elif isinstance(node, ast.Constant) and id(node) in lazy and isinstance(node.value, str):
            names = [node.value] if node.value in MODULES else []
        for name in names:
            target = _resolve(name) if name.startswith("bench") else None
            if target and target != module:
                found.append((target, id(node) in type_only))
    return found


GRAPH = {m: imports(m) for m in MODULES}


def test_every_import_points_down_or_stays_in_its_subpackage():
    upward = []
    for module, targets in GRAPH.items():
        mine = area(module)
        for target, _ in targets:
            theirs = area(target)
            if theirs in (mine, "core"):
                continue
            allowed = ONLY.get(mine)
            if LAYERS[theirs] >= LAYERS[mine] or (allowed is not None and theirs not in allowed):
                upward.append(f"{module} -> {target}")
    assert upward == []


def test_serving_imports_only_errors_and_images_from_the_core_for_the_logged_model():
    # and its test-time augmentation, copied with it (bench.serving.server.CODE_MODULES), which imports only numpy
    assert {t for t, _ in GRAPH["bench.serving.pyfunc"]} <= {"bench.errors", "bench.images", "bench.serving.tta"}
    assert {t for t, _ in GRAPH["bench.serving.tta"]} == set()


def test_no_import_circle():
    runtime = {m: {t for t, type_only in targets if not type_only} for m, targets in GRAPH.items()}
    state: dict[str, int] = {}
    cycles = []

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(runtime[node]):
            # A package's __init__ imports its own submodules to register or re-export them: that arrow is the
            # package's surface, not a dependency of the submodule back on the package.
            if state.get(nxt) == 1 and not (node.startswith(nxt + ".") or nxt.startswith(node + ".")):
                cycles.append(" -> ".join(stack[stack.index(nxt):] + [node, nxt]) if nxt in stack else f"{node}->{nxt}")
            elif nxt not in state:
                visit(nxt, stack + [node])
        state[node] = 2

    for module in MODULES:
        if module not in state:
            visit(module, [])
    assert cycles == []


@pytest.mark.parametrize("module", sorted(MODULES))
def test_module_is_at_most_350_lines(module):
    assert len(MODULES[module].read_text().splitlines()) <= MAX_LINES


def test_every_subpackage_declares_its_public_surface():
    packages = [m for m, p in MODULES.items() if p.name == "__init__.py" and m != "bench"]
    missing = [m for m in packages if "__all__" not in MODULES[m].read_text()]
    assert missing == []


def test_no_signature_types_a_context_dataset_or_config_as_any():
    names = {"ctx", "context", "dataset", "ds", "config", "cfg", "bench", "outcome", "outcomes"}
    loose = []
    for module, path in MODULES.items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                for arg in node.args.args + node.args.kwonlyargs:
                    if arg.arg in names and (arg.annotation is None or "Any" in ast.unparse(arg.annotation)):
                        loose.append(f"{module}.{node.name}({arg.arg})")
    assert loose == []


def test_no_package_exports_a_name_that_hides_one_of_its_modules():
    """`from bench.x import y` must mean one thing: a function named like its module would shadow the module."""
    hidden = []
    for module, path in MODULES.items():
        if path.name != "__init__.py":
            continue
        submodules = {p.stem for p in path.parent.glob("*.py")} | {p.name for p in path.parent.iterdir() if p.is_dir()}
        exported = set()
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith(module + "."):
                exported.update(a.asname or a.name for a in node.names)
        hidden += [f"{module}.{name}" for name in exported & submodules]
    assert hidden == []
