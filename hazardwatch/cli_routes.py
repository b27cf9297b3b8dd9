"""``hazardwatch routes test``: where an alarm with given labels goes, now and at each
escalation step: the matched routes, their receivers, targets and channels, grouping options,
and (with the plant's rosters.yaml) the people on duty, phones masked.

Mounted into the main CLI by ``register(app)``. Exit codes follow hazardwatch.cli: 0 success,
2 a bad routes file, plant or rosters file, an unknown label name or a malformed ``--label``.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from alarms.model import Priority
from alarms.roster import DeskLevel, Rosters
from alarms.routing import compile_routes, routes_file
from alarms.routing_model import LABELS, MatchedRoute, QuietHours, RouteTree, Target, TargetKind, gas_classes
from core.clock import from_datetime
from core.config import load_plant
from core.errors import ConfigError
from core.plant import Plant
from hazardwatch.cli_common import config_error_exit, parse_time

__all__ = ["register", "routes_app"]

routes_app = typer.Typer(
    help="Alarm notification routes (routes.yaml beside the plant).", no_args_is_help=True
)
_out = Console(width=160)


def _labels(given: list[str]) -> dict[str, str | None]:
    labels: dict[str, str | None] = {}
    for item in given:
        name, eq, value = item.partition("=")
        name = name.strip()
        if not eq or not name:
            typer.echo(f"--label {item!r}: write it as name=value", err=True)
            raise typer.Exit(2)
        if name not in LABELS:
            typer.echo(f"--label {item!r}: unknown label {name!r} (labels: {', '.join(LABELS)})", err=True)
            raise typer.Exit(2)
        labels[name] = value.strip()
    priority = labels.get("priority")
    if priority is not None and priority not in set(Priority):
        typer.echo(f"--label priority={priority}: one of {', '.join(Priority)}", err=True)
        raise typer.Exit(2)
    return labels


def _duration(seconds: int) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds and seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def _quiet(q: QuietHours | None) -> str:
    return "—" if q is None else f"{q.start:%H:%M}-{q.end:%H:%M} {q.timezone}"


def _people(
    target: Target, labels: Mapping[str, str | None], plant: Plant, rosters: Rosters, at_us: int
) -> str:
    """Who the target reaches at ``at_us`` (masked), from the rosters and the plant."""
    if target.kind == TargetKind.BAOBAO:
        hs = f"{labels.get('enterprise') or ''}.{labels.get('hazard_source') or ''}"
        try:
            trio = rosters.baobao(hs)
        except KeyError:
            return f"(no hazard source {hs})"
        return ", ".join(str(p) for p in trio if p.role in target.roles) or "(no 包保 in the plant)"
    if target.level is None:
        return target.address or ""
    enterprise = next((e for e in plant.enterprises if e.code == labels.get("enterprise")), None)
    subject = {
        DeskLevel.ENTERPRISE: labels.get("enterprise"),
        DeskLevel.COUNTY: labels.get("county") or (enterprise.county if enterprise else None),
        DeskLevel.CITY: enterprise.city if enterprise else None,
    }[target.level]
    desk = rosters.desk_of(target.level, subject or "")
    if desk is None:
        return f"(no {target.level.value} desk for {subject or '?'})"
    return ", ".join(f"{d.person} [{d.shift}]" for d in desk.on_duty(at_us)) or "(nobody on duty)"


def _print(
    tree: RouteTree,
    matched: list[MatchedRoute],
    labels: Mapping[str, str | None],
    at_us: int,
    who: tuple[Plant, Rosters] | None,
) -> None:
    routes = Table(title="matched routes", show_lines=True)
    for col in (
        "route",
        "matchers",
        "receiver",
        "group_wait",
        "group_interval",
        "repeat",
        "resolved",
        "quiet hours",
    ):
        routes.add_column(col)
    for m in matched:
        o = m.options
        routes.add_row(
            m.route.path,
            "\n".join(str(x) for x in m.route.matchers) or "(all)",
            m.receiver.name,
            _duration(o.group_wait_s),
            _duration(o.group_interval_s),
            _duration(o.repeat_interval_s),
            "yes" if o.send_resolved else "no",
            _quiet(o.quiet_hours),
        )
    _out.print(routes)
    priorities = [Priority(p)] if (p := labels.get("priority")) else list(Priority)
    steps = Table(title="who is told when (escalation while unacknowledged)", show_lines=True)
    for col in (
        "route",
        "priority",
        "after",
        "receiver",
        "targets and channels",
        *(("people",) if who else ()),
    ):
        steps.add_column(col)
    for m in matched:
        for priority in priorities:
            held = m.held_until_us(priority, at_us)
            for step in m.schedule(priority):
                when = _duration(step.after_s) if step.after_s else "at once"
                if held is not None:
                    when += f" (held to {datetime.fromtimestamp(held / 1e6, UTC):%Y-%m-%d %H:%M} UTC)"
                for name in step.receivers:
                    receiver = tree.receivers[name]
                    targets = "\n".join(
                        f"{t.kind.value}{f' {t.level.value}' if t.level else ''}: {', '.join(t.channels)}"
                        for t in receiver.targets
                    )
                    people = (
                        ("\n".join(_people(t, labels, *who, at_us) for t in receiver.targets),) if who else ()
                    )
                    steps.add_row(m.route.path, priority.value, when, name, targets, *people)
    _out.print(steps)


@routes_app.command("test")
def test(
    config: Path = typer.Argument(..., help="Plant YAML, or a folder holding plant.yaml (and routes.yaml)."),
    label: list[str] = typer.Option([], "--label", "-l", help="An alarm label name=value (repeatable)."),
    routes: Path | None = typer.Option(None, "--routes", help="routes.yaml (default: beside the plant)."),
    at: str | None = typer.Option(
        None, "--at", help="ISO 8601 UTC time for quiet hours and duty shifts (default: now)."
    ),
) -> None:
    """Which routes, receivers, channels and people an alarm with these labels reaches, now
    and after each escalation step."""
    labels = _labels(label)
    path = routes or routes_file(config)
    try:
        tree = compile_routes(path)
    except ConfigError as exc:
        raise config_error_exit(exc, path) from None
    at_us = parse_time(at, "--at") if at else from_datetime(datetime.now(UTC))
    who: tuple[Plant, Rosters] | None = None
    plant_file = config / "plant.yaml" if config.is_dir() else config
    if plant_file.is_file():
        try:
            plant = load_plant(config)
        except ConfigError as exc:
            raise config_error_exit(exc, config) from None
        if labels.get("tag") and "gas" not in labels:
            labels["gas"] = gas_classes(plant).get(labels["tag"] or "", "none")
        rosters_path = plant_file.parent / "rosters.yaml"
        if rosters_path.is_file():
            from alarms.roster_load import load_rosters

            try:
                who = (plant, load_rosters(rosters_path, plant))
            except ConfigError as exc:
                raise config_error_exit(exc, rosters_path) from None
    labels.setdefault("gas", "none")
    shown = ", ".join(f"{k}={v}" for k, v in labels.items())
    _out.print(f"alarm {shown} at {datetime.fromtimestamp(at_us / 1e6, UTC):%Y-%m-%d %H:%M:%S} UTC")
    _print(tree, tree.match(labels), labels, at_us, who)


def register(app: typer.Typer) -> None:
    app.add_typer(routes_app, name="routes")
