"""``hazardwatch rules | backtest``: the compiled rule set, and back-testing edited rules on history.

Mounted into the main CLI by ``register(app)``. Exit codes follow hazardwatch.cli: 0 success,
2 invalid configuration, rules file, CSV or usage, 1 any other failure (e.g. no historian).
History comes from ``storage.queries.raw_history`` or from a CSV in the simulators' replay
format (time, tag, value, quality).
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import typer

from core.clock import to_datetime
from core.conditions import Severity
from core.config import load_plant
from core.errors import ConfigError, HazardWatchError
from core.plant import Plant
from hazardwatch.cli_common import config_error_exit, parse_time
from rules.backtest import Backtest, backtest, batches_of
from rules.compile import compile_rules
from rules.overlay import load_candidate

__all__ = ["register"]


def rules(config: Path = typer.Argument(..., help="Plant YAML, or a folder holding plant.yaml.")) -> None:
    """List the compiled rules: key, severity, latched, description."""
    try:
        plant: Plant = load_plant(config)
    except ConfigError as exc:
        raise config_error_exit(exc, config) from None
    rs = compile_rules(plant)
    for i, key in enumerate(rs.keys):
        latched = " latched" if rs.latched[i] else ""
        typer.echo(f"{key}\t{Severity(int(rs.severity[i])).name}{latched}\t{rs.descriptions[i]}")
    typer.echo(f"{len(rs)} rules over {rs.n_tags} tags and {len(rs.interlocks)} interlocks")


def _history(plant: Plant, csv: Path | None, start: int, end: int) -> Iterable[tuple[int, str, float, int]]:
    if csv is not None:
        from core.registry import TagRegistry
        from simulators.replay import read_csv

        registry = TagRegistry.from_plant(plant)
        rec = read_csv(csv, registry)
        keep = (rec.ts >= start) & (rec.ts < end)
        keys = registry.keys
        return [
            (int(t), keys[int(i)], float(v), int(q))
            for t, i, v, q in zip(
                rec.ts[keep], rec.tag[keep], rec.value[keep], rec.quality[keep], strict=True
            )
        ]
    from storage.queries import raw_history

    return raw_history(plant, None, start, end)


def _print(result: Backtest, tags: int) -> None:
    a, b = result.totals
    typer.echo(
        f"{result.readings} readings {to_datetime(result.start_us).isoformat()} .. "
        f"{to_datetime(result.end_us).isoformat()}: current rules raised {a} alarm(s), candidate {b}"
    )
    typer.echo("\nper tag (current -> candidate):")
    for subject, ca, cb in result.by_subject()[:tags]:
        typer.echo(f"  {subject:<32} {ca:>6} -> {cb:<6} {cb - ca:+d}")
    typer.echo("\nper hour (UTC):")
    for hour, ca, cb in result.by_hour():
        typer.echo(f"  {to_datetime(hour).strftime('%Y-%m-%d %H:00')}  {ca:>6} -> {cb:<6} {cb - ca:+d}")
    changed = result.changed()
    if changed:
        typer.echo("\nchanged (tag, rule, hour: current -> candidate):")
        for r in changed:
            typer.echo(
                f"  {r.subject} {r.kind} {to_datetime(r.hour_us).strftime('%Y-%m-%d %H:00')}: {r.current} -> {r.candidate}"
            )


def backtest_cmd(
    config: Path = typer.Argument(..., help="Plant YAML, or a folder holding plant.yaml."),
    start: str = typer.Option(..., "--start", help="ISO 8601 UTC start (inclusive)."),
    end: str = typer.Option(..., "--end", help="ISO 8601 UTC end (exclusive)."),
    rules_file: Path | None = typer.Option(
        None,
        "--rules",
        help="Candidate rules: an overlay (tags: {KEY: {limits: ...}}) or a whole plant file.",
    ),
    csv: Path | None = typer.Option(None, "--csv", help="History from this CSV instead of the database."),
    batch_s: float = typer.Option(
        1.0,
        "--batch",
        min=0.001,
        help="Seconds of history read at a time; the result does not depend on it (history is "
        "evaluated second by second of sample time).",
    ),
    top: int = typer.Option(30, "--top", min=1, help="Tags to list, largest change first."),
) -> None:
    """Which alarms the (edited) rules would have raised on history, against the current rules."""
    lo, hi = parse_time(start, "--start"), parse_time(end, "--end")
    if hi <= lo:
        raise typer.BadParameter("--end must be after --start", param_hint="--end")
    try:
        plant: Plant = load_plant(config)
    except ConfigError as exc:
        raise config_error_exit(exc, config) from None
    try:
        candidate = load_candidate(config, rules_file) if rules_file is not None else plant
    except ConfigError as exc:
        raise config_error_exit(exc, rules_file) from None
    current_rules, candidate_rules = compile_rules(plant), compile_rules(candidate)
    try:
        rows = _history(plant, csv, lo, hi)
    except ConfigError as exc:
        raise config_error_exit(exc, csv) from None
    except HazardWatchError as exc:
        typer.echo(f"cannot read history: {exc}", err=True)
        raise typer.Exit(1) from None
    result = backtest(current_rules, candidate_rules, batches_of(rows, current_rules.tag_keys, batch_s))
    _print(result, top)


def register(app: typer.Typer) -> None:
    app.command("rules")(rules)
    app.command("backtest")(backtest_cmd)
