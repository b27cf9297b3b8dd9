"""Property (issue 9 item 2): every config ``hazardwatch check`` accepts compiles as ``run`` compiles it.

The demo plant (config/demo: plant.yaml and its enterprises/*.yaml includes) gets one to three
of its numeric or string leaves replaced by hostile values (NaN, ±inf, 1e308, huge integers,
values just past a protocol bound, empty, very long or non-ASCII text, malformed endpoints,
None), is written back with its include structure, and goes through the real ``check`` command.
Then either ``check`` refused it (exit code 2) and every error names ``file:line``, or ``check``
said OK and the runtime's own compile path — registry, rule engine, every source with its read
plan — builds without an exception (and without a warning: pytest turns warnings into errors).

Deterministic (derandomized, no example database) so that it cannot flake in ``make test``.
"""

from __future__ import annotations

import copy
import math
import re
import tempfile
from pathlib import Path
from typing import Any

import yaml
from hypothesis import HealthCheck, given, note, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from collector.factory import build_sources
from core.clock import SystemClock
from core.config import load_plant
from core.registry import TagRegistry
from hazardwatch.cli import app
from rules import RuleEngine

ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / "config" / "demo"
ENTERPRISES = ("enterprises/lhjh.yaml", "enterprises/lggt.yaml")
# Error lines: "<file>.yaml:<line> <path>: <message>" or "<file>.yaml:<line>: <message>".
ISSUE = re.compile(r"^\S+\.yaml:[1-9]\d*(?: \S+)?: \S")
SUMMARY = re.compile(r"^\d+ error\(s\) in ")

_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_DUMPER = getattr(yaml, "CSafeDumper", yaml.SafeDumper)
Path_ = tuple[str | int, ...]
Leaf = tuple[str, Path_, Any]  # (file, path in that file, original value)
Mutation = tuple[str, Path_, Any]  # (file, path in that file, new value)


def _documents() -> dict[str, Any]:
    docs: dict[str, Any] = {"plant.yaml": {"name": "HazardWatch 吕梁演示"}}
    for name in ENTERPRISES:
        docs[name] = yaml.load((DEMO / name).read_text(encoding="utf-8"), Loader=_LOADER)
    return docs


def _leaves(value: Any, file: str, at: Path_ = ()) -> list[Leaf]:
    if isinstance(value, dict):
        return [leaf for k, v in value.items() for leaf in _leaves(v, file, (*at, k))]
    if isinstance(value, list):
        return [leaf for i, v in enumerate(value) for leaf in _leaves(v, file, (*at, i))]
    return [(file, at, value)]


def _field(path: Path_) -> str:
    """The key a leaf sits under (``range`` for ``range[1]``)."""
    return next(str(p) for p in reversed(path) if isinstance(p, str))


def _by_field(leaves: list[Leaf]) -> list[list[Leaf]]:
    """Leaves grouped by key: each key is drawn equally often, however many tags carry it
    (otherwise a device setting like poll_interval_s is one leaf among a thousand)."""
    groups: dict[str, list[Leaf]] = {}
    for leaf in leaves:
        groups.setdefault(_field(leaf[1]), []).append(leaf)
    return [groups[k] for k in sorted(groups)]


DOCS = _documents()
ALL = [leaf for file, doc in DOCS.items() for leaf in _leaves(doc, file)]
NUMERIC = _by_field(
    [leaf for leaf in ALL if isinstance(leaf[2], int | float) and not isinstance(leaf[2], bool)]
)
STRINGS = _by_field([leaf for leaf in ALL if isinstance(leaf[2], str)])

# Optional settings the demo leaves at their defaults: inserted with a hostile value, so that
# the property reaches every number rules and sources compile from, not only the written ones.
# (container kind, key, template: the HOLE is replaced by the drawn value)
HOLE = object()
_INSERTIONS: list[tuple[str, str, Any]] = [
    *(("OPCUA", k, HOLE) for k in ("interval_s", "queue_size", "timeout_s")),
    ("OPCUA", "mode", "POLLING"),  # with interval_s below: polled tags get a stale time from it
    *(("MODBUS", k, HOLE) for k in ("poll_interval_s", "timeout_s", "retries", "pause_s", "unit_id")),
    *(("MODBUS", k, HOLE) for k in ("max_registers", "max_bits", "gap_tolerance")),
    *(("limits", k, HOLE) for k in ("deadband", "deadband_pct", "on_delay_s", "off_delay_s")),
    *(("tag", "data_quality", {k: HOLE}) for k in ("stale_s", "frozen_s", "range_margin_pct")),
    ("tag", "data_quality", {"frozen_s": 60, "frozen_band_pct": HOLE}),
    ("tag", "rate", {"max_per_min": HOLE}),
    ("tag", "rate", {"max_per_min": 1.0, "window_s": HOLE}),
    ("tag", "rate", {"max_per_min": 1.0, "on_delay_s": HOLE}),
    ("tag", "resolution", HOLE),
    *(("interlock", k, HOLE) for k in ("response_s", "max_bypass_h")),
]


def _containers() -> dict[str, list[tuple[str, Path_]]]:
    out: dict[str, list[tuple[str, Path_]]] = {
        "OPCUA": [],
        "MODBUS": [],
        "tag": [],
        "limits": [],
        "interlock": [],
    }
    for file in ENTERPRISES:
        doc = DOCS[file]
        for d, dev in enumerate(doc["devices"]):
            out[str(dev["protocol"]).upper()].append((file, ("devices", d)))
        for h, hs in enumerate(doc["hazard_sources"]):
            for t, tag in enumerate(hs.get("tags", [])):
                out["tag"].append((file, ("hazard_sources", h, "tags", t)))
                if isinstance(tag.get("limits"), dict):
                    out["limits"].append((file, ("hazard_sources", h, "tags", t, "limits")))
            for i in range(len(hs.get("interlocks", []))):
                out["interlock"].append((file, ("hazard_sources", h, "interlocks", i)))
    return out


CONTAINERS = _containers()

_HOSTILE_NUMBERS = [math.nan, math.inf, -math.inf, 1e308, -1e308, 1.7976931348623157e308, 5e-324, 0, 0.0]
_HOSTILE_NUMBERS += [
    -0.0,
    -1,
    -1e-9,
    1e-9,
    2**31,
    2**53 + 1,
    2**63,
    2**64,
    -(2**63) - 1,
    10**30,
    1e12,
    9.3e12,
]
_HOSTILE_NUMBERS += [65535, 65536, 125, 126, 255, 256, 2000, 2001, 86400, 86401, 3600 * 24 * 365 * 100]
_HOSTILE_TEXT: list[Any] = [
    "",
    " ",
    "é中文🚀",
    "x" * 5000,
    "opc.tcp://h:notaport/x",
    "opc.tcp://127.0.0.1:99999/x",
]
_HOSTILE_TEXT += [
    None,
    "nan",
    "inf",
    "-1e308",
    "1e308",
    "${HW_PROPERTY_UNSET}",
    "\t",
    "a\nb",
    "s=",
    "i=1" * 100,
]


@st.composite
def _number(draw: st.DrawFn, original: Any) -> Any:
    return draw(
        st.one_of(
            st.sampled_from(_HOSTILE_NUMBERS),
            st.sampled_from(_HOSTILE_NUMBERS),  # twice: the constants are where the crashes are
            st.floats(allow_nan=True, allow_infinity=True),
            st.integers(min_value=-(2**70), max_value=2**70),
            st.sampled_from([-1.0, 0.5, 1.000001, 2.0, 1e6, 1e300]).map(lambda k: original * k),
            st.sampled_from([None, "nan", "1e308", "-inf"]),  # text where a number belongs
        )
    )


def _fill(template: Any, value: Any) -> Any:
    if template is HOLE:
        return value
    if isinstance(template, dict):
        return {k: _fill(v, value) for k, v in template.items()}
    return template


@st.composite
def _mutation(draw: st.DrawFn) -> Mutation:
    what = draw(st.sampled_from(["number", "text", "insert"]))
    if what == "insert":
        kind, key, template = draw(st.sampled_from(_INSERTIONS))
        file, at = draw(st.sampled_from(CONTAINERS[kind]))
        return file, (*at, key), _fill(template, draw(_number(1.0)))
    if what == "number":
        file, path, original = draw(st.sampled_from(draw(st.sampled_from(NUMERIC))))
        return file, path, draw(_number(original))
    file, path, _ = draw(st.sampled_from(draw(st.sampled_from(STRINGS))))
    return file, path, draw(st.one_of(st.sampled_from(_HOSTILE_TEXT), st.text(max_size=12), _number(0)))


def _set(doc: Any, path: Path_, value: Any) -> None:
    for part in path[:-1]:
        doc = doc[part]
    doc[path[-1]] = value


def _write(folder: Path, mutations: list[Mutation]) -> None:
    docs = copy.deepcopy(DOCS)
    for file, path, value in mutations:
        _set(docs[file], path, value)
    (folder / "enterprises").mkdir(exist_ok=True)
    for name in ENTERPRISES:
        text = yaml.dump(docs[name], Dumper=_DUMPER, allow_unicode=True, sort_keys=False, width=1_000_000)
        (folder / name).write_text(text, encoding="utf-8")
    head = yaml.safe_dump(
        {"name": docs["plant.yaml"]["name"], "reference": str(ROOT / "config" / "reference")},
        allow_unicode=True,
        width=1_000_000,
    )
    # Each enterprise file is self-contained (devices, tags, interlocks), so only the ones a
    # mutation touched are included: half the work per example, the same coverage.
    touched = [name for name in ENTERPRISES if any(file == name for file, _, _ in mutations)]
    includes = "".join(f"  - !include {name}\n" for name in touched or ENTERPRISES[:1])
    (folder / "plant.yaml").write_text(f"{head}enterprises:\n{includes}", encoding="utf-8")


def _compile_like_run(folder: Path) -> None:
    """What Runtime.start builds from the plant (its own calls, not check's)."""
    plant = load_plant(folder)
    registry = TagRegistry.from_plant(plant)
    RuleEngine.from_plant(plant, registry)
    build_sources(plant, registry, SystemClock())


def test_unmutated_demo_passes_check_and_compiles() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        _write(Path(tmp), [])
        result = CliRunner().invoke(app, ["check", tmp], env={"COLUMNS": "200"})
        assert result.exit_code == 0, result.output
        assert "config OK" in result.output
        _compile_like_run(Path(tmp))
    # the property reaches the whole demo plant
    assert sum(map(len, NUMERIC)) > 300 and sum(map(len, STRINGS)) > 500 and len(_INSERTIONS) > 20


@settings(
    max_examples=100,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(mutations=st.lists(_mutation(), min_size=1, max_size=3))
def test_check_either_rejects_with_file_line_or_the_config_compiles(mutations: list[Mutation]) -> None:
    shown = "; ".join(f"{file}:{'.'.join(map(str, path))} = {value!r:.80}" for file, path, value in mutations)
    note(f"mutated: {shown}")
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        _write(folder, mutations)
        result = CliRunner().invoke(app, ["check", tmp], env={"COLUMNS": "200"})
        if result.exit_code == 0:
            try:
                _compile_like_run(folder)
            except Exception as exc:  # the invariant broken: report what was mutated
                raise AssertionError(f"check said OK but compiling failed ({shown}): {exc!r}") from exc
            return
        assert result.exit_code == 2, f"check crashed ({shown}): {result.output}\n{result.exception!r}"
        lines = result.output.splitlines()
        assert lines and SUMMARY.match(lines[-1]), f"({shown}) {result.output}"
        for line in lines[:-1]:
            assert ISSUE.match(line), f"error without file:line ({shown}): {line!r}"
            # The model's own checks name the cause; compile's fallback is a last line of defence.
            assert "cannot be compiled" not in line, f"only compiling caught it ({shown}): {line!r}"
