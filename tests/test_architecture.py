"""The house's layout holds: packages import one way (types/config at the bottom, CLI and HTTP on top), no
import circle among recsys modules, no module over 500 lines, and few modules directly in recsys/."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "recsys"

# Lower layers never import higher ones. Longest matching prefix decides a module's layer.
LAYERS = {
    "recsys.types": 0,
    "recsys.config": 0,
    "recsys.sqlite": 0,
    "recsys.evaluation.metrics": 0,  # pure metric functions, also used to validate the learned ranker
    "recsys.ingest.text": 1,
    "recsys.signals.records": 1,
    "recsys.embedder": 1,
    "recsys.embedder_onnx": 1,
    "recsys.ingest": 2,
    "recsys.archive": 3,
    "recsys.signals": 3,
    "recsys.learning": 4,
    "recsys.lists": 5,
    "recsys.feedback": 5,  # the served-list log and the online figures (reads the events store)
    "recsys.service": 6,
    "recsys": 6,  # the package face re-exports the service
    "recsys.http": 7,
    "recsys.http_rules": 7,  # /rules
    "recsys.monitoring": 7,
    "recsys.guards": 7,  # request-level guards of the HTTP service  # /metrics for the HTTP service
    "recsys.server": 7,
    "recsys.cli": 7,
    "recsys.evaluation": 7,
}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def imports_of(path: Path, known: set[str]) -> set[str]:
    """recsys modules ``path`` imports anywhere in it (a ``from package import module`` names the module)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name in known}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            # ``from package import module`` imports the module; any other name comes from node.module itself
            submodules = {f"{node.module}.{a.name}" for a in node.names} & known
            found |= submodules
            if node.module in known and len(submodules) < len(node.names):
                found.add(node.module)
    return found


def layer(name: str) -> int:
    prefix = max((p for p in LAYERS if name == p or name.startswith(p + ".")), key=len)
    return LAYERS[prefix]


def graph() -> dict[str, set[str]]:
    mods = modules()
    return {name: imports_of(path, set(mods)) - {name} for name, path in mods.items()}


def test_every_module_has_a_layer_and_imports_only_its_layer_or_below():
    wrong = [
        f"{name} (layer {layer(name)}) imports {dep} (layer {layer(dep)})"
        for name, deps in graph().items()
        for dep in deps
        if layer(dep) > layer(name)
    ]
    assert not wrong, "\n".join(wrong)


def test_no_import_circle_among_recsys_modules():
    edges = graph()
    state: dict[str, int] = {}  # 1 on the path, 2 done
    circles = []

    def visit(name: str, path: list[str]) -> None:
        state[name] = 1
        for dep in sorted(edges[name]):
            if state.get(dep) == 1:
                circles.append(" -> ".join([*path[path.index(dep) :], dep]))
            elif dep not in state:
                visit(dep, [*path, dep])
        state[name] = 2

    for name in sorted(edges):
        if name not in state:
            visit(name, [name])
    assert not circles, "\n".join(circles)


def test_no_module_is_over_500_lines_and_recsys_itself_holds_few():
    long = {name: n for name, path in modules().items() if (n := len(path.read_text().splitlines())) > 500}
    assert not long, long
    top = [p.name for p in PACKAGE.glob("*.py")]
    assert len(top) <= 12, top


def test_every_package_says_what_lives_there_and_what_it_may_import():
    for init in PACKAGE.rglob("__init__.py"):
        doc = ast.get_docstring(ast.parse(init.read_text())) or ""
        if init.parent in (PACKAGE / "data",):
            continue
        assert len(doc) > 80 and "import" in doc, f"{init}: docstring should say what lives here and what it imports"
