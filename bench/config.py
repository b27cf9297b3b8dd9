"""Benchmark: ``hazardwatch check`` load time for a province-sized plant (10k, 30k, 100k tags).

``write_plant`` generates a plant the way a province writes one: a ``plant.yaml`` that
``!include``s one file per enterprise, each with an OPC UA server and a Modbus gateway,
hazard sources with units and equipment, analog tags with limits, GB/T 50493 gas detectors,
switches, rate and deviation alarms and 2oo3 interlocks. ``main()`` times what ``check``
does before it prints (load, validate, every cross-check, resolve, compile rules and
sources) and returns the markdown section for docs/performance.md.
"""

from __future__ import annotations

import gc
import os
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from bench.report import spread
from core.config import collector_paused, load_plant_located
from hazardwatch.compile_all import compile_checked

__all__ = [
    "TAGS_PER_ENTERPRISE",
    "TAGS_PER_EQUIPMENT",
    "Run",
    "check_once",
    "enterprise_yaml",
    "load_average",
    "main",
    "write_plant",
]

TAGS_PER_ENTERPRISE = 1000
TAGS_PER_EQUIPMENT = 10
EQUIPMENT_PER_HAZARD_SOURCE = 20
SIZES = {10_000: 5, 30_000: 3, 100_000: 3}  # tags -> runs
TARGET_S = 10.0  # 100,000 tags checked (issue 10)
REFERENCE = Path(__file__).resolve().parents[1] / "config" / "reference"

# One equipment's ten tags: (code prefix, YAML body lines after code/name/equipment).
# Analog sources alternate OPC UA nodes and Modbus FLOAT32 registers.
_EQUIPMENT_TAGS = (
    ("LT", ["kind: LEVEL", "unit: m", "range: [0, 10]", "limits: {ll: 0.6, l: 1.0, h: 8.2, hh: 8.6}"]),
    ("LT", ["kind: LEVEL", "unit: m", "range: [0, 10]", "limits: {ll: 0.6, l: 1.0, h: 8.2, hh: 8.6}"]),
    ("LT", ["kind: LEVEL", "unit: m", "range: [0, 10]", "limits: {ll: 0.6, l: 1.0, h: 8.2, hh: 8.6}"]),
    (
        "PT",
        [
            "kind: PRESSURE",
            "unit: MPa",
            "range: [0, 4]",
            "limits: {h: 3.2, hh: 3.6}",
            "rate: {max_per_min: 0.5}",
        ],
    ),
    (
        "TT",
        [
            "kind: TEMPERATURE",
            "unit: °C",
            "range: [-20, 200]",
            "limits: {h: 150, hh: 170}",
            "data_quality: {frozen_s: 3600}",
            "resolution: 0.1",
        ],
    ),
    ("FT", ["kind: FLOW", "unit: m³/h", "range: [0, 500]", "limits: {l: 20, h: 450}"]),
    ("AT", ["kind: GAS", 'unit: "%LEL"', "range: [0, 100]", "gas: {gas: CH4, detector: COMBUSTIBLE}"]),
    ("AT", ["kind: GAS", "unit: ppm", "range: [0, 500]", "gas: {gas: CO, detector: TOXIC}"]),
    ("XV", ["kind: DISCRETE", "state: {alarm_value: 0}"]),
    ("HS", ["kind: DISCRETE"]),
)


def enterprise_yaml(
    e: int,
    sources: Sequence[int],
    *,
    comment: str | None = None,
    county: str = "孝义市",
    grade: Callable[[int], int] = lambda h: 3,
    deviation: bool = True,
    in_service: Callable[[int, int], bool] | None = None,
) -> str:
    """Enterprise ``e``'s included file: an OPC UA server and a Modbus gateway, and hazard source
    ``h`` with ``sources[h]`` tags of ``_EQUIPMENT_TAGS`` (the last equipment maybe incomplete) and
    a 2oo3 interlock per complete equipment.

    One generator for every benchmark's plant (this one's, bench/api_data.py's and
    bench/grafana_data.py's), so they stay the same kind of plant; what differs is a parameter:
    ``grade(h)``, ``deviation`` (the second level transmitter's deviation alarm against the first),
    ``in_service(h, first tag of the equipment)`` (None: the line is left out, in service) and a
    leading ``# comment``.
    """
    code = f"E{e:03d}"
    out = [
        *([f"# {comment}"] if comment is not None else []),
        f"code: {code}",
        f"name: 生成企业{e}",
        f"county: {county}",
        "devices:",
        "  - protocol: OPCUA",
        f"    id: {code}-OPC",
        f"    endpoint: opc.tcp://127.0.0.1:4840/{code.lower()}",
        f"    namespace_uri: urn:bench:{code.lower()}",
        "  - protocol: MODBUS",
        f"    id: {code}-MB",
        "    host: 127.0.0.1",
        "    port: 502",
        "hazard_sources:",
    ]
    address = {"HOLDING": 0, "DISCRETE_INPUT": 0}
    for h, count in enumerate(sources):
        equipment = [f"V{h:02d}{k:03d}" for k in range(-(-count // TAGS_PER_EQUIPMENT))]
        out += [
            f"  - code: {code}-H{h:02d}",
            f"    name: 危险源{h}",
            "    kind: STORAGE",
            f"    grade: {grade(h)}",
            "    units:",
            f"      - code: {code}-U{h:02d}",
            "        name: 储罐区",
            "        equipment:",
            *(f"          - {{code: {eq}, name: 储罐{eq}}}" for eq in equipment),
            "    tags:",
        ]
        interlocks = []
        for i in range(count):
            eq = equipment[i // TAGS_PER_EQUIPMENT]
            prefix, body = _EQUIPMENT_TAGS[i % TAGS_PER_EQUIPMENT]
            tag = f"{prefix}-{i:04d}"
            if prefix in ("XV", "HS"):
                source = (
                    f"{{device: {code}-MB, table: DISCRETE_INPUT, address: {address['DISCRETE_INPUT']}, "
                    "type: BOOL}"
                )
                address["DISCRETE_INPUT"] += 1
            elif i % 2:
                source = (
                    f"{{device: {code}-MB, table: HOLDING, address: {address['HOLDING']}, type: FLOAT32}}"
                )
                address["HOLDING"] += 2
            else:
                source = f"{{device: {code}-OPC, node: s={eq}.{tag}}}"
            out += [
                f"      - code: {tag}",
                f"        name: {eq} {tag}",
                f"        equipment: {eq}",
                *(f"        {line}" for line in body),
                f"        source: {source}",
            ]
            if deviation and prefix == "LT" and i % TAGS_PER_EQUIPMENT == 1:
                out.append(f"        deviation: {{tag: {eq}.LT-{i - 1:04d}, max: 0.5}}")
            if i % TAGS_PER_EQUIPMENT == TAGS_PER_EQUIPMENT - 1:
                base = i - TAGS_PER_EQUIPMENT + 1
                service = (
                    [] if in_service is None else [f"        in_service: {str(in_service(h, base)).lower()}"]
                )
                interlocks += [
                    f"      - code: IL-{eq}",
                    f"        name: {eq} 液位低低联锁",
                    "        voting: 2oo3",
                    *service,
                    "        inputs:",
                    *(
                        f"          - {{tag: {eq}.LT-{base + k:04d}, op: '<=', value: 0.6, "
                        f"bypass: {eq}.HS-{i:04d}}}"
                        for k in range(3)
                    ),
                    f"        final_element: {{tag: {eq}.XV-{i - 1:04d}, safe_value: 0}}",
                ]
        if interlocks:
            out += ["    interlocks:", *interlocks]
    return "\n".join(out) + "\n"


def _enterprise(e: int, first: int, n_tags: int) -> str:
    """Enterprise ``e`` with tags ``first``.. of a province's ``n_tags``, in hazard sources of
    ``EQUIPMENT_PER_HAZARD_SOURCE`` equipment (the last one the rest)."""
    per_hs = TAGS_PER_EQUIPMENT * EQUIPMENT_PER_HAZARD_SOURCE
    sources = [min(per_hs, n_tags - start) for start in range(0, n_tags, per_hs)]
    return enterprise_yaml(
        e, sources, comment=f"generated: enterprise {e}, tags {first}..{first + n_tags - 1}"
    )


def load_average() -> str:
    """``0.52 / 0.61 / 0.70 on 8 CPUs``: the 1/5/15-minute load average as a run ends, which its
    figures are read against (clients and servers share the machine); one wording for every section."""
    return f"{' / '.join(f'{x:.2f}' for x in os.getloadavg())} on {os.cpu_count()} CPUs"


def write_plant(folder: Path, n_tags: int) -> Path:
    """``folder``/plant.yaml with ``n_tags`` tags, ``TAGS_PER_ENTERPRISE`` per included
    ``enterprises/ENNN.yaml``; returns the plant file. Every tag's key and file:line is
    deterministic, so a test can plant an error at a known place."""
    (folder / "enterprises").mkdir(parents=True, exist_ok=True)
    includes = []
    for e, first in enumerate(range(0, n_tags, TAGS_PER_ENTERPRISE)):
        name = f"E{e:03d}.yaml"
        text = _enterprise(e, first, min(TAGS_PER_ENTERPRISE, n_tags - first))
        (folder / "enterprises" / name).write_text(text, encoding="utf-8")
        includes.append(f"  - !include enterprises/{name}")
    plant = folder / "plant.yaml"
    plant.write_text(
        "\n".join([f"name: 生成的省级平台 {n_tags} 点", f"reference: {REFERENCE}", "enterprises:", *includes])
        + "\n",
        encoding="utf-8",
    )
    return plant


@dataclass
class Run:
    """One ``check`` of one plant, in seconds: the config load (YAML, validation, cross-checks,
    resolution: ``load_plant``), the compile ``check`` adds (rules, sources and read plans), and
    the baseline, libyaml's bare parse events of the same files."""

    load_s: float
    compile_s: float
    parse_s: float

    @property
    def total_s(self) -> float:
        return self.load_s + self.compile_s


def check_once(plant_file: Path) -> Run:
    """What ``hazardwatch check`` does before printing its summary, timed by phase."""
    start = time.perf_counter()
    with collector_paused(keep=True):  # as hazardwatch.cli_common.load_compiled_or_exit
        plant, source = load_plant_located(plant_file)
        loaded = time.perf_counter()
        built = compile_checked(plant, source)
        compiled = time.perf_counter()
    del plant, source, built  # freed after the clock stops, as a command's exit frees them
    gc.unfreeze()  # the next run starts from a collected heap, as a new process would
    gc.collect()
    parser: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    texts = [p.read_text(encoding="utf-8") for p in sorted(plant_file.parent.rglob("*.yaml"))]
    parse_start = time.perf_counter()
    for text in texts:
        for _ in yaml.parse(text, Loader=parser):
            pass
    return Run(loaded - start, compiled - loaded, time.perf_counter() - parse_start)


def main() -> str:
    results: dict[int, list[Run]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for n, runs in SIZES.items():
            plant_file = write_plant(Path(tmp) / str(n), n)
            results[n] = [check_once(plant_file) for _ in range(runs)]
            print(f"{n:,} tags: {spread([r.total_s for r in results[n]], '{:.1f}', ' s')}", flush=True)

    def per_10k(n: int, phase: str) -> str:
        return spread([getattr(r, phase) * 10_000 / n for r in results[n]], "{:.2f}", " s")

    def ratio(n: int) -> str:
        return spread([r.load_s / r.parse_s for r in results[n]], "{:.1f}", "×")

    totals = [r.total_s for r in results[max(SIZES)]]
    worst = max(totals)
    verdict = "meets" if worst <= TARGET_S else "misses"
    rows = [
        f"| {n:,} | {spread([r.total_s for r in results[n]], '{:.1f}', ' s')} | {per_10k(n, 'total_s')} "
        f"| {per_10k(n, 'load_s')} | {per_10k(n, 'compile_s')} | {per_10k(n, 'parse_s')} | {ratio(n)} |"
        for n in SIZES
    ]
    return "\n".join(
        [
            "## Configuration load (bench/config.py)",
            "",
            "`hazardwatch check` up to its summary, on generated plants: "
            f"{TAGS_PER_ENTERPRISE:,} tags per `!include`d enterprise file (OPC UA and Modbus sources, "
            "analog tags with limits, GB/T 50493 gas detectors, switches, rate and deviation alarms, "
            "2oo3 interlocks). Phases: **load** = `load_plant` (YAML with includes, validation, every "
            "cross-check, resolution); **compile** = what `check` adds (rule set, sources and read "
            "plans). The included enterprise files are read by "
            f"{min(len(os.sched_getaffinity(0)), 8)} worker processes (one per CPU, core/yaml_loader.py); "
            "everything else runs in the main process, each enterprise validated and resolved as soon as "
            "its file is read (while the workers read the others). Baseline in the same run: libyaml's bare parse "
            "events of the same files in one process, the floor any YAML config pays; load/parse is the "
            "ratio to it. Median (min–max, runs).",
            "",
            "| tags | check, total | total per 10k tags | load per 10k | compile per 10k "
            "| baseline parse per 10k | load / parse |",
            "|---|---|---|---|---|---|---|",
            *rows,
            "",
            f"Target (issue 10): 100,000 tags checked in ≤ {TARGET_S:g} s. Verdict: **{verdict}** "
            f"(slowest of {len(totals)} runs at {max(SIZES):,} tags: {worst:.1f} s; load average "
            f"{os.getloadavg()[0]:.1f} at the end on {os.cpu_count()} CPUs).",
        ]
    )
