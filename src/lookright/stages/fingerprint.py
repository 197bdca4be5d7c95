"""The source files a stage runs, found from its imports, and their fingerprint.

Snakemake's code trigger sees a rule's own code, not the package it calls, so each rule takes
the fingerprint of its stage's source files as a param: editing a file the stage runs reruns
the stage, editing any other file does not. The files are found, not listed by hand: the
closure of a stage module's ``import`` statements (module-level and inside functions) within
``src/lookright``, plus the ``__init__.py`` of every package on the way (Python runs them).
A name imported from a package whose ``__init__`` loads it lazily (a ``_LAZY = {name:
module}`` table, read by :func:`lazy_exports`) counts as an import of that module. Other
imports by name at run time (``importlib.import_module`` of a string, e.g. the reward and
CLI registries) are not followed: a branch that uses such a module names it as an extra start
module (:func:`fingerprint`'s ``modules``), so only the branches that run it rerun.

Only the standard library is used: the Snakefile calls this at parse time.
"""

from __future__ import annotations

import ast
import hashlib
from collections.abc import Iterable
from functools import cache
from pathlib import Path

PACKAGE = "lookright"
ROOT = Path(__file__).resolve().parents[1]  # src/lookright


def module_file(module: str, root: Path = ROOT) -> Path | None:
    """``lookright.a.b`` -> ``<root>/a/b.py`` or ``<root>/a/b/__init__.py`` (None if absent)."""
    parts = module.split(".")
    if parts[0] != PACKAGE:
        return None
    base = root.joinpath(*parts[1:])
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _parents(module: str) -> list[str]:
    parts = module.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts))]


def _resolve(node: ast.ImportFrom, module: str, is_package: bool) -> str | None:
    if node.level == 0:
        return node.module
    package = module.split(".") if is_package else module.split(".")[:-1]
    base = package[: len(package) - node.level + 1]
    return ".".join([*base, node.module] if node.module else base)


def _is_type_checking(node: ast.AST) -> bool:
    test = node.test if isinstance(node, ast.If) else None
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _walk(tree: ast.AST):
    """Every node, except the bodies of ``if TYPE_CHECKING:`` (they never run)."""
    todo = [tree]
    while todo:
        node = todo.pop()
        yield node
        children = ast.iter_child_nodes(node)
        if _is_type_checking(node):
            children = iter(node.orelse)  # type: ignore[attr-defined]
        todo.extend(children)


@cache
def imported_modules(path: Path, module: str) -> frozenset[str]:
    """The ``lookright`` modules that ``path`` (module ``module``) imports anywhere in it
    (inside functions too; not under ``if TYPE_CHECKING:``)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    found: set[str] = set()
    is_package = path.name == "__init__.py"
    for node in _walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            target = _resolve(node, module, is_package)
            if target is None:
                continue
            found.add(target)
            found.update(f"{target}.{alias.name}" for alias in node.names)
    return frozenset(m for m in found if m == PACKAGE or m.startswith(f"{PACKAGE}."))


@cache
def lazy_exports(path: Path) -> dict[str, str]:
    """``{name: module}`` of a package ``__init__``'s ``_LAZY`` table (names it imports on first
    use through its module ``__getattr__``); empty when it has none."""
    for node in ast.parse(path.read_text(), filename=str(path)).body:
        if isinstance(node, ast.Assign | ast.AnnAssign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            if any(isinstance(t, ast.Name) and t.id == "_LAZY" for t in targets):
                assert node.value is not None
                return _literal_table(node.value, path)
    return {}


def _literal_table(value: ast.expr, path: Path) -> dict[str, str]:
    try:
        table = ast.literal_eval(value)
    except ValueError:  # a comprehension: {name: "module" for name in (...)}
        if not (isinstance(value, ast.DictComp) and isinstance(value.value, ast.Constant)):
            raise ValueError(f"{path}: _LAZY must be a literal table of names to modules") from None
        names = ast.literal_eval(value.generators[0].iter)
        table = dict.fromkeys(names, value.value.value)
    return {str(k): str(v) for k, v in table.items()}


def _lazy_module(name: str, root: Path) -> str | None:
    """The module that ``pkg.name`` loads when ``pkg`` exports ``name`` lazily."""
    package, _, attribute = name.rpartition(".")
    init = module_file(package, root) if package else None
    if init is None or init.name != "__init__.py":
        return None
    return lazy_exports(init).get(attribute)


def closure(modules: Iterable[str], root: Path = ROOT) -> dict[str, Path]:
    """``{module: file}`` of ``modules``, everything they import, and their packages."""
    seen: dict[str, Path] = {}
    todo = list(modules)
    while todo:
        module = todo.pop()
        if module in seen:
            continue
        path = module_file(module, root)
        if path is None:  # a name imported from a module (a function, a class)
            lazy = _lazy_module(module, root)
            if lazy is not None:
                todo.append(lazy)
            continue
        seen[module] = path
        todo += _parents(module)
        todo += imported_modules(path, module)
    return seen


def fingerprint(*modules: str, root: Path = ROOT) -> str:
    """SHA-256 (first 16 hex) over the paths and contents of :func:`closure` of ``modules``."""
    files = sorted(set(closure(modules, root).values()))
    if not files:
        raise ValueError(f"no source file found for {list(modules)} under {root}")
    digest = hashlib.sha256()
    for path in files:
        digest.update(str(path.relative_to(root)).encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]
