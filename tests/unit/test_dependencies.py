"""Every package the code imports is declared in pyproject.toml, and every declared
runtime dependency is used.

Runtime code (storyloom, flows, tasks, deployments) may import only what
`[project].dependencies` declares; tests and benchmarks may also import the `dev` group.
A module is mapped to the distribution that installs it through the installed
distributions' own records (importlib.metadata), so `PIL` is pillow and `yaml` is PyYAML.
"""

from __future__ import annotations

import ast
import importlib.metadata
import re
import sys
import tomllib
from collections.abc import Iterable, Mapping
from functools import cache
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
RUNTIME_PACKAGES = ("storyloom", "flows", "tasks", "deployments")
DEV_PACKAGES = ("tests", "bench")
FIRST_PARTY = frozenset(RUNTIME_PACKAGES + DEV_PACKAGES)

# Declared runtime dependencies that no runtime module imports by name, and why they stay.
LOADED_INDIRECTLY: Mapping[str, str] = {
    "psycopg": "SQLAlchemy loads it by URL: postgresql+psycopg:// (storyloom/store/engine.py)",
    "uharfbuzz": "fpdf2 shapes the PDF's text with it (set_text_shaping, exports/pdf.py)",
}

_NAME = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)")


def normalise(name: str) -> str:
    """A distribution name as the package index compares them (PEP 503)."""
    return re.sub(r"[-_.]+", "-", name).lower()


def requirement_name(requirement: str) -> str:
    """`psycopg[binary]>=3.3,<4` -> `psycopg`."""
    match = _NAME.match(requirement)
    if match is None:
        raise ValueError(f"not a requirement: {requirement!r}")
    return normalise(match[1])


def imported_modules(source: str) -> set[str]:
    """The dotted names of every absolute import in source (relative ones are our own)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module)
    return found


def third_party(modules: Iterable[str]) -> set[str]:
    """The imports that are neither the standard library nor this project's own."""
    return {
        module
        for module in modules
        if (top := module.split(".")[0]) not in sys.stdlib_module_names and top not in FIRST_PARTY
    }


@cache
def _installed() -> Mapping[str, list[str]]:
    return importlib.metadata.packages_distributions()


def distributions_of(module: str) -> set[str]:
    """The distributions that install `module` (normalised); empty when none does.

    A namespace package (`google`) is shared: its distributions are narrowed to those that
    ship the imported subpackage (`google.genai` -> google-genai).
    """
    parts = module.split(".")
    candidates = _installed().get(parts[0], [])
    if len(candidates) > 1 and len(parts) > 1:
        prefix = f"{parts[0]}/{parts[1]}"
        shipping = [
            name
            for name in candidates
            if any(
                str(file).startswith((prefix + "/", prefix + "."))
                for file in importlib.metadata.files(name) or ()
            )
        ]
        candidates = shipping or candidates
    return {normalise(name) for name in candidates}


def undeclared(modules: Iterable[str], declared: Iterable[str]) -> dict[str, set[str]]:
    """Each import no declared distribution provides, with the distributions that do."""
    allowed = {normalise(name) for name in declared}
    return {
        module: providers
        for module in sorted(modules)
        if not (providers := distributions_of(module)) & allowed
    }


def _pyproject() -> dict[str, object]:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def runtime_dependencies() -> set[str]:
    project = _pyproject()["project"]
    assert isinstance(project, dict)
    return {requirement_name(r) for r in project["dependencies"]}


def dev_dependencies() -> set[str]:
    groups = _pyproject()["dependency-groups"]
    assert isinstance(groups, dict)
    return {requirement_name(r) for r in groups["dev"] if isinstance(r, str)}


def imports_under(*packages: str) -> dict[str, set[str]]:
    """Each third-party import under the packages, with the files that make it."""
    where: dict[str, set[str]] = {}
    for package in packages:
        for path in sorted((ROOT / package).rglob("*.py")):
            source = path.read_text(encoding="utf-8")
            for module in third_party(imported_modules(source)):
                where.setdefault(module, set()).add(str(path.relative_to(ROOT)))
    return where


def _report(missing: Mapping[str, set[str]], where: Mapping[str, set[str]]) -> str:
    return "\n".join(
        f"{module} (installed by {', '.join(sorted(dists)) or 'nothing'}) in "
        f"{', '.join(sorted(where[module]))}"
        for module, dists in missing.items()
    )


# --- the checks themselves can fail --------------------------------------------------------


def test_the_import_walk_sees_every_kind_of_import() -> None:
    source = (
        "from __future__ import annotations\n"
        "import json, httpx2\n"
        "import google.genai.types as t\n"
        "from PIL import Image\n"
        "from . import sibling\n"
        "from storyloom.models import Story\n"
        "def late():\n"
        "    import yaml\n"
    )
    assert third_party(imported_modules(source)) == {"httpx2", "google.genai.types", "PIL", "yaml"}


def test_an_import_nobody_declared_is_reported() -> None:
    assert undeclared({"httpx", "httpx2", "PIL"}, ["httpx", "Pillow"]) == {"httpx2": {"httpx2"}}
    assert undeclared({"google.genai"}, ["google-auth"]) == {"google.genai": {"google-genai"}}
    assert undeclared({"no_such_module_anywhere"}, ["httpx"]) == {"no_such_module_anywhere": set()}


def test_requirement_names_are_normalised() -> None:
    assert requirement_name("psycopg[binary]>=3.3.9,<4") == "psycopg"
    assert requirement_name("Pydantic_Settings>=2.16") == "pydantic-settings"
    assert requirement_name("espeakng.loader ; python_version >= '3.11'") == "espeakng-loader"


# --- the project -------------------------------------------------------------------------


def test_runtime_code_imports_only_declared_runtime_dependencies() -> None:
    where = imports_under(*RUNTIME_PACKAGES)
    missing = undeclared(where, runtime_dependencies())
    assert not missing, "declare in [project].dependencies:\n" + _report(missing, where)


def test_every_runtime_dependency_is_imported_by_runtime_code() -> None:
    used = {
        dist for module in imports_under(*RUNTIME_PACKAGES) for dist in distributions_of(module)
    }
    unused = runtime_dependencies() - used - set(LOADED_INDIRECTLY)
    assert not unused, (
        f"declared but never imported by runtime code: {sorted(unused)}; drop them, move "
        "them to the dev group, or say in LOADED_INDIRECTLY what loads them"
    )


def test_the_indirectly_loaded_are_declared_and_installed() -> None:
    for name in LOADED_INDIRECTLY:
        assert name in runtime_dependencies()
        importlib.metadata.distribution(name)  # raises when not installed


def test_tests_and_benchmarks_import_only_declared_dependencies() -> None:
    where = imports_under(*DEV_PACKAGES)
    missing = undeclared(where, runtime_dependencies() | dev_dependencies())
    assert not missing, "declare in [dependency-groups].dev:\n" + _report(missing, where)
