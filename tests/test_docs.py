"""Every cross-reference in fusion's docstrings points at something that exists.

A docstring names other code two ways: a Sphinx role (``:func:`fusion.x.y```,
``:mod:`.base```, ``:meth:`predict```) or a dotted name in backticks
(````fusion.x.y````). Both go stale silently when code moves, and a reader then looks
for a module that is not there. The names are resolved from the source (``ast``),
without importing, so the check is fast and needs none of the optional extras; a name
bound by a module-level ``__getattr__`` (``fusion``'s lazy exports) is looked up by
importing that module, and skipped when the import needs an extra that is absent.
"""

from __future__ import annotations

import ast
import importlib
import re
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

import pytest

import fusion

PACKAGE = Path(fusion.__file__).resolve().parent
# :role:`target`, :role:`~target`, :role:`text <target>`.
ROLE = re.compile(r":(?:mod|func|class|meth|attr|data|exc|obj):`(?:[^`<]*<)?~?([\w.]+)>?`")
# A dotted fusion name inside a backtick span (``fusion.x.y``, ``python -m fusion.train``).
SPAN = re.compile(r"`{1,2}([^`]+)`{1,2}")
DOTTED = re.compile(r"(?<![\w./-])(fusion(?:\.\w+)+)")


def _data_packages() -> set[str]:
    """Packages installed from elsewhere (``fusion.schemas`` is ``data/schema``)."""
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        import tomli as tomllib

    project = tomllib.loads((PACKAGE.parent / "pyproject.toml").read_text(encoding="utf-8"))
    return set(project["tool"]["setuptools"]["package-dir"]) - {"fusion"}


DATA_PACKAGES = _data_packages()


def module_file(name: str) -> Path | None:
    """The source of module ``name`` (dotted, under ``fusion``), or None."""
    parts = name.split(".")
    if parts[0] != "fusion":
        return None
    base = PACKAGE.joinpath(*parts[1:])
    for path in (base.with_suffix(".py"), base / "__init__.py"):
        if path.is_file():
            return path
    return None


def module_name(path: Path) -> str:
    rel = path.relative_to(PACKAGE.parent).with_suffix("")
    parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
    return ".".join(parts)


@dataclass
class Scope:
    """The names a module or a class body binds: definitions (to their nodes, so a
    class can be entered) and imports (to the dotted name they stand for)."""

    defined: dict[str, ast.AST | None] = field(default_factory=dict)
    imported: dict[str, str] = field(default_factory=dict)
    bases: list[str] = field(default_factory=list)
    lazy: bool = False  # a module-level __getattr__ binds names the source does not show


def _targets(node: ast.AST) -> list[str]:
    targets = node.targets if isinstance(node, ast.Assign) else [node.target]
    names = []
    for t in targets:
        for n in ast.walk(t):
            if isinstance(n, ast.Name):
                names.append(n.id)
    return names


def scope_of(body: list[ast.stmt], module: str, is_package: bool) -> Scope:
    scope = Scope()
    for node in body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            scope.defined[node.name] = node
            scope.lazy |= node.name == "__getattr__"
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            scope.defined.update(dict.fromkeys(_targets(node)))
        elif isinstance(node, ast.Import):
            for a in node.names:
                scope.imported[a.asname or a.name.split(".")[0]] = a.name if a.asname else a.name.split(".")[0]
        elif isinstance(node, ast.ImportFrom):
            source = _absolute(node, module, is_package)
            for a in node.names:
                scope.imported[a.asname or a.name] = f"{source}.{a.name}"
        elif isinstance(node, (ast.If, ast.Try)):  # TYPE_CHECKING imports, fallbacks
            inner = scope_of([*node.body, *getattr(node, "orelse", [])], module, is_package)
            scope.defined.update(inner.defined)
            scope.imported.update(inner.imported)
    if scope.lazy:
        scope.imported.update(_lazy_exports(body))
    return scope


def _lazy_exports(body: list[ast.stmt]) -> dict[str, str]:
    """What a lazy ``__getattr__`` serves, read from its tables (``{"Config":
    "fusion.config"}``: the name in that module; ``{"synthetic": "fusion.data.synthetic"}``:
    the module itself), so that citing ``fusion.Config`` imports nothing."""
    exports = {}
    for node in body:
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Dict):
            for key, value in zip(node.value.keys, node.value.values, strict=True):
                if isinstance(key, ast.Constant) and isinstance(value, ast.Constant) and isinstance(value.value, str):
                    module = value.value
                    exports[key.value] = module if module.endswith(f".{key.value}") else f"{module}.{key.value}"
    return exports


def _absolute(node: ast.ImportFrom, module: str, is_package: bool) -> str:
    if not node.level:
        return node.module or ""
    parts = module.split(".")
    keep = len(parts) - node.level + (1 if is_package else 0)
    return ".".join([*parts[:keep], *([node.module] if node.module else [])])


@cache
def module_scope(name: str) -> Scope | None:
    path = module_file(name)
    if path is None:
        return None
    return scope_of(parse(path).body, name, path.name == "__init__.py")


@cache
def parse(path: Path) -> ast.Module:
    return ast.parse(path.read_text(encoding="utf-8"))


def class_scope(node: ast.ClassDef, module: str) -> Scope:
    """A class body's names, its instances' ``self.x`` attributes and its bases."""
    scope = scope_of(node.body, module, False)
    for n in ast.walk(node):
        if isinstance(n, ast.Attribute) and isinstance(n.ctx, ast.Store) and ast.unparse(n.value) in ("self", "cls"):
            scope.defined.setdefault(n.attr)
    scope.bases = [ast.unparse(b) for b in node.bases]
    return scope


class Unresolved(Exception):
    pass


class NeedsExtra(Exception):
    pass


def resolve(name: str, depth: int = 0) -> None:
    """Raise :class:`Unresolved` unless the dotted ``name`` exists."""
    if depth > 10:
        raise Unresolved(name)
    if any(name == p or name.startswith(p + ".") for p in DATA_PACKAGES):
        return  # a folder of data files installed as a package
    parts = name.split(".")
    for cut in range(len(parts), 0, -1):
        module = ".".join(parts[:cut])
        if module_file(module) is not None:
            return resolve_in(module, module_scope(module), parts[cut:], depth)
    if parts[0] == "fusion":
        raise Unresolved(name)
    # Outside fusion (numpy, torch, the standard library): not this test's business.


def resolve_in(module: str, scope: Scope, rest: list[str], depth: int) -> None:
    if not rest:
        return
    head, tail = rest[0], rest[1:]
    if head in scope.imported:
        return resolve(".".join([scope.imported[head], *tail]), depth + 1)
    if head in scope.defined:
        node = scope.defined[head]
        if not tail:
            return
        if isinstance(node, ast.ClassDef):
            inner = class_scope(node, module)
            try:
                return resolve_in(module, inner, tail, depth + 1)
            except Unresolved:
                for base in inner.bases:  # inherited (a base in this module or imported)
                    try:
                        return resolve_in(module, scope, [*base.split("."), *tail], depth + 1)
                    except Unresolved:
                        pass
                raise
        return  # an attribute of a value or a function: not resolvable from the source
    if scope.lazy:
        return _by_import(module, rest)
    raise Unresolved(".".join([module, *rest]))


def _by_import(module: str, rest: list[str]) -> None:
    try:
        value = importlib.import_module(module)
    except ModuleNotFoundError as err:
        if not (err.name or "").startswith("fusion"):
            raise NeedsExtra(err.name) from None
        raise
    for part in rest:
        if not hasattr(value, part):
            raise Unresolved(".".join([module, *rest]))
        value = getattr(value, part)


@dataclass
class Docstring:
    module: str
    path: Path
    line: int
    text: str
    cls: str | None  # the class a method's or a class's docstring belongs to


def docstrings() -> list[Docstring]:
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        name = module_name(path)
        found.extend(_docstrings(parse(path), name, path, None))
    return found


def _docstrings(node: ast.AST, module: str, path: Path, cls: str | None) -> list[Docstring]:
    found = []
    for child in ast.iter_child_nodes(node):
        inner = child.name if isinstance(child, ast.ClassDef) else cls
        if isinstance(child, ast.Expr) and isinstance(child.value, ast.Constant) and isinstance(child.value.value, str):
            found.append(Docstring(module, path, child.lineno, child.value.value, cls))
        found.extend(_docstrings(child, module, path, inner))
    return found


def references(doc: Docstring) -> list[str]:
    """The dotted names ``doc`` cites, qualified where the docstring's place says how."""
    names = []
    for target in ROLE.findall(doc.text):
        names.append(_qualify(target, doc))
    for span in SPAN.findall(doc.text):
        names.extend(DOTTED.findall(span))
    return sorted(set(names))


def _qualify(target: str, doc: Docstring) -> str:
    """A role's target as Sphinx looks it up: ``.x`` relative to the package, a bare
    name in the enclosing class first, then in the module."""
    if target.startswith("fusion."):
        return target
    if target.startswith("."):
        package = doc.module if doc.path.name == "__init__.py" else doc.module.rpartition(".")[0]
        candidate = package + target
        return candidate if _exists(candidate) else doc.module + target
    if doc.cls and _exists(f"{doc.module}.{doc.cls}.{target}"):
        return f"{doc.module}.{doc.cls}.{target}"
    head = target.split(".")[0]
    scope = module_scope(doc.module)
    if "." in target and head.islower() and head not in scope.defined and head not in scope.imported:
        return target  # another package's name, in full (matplotlib.figure.Figure)
    return f"{doc.module}.{target}"


def _exists(name: str) -> bool:
    try:
        resolve(name)
    except (Unresolved, NeedsExtra):
        return False
    return True


# References in modules another branch of issue 22 rewrites (the training loop's);
# they resolve once that branch is merged, and then this set should be emptied.
KNOWN: set[tuple[str, str]] = set()  # (module, reference) pairs allowed to be broken: none


def test_every_docstring_cross_reference_resolves():
    broken, checked = [], 0
    for doc in docstrings():
        for name in references(doc):
            checked += 1
            try:
                resolve(name)
            except NeedsExtra:  # cited from a module that needs an extra this install lacks
                continue
            except Unresolved:
                if (doc.module, name) not in KNOWN:
                    broken.append(f"{doc.path.relative_to(PACKAGE.parent)}:{doc.line}: {name}")
    assert checked > 50, "the reference scan found almost nothing: is the pattern still right?"
    assert not broken, "docstring references that do not resolve:\n" + "\n".join(broken)


@pytest.mark.parametrize(
    ("name", "exists"),
    [
        ("fusion.classifier.FusionClassifier.predict", True),
        ("fusion.classifier.FusionClassifier.classes_", True),  # set in fit
        ("fusion.FusionClassifier", True),  # fusion's lazy exports
        ("fusion.backends.base.Batch.from_dataset", True),
        ("fusion.nowhere", False),
        ("fusion.classifier.NoSuchThing", False),
        ("fusion.classifier.FusionClassifier.no_such_method", False),
    ],
)
def test_the_resolver_tells_real_names_from_stale_ones(name, exists):
    assert _exists(name) is exists


@pytest.mark.parametrize(
    ("module", "cls", "text", "cited"),
    [
        ("fusion.explain", None, "For one patient, :func:`explain` answers", {"fusion.explain.explain": False}),
        (
            "fusion.classifier",
            "FusionClassifier",
            "As :meth:`predict`.",
            {"fusion.classifier.FusionClassifier.predict": True},
        ),
        ("fusion.backends", None, "one protocol (:mod:`.base`)", {"fusion.backends.base": True}),
        ("fusion.train", None, "``python -m fusion.train --out X``", {"fusion.train": True}),
        ("fusion.x", None, ":func:`~fusion.model.inference_copy`", {"fusion.model.inference_copy": False}),
        ("fusion.eda.figures", None, ":class:`matplotlib.figure.Figure`", {"matplotlib.figure.Figure": True}),
    ],
)
def test_references_are_found_and_qualified_as_sphinx_reads_them(module, cls, text, cited):
    path = module_file(module) or PACKAGE / "__init__.py"
    found = references(Docstring(module, path, 1, text, cls))
    assert {name: _exists(name) for name in found} == cited
