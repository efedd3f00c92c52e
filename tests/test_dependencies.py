"""Every package MinT imports is declared, in the install that imports it.

The bare `mint` install is the client; `mint[server]` adds the registry, projector,
controller, router and audit; `mint[serving]` the inference nodes (pyproject.toml). Each
group's modules are followed through their module-level imports of MinT's own modules
(what importing them runs), and every third-party package they import must be declared
in the group's install. Imports inside functions (loaded on first use, like the client's
`describe_base` loading torch) must be declared in some install. Conversely, each package
an install declares is imported by its group, so the lists hold nothing stale.
"""

from __future__ import annotations

import ast
import importlib.metadata
import re
import sys
import tomllib
from collections.abc import Iterable, Iterator, Mapping
from functools import cache
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
OWN = ("mint", "services", "streams")
# Every module of these packages (and the modules they import) belongs to the group.
GROUPS = {
    "client": ["mint.client", "mint.v1", "mint.cli_app"],  # and `mint`, the package above
    "server": [
        "services.registry",
        "services.controller",
        "services.router",
        "streams.projector",
        "mint.audit",
        "mint.backends",
        "mint.catalog",
    ],
    "serving": [
        "services.inference",
        "mint.serving",
        "mint.models",
        "mint.training",
        "streams.trainer",
        "mint.demo",
        "streams.evaluator",
    ],
}
INSTALLS = {"client": [], "server": ["server"], "serving": ["server", "serving"]}


def _normal(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _declared(extras: Iterable[str]) -> set[str]:
    """The distributions the core and `extras` declare (the project's own left out)."""
    listed = [*PROJECT["dependencies"]]
    for extra in extras:
        listed += PROJECT["optional-dependencies"][extra]
    names = {_normal(re.split(r"[\[<>=!~;\s]", r, maxsplit=1)[0]) for r in listed}
    return names - {_normal(PROJECT["name"])}


@cache
def _distributions() -> Mapping[str, list[str]]:
    return importlib.metadata.packages_distributions()


def _distribution(package: str) -> str:
    found = _distributions().get(package)
    assert found, f"{package!r} is imported but no installed distribution provides it"
    return _normal(found[0])


def _path(module: str) -> Path | None:
    base = REPO.joinpath(*module.split("."))
    for path in (base / "__init__.py", base.with_suffix(".py")):
        if path.exists():
            return path
    return None


def _modules_under(package: str) -> list[str]:
    path = _path(package)
    assert path is not None, f"no module {package}"
    if path.name != "__init__.py":
        return [package]
    return sorted(
        ".".join(p.relative_to(REPO).with_suffix("").parts).removesuffix(".__init__")
        for p in path.parent.rglob("*.py")
    )


def _imports(tree: ast.AST, module: str, eager: bool) -> Iterator[str]:
    """Absolute names the module imports: at module level (eager) or inside functions."""
    path = _path(module)
    package = module if path and path.name == "__init__.py" else module.rpartition(".")[0]

    def absolute(node: ast.ImportFrom) -> str:
        if not node.level:
            return node.module or ""
        parts = package.split(".")
        return ".".join([*parts[: len(parts) - node.level + 1], *filter(None, [node.module])])

    def walk(node: ast.AST, in_function: bool) -> Iterator[str]:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
                continue  # never runs
            nested = in_function or isinstance(
                child, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda
            )
            wanted = nested is not eager
            if isinstance(child, ast.Import) and wanted:
                yield from (alias.name for alias in child.names)
            elif isinstance(child, ast.ImportFrom) and wanted:
                base = absolute(child)
                yield base
                yield from (f"{base}.{alias.name}" for alias in child.names)
            yield from walk(child, nested)

    return walk(tree, False)


@cache
def _parsed(module: str) -> ast.Module:
    path = _path(module)
    assert path is not None
    return ast.parse(path.read_text(), str(path))


def _own_modules(names: Iterable[str]) -> set[str]:
    """MinT's modules that importing `names` runs: each one and the packages above it."""
    found = set()
    for name in names:
        parts = name.split(".")
        for end in range(1, len(parts) + 1):
            candidate = ".".join(parts[:end])
            if parts[0] in OWN and _path(candidate) is not None:
                found.add(candidate)
    return found


def closure(roots: Iterable[str]) -> set[str]:
    """`roots` and every MinT module they import at module level, transitively."""
    pending = [m for root in roots for m in _modules_under(root)]
    seen: set[str] = set()
    while pending:
        module = pending.pop()
        if module in seen:
            continue
        seen.add(module)
        pending += _own_modules([module, *_imports(_parsed(module), module, eager=True)])
    return seen


def third_party(modules: Iterable[str], eager: bool) -> dict[str, set[str]]:
    """Top-level third-party package -> the modules importing it."""
    found: dict[str, set[str]] = {}
    for module in modules:
        for name in _imports(_parsed(module), module, eager):
            top = name.split(".")[0]
            if top and top not in OWN and top not in sys.stdlib_module_names:
                found.setdefault(top, set()).add(module)
    return found


def _undeclared(imported: dict[str, set[str]], declared: set[str]) -> list[str]:
    return [
        f"{package} ({_distribution(package)}) in {sorted(modules)}"
        for package, modules in sorted(imported.items())
        # a namespace package (opentelemetry) comes from several: one declared is enough
        if not {_normal(d) for d in _distributions().get(package, [])} & declared
    ]


@pytest.mark.parametrize("group", GROUPS)
def test_every_module_level_import_is_declared_in_the_groups_install(group: str) -> None:
    imported = third_party(closure(GROUPS[group]), eager=True)
    undeclared = _undeclared(imported, _declared(INSTALLS[group]))
    assert not undeclared, f"imported by the {group} group but not in its install: {undeclared}"


def test_every_module_belongs_to_a_group() -> None:
    grouped = set().union(*(closure(roots) for roots in GROUPS.values()))
    every = {m for package in OWN for m in _modules_under(package)}
    assert every - grouped == set(), "add these modules' package to a group in this test"


def test_imports_inside_functions_are_declared_in_some_install() -> None:
    every = [m for package in OWN for m in _modules_under(package)]
    optional = _declared(["server", "serving", "otel"])
    undeclared = _undeclared(third_party(every, eager=False), optional)
    assert not undeclared, f"imported on first use but declared nowhere: {undeclared}"


@pytest.mark.parametrize(("group", "extra"), [("client", None), ("server", "server")])
def test_each_declared_package_is_imported_by_its_group(group: str, extra: str | None) -> None:
    modules = closure(GROUPS[group])
    imported = {*third_party(modules, eager=True), *third_party(modules, eager=False)}
    used = {_distribution(p) for p in imported}
    own = _declared([extra] if extra else []) - (_declared([]) if extra else set())
    assert own - used == set(), f"declared for {group} but never imported by it"


def test_serving_declares_what_only_the_nodes_import() -> None:
    server = _declared(["server"])
    modules = closure(GROUPS["serving"])
    imported = {_distribution(p) for p in third_party(modules, eager=True)}
    assert _declared(["server", "serving"]) - server == imported - server


def test_the_tests_tools_and_benchmarks_import_only_what_dev_installs() -> None:
    files = [p for d in ("tests", "bench", "deploy", "proto") for p in (REPO / d).rglob("*.py")]
    imported: dict[str, set[str]] = {}
    for path in files:
        module = ".".join(path.relative_to(REPO).with_suffix("").parts)
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
                names = [node.module]
            else:
                continue
            for top in {n.split(".")[0] for n in names}:
                local = (REPO / top).is_dir() or (REPO / f"{top}.py").exists()
                if not local and top not in sys.stdlib_module_names and top != "__future__":
                    imported.setdefault(top, set()).add(module)
    undeclared = _undeclared(imported, _declared(PROJECT["optional-dependencies"]))
    assert not undeclared, f"imported but installed by no extra: {undeclared}"
