"""bench/report.py: the spread every figure is printed with, and the machine's caches."""

from __future__ import annotations

from bench.report import _cpu_count, cpu_caches, machine_description, spread


def test_spread_gives_median_and_range_of_the_runs() -> None:
    assert spread([3.0, 1.0, 2.0, 5.0, 4.0], "{:.1f}", " M") == "3.0 M (1.0–5.0 M, 5 runs)"
    assert spread([0.5, 0.6], "{:.2f}") == "0.55 (0.50–0.60, 2 runs)"
    assert spread([7.0]) == "7 (1 run)"
    assert spread([]) == "n/a"


def test_cpu_lists_are_counted() -> None:
    assert _cpu_count("0") == 1
    assert _cpu_count("0-1") == 2
    assert _cpu_count("0-3,8,10-11") == 7


def test_machine_description_names_the_caches() -> None:
    caches = cpu_caches()
    assert caches == "unknown" or caches.startswith("L1")
    assert f"CPU caches (CPU 0): {caches}" in machine_description()
