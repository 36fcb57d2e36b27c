"""The house's rule, checked: a module imports only from its own layer or the layers below it
(CONTRIBUTING.md lists them), so the import graph has no cycle between folders and no upward edge,
and no module re-exports another's names."""
from __future__ import annotations

import ast
import glob
import os

from helpers import ROOT

# lowest first; a module may import from its own layer and every layer before it
LAYERS = [
    ["plumbing"],
    ["devrev_api"],
    ["devrev_client"],
    ["backup"],
    ["contacts"],
    ["devrev_sandbox"],
    ["runs"],
    ["backup_checks", "operator_view"],
    ["merging"],
    ["restoring"],
    ["merge_contacts", "restore_contacts", "find_duplicates", "create_test_sample", "verify_backups", "approve_plan"],
]
RANK = {name: n for n, layer in enumerate(LAYERS) for name in layer}


def _modules() -> dict[str, str]:
    """Top-level name -> every .py path under it (the tool's code, not tests, bench or tools)."""
    found = {}
    for path in glob.glob(os.path.join(ROOT, "*.py")) + glob.glob(os.path.join(ROOT, "*", "**", "*.py"),
                                                                  recursive=True):
        rel = os.path.relpath(path, ROOT)
        top = rel.split(os.sep)[0].removesuffix(".py")
        if top in RANK:
            found.setdefault(top, []).append(path)
    return found


def _imports(path: str) -> set[str]:
    with open(path, encoding="utf-8") as fh:
        tree = ast.parse(fh.read())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return {n for n in names if n in RANK}


def test_every_folder_and_top_level_module_has_a_layer():
    tops = {os.path.basename(p)[:-3] for p in glob.glob(os.path.join(ROOT, "*.py"))}
    tops |= {os.path.basename(os.path.dirname(p)) for p in glob.glob(os.path.join(ROOT, "*", "__init__.py"))}
    assert tops - {"tests"} == set(RANK)


def test_no_module_imports_from_a_layer_above_its_own():
    upward = [f"{os.path.relpath(path, ROOT)} imports {name}" for top, paths in _modules().items()
              for path in paths for name in _imports(path) if RANK[name] > RANK[top]]
    assert not upward


def test_no_module_is_a_re_export_face():
    """`# noqa: F401` on an import means a name kept only to be imported from here."""
    faces = [os.path.relpath(path, ROOT) for paths in _modules().values() for path in paths
             if "noqa: F401" in open(path, encoding="utf-8").read()]
    assert not faces


def _defined(path: str) -> set[str]:
    """The names a module defines itself (not the ones it imports)."""
    with open(path, encoding="utf-8") as fh:
        tree = ast.parse(fh.read())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and node in tree.body:
            names.add(node.name)
        elif isinstance(node, (ast.Assign, ast.AnnAssign)) and node in tree.body:
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names |= {n.id for t in targets for n in ast.walk(t) if isinstance(n, ast.Name)}
    return names


def _module_path(dotted: str) -> str | None:
    base = os.path.join(ROOT, *dotted.split("."))
    return base + ".py" if os.path.exists(base + ".py") else None


def test_every_module_attribute_used_is_defined_in_that_module():
    """`devrev_client.RunInterrupted` would reach a name through a module that only imports it:
    a second import path. Checked in the tool and the benches (tests patch a name where it is
    used, `monkeypatch.setattr(engine, "write_backup", ...)`, which is that idiom's point)."""
    paths = [p for p in glob.glob(os.path.join(ROOT, "**", "*.py"), recursive=True)
             if not os.path.relpath(p, ROOT).startswith((".venv", "build", "tests"))]
    found = []
    for path in paths:
        with open(path, encoding="utf-8") as fh:
            tree = ast.parse(fh.read())
        bound: dict[str, str] = {}
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                bound.update({(a.asname or a.name): a.name for a in node.names if a.asname or "." not in a.name})
                bound.update({a.name: a.name for a in node.names if "." in a.name and not a.asname})
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                bound.update({(a.asname or a.name): f"{node.module}.{a.name}" for a in node.names})
        for node in ast.walk(tree):
            if not isinstance(node, ast.Attribute):
                continue
            dotted = ast.unparse(node.value)
            module = bound.get(dotted) or (dotted if dotted in bound.values() else None)
            target = _module_path(module) if module else None
            if target is None or _module_path(f"{module}.{node.attr}") is not None:
                continue
            if node.attr not in _defined(target) and not node.attr.startswith("__"):
                found.append(f"{os.path.relpath(path, ROOT)}:{node.lineno}: {dotted}.{node.attr}")
    assert not sorted(set(found))
