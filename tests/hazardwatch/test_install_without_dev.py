"""Issue 10 item 2: the project installed WITHOUT the dev extras runs, and no production module needs test code.

One fresh venv (plain ``python -m venv``: no system site-packages, so pytest cannot leak in) gets a
normal, non-editable ``pip install`` of a copy of this working tree — the real dependencies, no
``[dev]``. The copy holds only what the wheel is built from (pyproject, README, the packages listed
in pyproject), so neither a stale ``build/`` in the repo nor the repo on ``sys.path`` can hide a
missing file. Then, from a directory outside the repo:

- ``import pytest`` (and pytest_asyncio, hypothesis) fails in that venv: the check below is real;
- every module of every production package imports (the strongest guard: a test-only import
  anywhere in core ... hazardwatch fails here, not in the field);
- importing ``hazardwatch.run`` loads nothing from ``simulators``;
- ``hazardwatch --version``, ``hazardwatch check config/demo`` and ``hazardwatch run --help`` work,
  and ``hazardwatch run config/demo`` with no database gets past its imports to the clear
  "no database configured" refusal (exit 2) instead of a ModuleNotFoundError.

About 20 s on the 2-core machine (the pip install dominates); the phases' timings are printed.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
# The production packages (DESIGN.md); bench/ and tests/ are not installed.
PACKAGES = (
    "core",
    "storage",
    "collector",
    "rules",
    "alarms",
    "api",
    "dashboards",
    "simulators",
    "hazardwatch",
)
DEV_ONLY = ("pytest", "pytest_asyncio", "hypothesis", "_pytest")

# Run inside the venv: the console's files as installed (relative to the package's folder)
CONSOLE_PROBE = """
import pathlib, api
root = pathlib.Path(api.__file__).parent / "console_static"
print(" ".join(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()))
"""

# Run inside the venv: import every named module, report failures by name.
IMPORT_ALL = """
import importlib, sys, traceback
failures = []
for name in sys.argv[1:]:
    try:
        importlib.import_module(name)
    except BaseException:
        failures.append(name + ": " + traceback.format_exc(limit=-1).strip().splitlines()[-1])
print("\\n".join(failures))
sys.exit(1 if failures else 0)
"""


def _source_modules() -> list[str]:
    """Every module in the repo's production packages, from the files (so a package the wheel leaves out fails)."""
    names = []
    for package in PACKAGES:
        for path in sorted((REPO / package).rglob("*.py")):
            parts = path.relative_to(REPO).with_suffix("").parts
            names.append(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return names


def _env() -> dict[str, str]:
    """The caller's environment minus anything that would point the venv back at the repo or a database."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in {"PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "PIP_USER", "DATABASE_URL", "PYTHONSTARTUP"}
    }
    env["PYTHONNOUSERSITE"] = "1"
    return env


def _run(args: list[str | Path], cwd: Path, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(a) for a in args], cwd=cwd, env=_env(), capture_output=True, text=True, timeout=timeout
    )


def _ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, f"{result.args} -> {result.returncode}\n{result.stdout}\n{result.stderr}"
    return result.stdout


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, Path]]:
    """(venv bin directory, a working directory outside the repo holding a copy of config/)."""
    root = tmp_path_factory.mktemp("nodev")
    source = root / "src"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, source / name)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for package in PACKAGES:
        shutil.copytree(REPO / package, source / package, ignore=ignore)
    work = root / "work"
    shutil.copytree(REPO / "config", work / "config", ignore=ignore)  # demo and the ../reference it names

    started = time.perf_counter()
    _ok(_run([sys.executable, "-m", "venv", root / "venv"], cwd=root))
    venv_made = time.perf_counter()
    bin_dir = root / "venv" / "bin"
    _ok(_run([bin_dir / "python", "-m", "pip", "install", "--quiet", source], cwd=root, timeout=600))
    print(
        f"\nno-dev install: venv {venv_made - started:.1f} s, "
        f"pip install {time.perf_counter() - venv_made:.1f} s"
    )
    yield bin_dir, work


def test_dev_only_packages_are_absent(installed: tuple[Path, Path]) -> None:
    bin_dir, work = installed
    for module in DEV_ONLY:
        result = _run([bin_dir / "python", "-c", f"import {module}"], cwd=work)
        assert result.returncode != 0 and "ModuleNotFoundError" in result.stderr, (module, result.stderr)
    # The venv's hazardwatch is the installed copy, not the repo (which is not on sys.path from here).
    where = _ok(_run([bin_dir / "python", "-c", "import hazardwatch; print(hazardwatch.__file__)"], cwd=work))
    assert str(bin_dir.parent) in where and str(REPO) not in where, where


def test_every_production_module_imports_without_dev_extras(installed: tuple[Path, Path]) -> None:
    bin_dir, work = installed
    started = time.perf_counter()
    modules = _source_modules()
    assert "collector.modbus.execute" in modules  # subpackages included
    result = _run([bin_dir / "python", "-c", IMPORT_ALL, *modules], cwd=work)
    print(f"\nimported {len(modules)} production modules in {time.perf_counter() - started:.1f} s")
    assert result.returncode == 0, f"modules that need dev-only packages:\n{result.stdout}{result.stderr}"


def test_run_entry_point_does_not_load_the_simulators(installed: tuple[Path, Path]) -> None:
    bin_dir, work = installed
    forbidden = {"simulators", "tests", *DEV_ONLY}
    probe = (
        "import sys, hazardwatch.cli, hazardwatch.run\n"
        f"print(sorted(m for m in sys.modules if m.split('.')[0] in {forbidden!r}))"
    )
    assert _ok(_run([bin_dir / "python", "-c", probe], cwd=work)).strip() == "[]"


def test_cli_commands_without_dev_extras(installed: tuple[Path, Path]) -> None:
    bin_dir, work = installed
    hazardwatch = bin_dir / "hazardwatch"
    started = time.perf_counter()
    assert _ok(_run([hazardwatch, "--version"], cwd=work)).startswith("hazardwatch ")
    _ok(_run([hazardwatch, "check", "config/demo"], cwd=work))
    assert "--dsn" in _ok(_run([hazardwatch, "run", "--help"], cwd=work))
    # `run --help` stops before the command body; a real run reaches hazardwatch.run's imports and
    # then refuses cleanly for want of a database (exit 2, one line, no traceback).
    refused = _run(
        [hazardwatch, "run", "config/demo", "--duration", "0", "--data-dir", work / "var"], cwd=work
    )
    assert refused.returncode == 2, (refused.stdout, refused.stderr)
    assert "no database configured" in refused.stderr and "Traceback" not in refused.stderr, refused.stderr
    # the API: its commands, and the console's files inside the installed package (package data)
    for command in ("api", "users", "keys"):
        assert "Usage" in _ok(_run([hazardwatch, command, "--help"], cwd=work))
    console = _ok(_run([bin_dir / "python", "-c", CONSOLE_PROBE], cwd=work)).split()
    assert {"index.html", "app.js", "vendor/uPlot.iife.min.js"} <= set(console), console
    print(f"\neight CLI invocations in {time.perf_counter() - started:.1f} s")
