"""routes.yaml (beside the plant) compiled into a ``RouteTree``: routes, receivers, escalation.

``compile_routes`` reads the file once and raises one ConfigError listing every problem, each
at its file:line (an unknown key, a bad duration, matcher or regex, a receiver or policy that
is not declared or declared twice, quiet hours on a route that alarms above low priority can
take). Each receiver, policy and route is validated on its own, so one broken part never hides
another's problems. The grammar is ``alarms.routing_schema``'s, the compiled tree
``alarms.routing_model``'s; docs/configuration.md ("Routes") lists every key and default.
"""

from __future__ import annotations

import os
from collections.abc import Collection
from dataclasses import replace
from pathlib import Path
from typing import Any

from alarms.model import Priority
from alarms.roster import BaoBaoRole, DeskLevel
from alarms.routing_defaults import BUILTIN_POLICIES, BUILTIN_RECEIVERS, CHANNELS_OF
from alarms.routing_model import (
    EscalationPlan,
    GroupOptions,
    MatchedRoute,
    Receiver,
    Route,
    RouteTree,
    Step,
    Target,
    TargetKind,
)
from alarms.routing_schema import (
    Checker,
    Node,
    PolicyModel,
    ReceiverModel,
    parse_duration,
    parse_matcher,
)
from core.errors import ConfigError, ConfigIssue
from core.yaml_loader import PathKey, format_path, load_document

__all__ = [
    "FILE_NAME",
    "MatchedRoute",
    "RouteTree",
    "compile_routes",
    "parse_duration",
    "parse_matcher",
    "routes_file",
]

FILE_NAME = "routes.yaml"
_ALL = frozenset(Priority)


def routes_file(config: str | os.PathLike[str]) -> Path:
    """Where the routes of the plant at ``config`` (a plant file or its folder) are."""
    p = Path(config)
    return (p if p.is_dir() else p.parent) / FILE_NAME


def compile_routes(path: str | os.PathLike[str]) -> RouteTree:
    """The validated route tree of one routes.yaml; ConfigError listing every problem."""
    if not Path(path).is_file():
        raise ConfigError([ConfigIssue(str(path), 0, "", "no such routes file")])
    loaded = load_document(path)
    c = Checker(loaded.source)
    c.issues += loaded.issues
    doc = loaded.data
    if not isinstance(doc, dict):
        if not loaded.issues:
            c.issue((), "routes.yaml must be a mapping with route, receivers and escalations")
        raise ConfigError(c.issues)
    for key in doc:
        if key not in ("route", "receivers", "escalations", "channels"):  # channels: alarms.channels
            c.issue((key,), "unknown key (known: route, receivers, escalations, channels)")
    receivers, names = _receivers(c, doc.get("receivers", []))
    policies, policy_names = _policies(c, doc.get("escalations", {}), names)
    root = None
    if "route" not in doc:
        c.issue((), "route: required key is missing (the root route, with its receiver)")
    else:
        root = _route(c, doc["route"], ("route",), None, _ALL, names, policy_names)
    if c.issues or root is None:
        raise ConfigError(c.issues)
    return RouteTree(root, receivers, policies, loaded.source.root_file)


# --- receivers ----------------------------------------------------------------------------


def _receivers(c: Checker, data: Any) -> tuple[dict[str, Receiver], set[str]]:
    """The receivers (built-ins, replaced by those declared under their names) and every name
    declared (also of receivers with problems: references to them are not reported too)."""
    out: dict[str, Receiver] = dict(BUILTIN_RECEIVERS)
    names, first = set(BUILTIN_RECEIVERS), dict[str, int]()
    if not isinstance(data, list):
        c.issue(("receivers",), "receivers is a list of {name, targets}")
        return out, names
    for i, raw in enumerate(data):
        at: PathKey = ("receivers", i)
        name = raw.get("name") if isinstance(raw, dict) else None
        if isinstance(name, str):
            names.add(name)
            if name in first:
                line = c.source.where(("receivers", first[name], "name"))[1]
                c.issue((*at, "name"), f"receiver {name!r} is declared twice (first at line {line})")
            first.setdefault(name, i)
        m = c.valid(ReceiverModel, raw, at)
        if m is not None:
            targets = tuple(_target(c, t, (*at, "targets", j)) for j, t in enumerate(m.targets))
            out[m.name] = Receiver(m.name, targets)
    return out, names


def _target(c: Checker, t: Any, at: PathKey) -> Target:
    kind: TargetKind = t.kind
    allowed = CHANNELS_OF[kind]
    channels = tuple(t.channels or allowed[:1])
    for k, ch in enumerate(channels):
        if ch not in allowed:
            c.issue((*at, "channels", k), f"a {kind.value} target is reached by {', '.join(allowed)} only")
    if t.level is not None and kind != TargetKind.BUREAU_DESK:
        c.issue((*at, "level"), "level (COUNTY or CITY) is for bureau_desk targets only")
    if t.roles is not None and kind != TargetKind.BAOBAO:
        c.issue((*at, "roles"), "roles are for baobao targets only")
    if kind == TargetKind.WEBHOOK and not str(t.address or "").startswith(("http://", "https://")):
        c.issue((*at, "address"), "a webhook target needs address: an http:// or https:// URL")
    elif kind == TargetKind.EMAIL and "@" not in str(t.address or ""):
        c.issue((*at, "address"), "an email target needs address: an e-mail address")
    elif t.address is not None and kind not in (TargetKind.WEBHOOK, TargetKind.EMAIL, TargetKind.MQTT):
        c.issue((*at, "address"), f"a {kind.value} target's people come from its roster: no address")
    level = {
        TargetKind.DUTY_ROOM: DeskLevel.ENTERPRISE,
        TargetKind.BUREAU_DESK: DeskLevel(t.level or "COUNTY"),
    }
    roles = tuple(t.roles or (BaoBaoRole if kind == TargetKind.BAOBAO else ()))
    return Target(kind, channels, level.get(kind), roles, t.address)


# --- escalation policies -------------------------------------------------------------------


def _policies(
    c: Checker, data: Any, receivers: Collection[str]
) -> tuple[dict[str, EscalationPlan], set[str]]:
    out = dict(BUILTIN_POLICIES)
    if not isinstance(data, dict):
        c.issue(("escalations",), "escalations maps a policy name to its steps per priority")
        return out, set(out)
    names = set(out) | set(data)
    for name, raw in data.items():
        at: PathKey = ("escalations", name)
        m = c.valid(PolicyModel, raw, at)
        if m is None:
            continue
        by_priority = {}
        for p in Priority:
            steps = getattr(m, p.value)
            for k, step in enumerate(steps):
                if k and step.after <= steps[k - 1].after:
                    c.issue((*at, p.value, k, "after"), "steps must come in increasing order of after")
                for r, receiver in enumerate(step.receivers):
                    if receiver not in receivers:
                        c.issue((*at, p.value, k, "receivers", r), _unknown("receiver", receiver, receivers))
            by_priority[p] = tuple(Step(s.after, tuple(s.receivers)) for s in steps)
        out[name] = EscalationPlan(name, by_priority)
    return out, names


def _unknown(what: str, name: str, known: Collection[str]) -> str:
    return f"unknown {what} {name!r} (declared: {', '.join(sorted(known))})"


# --- the route tree ------------------------------------------------------------------------


def _route(
    c: Checker,
    raw: Any,
    at: PathKey,
    parent: Route | None,
    admitted: frozenset[Priority],
    receivers: Collection[str],
    policies: Collection[str],
) -> Route | None:
    """The route at ``at`` with its children; None when it has problems (they are reported,
    and its children still checked against its parent's options)."""
    m: Node | None = c.valid(Node, raw, at)
    if m is None:
        given = raw if isinstance(raw, dict) else {}
        for key, what, known in (
            ("receiver", "receiver", receivers),
            ("escalation", "escalation policy", policies),
        ):
            if isinstance(given.get(key), str) and given[key] not in known:
                c.issue((*at, key), _unknown(what, given[key], known))
        kids = given.get("routes")
        for k, child in enumerate(kids if isinstance(kids, list) else []):
            _route(c, child, (*at, "routes", k), parent, admitted, receivers, policies)
        return None
    ok = True
    if parent is None:
        for key, bad in (("matchers", m.matchers), ("continue", m.continue_)):
            if bad:
                c.issue((*at, key), f"the root route takes every alarm: it has no {key}")
                ok = False
        if m.receiver is None:
            c.issue(at, "receiver: the root route needs one (every other route inherits it)")
            return None
    receiver = m.receiver or (parent.receiver if parent else "")
    if m.receiver is not None and m.receiver not in receivers:
        c.issue((*at, "receiver"), _unknown("receiver", m.receiver, receivers))
        ok = False
    if m.escalation is not None and m.escalation not in policies:
        c.issue((*at, "escalation"), _unknown("escalation policy", m.escalation, policies))
        ok = False
    options = m.options_over(parent.options if parent else GroupOptions())
    for matcher in m.matchers:
        if matcher.label == "priority":
            admitted = admitted & {p for p in Priority if matcher.matches({"priority": p.value})}
    if m.quiet_hours is not None and admitted - {Priority.LOW}:
        above = ", ".join(p.value for p in Priority if p in admitted and p != Priority.LOW)
        c.issue(
            (*at, "quiet_hours"),
            f"quiet hours are for low-priority alarms only, and this route also takes {above} "
            "ones: add the matcher priority = low (quiet hours never hold critical or high alarms)",
        )
        ok = False
    route = Route(format_path(at), receiver, tuple(m.matchers), options, m.continue_)
    children = [
        _route(c, child, (*at, "routes", k), route, admitted, receivers, policies)
        for k, child in enumerate(m.routes)
    ]
    if not ok or any(r is None for r in children):
        return None
    return replace(route, routes=tuple(r for r in children if r is not None))
