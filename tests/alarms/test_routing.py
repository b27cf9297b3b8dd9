"""Alarm routing (alarms/routing.py): route trees as YAML literals, alarms' labels in, matched
routes, receivers, options and escalation steps out (Alertmanager's dispatch semantics); every
malformed routes.yaml refused with its problems at file:line."""

from __future__ import annotations

import textwrap
from datetime import UTC, datetime
from pathlib import Path

import pytest

from alarms.model import Catalog, Priority
from alarms.roster import BaoBaoRole, DeskLevel
from alarms.routing import compile_routes, parse_duration
from alarms.routing_model import Channel, RouteTree, Step, TargetKind, gas_classes, with_gas
from core.clock import from_datetime
from core.config import load_plant
from core.errors import ConfigError
from rules.compile import compile_rules

ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / "config/demo"


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "routes.yaml"
    path.write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")
    return path


def tree(tmp_path: Path, text: str) -> RouteTree:
    return compile_routes(write(tmp_path, text))


def problems(tmp_path: Path, text: str) -> list[str]:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as exc:
        compile_routes(path)
    return [str(i).replace(str(path), "routes.yaml") for i in exc.value.issues]


# --- matching ----------------------------------------------------------------------------

TREE = """
route:
  receiver: default
  group_wait: 10s
  routes:
    - matchers: ['gas = toxic']
      receiver: toxic
      continue: true
    - matchers: ['enterprise = LGGT']
      receiver: lggt
      group_wait: 1m
      routes:
        - matchers: ['priority =~ "critical|high"']
          receiver: lggt-urgent
          send_resolved: false
        - matchers: ['kind != GAS_L1']
          receiver: lggt-other
          repeat_interval: 1h
    - matchers: ['county =~ "文水.*"']
      receiver: wenshui
    - matchers: ['unit = ""', 'interlock !~ "LGGT.*"']
      receiver: no-unit
receivers:
  - {name: default, targets: [{kind: duty_room}]}
  - {name: toxic, targets: [{kind: mqtt}]}
  - {name: lggt, targets: [{kind: duty_room, channels: [sms, voice]}]}
  - {name: lggt-urgent, targets: [{kind: duty_room, channels: [voice]}]}
  - {name: lggt-other, targets: [{kind: duty_room}]}
  - {name: wenshui, targets: [{kind: bureau_desk, level: county}, {kind: bureau_desk, level: CITY}]}
  - {name: no-unit, targets: [{kind: webhook, address: "https://example.invalid/hook"}]}
"""

# labels -> (receiver, group_wait_s, repeat_interval_s, send_resolved) of each matched route
MATCHES = [
    pytest.param(
        {"enterprise": "LHJH", "county": "孝义市", "gas": "none", "unit": "U1"},
        [("default", 10, 14400, True)],
        id="nothing-matches-the-root-takes-it",
    ),
    pytest.param(
        {"enterprise": "LGGT", "county": "文水县", "gas": "toxic", "priority": "critical", "unit": "U1"},
        [("toxic", 10, 14400, True), ("lggt-urgent", 60, 14400, False)],
        id="continue-then-first-matching-sibling-then-its-child",
    ),
    pytest.param(
        {"enterprise": "LGGT", "county": "文水县", "gas": "combustible", "priority": "low", "kind": "GAS_L1"},
        [("lggt", 60, 14400, True)],
        id="no-child-matches-the-parent-takes-it",
    ),
    pytest.param(
        {"enterprise": "LGGT", "gas": "none", "priority": "low", "kind": "HH", "unit": "U1"},
        [("lggt-other", 60, 3600, True)],
        id="negation-and-inherited-group-wait",
    ),
    pytest.param(
        {"enterprise": "X", "county": "文水县", "gas": "toxic", "unit": "U1"},
        [("toxic", 10, 14400, True), ("wenshui", 10, 14400, True)],
        id="regex",
    ),
    pytest.param(
        {"enterprise": "X", "county": "大文水县", "unit": "U1"},
        [("default", 10, 14400, True)],
        id="regex-is-anchored",
    ),
    pytest.param(
        {"enterprise": "X", "county": "孝义市", "unit": None, "interlock": "LHJH-H01.IL-101"},
        [("no-unit", 10, 14400, True)],
        id="missing-label-is-empty-and-negated-regex",
    ),
    pytest.param(
        {"enterprise": "X", "county": "孝义市", "interlock": "LGGT-H01.IL-501"},
        [("default", 10, 14400, True)],
        id="negated-regex-excludes",
    ),
]


@pytest.mark.parametrize(("labels", "expected"), MATCHES)
def test_route_tree_literal(
    tmp_path: Path, labels: dict[str, str | None], expected: list[tuple[object, ...]]
) -> None:
    t = tree(tmp_path, TREE)
    got = [
        (m.receiver.name, m.options.group_wait_s, m.options.repeat_interval_s, m.options.send_resolved)
        for m in t.match(labels)
    ]
    assert got == expected


def test_receivers_compile_with_their_targets_and_default_channels(tmp_path: Path) -> None:
    t = tree(tmp_path, TREE)
    assert t.receivers["lggt"].targets[0].channels == (Channel.SMS, Channel.VOICE)
    assert t.receivers["default"].targets[0].channels == (Channel.SMS,)
    assert t.receivers["default"].targets[0].level == DeskLevel.ENTERPRISE
    assert [x.level for x in t.receivers["wenshui"].targets] == [DeskLevel.COUNTY, DeskLevel.CITY]
    assert t.receivers["toxic"].targets[0].channels == (Channel.MQTT,)
    assert t.receivers["baobao"].targets[0].roles == tuple(BaoBaoRole)  # built-in
    assert t.routes()[2].path == "route.routes[1]"


# --- toxic vs combustible: the derived gas label ------------------------------------------


def test_gas_label_from_the_plant_and_a_real_alarm_routed(tmp_path: Path) -> None:
    plant = load_plant(DEMO)
    classes = gas_classes(plant)
    by_code = {t.key.rsplit(".", 1)[1]: t.key for t in plant.tags()}
    assert classes[by_code["AT-501"]] == "toxic"  # CO, GB 6222 preset
    assert classes[by_code["AT-103"]] == "combustible"
    assert classes[by_code["AT-701"]] == "oxygen"
    assert with_gas({"tag": by_code["LT-501A"]}, classes)["gas"] == "none"
    assert with_gas({"interlock": "LGGT-H01.IL-501", "tag": None}, classes)["gas"] == "none"

    t = tree(
        tmp_path,
        """
        route:
          receiver: duty_room
          routes:
            - {matchers: ['gas = toxic'], receiver: county_desk}
            - {matchers: ['gas = combustible'], receiver: baobao}
        """,
    )
    catalog = Catalog(plant, compile_rules(plant))
    toxic = next(a for a in catalog if a.subject == by_code["AT-501"] and a.kind and a.kind.name == "GAS_L2")
    combustible = next(
        a for a in catalog if a.subject == by_code["AT-103"] and a.kind and a.kind.name == "GAS_L2"
    )
    level = next(a for a in catalog if a.subject == by_code["LT-501A"])
    assert [m.receiver.name for m in t.match(with_gas(toxic.labels, classes))] == ["county_desk"]
    assert [m.receiver.name for m in t.match(with_gas(combustible.labels, classes))] == ["baobao"]
    assert [m.receiver.name for m in t.match(with_gas(level.labels, classes))] == ["duty_room"]


# --- escalation ------------------------------------------------------------------------------


def test_builtin_escalation_follows_domain_defaults(tmp_path: Path) -> None:
    t = tree(tmp_path, "route: {receiver: duty_room}\n")
    (m,) = t.match({"priority": "critical"})
    assert m.escalation.steps(Priority.CRITICAL) == [
        Step(0, ("baobao",)),
        Step(120, ("county_desk",)),
        Step(600, ("city_desk",)),
    ]
    assert m.schedule("critical")[0] == Step(0, ("duty_room", "baobao"))  # at once, together
    assert m.schedule("high") == [Step(0, ("duty_room",)), Step(300, ("county_desk",))]
    assert m.schedule("medium") == m.schedule("low") == [Step(0, ("duty_room",))]
    assert t.receivers["county_desk"].targets[0].kind == TargetKind.BUREAU_DESK


def test_declared_policy_and_receivers_replace_the_builtins(tmp_path: Path) -> None:
    t = tree(
        tmp_path,
        """
        route:
          receiver: duty_room
          escalation: fast
          routes:
            - {matchers: ['kind = STALE'], escalation: none}
        receivers:
          - {name: county_desk, targets: [{kind: bureau_desk, channels: [sms, voice]}]}
        escalations:
          fast:
            high:
              - {after: 30s, receivers: [baobao]}
              - {after: 1m30s, receivers: [county_desk]}
        """,
    )
    (m,) = t.match({"priority": "high"})
    assert m.schedule("high") == [Step(0, ("duty_room",)), Step(30, ("baobao",)), Step(90, ("county_desk",))]
    assert m.schedule("critical") == [Step(0, ("duty_room",))]  # the policy gives critical no steps
    assert t.receivers["county_desk"].targets[0].channels == (Channel.SMS, Channel.VOICE)
    (stale,) = t.match({"priority": "high", "kind": "STALE"})
    assert stale.schedule("high") == [Step(0, ("duty_room",))]


# --- quiet hours ---------------------------------------------------------------------------


def _us(text: str) -> int:
    return from_datetime(datetime.fromisoformat(text).astimezone(UTC))


def test_quiet_hours_hold_low_priority_until_they_end(tmp_path: Path) -> None:
    t = tree(
        tmp_path,
        """
        route:
          receiver: duty_room
          routes:
            - matchers: ['priority = low']
              quiet_hours: {start: "22:00", end: "07:00"}
              routes:
                - {matchers: ['enterprise = LHJH'], quiet_hours: null}
        """,
    )
    (m,) = t.match({"priority": "low"})
    assert m.held_until_us("low", _us("2026-11-30T22:30:00+08:00")) == _us("2026-12-01T07:00:00+08:00")
    assert m.held_until_us("low", _us("2026-12-01T06:59:00+08:00")) == _us("2026-12-01T07:00:00+08:00")
    assert m.held_until_us("low", _us("2026-12-01T07:00:00+08:00")) is None
    assert m.held_until_us("low", _us("2026-11-30T12:00:00+08:00")) is None
    assert m.held_until_us("critical", _us("2026-11-30T23:00:00+08:00")) is None  # never held
    (lhjh,) = t.match({"priority": "low", "enterprise": "LHJH"})
    assert lhjh.options.quiet_hours is None


def test_quiet_hours_within_one_day(tmp_path: Path) -> None:
    t = tree(
        tmp_path,
        """
        route:
          receiver: duty_room
          routes: [{matchers: ['priority = low'], quiet_hours: {start: "12:00", end: "13:30", timezone: UTC}}]
        """,
    )
    (m,) = t.match({"priority": "low"})
    assert m.held_until_us("low", _us("2026-11-30T12:10:00+00:00")) == _us("2026-11-30T13:30:00+00:00")
    assert m.held_until_us("low", _us("2026-11-30T11:59:00+00:00")) is None


# --- durations -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "seconds"), [("30s", 30), ("2m", 120), ("1h", 3600), ("1h30m", 5400), ("7d", 604800)]
)
def test_durations(text: str, seconds: int) -> None:
    assert parse_duration(text) == seconds


# --- malformed routes.yaml: every problem at file:line --------------------------------------

BAD = [
    pytest.param(
        "route:\n  receiver: duty_room\n  grup_wait: 1m\n",
        "routes.yaml:3 route.grup_wait: unknown key",
        id="unknown-key",
    ),
    pytest.param(
        "route: {receiver: duty_room}\nroutez: []\n",
        "routes.yaml:2 routez: unknown key",
        id="unknown-top-key",
    ),
    pytest.param(
        "route:\n  receiver: duty_room\n  group_wait: 2x\n",
        "routes.yaml:3 route.group_wait: '2x' is not a duration",
        id="bad-duration",
    ),
    pytest.param(
        "route:\n  receiver: duty_room\n  group_wait: .nan\n",
        "routes.yaml:3 route.group_wait: nan is not a finite duration",
        id="nan",
    ),
    pytest.param(
        "route:\n  receiver: duty_room\n  repeat_interval: .inf\n",
        "routes.yaml:3 route.repeat_interval: inf is not a finite duration",
        id="inf",
    ),
    pytest.param(
        "route:\n  receiver: duty_room\n  group_wait: -5m\n",
        "routes.yaml:3 route.group_wait: '-5m' is negative",
        id="negative",
    ),
    pytest.param(
        "route:\n  receiver: duty_room\n  group_wait: -5\n",
        "routes.yaml:3 route.group_wait: -5 is negative",
        id="negative-number",
    ),
    pytest.param(
        "route:\n  receiver: duty_room\n  group_wait: 30\n",
        "routes.yaml:3 route.group_wait: 30 has no unit",
        id="no-unit",
    ),
    pytest.param(
        "route:\n  receiver: duty_room\n  repeat_interval: 8d\n",
        "routes.yaml:3 route.repeat_interval: '8d' is longer than 7d",
        id="too-long",
    ),
    pytest.param(
        "route:\n  receiver: duty_room\n  group_interval: 0s\n",
        "routes.yaml:3 route.group_interval: '0s' must be longer than 0s",
        id="zero-interval",
    ),
    pytest.param(
        "route:\n  receiver: nobody\n",
        "routes.yaml:2 route.receiver: unknown receiver 'nobody'",
        id="unknown-receiver",
    ),
    pytest.param(
        "route:\n  receiver: duty_room\n  routes:\n    - matchers: ['kind = HH']\n      receiver: nobody\n",
        "routes.yaml:5 route.routes[0].receiver: unknown receiver 'nobody'",
        id="unknown-receiver-in-child",
    ),
    pytest.param(
        "route: {receiver: duty_room}\nescalations:\n  x:\n    high:\n      - {after: 1m, receivers: [nobody]}\n",
        "routes.yaml:5 escalations.x.high[0].receivers[0]: unknown receiver 'nobody'",
        id="unknown-receiver-in-step",
    ),
    pytest.param(
        "route:\n  receiver: duty_room\n  escalation: slow\n",
        "routes.yaml:3 route.escalation: unknown escalation policy 'slow'",
        id="unknown-policy",
    ),
    pytest.param(
        "route: {receiver: a}\nreceivers:\n  - {name: a, targets: [{kind: duty_room}]}\n  - {name: a, targets: [{kind: mqtt}]}\n",
        "routes.yaml:4 receivers[1].name: receiver 'a' is declared twice (first at line 3)",
        id="duplicate-receiver",
    ),
    pytest.param(
        "route:\n  receiver: duty_room\n  routes:\n    - matchers: ['tag =~ \"AT-(\"']\n",
        "routes.yaml:4 route.routes[0].matchers[0]: bad regular expression 'AT-('",
        id="bad-regex",
    ),
    pytest.param(
        "route:\n  receiver: duty_room\n  routes:\n    - matchers: ['device = X']\n",
        "routes.yaml:4 route.routes[0].matchers[0]: unknown label 'device'",
        id="unknown-label",
    ),
    pytest.param(
        "route:\n  receiver: duty_room\n  routes:\n    - matchers: ['priority = urgent']\n",
        "routes.yaml:4 route.routes[0].matchers[0]: priority is never 'urgent'",
        id="unknown-priority",
    ),
    pytest.param(
        "route:\n  receiver: duty_room\n  routes:\n    - matchers: ['kind HH']\n",
        "routes.yaml:4 route.routes[0].matchers[0]: 'kind HH' is not a matcher",
        id="not-a-matcher",
    ),
    pytest.param(
        "route:\n  receiver: duty_room\n  quiet_hours: {start: '22:00', end: '07:00'}\n",
        "routes.yaml:3 route.quiet_hours: quiet hours are for low-priority alarms only, and this route also takes critical, high, medium",
        id="quiet-hours-for-all",
    ),
    pytest.param(
        "route:\n  receiver: duty_room\n  routes:\n    - matchers: ['priority =~ \"low|critical\"']\n      quiet_hours: {start: '22:00', end: '07:00'}\n",
        "routes.yaml:5 route.routes[0].quiet_hours: quiet hours are for low-priority alarms only, and this route also takes critical ones",
        id="quiet-hours-for-critical",
    ),
    pytest.param(
        "route:\n  receiver: duty_room\n  routes:\n    - matchers: ['priority != medium']\n      quiet_hours: {start: '22:00', end: '07:00'}\n",
        "routes.yaml:5 route.routes[0].quiet_hours: quiet hours are for low-priority alarms only, and this route also takes critical, high ones",
        id="quiet-hours-for-high",
    ),
    pytest.param(
        "route:\n  receiver: duty_room\n  routes:\n    - matchers: ['priority = low']\n      quiet_hours: {start: '25:00', end: '07:00'}\n",
        "routes.yaml:5 route.routes[0].quiet_hours.start: '25:00' is not a time of day",
        id="bad-time-of-day",
    ),
    pytest.param(
        "route:\n  receiver: duty_room\n  routes:\n    - matchers: ['priority = low']\n      quiet_hours: {start: '22:00', end: '07:00', timezone: Mars/Base}\n",
        "routes.yaml:5 route.routes[0].quiet_hours.timezone: unknown time zone 'Mars/Base'",
        id="bad-timezone",
    ),
    pytest.param(
        "route:\n  receiver: duty_room\n  matchers: ['kind = HH']\n",
        "routes.yaml:3 route.matchers: the root route takes every alarm",
        id="root-matchers",
    ),
    pytest.param(
        "route:\n  group_wait: 1m\n",
        "routes.yaml:1 route: receiver: the root route needs one",
        id="root-without-receiver",
    ),
    pytest.param("receivers: []\n", "routes.yaml:1: route: required key is missing", id="no-route"),
    pytest.param(
        "route: {receiver: a}\nreceivers:\n  - name: a\n    targets:\n      - {kind: webhook}\n",
        "routes.yaml:5 receivers[0].targets[0].address: a webhook target needs address",
        id="webhook-without-url",
    ),
    pytest.param(
        "route: {receiver: a}\nreceivers:\n  - name: a\n    targets:\n      - {kind: mqtt, channels: [sms]}\n",
        "routes.yaml:5 receivers[0].targets[0].channels[0]: a mqtt target is reached by mqtt only",
        id="channel-not-for-kind",
    ),
    pytest.param(
        "route: {receiver: a}\nreceivers:\n  - name: a\n    targets:\n      - {kind: duty_room, channels: [pager]}\n",
        "routes.yaml:5 receivers[0].targets[0].channels[0]: Input should be 'sms'",
        id="unknown-channel",
    ),
    pytest.param(
        "route: {receiver: a}\nreceivers:\n  - name: a\n    targets:\n      - {kind: baobao, level: CITY}\n",
        "routes.yaml:5 receivers[0].targets[0].level: level (COUNTY or CITY) is for bureau_desk targets only",
        id="level-not-for-kind",
    ),
    pytest.param(
        "route: {receiver: duty_room}\nescalations:\n  x:\n    critical:\n      - {after: 5m, receivers: [baobao]}\n      - {after: 2m, receivers: [county_desk]}\n",
        "routes.yaml:6 escalations.x.critical[1].after: steps must come in increasing order of after",
        id="steps-out-of-order",
    ),
    pytest.param(
        "route: {receiver: duty_room}\nescalations:\n  x:\n    urgent: []\n",
        "routes.yaml:4 escalations.x.urgent: unknown key",
        id="unknown-priority-in-policy",
    ),
    pytest.param(
        "route:\n  receiver: duty_room\n  routes:\n    - {receiver: duty_room, continue: yes please}\n",
        "routes.yaml:4 route.routes[0].continue: Input should be a valid boolean",
        id="continue-not-boolean",
    ),
]


@pytest.mark.parametrize(("text", "expected"), BAD)
def test_malformed_routes_are_refused_at_file_line(tmp_path: Path, text: str, expected: str) -> None:
    found = problems(tmp_path, text)
    assert any(p.startswith(expected) for p in found), found


def test_every_problem_is_reported_at_once(tmp_path: Path) -> None:
    found = problems(
        tmp_path,
        """
        route:
          receiver: nobody
          group_wait: 5
          routes:
            - matchers: ['kind =~ "("']
            - {receiver: duty_room, escalation: slow}
        receivers:
          - {name: a, targets: [{kind: pager}]}
          - {name: a, targets: [{kind: mqtt}]}
        escalations:
          x: {high: [{after: 1m, receivers: [nobody]}]}
        """,
    )
    lines = sorted(int(p.split(" ", 1)[0].removeprefix("routes.yaml:")) for p in found)
    assert lines == [2, 3, 5, 6, 8, 9, 11], found


def test_the_demo_routes_compile() -> None:
    t = compile_routes(DEMO / "routes.yaml")
    assert {"duty_room", "baobao", "county_desk", "city_desk"} <= set(t.receivers)
    assert t.file.endswith("routes.yaml")
