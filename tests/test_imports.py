"""The import graph of the product code (`bulletproof`, `exporter`), read with ast: no module imports
itself through others, and no import hides inside a function body (the usual way to dodge a cycle).

Imports under `if TYPE_CHECKING:` are not run, so they are not edges. The few genuine lazy imports
(a heavy or optional library loaded only on the path that needs it) are listed with their reason.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable, Mapping
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("bulletproof", "exporter")

# (file, imported module) -> why it is imported where it is used.
LAZY_IMPORTS: dict[tuple[str, str], str] = {
    ("bulletproof/ffprobe.py", "imageio_ffmpeg"): "an optional extra (bundled-ffmpeg)",
    ("exporter/client/api_client.py", "aiohttp"):
        "the event stream only: the core's CLI loads the client commands on every start",
    ("exporter/client/api_client.py", "ssl"): "https URLs only",
    ("exporter/client/command.py", "rich.console"): "rich loads when a command prints",
    ("exporter/client/formatting.py", "rich.markup"): "rich loads when a table is printed",
    ("exporter/client/formatting.py", "rich.table"): "rich loads when a table is printed",
    ("exporter/client/audit.py", "rich.markup"): "rich loads when a table is printed",
    ("exporter/client/audit.py", "rich.table"): "rich loads when a table is printed",
    ("exporter/security/middleware.py", "aiohttp_cors"): "only when api.cors_origins is set",
}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def product_files() -> list[Path]:
    return sorted(p for package in PACKAGES for p in (ROOT / package).rglob("*.py"))


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _imported(node: ast.Import | ast.ImportFrom, module: str, is_package: bool) -> list[str]:
    """The modules an import statement names (`from pkg import sub` names `pkg.sub` when sub is a
    module, else `pkg`)."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    base = node.module or ""
    if node.level:
        anchor = module.split(".") if is_package else module.split(".")[:-1]
        anchor = anchor[:len(anchor) - node.level + 1]
        base = ".".join([*anchor, base] if base else anchor)
    return [base, *(f"{base}.{alias.name}" for alias in node.names)]


def runtime_imports(tree: ast.Module) -> Iterable[ast.Import | ast.ImportFrom]:
    """Module-level imports that run (not under `if TYPE_CHECKING:`), including those in try/if."""
    stack: list[ast.stmt] = list(tree.body)
    while stack:
        node = stack.pop()
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
        elif isinstance(node, ast.If):
            if not _is_type_checking(node):
                stack.extend(node.body)
            stack.extend(node.orelse)
        elif isinstance(node, ast.Try):
            stack.extend([*node.body, *node.orelse, *node.finalbody,
                          *(s for h in node.handlers for s in h.body)])
        elif isinstance(node, (ast.With, ast.AsyncWith)):
            stack.extend(node.body)


def import_graph(files: Iterable[Path]) -> dict[str, set[str]]:
    """Module -> the product modules it imports when it is loaded."""
    sources = {module_name(p): p for p in files}
    graph: dict[str, set[str]] = {}
    for module, path in sources.items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        edges = set()
        for node in runtime_imports(tree):
            for name in _imported(node, module, path.name == "__init__.py"):
                if name in sources and name != module:
                    edges.add(name)
        graph[module] = edges
    return graph


def cycles(graph: Mapping[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in graph.get(node, ()):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def function_imports(files: Iterable[Path]) -> dict[tuple[str, str], int]:
    """(file, imported module) -> line, for every import inside a function body."""
    found: dict[tuple[str, str], int] = {}
    for path in files:
        tree = ast.parse(path.read_text(encoding="utf-8"))
        rel = path.relative_to(ROOT).as_posix()
        for fn in ast.walk(tree):
            if not isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            for node in ast.walk(fn):
                if isinstance(node, ast.Import):
                    for alias in node.names:
                        found[(rel, alias.name)] = node.lineno
                elif isinstance(node, ast.ImportFrom):
                    found[(rel, "." * node.level + (node.module or ""))] = node.lineno
    return found


def test_the_product_code_has_no_import_cycle() -> None:
    graph = import_graph(product_files())
    assert "exporter.api.routes" in graph and graph["exporter.api.app"]  # the graph was read
    assert cycles(graph) == []


def test_no_import_hides_in_a_function_body() -> None:
    found = function_imports(product_files())
    unexpected = {f"{file}:{line} imports {name}" for (file, name), line in found.items()
                  if (file, name) not in LAZY_IMPORTS}
    assert sorted(unexpected) == [], "import at the top of the module (or list a genuine lazy import)"
    stale = sorted(set(LAZY_IMPORTS) - set(found))
    assert stale == [], "LAZY_IMPORTS lists imports the code no longer has"


def test_the_cycle_check_can_fail(tmp_path: Path) -> None:
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []
    source = "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import x\nimport y\n"
    names = [n.names[0].name for n in runtime_imports(ast.parse(source)) if isinstance(n, ast.Import)]
    assert names == ["y"]
    lazy = ROOT / "exporter" / "client" / "api_client.py"
    assert ("exporter/client/api_client.py", "aiohttp") in function_imports([lazy])
