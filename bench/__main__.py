"""``python -m bench [NAME ...]``: run the benchmarks (default: all of BENCHMARKS) in order.

Each module's ``main() -> str`` returns its markdown section; this harness writes it into
docs/performance.md between ``<!-- bench:NAME -->`` markers (NAME = module name without
``bench.``), after refreshing the machine description.
"""

from __future__ import annotations

import importlib
import sys

from bench.report import machine_description, write_machine, write_section

BENCHMARKS = [
    "bench.ingest",
    "bench.rules",
    "bench.simulators",
    "bench.collectors",
    "bench.config",
    "bench.alarms",
    "bench.notify",
    "bench.api",
    "bench.grafana",
]


def main(argv: list[str]) -> int:
    names = [n if n.startswith("bench.") else f"bench.{n}" for n in argv] or BENCHMARKS
    unknown = sorted(set(names) - set(BENCHMARKS))
    if unknown:
        print(f"unknown benchmark(s): {', '.join(unknown)}; known: {', '.join(BENCHMARKS)}", file=sys.stderr)
        return 2
    write_machine()
    print(machine_description(), flush=True)  # the reader of a run's output needs it too
    for name in names:
        print(f"== {name}", flush=True)
        section = importlib.import_module(name).main()
        write_section(name.removeprefix("bench."), section)
        print(section, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
