"""DESIGN.md's layering, checked on every import of every package, function-level ones included.

Dependencies point downward only: ``core`` ← ``storage``, ``rules``, ``alarms``, ``collector``,
``simulators`` ← ``api`` ← ``hazardwatch``. ``dashboards`` reads ``core`` and ``storage``;
``alarms`` may write through ``storage``. A piece two packages need moves down to ``core``;
this table changes only with DESIGN.md (or docs/architecture.md saying why).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# package -> the other packages of ours it may import
ALLOWED: dict[str, frozenset[str]] = {
    "core": frozenset(),
    "storage": frozenset({"core"}),
    "rules": frozenset({"core"}),
    "collector": frozenset({"core"}),
    "simulators": frozenset({"core"}),
    "alarms": frozenset({"core", "storage"}),
    "api": frozenset({"core", "storage", "alarms"}),
    "dashboards": frozenset({"core", "storage"}),
    "hazardwatch": frozenset(
        {"core", "storage", "rules", "alarms", "collector", "simulators", "api", "dashboards"}
    ),
}
OURS = frozenset(ALLOWED) | {"tests", "bench"}


def module_of(path: Path) -> list[str]:
    """Dotted module parts of a file under ROOT (a package's ``__init__`` is the package)."""
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return parts[:-1] if parts[-1] == "__init__" else parts


def imports_of(path: Path) -> list[tuple[int, str]]:
    return imports_in(path.read_text(encoding="utf-8"), path)


def imports_in(source: str, path: Path) -> list[tuple[int, str]]:
    """(line, absolute module) of every import in ``source`` (the text of ``path``), wherever it
    sits (functions, ``if TYPE_CHECKING:`` blocks, try/except); relative imports resolved
    against the file's package."""
    tree = ast.parse(source, filename=str(path))
    package = module_of(path) if path.name == "__init__.py" else module_of(path)[:-1]
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.extend((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level == 0:
                found.append((node.lineno, node.module or ""))
                continue
            if node.level > len(package):
                raise AssertionError(f"{path}:{node.lineno}: relative import beyond the top-level package")
            base = package[: len(package) - (node.level - 1)]
            found.append((node.lineno, ".".join([*base, *([node.module] if node.module else [])])))
    return sorted(found)


def violations(package: str) -> list[str]:
    bad = []
    for path in sorted((ROOT / package).rglob("*.py")):
        for line, module in imports_of(path):
            top = module.split(".")[0]
            if top in OURS and top != package and top not in ALLOWED[package]:
                bad.append(f"{path.relative_to(ROOT)}:{line} imports {module}")
    return bad


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_imports_point_downward_only(package: str) -> None:
    assert (ROOT / package / "__init__.py").is_file(), f"{package} is not a package"
    assert violations(package) == [], f"{package} may import only {sorted(ALLOWED[package])}"


def test_the_check_sees_function_level_relative_and_type_checking_imports() -> None:
    source = (
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    from rules.engine import RuleEngine\n"
        "def f():\n    import hazardwatch.runtime\n    from ..hub import Hub\n"
        "from . import plan\n"
    )
    found = [m for _, m in imports_in(source, ROOT / "collector" / "sub" / "mod.py")]
    assert found == ["typing", "rules.engine", "hazardwatch.runtime", "collector.hub", "collector.sub"]
    with pytest.raises(AssertionError, match="beyond the top-level package"):
        imports_in("from ... import x\n", ROOT / "collector" / "sub" / "mod.py")
