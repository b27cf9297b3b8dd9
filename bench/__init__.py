"""HazardWatch benchmarks, run by ``make bench`` (``python -m bench``).

Each module in ``bench.__main__.BENCHMARKS`` has ``main() -> str`` returning its markdown
section; the harness writes it into docs/performance.md (see bench.report).
"""
