"""Modules of ``core`` import each other without a cycle, function-level imports included:
a cycle forces a lazy import, and a lazy import hides a type (``load_plant`` returned Any)."""

from __future__ import annotations

import graphlib

from tests.test_layering import ROOT, imports_of


def test_core_modules_import_each_other_without_a_cycle() -> None:
    graph: dict[str, set[str]] = {}
    for path in sorted((ROOT / "core").glob("*.py")):
        name = f"core.{path.stem}"
        graph[name] = {m for _, m in imports_of(path) if m.startswith("core.") and m != name}
    try:
        order = list(graphlib.TopologicalSorter(graph).static_order())
    except graphlib.CycleError as exc:
        raise AssertionError(f"import cycle in core: {' -> '.join(exc.args[1])}") from None
    assert order.index("core.yaml_loader") < order.index("core.plant_build") < order.index("core.config")
