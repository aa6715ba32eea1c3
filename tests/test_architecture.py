"""House rules that hold by test: the package reads in pipeline order (every import points down
the layers, none forms a cycle; lazy imports inside functions count too), functions stay short
and public classes say what they are."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import scalevid

PACKAGE = Path(scalevid.__file__).parent

# Pipeline order, lowest first. A module may import from its own layer or a lower one.
LAYERS: tuple[tuple[str, ...], ...] = (
    (
        "scalevid.config",
        "scalevid.hardware",
        "scalevid.distributed",
        "scalevid.progress",
        "scalevid.folders",
        "scalevid.outfiles",
    ),
    ("scalevid.data",),
    ("scalevid.backbones",),
    ("scalevid.store",),
    ("scalevid.extract",),
    ("scalevid.model",),
    ("scalevid.losses",),
    ("scalevid.pretext",),
    ("scalevid.train",),
    ("scalevid.eval",),
    ("scalevid.steps",),
    ("scalevid.demo",),
    ("scalevid.recipes",),
    ("scalevid.cli",),
)


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _imports(path: Path, modules: dict[str, Path]) -> set[str]:
    """The scalevid modules `path` imports (a `from pkg import sub` names the submodule)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("scalevid"))
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if not node.module.startswith("scalevid"):
                continue
            subs = {f"{node.module}.{a.name}" for a in node.names} & set(modules)
            found.update(subs or {node.module})
    return found


def _layer(module: str) -> int:
    for i, names in enumerate(LAYERS):
        if any(module == n or module.startswith(n + ".") for n in names):
            return i
    raise AssertionError(f"{module} is in no layer: add it to LAYERS in pipeline order")


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    return {name: _imports(path, modules) - {name} for name, path in modules.items()}


def test_every_module_has_a_layer():
    for name in _modules():
        if name != "scalevid":
            _layer(name)


def test_imports_point_down_the_pipeline():
    upward = []
    for source, targets in _graph().items():
        if source == "scalevid":
            continue  # the package's front door re-exports the public API
        for target in targets:
            if target == "scalevid":
                continue  # `from scalevid import __version__`
            if _layer(target) > _layer(source):
                upward.append(f"{source} -> {target}")
    assert not upward, "imports reaching up the pipeline:\n" + "\n".join(sorted(upward))


def test_submodules_never_import_their_own_package():
    # `from scalevid.store import X` inside scalevid/store/ runs the package's __init__, which
    # imports its submodules: a cycle in waiting. Siblings are imported by their full path.
    offenders = [
        f"{source} -> {target}"
        for source, targets in _graph().items()
        for target in targets
        if target != "scalevid" and source.startswith(target + ".")
    ]
    assert not offenders, "\n".join(sorted(offenders))


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt) :] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_no_import_cycles():
    graph = {k: {t for t in v if t != "scalevid"} for k, v in _graph().items()}
    cycle = _cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_the_checks_catch_what_they_are_for():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None
    assert _layer("scalevid.cli") > _layer("scalevid.eval.protocol") > _layer("scalevid.store")


def _functions_and_classes():
    for path in sorted(PACKAGE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                yield path.relative_to(PACKAGE), node


def _body_lines(node: ast.FunctionDef | ast.AsyncFunctionDef) -> int:
    """Lines of a function without its docstring."""
    lines = node.end_lineno - node.lineno + 1
    first = node.body[0]
    if isinstance(first, ast.Expr) and isinstance(getattr(first.value, "value", None), str):
        lines -= first.end_lineno - first.lineno + 1
    return lines


def test_functions_are_short():
    long = [
        f"{path}:{node.lineno} {node.name} ({_body_lines(node)} lines)"
        for path, node in _functions_and_classes()
        if not isinstance(node, ast.ClassDef) and _body_lines(node) > 60
    ]
    assert not long, "split these by meaning:\n" + "\n".join(long)


def test_public_classes_say_what_they_are():
    bare = [
        f"{path}:{node.lineno} {node.name}"
        for path, node in _functions_and_classes()
        if isinstance(node, ast.ClassDef)
        and not node.name.startswith("_")
        and not ast.get_docstring(node)
    ]
    assert not bare, "public classes without a docstring:\n" + "\n".join(bare)


ARCHITECTURE_DOC = Path(__file__).parents[1] / "docs" / "architecture.md"


def _listed_modules() -> list[str]:
    """The modules of docs/architecture.md's one-line-per-module list, in its order."""
    block = ARCHITECTURE_DOC.read_text().split("## One line per module")[1].split("```")[1]
    listed, package = [], None
    for line in block.splitlines():
        match = re.match(r"^( *)(\S+)", line)
        if not match or match.group(2) == "src/scalevid/":
            continue
        indent, name = len(match.group(1)), match.group(2)
        if indent <= 2:
            package = name[:-1] if name.endswith("/") else None
        if name.endswith(".py"):
            inside = package if indent > 2 else None
            listed.append(".".join(["scalevid", *([inside] if inside else []), name[:-3]]))
    return listed


def test_the_architecture_doc_lists_every_module_in_import_order():
    """Every module has its line in docs/architecture.md, and imports only what is listed above
    it (a package counts where its last module is), so the listing reads as the pipeline."""
    listed = _listed_modules()
    place = {name: i for i, name in enumerate(listed)}
    modules = [m for m in _modules() if m != "scalevid" and m not in _packages()]
    assert sorted(set(modules) - set(place)) == [], "modules missing from docs/architecture.md"
    assert sorted(set(place) - set(modules)) == [], "docs/architecture.md lists gone modules"

    def position(target: str) -> int:
        inside = [place[m] for m in listed if m.startswith(target + ".")]
        return place[target] if target in place else max(inside)

    late = [
        f"{source} -> {target}"
        for source, targets in _graph().items()
        if source in place
        for target in targets
        if target != "scalevid" and position(target) > place[source]
    ]
    assert not late, "imports of modules listed below the importer:\n" + "\n".join(sorted(late))


def _packages() -> set[str]:
    return {_module_name(p) for p in PACKAGE.rglob("__init__.py")}
