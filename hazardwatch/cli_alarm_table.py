"""``hazardwatch alarms rationalization``: the master alarm table (ISA-18.2 §10, EEMUA 191: the
rationalized alarm database plants keep for audits): every alarm of the compiled config with its
settings and its cause, consequence, corrective action and allowed response time, as CSV or
markdown. Registered on ``alarms_app`` by hazardwatch.cli_alarms.
"""

from __future__ import annotations

import csv
import itertools
import math
import sys
from collections.abc import Iterable, Iterator
from enum import StrEnum
from pathlib import Path

import typer

from alarms.model import AlarmDef, Catalog
from alarms.rationale import defaults_for
from core.clock import US_PER_S
from core.conditions import LIMIT_KINDS, RuleKind
from core.errors import ConfigError
from hazardwatch.cli_common import config_error_exit, load_compiled_or_exit
from rules.ruleset import RuleSet

__all__ = ["COLUMNS", "TableFormat", "rationalization"]


class TableFormat(StrEnum):
    CSV = "csv"
    MARKDOWN = "markdown"


COLUMNS = (
    "key",
    "enterprise",
    "hazard_source",
    "subject",
    "name",
    "condition",
    "priority",
    "limit",
    "deadband",
    "on_delay_s",
    "off_delay_s",
    "latching",
    "cause",
    "consequence",
    "action",
    "response_s",
    "rationale_source",
)
# the kinds whose set and clear points differ by a deadband (the others: by what they measure)
_DEADBAND_KINDS = LIMIT_KINDS | {RuleKind.ROC}


def rationalization(
    config: Path = typer.Argument(..., help="Plant YAML, or a folder holding plant.yaml."),
    fmt: TableFormat = typer.Option(
        TableFormat.CSV, "--format", help="csv (UTF-8, with a header) or markdown."
    ),
    enterprise: str | None = typer.Option(
        None, "--enterprise", help="Only this enterprise's alarms (its code)."
    ),
) -> None:
    """The master alarm table: every alarm in rule order, then each interlock's SIF-disabled alarm.
    Rationale from the plant's rationalization: keys, else the reference folder's defaults."""
    plant, compiled = load_compiled_or_exit(config)
    codes = [e.code for e in plant.enterprises]
    if enterprise is not None and enterprise not in codes:
        raise typer.BadParameter(
            f"no enterprise {enterprise!r} (known: {', '.join(codes)})", param_hint="--enterprise"
        )
    try:
        defaults = defaults_for(config, plant)
    except ConfigError as exc:
        raise config_error_exit(exc, config) from None
    rules = compiled.engine.rules
    catalog = Catalog(plant, rules, defaults)
    alarms: Iterable[AlarmDef] = itertools.chain(catalog, catalog.sif_alarms())
    if enterprise is not None:
        alarms = (a for a in alarms if a.labels["enterprise"] == enterprise)
    rows = (_row(a, rules) for a in alarms)
    if fmt is TableFormat.CSV:
        writer = csv.writer(sys.stdout, lineterminator="\n")
        writer.writerow(COLUMNS)
        writer.writerows(rows)
    else:
        for line in _markdown(rows):
            typer.echo(line)


def _row(a: AlarmDef, rules: RuleSet) -> list[str]:
    settings = ["", "", "", ""] if a.rule < 0 else _settings(a, rules)
    r = a.rationale
    return [
        a.key,
        f"{a.labels['enterprise']} {a.place[0]}",
        f"{a.labels['hazard_source']} {a.place[1]}",
        a.subject,
        a.name,
        a.label,
        a.priority.value,
        *settings,
        "yes" if a.latching else "no",
        r.cause,
        r.consequence,
        r.action,
        "" if r.response_s is None else f"{r.response_s:g}",
        r.source,
    ]


def _settings(a: AlarmDef, rules: RuleSet) -> list[str]:
    """limit with unit, deadband, on-delay and off-delay (s) of a rule's alarm."""
    i = a.rule
    limit = float(rules.limit[i])
    unit = "h" if a.kind == RuleKind.BYPASS_OVERDUE else a.unit  # the approved bypass time
    shown = "" if math.isnan(limit) else (f"{limit:g} {unit}" if unit else f"{limit:g}")
    deadband = (
        abs(float(rules.set_at[i]) - float(rules.clear_at[i])) if a.kind in _DEADBAND_KINDS else math.nan
    )
    return [
        shown,
        "" if math.isnan(deadband) else f"{deadband:g}",
        f"{int(rules.on_us[i]) / US_PER_S:g}",
        f"{int(rules.off_us[i]) / US_PER_S:g}",
    ]


def _markdown(rows: Iterable[list[str]]) -> Iterator[str]:
    yield "| " + " | ".join(COLUMNS) + " |"
    yield "|" + "---|" * len(COLUMNS)
    for row in rows:
        yield "| " + " | ".join(c.replace("|", "\\|").replace("\n", " ") for c in row) + " |"
