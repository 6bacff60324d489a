"""The house rules of docs/ARCHITECTURE.md, checked on the product code's source.

1. Imports go down the layers (or stay in their layer), never up; no module imports itself back through others.
2. A collection is touched only by the package that declares it in its ``collections.py``.
3. The README's ownership table names every declared collection.

Each rule is a function of the source, so each test also runs on a planted violation to show it can fail.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("recsys_site", "ingestion", "ranker", "pairing", "dashboard", "celery_app")

# Bottom to top; a module belongs to the layer of its longest matching prefix ("*.api": any package's api).
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    ("base", ("recsys_site.settings", "recsys_site.mongo", "recsys_site.exceptions", "recsys_site.errors",
              "recsys_site.embedded", "recsys_site.metrics", "recsys_site.collections",
              "recsys_site.jobs", "recsys_site.health", "recsys_site.indexes")),
    ("store", ("ingestion",)),
    ("models", ("ranker.recommenders",)),
    ("train", ("ranker.training", "ranker.collections", "ranker.indexes")),
    ("pair", ("pairing",)),
    ("pick", ("ranker.experiments", "ranker.models", "ranker.picks", "ranker.playlist_ranking", "ranker.evaluation",
              "ranker.watch")),
    ("serve", ("*.api", "*.tasks", "*.management", "*.admin", "*.apps", "recsys_site", "ranker", "dashboard",
               "celery_app")),
]
RANK = {name: n for n, (name, _) in enumerate(LAYERS)}


def layer_of(module: str) -> str:
    best, best_len = "serve", -1
    parts = module.split(".")
    for name, prefixes in LAYERS:
        for prefix in prefixes:
            if prefix.startswith("*."):
                hit = len(parts) >= 2 and parts[1] == prefix[2:]
                length = 2 if hit else -1
            else:
                hit = module == prefix or module.startswith(prefix + ".")
                length = prefix.count(".") + 1 if hit else -1
            if hit and length > best_len:
                best, best_len = name, length
    return best


def product_modules(root: Path = REPO) -> dict[str, Path]:
    out = {}
    for package in PACKAGES:
        for path in (root / package).rglob("*.py"):
            if "migrations" in path.parts:
                continue
            name = ".".join(path.relative_to(root).with_suffix("").parts)
            out[name.removesuffix(".__init__")] = path
    return out


def imports_of(module: str, path: Path, known: set[str]) -> list[tuple[int, str]]:
    """(line, product module) for every import in the file, at any depth (inside functions too)."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = package.split(".")[:len(package.split(".")) - (node.level - 1)]
                base = ".".join([*up, *([node.module] if node.module else [])])
            targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base for alias in node.names]
        else:
            continue
        for target in targets:
            while target and target not in known and "." in target:
                target = target.rpartition(".")[0]
            if target in known and target != module:
                found.append((node.lineno, target))
    return found


def graph(root: Path = REPO) -> dict[str, list[tuple[int, str]]]:
    modules = product_modules(root)
    return {name: imports_of(name, path, set(modules)) for name, path in modules.items()}


def upward_imports(edges: dict[str, list[tuple[int, str]]]) -> list[str]:
    return [f"{a}:{line} imports {b} ({layer_of(a)} → {layer_of(b)})"
            for a, targets in sorted(edges.items()) for line, b in targets
            if RANK[layer_of(b)] > RANK[layer_of(a)]]


def cycles(edges: dict[str, list[tuple[int, str]]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for _, w in edges.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return found


def test_every_product_module_has_a_layer_and_the_layers_are_all_used():
    modules = product_modules()
    used = {layer_of(m) for m in modules}
    assert used == set(RANK), set(RANK) - used
    assert layer_of("ranker.picks.serve") == "pick" and layer_of("ranker.api") == "serve"
    assert layer_of("ingestion.api") == "serve" and layer_of("ingestion.feedback.rules") == "store"


def test_imports_only_go_down_the_layers():
    assert upward_imports(graph()) == []


def test_no_import_cycles():
    assert cycles(graph()) == []


def _copy_product(tmp_path: Path) -> Path:
    for package in PACKAGES:
        for path in (REPO / package).rglob("*.py"):
            target = tmp_path / path.relative_to(REPO)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(path.read_text())
    return tmp_path


def test_a_planted_upward_import_and_cycle_are_caught(tmp_path):
    """The checks above can fail: the store layer importing the picks (up), and back again (a cycle)."""
    root = _copy_product(tmp_path)
    selectors = root / "ingestion" / "selectors.py"
    selectors.write_text(selectors.read_text() + "\n\ndef _planted():\n    from ranker.picks import serve  # noqa\n")
    edges = graph(root)
    assert any(v.startswith("ingestion.selectors:") and "ranker.picks.serve" in v for v in upward_imports(edges))
    assert any("ingestion.selectors" in c and "ranker.picks.serve" in c for c in cycles(edges))


def unexplained_lazy_imports(root: Path = REPO) -> list[str]:
    """Imports inside functions without their reason: a ``# lazy: …`` comment on the line or just above it (the
    ``AppConfig.ready`` registration, Django's place for start-up wiring, says so in its own comment)."""
    found = []
    for module, path in sorted(product_modules(root).items()):
        lines = path.read_text().splitlines()
        for fn in ast.walk(ast.parse("\n".join(lines))):
            if not isinstance(fn, ast.FunctionDef | ast.AsyncFunctionDef):
                continue
            for node in ast.walk(fn):
                if not isinstance(node, ast.Import | ast.ImportFrom):
                    continue
                context = lines[max(0, node.lineno - 6):node.end_lineno]  # the comment may head a block
                if not any("# lazy:" in line for line in context) and not (
                        fn.name == "ready" and "registers" in lines[node.lineno - 1]):
                    found.append(f"{module}:{node.lineno} {lines[node.lineno - 1].strip()}")
    return found


def test_imports_inside_functions_say_why():
    assert unexplained_lazy_imports() == []


def test_a_planted_unexplained_lazy_import_is_caught(tmp_path):
    root = _copy_product(tmp_path)
    knn = root / "pairing" / "knn.py"
    knn.write_text(knn.read_text() + "\n\ndef _planted():\n    import json\n    return json\n")
    assert unexplained_lazy_imports(root) == [f"pairing.knn:{len(knn.read_text().splitlines()) - 1} import json"]


# -- collection ownership --------------------------------------------------------------------------------------

def declared_collections(root: Path = REPO) -> dict[str, str]:
    """Collection name → owning package, from every ``<package>/collections.py``."""
    owners = {}
    for package in PACKAGES:
        path = root / package / "collections.py"
        if not path.exists():
            continue
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant) and isinstance(
                    node.value.value, str):
                owners[node.value.value] = package
    return owners


def ownership_violations(root: Path = REPO) -> list[str]:
    """Modules that name another package's collection: by its string, or through that package's ``collections``."""
    owners = declared_collections(root)
    modules = product_modules(root)
    problems = []
    for module, path in sorted(modules.items()):
        package = module.split(".")[0]
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                if node.module.endswith(".collections") and node.module.split(".")[0] != package:
                    problems.append(f"{module}:{node.lineno} imports {node.module}")
                if node.module in PACKAGES and node.module != package and any(
                        a.name == "collections" for a in node.names):
                    problems.append(f"{module}:{node.lineno} imports {node.module}.collections")
            if isinstance(node, ast.Subscript) and _is_database(node.value) and isinstance(node.slice, ast.Constant):
                name = node.slice.value
                if isinstance(name, str) and owners.get(name, package) != package:
                    problems.append(f"{module}:{node.lineno} touches {name!r}, owned by {owners[name]}")
    return problems


def _is_database(node: ast.expr) -> bool:
    """``db``, ``self.db``, ``get_db()``, ``client.db()``: what a collection is taken from by name."""
    if isinstance(node, ast.Call):
        node = node.func
    name = node.id if isinstance(node, ast.Name) else node.attr if isinstance(node, ast.Attribute) else ""
    return name in ("db", "get_db", "database")


def test_every_collection_is_touched_by_its_owner_only():
    owners = declared_collections()
    assert {"playlists", "events", "models", "picks", "buddies", "job_runs"} <= set(owners)
    assert ownership_violations() == []


def test_a_planted_foreign_collection_read_is_caught(tmp_path):
    root = _copy_product(tmp_path)
    assign = root / "ranker" / "experiments" / "assign.py"
    assign.write_text(assign.read_text() + "\n\ndef _planted(db):\n    return db['events'].find_one()\n")
    dashboard = root / "dashboard" / "app.py"
    dashboard.write_text(dashboard.read_text() + "\nfrom pairing import collections as _c  # noqa\n")
    problems = ownership_violations(root)
    assert any("ranker.experiments.assign" in p and "'events', owned by ingestion" in p for p in problems)
    assert any(p.startswith("dashboard.app:") and "pairing.collections" in p for p in problems)


# -- the README's ownership table ------------------------------------------------------------------------------

def readme_table_rows(text: str) -> dict[str, str]:
    """Package → the text of its row in the README's "Packages and what they own" table."""
    rows = {}
    for line in text.splitlines():
        match = re.match(r"\|\s*`(\w+)/`\s*\|(.*)\|\s*$", line)
        if match:
            rows[match.group(1)] = match.group(2)
    return rows


def missing_from_readme(text: str) -> list[str]:
    rows = readme_table_rows(text)
    return [f"{name} ({package})" for name, package in sorted(declared_collections().items())
            if f"`{name}`" not in rows.get(package, "")]


def test_the_readme_ownership_table_names_every_collection():
    assert missing_from_readme((REPO / "README.md").read_text()) == []


def test_a_collection_left_out_of_the_readme_is_caught():
    text = (REPO / "README.md").read_text().replace("`picks_state`", "`picks-state-renamed`")
    assert missing_from_readme(text) == ["picks_state (ranker)"]


@pytest.mark.parametrize("module", ["ranker.recommenders.bpr", "pairing.knn", "ingestion.mpd"])
def test_the_layers_of_the_doc_are_the_layers_of_the_test(module):
    """docs/ARCHITECTURE.md lists the same layers, bottom to top, with each module's prefix."""
    doc = (REPO / "docs" / "ARCHITECTURE.md").read_text()
    order = [doc.find(f"**{name}**") for name, _ in LAYERS]
    assert all(i >= 0 for i in order) and order == sorted(order), order
    assert f"`{module.rsplit('.', 1)[0]}" in doc
