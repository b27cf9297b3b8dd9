"""docs/performance.md upkeep: the machine description and one marked section per benchmark.

A section is everything between ``<!-- bench:NAME -->`` and ``<!-- /bench:NAME -->``;
rewriting one never touches another, so benchmarks can be run one at a time.
"""

from __future__ import annotations

import os
import platform
import re
from pathlib import Path

import numpy as np
import psycopg

__all__ = ["DOC", "cpu_caches", "machine_description", "spread", "write_machine", "write_section"]

DOC = Path(__file__).resolve().parents[1] / "docs" / "performance.md"

_HEADER = """# Performance

Measured by `make bench` (`python -m bench`), never by timed unit tests. Each benchmark
rewrites its own section below, between its `<!-- bench:NAME -->` markers, and every run
rewrites the machine description, read from the machine at run time. Client and database
servers run on the same machine, so they share its cores. Targets: DESIGN.md,
"Performance targets".
"""


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def cpu_caches() -> str:
    """Cache sizes of CPU 0 as the kernel reports them, e.g. ``L1d 32K, L1i 32K, L2 512K, L3 32768K``.

    Each level once, with how many CPUs share it when more than one does: a cache-poor machine
    of the same kind is the usual reason a memory-bound figure does not reproduce.
    """
    parts = []
    for index in sorted(Path("/sys/devices/system/cpu/cpu0/cache").glob("index*")):
        try:
            level = (index / "level").read_text().strip()
            kind = (index / "type").read_text().strip()
            size = (index / "size").read_text().strip()
            shared = (index / "shared_cpu_list").read_text().strip()
        except OSError:
            continue
        suffix = {"Data": "d", "Instruction": "i"}.get(kind, "")
        width = _cpu_count(shared)
        parts.append(f"L{level}{suffix} {size}" + (f" shared by {width} CPUs" if width > 1 else ""))
    return ", ".join(parts) or "unknown"


def _cpu_count(cpu_list: str) -> int:
    """Number of CPUs in a kernel CPU list such as ``0-1,4``."""
    n = 0
    for part in cpu_list.split(","):
        lo, _, hi = part.partition("-")
        if lo.strip():
            n += int(hi or lo) - int(lo) + 1
    return n


def spread(values: list[float] | tuple[float, ...], fmt: str = "{:,.0f}", unit: str = "") -> str:
    """``median (min–max, n runs)`` of repeated measurements: the run-to-run spread of a figure.

    ``fmt`` formats each number, ``unit`` follows each of them (e.g. ``" ms"``, ``"×"``).
    """
    if not values:
        return "n/a"
    ordered = sorted(values)
    n = len(ordered)
    mid = n // 2
    median = ordered[mid] if n % 2 else (ordered[mid - 1] + ordered[mid]) / 2
    if n == 1:
        return f"{fmt.format(median)}{unit} (1 run)"
    lo, hi = fmt.format(ordered[0]), fmt.format(ordered[-1])
    return f"{fmt.format(median)}{unit} ({lo}–{hi}{unit}, {n} runs)"


def _mem_gib() -> str:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return f"{int(line.split()[1]) / 2**20:.1f} GiB"
    except OSError:
        pass
    return "unknown"


def machine_description() -> str:
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    libpq = psycopg.pq.version()
    return "\n".join(
        [
            "## Machine",
            "",
            f"- CPU: {_cpu_model()}, {cpus} cores available (`nproc`), {_mem_gib()} RAM",
            f"- CPU caches (CPU 0): {cpu_caches()}",
            f"- OS: {platform.platform()}",
            f"- Python {platform.python_version()}, numpy {np.__version__}, "
            f"psycopg {psycopg.__version__} ({psycopg.pq.__impl__}, libpq {libpq // 10000}.{libpq % 100})",
            "- Database servers: listed with each benchmark's results",
        ]
    )


def write_section(name: str, body: str, path: Path = DOC) -> None:
    """Replace (or append) the ``name`` section of the performance document."""
    text = path.read_text(encoding="utf-8") if path.exists() else _HEADER
    start, end = f"<!-- bench:{name} -->", f"<!-- /bench:{name} -->"
    block = f"{start}\n{body.strip()}\n{end}"
    pattern = re.compile(re.escape(start) + r".*?" + re.escape(end), re.DOTALL)
    if pattern.search(text):
        text = pattern.sub(lambda _: block, text)
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")


def write_machine(path: Path = DOC) -> None:
    write_section("machine", machine_description(), path)
