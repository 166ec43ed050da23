"""The layout's rules, read from the source: the adapter's file names live in adapter.py, nobody imports another
module's private names, the core has no import cycle and never imports its front ends, which use only its public
names; one suffix map, one meaning per type name, sibling imports at the top of a module."""

from __future__ import annotations

import ast
from pathlib import Path

import andraeus_core
from andraeus_core.adapter import FILES

ROOT = Path(__file__).resolve().parents[1]
CORE = ROOT / "andraeus_core"
FRONT_ENDS = ("andraeus_cli", "andraeus_web", "api")


def _sources(*packages: str, app: bool = True) -> list[Path]:
    files = [p for package in packages for p in sorted((ROOT / package).rglob("*.py"))]
    return files + ([ROOT / "app.py"] if app else [])


def _tree(path: Path) -> ast.Module:
    return ast.parse(path.read_text(encoding="utf-8"), filename=str(path))


def _docstrings(tree: ast.Module) -> set[int]:
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                found.add(id(first.value))
    return found


def _where(path: Path, node: ast.AST) -> str:
    return f"{path.relative_to(ROOT)}:{getattr(node, 'lineno', '?')}"


def test_adapter_file_names_appear_only_in_adapter_py() -> None:
    names = [f.name for f in FILES]
    found = []
    for path in _sources("andraeus_core", *FRONT_ENDS):
        if path == CORE / "adapter.py":
            continue
        tree = _tree(path)
        docstrings = _docstrings(tree)
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings:
                found += [f"{_where(path, node)} {name}" for name in names if name in node.value]
    assert found == []


def test_no_module_imports_another_modules_private_names() -> None:
    ours = {"andraeus_core", "app", *FRONT_ENDS}
    found = []
    for path in _sources("andraeus_core", *FRONT_ENDS):
        for node in ast.walk(_tree(path)):
            if isinstance(node, ast.ImportFrom) and (node.level > 0 or (node.module or "").split(".")[0] in ours):
                found += [f"{_where(path, node)} {a.name}" for a in node.names if a.name.startswith("_")]
    assert found == []


def _core_imports(path: Path) -> tuple[set[str], list[ast.ImportFrom]]:
    """The core modules ``path`` imports, and its sibling imports that are not at module level."""
    siblings: set[str] = set()
    nested: list[ast.ImportFrom] = []
    tree = _tree(path)
    top_level = {id(n) for n in tree.body}
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level == 1:
            siblings.add((node.module or "").split(".")[0] or node.names[0].name)
            if id(node) not in top_level:
                nested.append(node)
    return siblings, nested


def test_the_core_has_no_import_cycle_and_no_front_end() -> None:
    modules = {p.stem: p for p in CORE.glob("*.py")}
    graph = {name: _core_imports(path)[0] & set(modules) for name, path in modules.items()}
    graph.pop("__init__")
    for edges in graph.values():
        edges.discard("__init__")

    def cycle_from(start: str) -> list[str] | None:
        stack = [(start, [start])]
        while stack:
            node, trail = stack.pop()
            for nxt in sorted(graph.get(node, ())):
                if nxt == start:
                    return [*trail, nxt]
                if nxt not in trail:
                    stack.append((nxt, [*trail, nxt]))
        return None

    assert [c for c in map(cycle_from, sorted(graph)) if c] == []
    front = []
    for path in modules.values():
        for node in ast.walk(_tree(path)):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            if isinstance(node, ast.ImportFrom) and node.level == 0:
                names = [node.module or ""]
            front += [f"{_where(path, node)} {n}" for n in names if n.split(".")[0] in {*FRONT_ENDS, "app"}]
    assert front == []


def test_sibling_imports_sit_at_the_top_of_core_modules() -> None:
    # Heavy third-party libraries are imported inside functions (so `andraeus --help` stays instant); our own
    # modules are light and their imports show the architecture, so they belong at the top.
    nested = [_where(p, n) for p in CORE.glob("*.py") for n in _core_imports(p)[1]]
    assert nested == []


def test_front_ends_use_only_public_core_names() -> None:
    public = set(andraeus_core.__all__)
    found = []
    for path in _sources(*FRONT_ENDS):
        for node in ast.walk(_tree(path)):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("andraeus_core"):
                if node.module != "andraeus_core":
                    found.append(f"{_where(path, node)} imports {node.module}")
                found += [f"{_where(path, node)} {a.name}" for a in node.names if a.name not in public]
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "core":
                if node.attr not in public:
                    found.append(f"{_where(path, node)} core.{node.attr}")
    assert found == []


def test_one_profile_suffix_map() -> None:
    maps = []
    for path in _sources("andraeus_core", *FRONT_ENDS):
        for node in ast.walk(_tree(path)):
            if isinstance(node, ast.Dict) and any(
                isinstance(k, ast.Constant) and k.value in (".yaml", ".csv", "yaml", "csv") for k in node.keys
            ):
                maps.append(_where(path, node))
    assert len(maps) == 1 and maps[0].startswith("andraeus_core/profile.py:"), maps


def test_each_type_name_has_one_meaning() -> None:
    defined: dict[str, list[str]] = {}
    for path in CORE.glob("*.py"):
        for node in _tree(path).body:
            if isinstance(node, ast.Assign) and isinstance(node.value, ast.Subscript | ast.BinOp):
                text = ast.unparse(node.value)
                if text.startswith("Literal["):
                    for target in node.targets:
                        if isinstance(target, ast.Name):
                            defined.setdefault(target.id, []).append(path.stem)
    assert {name: where for name, where in defined.items() if len(where) > 1} == {}
    assert "Kind" not in defined  # three meanings once: ExampleKind, QuestionKind, TopicKind now
