"""The dispatcher against a real database: what the alarm writer stores in the outbox is planned,
escalated, muted, inhibited, grouped, retried and recorded as evidence. Time is a FakeClock; the
channels are RecordingNotifiers (the providers themselves are tested in tests/alarms/notify).
"""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
import pytest

from alarms.channels import Channels
from alarms.dispatcher import Dispatcher
from alarms.model import AlarmDef, Catalog
from alarms.notify import DeliveryReport, PermanentError, RecordingNotifier, RetryableError
from alarms.notify.console import ConsoleOutbox
from alarms.roster_load import load_rosters
from alarms.routing import compile_routes
from alarms.routing_model import Channel, gas_classes
from core.clock import FakeClock
from core.config import load_plant
from core.plant import Plant
from rules.compile import compile_rules
from storage.migrate import Backend
from tests.support.databases import fetch_all, migrated_db

ROOT = Path(__file__).resolve().parents[2]
PLANT = ROOT / "config/demo/plant.yaml"
# 2026-12-01 10:00 Asia/Shanghai: the LHJH day shift (a Tuesday, no override)
T0 = int(datetime(2026, 12, 1, 2, 0, tzinfo=UTC).timestamp()) * 1_000_000
US = 1_000_000

ROUTES = """
route:
  receiver: duty_room
  group_wait: 0s
  group_interval: 1m
  repeat_interval: 7d  # longer than a day: no repeats (test_repeat... sets its own)
  escalation: default
receivers:
  - name: duty_room
    targets: [{kind: duty_room, channels: [sms]}]
  - name: county_desk
    targets: [{kind: bureau_desk, level: COUNTY, channels: [sms]}]
escalations:
  default:
    critical:
      - {after: 0s, receivers: [baobao]}
      - {after: 2m, receivers: [county_desk]}
    high:
      - {after: 5m, receivers: [county_desk]}
"""


@pytest.fixture(scope="module")
def plant() -> Plant:
    return load_plant(PLANT)


@pytest.fixture(scope="module")
def catalog(plant: Plant) -> Catalog:
    return Catalog(plant, compile_rules(plant))


@pytest.fixture
def dsn() -> Iterator[str]:
    with migrated_db(Backend.POSTGRES) as url:
        yield url


def _alarm(catalog: Catalog, enterprise: str, kind: str, priority: str | None = None) -> AlarmDef:
    for a in catalog:
        same = a.labels["enterprise"] == enterprise and a.labels["kind"] == kind and a.labels.get("tag")
        if same and (priority is None or a.priority.value == priority):
            return a
    raise LookupError(f"no {kind} alarm in {enterprise}")


class Plantside:
    """Writes what the alarm writer writes (journal, state, outbox), one commit per call."""

    def __init__(self, dsn: str) -> None:
        self.dsn, self.seq = dsn, 0

    def event(self, a: AlarmDef, event: str, at_us: int, *, value: float = 42.0, acked: bool = False) -> int:
        self.seq += 1
        at = datetime.fromtimestamp(at_us / US, UTC)
        condition = event != "resolved"
        status = "unacknowledged" if condition else "normal"
        lab = dict(a.labels)
        with psycopg.connect(self.dsn) as c:
            c.execute(
                """INSERT INTO alarm_journal (seq, n, alarm_key, action, old_status, new_status, at, arrival,
                                              value, "limit", actor) VALUES (%s, 0, %s, %s, 'normal', %s, %s,
                                              %s, %s, 40, 'engine')""",
                (self.seq, a.key, event, status, at, at, value),
            )
            c.execute(
                """INSERT INTO alarm_state (key, enterprise, county, hazard_source, unit, subject, kind, priority,
                                            status, condition, acked, latching, since, raised_at, seq)
                   VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, false, %s, %s, %s)
                   ON CONFLICT (key) DO UPDATE SET status = EXCLUDED.status, condition = EXCLUDED.condition,
                       acked = EXCLUDED.acked, raised_at = coalesce(EXCLUDED.raised_at, alarm_state.raised_at),
                       seq = EXCLUDED.seq""",
                (a.key, lab["enterprise"], lab["county"], lab["hazard_source"], lab.get("unit"), a.subject,
                 lab["kind"], a.priority.value, status, condition, acked, at, at if condition else None,
                 self.seq),
            )  # fmt: skip
            c.execute(
                """INSERT INTO notification (seq, n, alarm_key, event, priority, labels, message_zh, message_en,
                                             created_at) VALUES (%s, 0, %s, %s, %s, %s, %s, %s, %s)""",
                (
                    self.seq,
                    a.key,
                    event,
                    a.priority.value,
                    json.dumps(lab),
                    f"【{event}】{a.name}",
                    event,
                    at,
                ),
            )
        return self.seq

    def ack(self, a: AlarmDef, by: str = "王强") -> None:
        with psycopg.connect(self.dsn) as c:
            c.execute("UPDATE alarm_state SET acked = true, acked_by = %s, status = 'acknowledged' WHERE key = %s",
                      (by, a.key))  # fmt: skip

    def set_status(self, a: AlarmDef, status: str) -> None:
        with psycopg.connect(self.dsn) as c:
            c.execute("UPDATE alarm_state SET status = %s WHERE key = %s", (status, a.key))


@pytest.fixture
async def world(dsn: str, plant: Plant, catalog: Catalog, tmp_path: Path) -> AsyncIterator[dict[str, Any]]:
    routes = tmp_path / "routes.yaml"
    routes.write_text(ROUTES, encoding="utf-8")
    tree = compile_routes(routes)
    rosters = load_rosters(ROOT / "config/demo/rosters.yaml", plant)
    sms = RecordingNotifier("sms-fake")
    clock = FakeClock(T0)
    d = Dispatcher(
        dsn,
        tree,
        Channels({Channel.SMS: sms}),
        rosters,
        plant,
        gas_classes(plant),
        catalog.by_key,
        clock,
        registry=None,
    )
    yield {"d": d, "sms": sms, "clock": clock, "side": Plantside(dsn), "dsn": dsn, "rosters": rosters}
    await d.close()


async def _step(w: dict[str, Any], advance_s: float = 0.0) -> None:
    if advance_s:
        w["clock"].advance(advance_s)
    await w["d"].step()
    await w["d"].drain()


def _phones(sms: RecordingNotifier) -> list[str]:
    return [m.recipient for m in sms.sent]


async def test_critical_alarm_reaches_duty_room_and_baobao_at_once_and_the_county_after_two_minutes(
    world: dict[str, Any], catalog: Catalog
) -> None:
    a = _alarm(catalog, "LHJH", "GAS_L2", "critical")
    world["side"].event(a, "raised", T0)
    await _step(world)
    at_once = set(_phones(world["sms"]))
    duty = {d.person.phone for d in world["rosters"].on_duty("LHJH", T0)}
    hs = f"{a.labels['enterprise']}.{a.labels['hazard_source']}"
    trio = {c.phone for c in world["rosters"].baobao(hs)}
    assert at_once == duty | trio
    await _step(world, 119)
    assert len(world["sms"].sent) == len(at_once)  # not yet
    await _step(world, 2)
    county = world["rosters"].desk_of(*_county(world, a))
    bureau = {d.person.phone for d in county.on_duty(T0 + 121 * US)}
    assert set(_phones(world["sms"])) - at_once == bureau
    message = world["sms"].sent[0]
    params = dict(message.params)
    assert params["tag"] == a.name and params["priority"] == "紧急" and params["action"] == "请立即处置并反馈"
    rows = await fetch_all(world["dsn"], "SELECT state, provider, provider_message_id FROM delivery")
    assert {r[0] for r in rows} == {"sent"} and all(r[1] == "sms-fake" and r[2] for r in rows)
    steps = await fetch_all(world["dsn"], "SELECT what, step FROM delivery_journal WHERE what = 'sent'")
    assert {s[1] for s in steps} == {0, 1}


def _county(world: dict[str, Any], a: AlarmDef) -> tuple[Any, str]:
    from alarms.roster import DeskLevel

    return DeskLevel.COUNTY, str(a.labels["county"])


async def test_acknowledging_stops_the_escalation_and_the_journal_says_by_whom(
    world: dict[str, Any], catalog: Catalog
) -> None:
    a = _alarm(catalog, "LHJH", "GAS_L2", "critical")
    world["side"].event(a, "raised", T0)
    await _step(world)
    told = len(world["sms"].sent)
    world["side"].ack(a, "李娜")
    await _step(world, 180)
    assert len(world["sms"].sent) == told
    rows = await fetch_all(world["dsn"], "SELECT state, reason FROM delivery WHERE step = 1")
    assert rows and all(r == ("stopped", "acknowledged by 李娜") for r in rows)
    journal = await fetch_all(world["dsn"], "SELECT what FROM delivery_journal WHERE step = 1")
    assert {j[0] for j in journal} == {"stopped"}


async def test_a_cleared_alarm_stops_escalating_and_its_resolve_reaches_whom_the_raise_reached(
    world: dict[str, Any], catalog: Catalog
) -> None:
    a = _alarm(catalog, "LHJH", "GAS_L2", "critical")
    world["side"].event(a, "raised", T0)
    await _step(world)
    raised_to = sorted(_phones(world["sms"]))
    world["side"].event(a, "resolved", T0 + 90 * US)
    await _step(world, 90)  # the lanes are busy for a minute after the raise: the resolves wait
    await _step(world, 60)
    resolved = [m for m in world["sms"].sent if dict(m.params)["event"] == "消警"]
    assert sorted(m.recipient for m in resolved) == raised_to
    rows = await fetch_all(world["dsn"], "SELECT state, reason FROM delivery WHERE step = 1")
    assert rows and all(r == ("stopped", "cleared") for r in rows)


async def test_shelved_alarm_is_muted_and_a_level_1_under_an_active_level_2_is_inhibited(
    world: dict[str, Any], catalog: Catalog
) -> None:
    high = _alarm(catalog, "LHJH", "GAS_L2")
    low = next(x for x in catalog if x.subject == high.subject and x.labels["kind"] == "GAS_L1")
    world["side"].event(high, "raised", T0)
    world["side"].event(low, "raised", T0)
    await _step(world)
    states = dict(
        await fetch_all(
            world["dsn"],
            "SELECT alarm_key || '/' || step, state || ' ' || coalesce(reason, '') FROM delivery",
        )
    )
    assert states[f"{low.key}/0"] == "planned inhibited: GAS_L2 of the same tag is active"
    assert states[f"{high.key}/0"] == "sent "
    told = len(world["sms"].sent)
    world["side"].event(high, "resolved", T0 + 40 * US)  # level 2 clears, level 1 still on: now it goes
    await _step(world, 100)
    rows = await fetch_all(  # on its own, or in a summary with level 2's resolve
        world["dsn"],
        "SELECT d.state, coalesce(s.state, d.state) FROM delivery d LEFT JOIN delivery s ON s.id = d.summary_id "
        "WHERE d.alarm_key = %s AND d.step = 0",
        (low.key,),
    )
    assert rows and all(r[1] == "sent" for r in rows), rows
    assert len(world["sms"].sent) > told
    other = _alarm(catalog, "LGGT", "HH")
    world["side"].event(other, "raised", T0 + US)
    world["side"].set_status(other, "shelved")
    await _step(world, 61)  # the duty room's lane was busy for a minute
    rows = await fetch_all(
        world["dsn"], "SELECT state, reason FROM delivery WHERE alarm_key = %s AND step = 0", (other.key,)
    )
    assert rows and {r for r in rows} == {("muted", "the alarm is shelved")}


async def test_a_flood_of_500_alarms_in_10_s_gives_each_person_a_bounded_number_of_sms(
    world: dict[str, Any], catalog: Catalog
) -> None:
    alarms = [a for a in catalog if a.labels["enterprise"] == "LHJH" and a.labels.get("tag")][:500]
    assert len(alarms) >= 100
    for i in range(500):
        world["side"].event(alarms[i % len(alarms)], "raised", T0 + i * 20_000)
        if i % 50 == 49:
            await _step(world, 1)
    for _ in range(7):  # six minutes more: the summaries and the escalations (high: after 5 min)
        await _step(world, 60)
    per_person = Counter(_phones(world["sms"]))
    assert per_person and max(per_person.values()) <= 4, per_person
    summaries = [m for m in world["sms"].sent if dict(m.params)["event"] == "汇总"]
    assert summaries and any(int(dict(m.params)["count"]) > 100 for m in summaries)
    planned = await fetch_all(world["dsn"], "SELECT count(*) FROM notification WHERE state = 'planned'")
    assert planned == [(500,)]
    open_ = await fetch_all(  # all but the lower levels held while their higher level is active
        world["dsn"],
        "SELECT count(*) FROM delivery WHERE state IN ('planned', 'retry', 'sending') "
        "AND coalesce(reason, '') NOT LIKE 'inhibited: %%'",
    )
    assert open_ == [(0,)]


async def test_retryable_failures_wait_for_retry_after_and_permanent_ones_fail_with_evidence(
    world: dict[str, Any], catalog: Catalog
) -> None:
    a = _alarm(catalog, "LGGT", "HH")
    sms: RecordingNotifier = world["sms"]
    sms.fail = [RetryableError("sms-fake", "Throttling", "slow down", retry_after_s=30)]
    world["side"].event(a, "raised", T0)
    await _step(world)  # two people on duty: whichever send came first was throttled
    first = await fetch_all(world["dsn"], "SELECT id, due_at, attempts FROM delivery WHERE state = 'retry'")
    assert len(first) == 1 and first[0][2] == 1
    throttled = first[0][0]
    assert first[0][1] >= datetime.fromtimestamp(T0 / US + 30, UTC)
    await _step(world, 10)
    assert len(sms.attempts) == len(sms.sent) + 1  # nothing retried before Retry-After
    await _step(world, 25)
    rows = await fetch_all(world["dsn"], "SELECT state, attempts FROM delivery WHERE id = %s", (throttled,))
    assert rows == [("sent", 2)]
    attempts = await fetch_all(
        world["dsn"],
        "SELECT attempt, outcome, code FROM delivery_attempt WHERE delivery_id = %s ORDER BY attempt",
        (throttled,),
    )
    assert attempts == [(1, "retryable", "Throttling"), (2, "accepted", None)]
    b = _alarm(catalog, "LGGT", "LL")
    sms.fail = [PermanentError("sms-fake", "isv.MOBILE_NUMBER_ILLEGAL", "bad number")]
    world["side"].event(b, "raised", T0 + 100 * US)
    await _step(world, 100)
    failed = await fetch_all(world["dsn"], "SELECT count(*) FROM delivery WHERE state = 'failed'")
    assert failed == [(1,)]


async def test_a_send_interrupted_after_the_file_took_it_is_found_there_and_not_written_twice(
    dsn: str, plant: Plant, catalog: Catalog, tmp_path: Path
) -> None:
    routes = tmp_path / "routes.yaml"
    routes.write_text(ROUTES.replace("escalation: default", "escalation: none"), encoding="utf-8")
    outbox = tmp_path / "out.jsonl"
    console = ConsoleOutbox(outbox, echo=False)
    rosters = load_rosters(ROOT / "config/demo/rosters.yaml", plant)
    clock = FakeClock(T0)

    class CrashAfterSend:  # the file takes the message; the process dies before recording it
        template = None

        async def send(self, message: Any) -> Any:
            await console.send(message)
            raise asyncio.CancelledError  # the task dies here, as the process would

        lookup = console.lookup

    a = _alarm(catalog, "LGGT", "HH")
    Plantside(dsn).event(a, "raised", T0)
    first = Dispatcher(dsn, compile_routes(routes), Channels({Channel.SMS: CrashAfterSend()}), rosters, plant,
                       gas_classes(plant), catalog.by_key, clock, registry=None)  # fmt: skip
    await first.step()
    await first.drain()
    await first.close()
    states = [r[0] for r in await fetch_all(dsn, "SELECT state FROM delivery")]
    assert states and set(states) == {"sending"}
    lines = outbox.read_text(encoding="utf-8").splitlines()
    assert len(lines) == len(states)
    second = Dispatcher(dsn, compile_routes(routes), Channels({Channel.SMS: console}), rosters, plant,
                        gas_classes(plant), catalog.by_key, clock, registry=None)  # fmt: skip
    await second.step()
    await second.drain()
    await second.step()
    await second.drain()
    await second.close()
    assert outbox.read_text(encoding="utf-8").splitlines() == lines  # not written again
    rows = await fetch_all(dsn, "SELECT state FROM delivery")
    assert [r[0] for r in rows] == ["sent"] * len(rows)
    outcomes = await fetch_all(dsn, "SELECT outcome FROM delivery_attempt")
    assert {o[0] for o in outcomes} == {"recovered"}


async def test_delivery_receipts_are_fetched_and_stored_as_evidence(
    dsn: str, plant: Plant, catalog: Catalog, tmp_path: Path
) -> None:
    routes = tmp_path / "routes.yaml"
    routes.write_text(ROUTES.replace("escalation: default", "escalation: none"), encoding="utf-8")
    clock = FakeClock(T0)

    class WithReceipts(RecordingNotifier):
        asked: int = 0

        async def report(self, receipt: Any, message: Any, sent_at_us: int) -> DeliveryReport | None:
            self.asked += 1
            assert receipt.provider == "sms-fake" and receipt.provider_message_id.startswith("fake-")
            if self.asked <= len(self.sent):  # the first time round: not known yet
                return DeliveryReport("PENDING")
            return DeliveryReport("DELIVERED", "DELIVRD", at_us=sent_at_us + 3 * US)

    sms = WithReceipts("sms-fake")
    d = Dispatcher(dsn, compile_routes(routes), Channels({Channel.SMS: sms}), load_rosters(
        ROOT / "config/demo/rosters.yaml", plant), plant, gas_classes(plant), catalog.by_key, clock,
        registry=None)  # fmt: skip
    Plantside(dsn).event(_alarm(catalog, "LGGT", "HH"), "raised", T0)
    try:
        for _ in range(3):
            await d.step()
            await d.drain()
            clock.advance(61)
    finally:
        await d.close()
    rows = await fetch_all(dsn, "SELECT report_status, report_code, report_at - sent_at FROM delivery")
    assert rows and all(r[0] == "DELIVERED" and r[1] == "DELIVRD" for r in rows), rows


def test_alarms_deliveries_shows_who_was_told_masked_with_why_the_rest_did_not_go(
    dsn: str, plant: Plant, catalog: Catalog, tmp_path: Path
) -> None:
    from typer.testing import CliRunner

    from hazardwatch.cli import app

    routes = tmp_path / "routes.yaml"
    routes.write_text(ROUTES, encoding="utf-8")
    a = _alarm(catalog, "LHJH", "GAS_L2", "critical")

    async def scenario() -> None:
        clock = FakeClock(T0)
        side = Plantside(dsn)
        d = Dispatcher(dsn, compile_routes(routes), Channels({Channel.SMS: RecordingNotifier("sms-fake")}),
                       load_rosters(ROOT / "config/demo/rosters.yaml", plant), plant, gas_classes(plant),
                       catalog.by_key, clock, registry=None)  # fmt: skip
        side.event(a, "raised", T0)
        await d.step()
        await d.drain()
        side.ack(a, "李娜")
        clock.advance(150)
        await d.step()
        await d.close()

    asyncio.run(scenario())
    result = CliRunner().invoke(app, ["alarms", "deliveries", a.key, "--json", "--dsn", dsn])
    assert result.exit_code == 0, result.output
    rows = json.loads(result.output)
    assert {(r["step"], r["state"]) for r in rows} == {(0, "sent"), (1, "stopped")}
    assert all(r["reason"] == "acknowledged by 李娜" for r in rows if r["step"] == 1)
    assert all("****" in r["recipient"] for r in rows)  # masked
    assert all(r["provider_message_id"].startswith("fake-") for r in rows if r["step"] == 0)
    table = CliRunner().invoke(app, ["alarms", "deliveries", a.key, "--dsn", dsn], env={"COLUMNS": "250"})
    assert table.exit_code == 0 and "acknowledged by 李娜" in table.output and "deliveries" in table.output


async def test_a_failed_device_is_announced_once_per_person_not_once_per_tag(
    world: dict[str, Any], catalog: Catalog, plant: Plant
) -> None:
    device_of = {t.key: t.source.device for t in plant.tags()}
    bad = [a for a in catalog if a.labels["kind"] == "BAD_QUALITY" and a.labels["enterprise"] == "LGGT"]
    device = device_of[bad[0].subject]
    same = [a for a in bad if device_of[a.subject] == device][:4]
    assert len(same) >= 3
    for a in same:
        world["side"].event(a, "raised", T0)
    await _step(world)
    rows = await fetch_all(
        world["dsn"], "SELECT alarm_key, recipient, state, reason FROM delivery WHERE step = 0 ORDER BY id"
    )
    per_person = Counter(r[1] for r in rows if r[2] == "sent")
    assert per_person and set(per_person.values()) == {1}
    inhibited = [r for r in rows if r[2] == "inhibited"]
    assert len(inhibited) == (len(same) - 1) * len(per_person)
    assert all(r[3].startswith(f"device {device} has failed") for r in inhibited)


async def test_an_unacknowledged_alarm_is_repeated_to_the_first_step_until_acknowledged(
    dsn: str, plant: Plant, catalog: Catalog, tmp_path: Path
) -> None:
    routes = tmp_path / "routes.yaml"
    routes.write_text(ROUTES.replace("repeat_interval: 7d", "repeat_interval: 1h"), encoding="utf-8")
    sms, clock = RecordingNotifier("sms-fake"), FakeClock(T0)
    d = Dispatcher(dsn, compile_routes(routes), Channels({Channel.SMS: sms}), load_rosters(
        ROOT / "config/demo/rosters.yaml", plant), plant, gas_classes(plant), catalog.by_key, clock,
        registry=None)  # fmt: skip
    side = Plantside(dsn)
    a = _alarm(catalog, "LGGT", "HH")  # high: the county desk after 5 min, then the duty room hourly
    side.event(a, "raised", T0)
    try:
        await d.step()
        await d.drain()
        first = Counter(_phones(sms))
        for _ in range(2):
            clock.advance(3600)
            await d.step()
            await d.drain()
        side.ack(a)
        clock.advance(3600)
        await d.step()
        await d.drain()
    finally:
        await d.close()
    again = Counter(_phones(sms)) - first
    assert first and all(again[p] == 2 for p in first), (first, again)  # hours 1 and 2, not 3
    rows = await fetch_all(dsn, "SELECT step, state, reason FROM delivery WHERE step >= 2 ORDER BY step")
    assert {r[1] for r in rows if r[0] == 4} == {"stopped"} and {r[1] for r in rows if r[0] < 4} == {"sent"}


async def test_a_long_message_is_cut_to_the_gsm_templates_parameter_length(
    dsn: str, plant: Plant, catalog: Catalog, tmp_path: Path
) -> None:
    from alarms.notify.gsm_text import TextTemplate

    class Modem(RecordingNotifier):  # a GSM modem's template: its parameters, each at most 4 characters
        template = TextTemplate("gsm", "【{event}】{enterprise}", ("event", "enterprise"), 4, 4)

        async def send(self, message: Any) -> Any:
            self.template.params.values(message)  # what the modem checks: raises if too long
            return await super().send(message)

    routes = tmp_path / "routes.yaml"
    routes.write_text(ROUTES.replace("escalation: default", "escalation: none"), encoding="utf-8")
    modem = Modem("gsm")
    d = Dispatcher(dsn, compile_routes(routes), Channels({Channel.SMS: modem}), load_rosters(
        ROOT / "config/demo/rosters.yaml", plant), plant, gas_classes(plant), catalog.by_key, FakeClock(T0),
        registry=None)  # fmt: skip
    Plantside(dsn).event(_alarm(catalog, "LGGT", "HH"), "raised", T0)
    try:
        await d.step()
        await d.drain()
    finally:
        await d.close()
    assert modem.sent and all(len(dict(m.params)["enterprise"]) == 4 for m in modem.sent)
    assert all(dict(m.params)["enterprise"].endswith("…") for m in modem.sent)


async def test_alarms_deliveries_shows_a_webhook_by_its_origin_only(dsn: str) -> None:
    """A chat robot's webhook URL carries its token: the CLI shows the origin, as the journal does."""
    from alarms.delivery_evidence import evidence_of

    url = "https://oapi.dingtalk.com:8443/robot/send?access_token=SECRET123"
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        await conn.execute(
            """INSERT INTO delivery (key, alarm_key, event, priority, step, receiver, target, channel,
                                     recipient, group_interval_s, due_at, state, updated_at)
               VALUES ('k1', 'A.B.C:HH', 'raised', 'high', 0, 'robot', 'webhook', 'webhook', %s, 0,
                       now(), 'sent', now())""",
            (url,),
        )
        rows = await evidence_of(conn, "A.B.C:HH")
    assert [r.recipient for r in rows] == ["https://oapi.dingtalk.com:8443"]
