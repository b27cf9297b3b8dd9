"""The dispatcher's concurrency and failure paths (found by review): its own send in flight is
never reconciled as a crash's; deliveries waiting for a send slot are not claimed; the loop does
not spin while a send is in flight; a resolve reaches whom a still-retrying raise will reach; a
summary is never grouped into another, and its failure fails what it carried; a provider that
cannot be asked marks a crashed send unconfirmed; webhook URLs are shown by origin only."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from alarms.channels import Channels
from alarms.delivery_store import Due
from alarms.dispatch_send import DispatcherSettings, masked
from alarms.dispatcher import Dispatcher
from alarms.model import Catalog
from alarms.notify import Message, PermanentError, Receipt, RecordingNotifier, RetryableError
from alarms.roster_load import load_rosters
from alarms.routing import compile_routes
from alarms.routing_model import Channel, gas_classes
from core.clock import FakeClock, SystemClock
from core.config import load_plant
from core.plant import Plant
from rules.compile import compile_rules
from storage.migrate import Backend
from tests.alarms.test_dispatcher import ROUTES, T0, US, Plantside, _alarm
from tests.support.databases import fetch_all, migrated_db
from tests.support.waiting import eventually

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def plant() -> Plant:
    return load_plant(ROOT / "config/demo/plant.yaml")


@pytest.fixture(scope="module")
def catalog(plant: Plant) -> Catalog:
    return Catalog(plant, compile_rules(plant))


@pytest.fixture
def dsn() -> Iterator[str]:
    with migrated_db(Backend.POSTGRES) as url:
        yield url


def _dispatcher(dsn: str, plant: Plant, catalog: Catalog, tmp_path: Path, notifier: Any, clock: Any,
                settings: DispatcherSettings | None = None, routes: str = ROUTES) -> Dispatcher:  # fmt: skip
    path = tmp_path / "routes.yaml"
    path.write_text(routes.replace("escalation: default", "escalation: none"), encoding="utf-8")
    return Dispatcher(dsn, compile_routes(path), Channels({Channel.SMS: notifier}),
                      load_rosters(ROOT / "config/demo/rosters.yaml", plant), plant, gas_classes(plant),
                      catalog.by_key, clock, settings, registry=None)  # fmt: skip


class Gated(RecordingNotifier):
    """Holds every send until ``gate`` is set; counts lookups (a reconcile would ask)."""

    def __init__(self) -> None:
        super().__init__("sms-fake")
        self.gate = asyncio.Event()
        self.lookups = 0

    async def send(self, message: Message) -> Receipt:
        self.attempts.append(message)
        await self.gate.wait()
        self.sent.append(message)
        return Receipt(self.provider, f"fake-{len(self.sent)}", message.idempotency_key)

    async def lookup(self, message: Message, sent_at_us: int) -> Receipt | None:
        self.lookups += 1
        return None


async def test_its_own_send_in_flight_is_never_reconciled_and_the_loop_does_not_spin(
    dsn: str, plant: Plant, catalog: Catalog, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sms = Gated()
    d = _dispatcher(dsn, plant, catalog, tmp_path, sms, SystemClock(), DispatcherSettings(poll_s=0.5))
    rounds = 0
    step = d.step

    async def counted() -> None:
        nonlocal rounds
        rounds += 1
        await step()

    monkeypatch.setattr(d, "step", counted)
    Plantside(dsn).event(_alarm(catalog, "LGGT", "HH"), "raised", SystemClock().now_us())
    task = asyncio.create_task(d.run())
    try:
        await eventually(lambda: len(sms.attempts) >= 1, timeout=10)
        rounds = 0
        await asyncio.sleep(2.0)
        assert rounds <= 8, f"{rounds} rounds in 2 s with a send in flight: the loop spins"
        assert sms.lookups == 0  # its own 'sending' row was not taken for a crash's
        sms.gate.set()
        await eventually(lambda: len(sms.sent) == len(sms.attempts), timeout=10)
        await asyncio.sleep(1.5)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await d.close()
    outcomes = await fetch_all(dsn, "SELECT outcome FROM delivery_attempt")
    assert outcomes and {o[0] for o in outcomes} == {"accepted"}
    assert len(sms.attempts) == len(outcomes)  # nothing sent twice


async def test_deliveries_waiting_for_a_send_slot_are_not_claimed_so_a_stop_leaves_them_planned(
    dsn: str, plant: Plant, catalog: Catalog, tmp_path: Path
) -> None:
    sms = Gated()
    alarms = [a for a in catalog if a.labels["enterprise"] == "LGGT" and a.labels.get("tag")][:4]
    # 4 alarms to the LGGT duty room's 2 people, one send slot: one send starts, the rest wait
    d = _dispatcher(dsn, plant, catalog, tmp_path, sms, FakeClock(T0), DispatcherSettings(concurrency=1))
    side = Plantside(dsn)
    for a in alarms:
        side.event(a, "raised", T0)
    await d.step()
    await eventually(lambda: len(sms.attempts) == 1, timeout=5)
    await d.close(drain_s=0.2)  # the one in flight is cancelled mid-send; the others never started
    states = sorted(r[0] for r in await fetch_all(dsn, "SELECT state FROM delivery WHERE step = 0"))
    assert states.count("sending") == 1 and set(states) <= {"sending", "planned", "grouped"}, states


async def test_a_resolve_reaches_whom_a_still_retrying_raise_will_reach(
    dsn: str, plant: Plant, catalog: Catalog, tmp_path: Path
) -> None:
    sms = RecordingNotifier(
        "sms-fake", fail=[RetryableError("sms-fake", "Throttling", "x", retry_after_s=60)] * 2
    )
    clock = FakeClock(T0)
    d = _dispatcher(dsn, plant, catalog, tmp_path, sms, clock)
    a = _alarm(catalog, "LGGT", "HH")
    side = Plantside(dsn)
    side.event(a, "raised", T0)
    try:
        await d.step()
        await d.drain()
        side.event(a, "resolved", T0 + 10 * US)  # cleared while its raise is still being retried
        for _ in range(6):
            clock.advance(61)
            await d.step()
            await d.drain()
    finally:
        await d.close()
    events = [dict(m.params)["event"] for m in sms.sent]
    assert "消警" in events or "汇总" in events, events
    rows = await fetch_all(dsn, "SELECT event, state FROM delivery WHERE alarm_key = %s", (a.key,))
    assert {r for r in rows} <= {("raised", "sent"), ("resolved", "sent"), ("raised", "grouped"),
                                  ("resolved", "grouped")}, rows  # fmt: skip


async def test_a_failed_summary_fails_what_it_carried_and_a_retrying_one_is_never_regrouped(
    dsn: str, plant: Plant, catalog: Catalog, tmp_path: Path
) -> None:
    clock = FakeClock(T0)
    sms = RecordingNotifier("sms-fake")
    d = _dispatcher(dsn, plant, catalog, tmp_path, sms, clock)
    side = Plantside(dsn)
    alarms = [a for a in catalog if a.labels["enterprise"] == "LGGT" and a.labels.get("tag")
              and a.labels["kind"] in ("HH", "LL")][:6]  # fmt: skip
    try:
        side.event(alarms[0], "raised", T0)
        await d.step()
        await d.drain()  # the first goes alone; the lane is busy for a minute
        for a in alarms[1:3]:
            side.event(a, "raised", T0 + US)
        sms.fail = [RetryableError("sms-fake", "Throttling", "x", retry_after_s=120)] * 10
        clock.advance(61)
        await d.step()
        await d.drain()  # a summary of 2, retrying
        for a in alarms[3:]:
            side.event(a, "raised", clock.now_us())
        sms.fail = []
        clock.advance(121)
        await d.step()
        await d.drain()
    finally:
        await d.close()
    summaries = [m for m in sms.sent if dict(m.params)["event"] == "汇总"]
    assert summaries and all(dict(m.params)["count"] == "2" for m in summaries[:2]), [
        m.params for m in summaries
    ]
    nested = await fetch_all(
        dsn, "SELECT count(*) FROM delivery d JOIN delivery s ON s.id = d.summary_id WHERE d.seq IS NULL"
    )
    assert nested == [(0,)]
    # a summary that fails for good fails its members: they were never told
    clock2 = FakeClock(T0 + 3600 * US)
    sms2 = RecordingNotifier("sms-fake", fail=[PermanentError("sms-fake", "isv.AMOUNT_NOT_ENOUGH", "x")] * 50)
    d2 = _dispatcher(dsn, plant, catalog, tmp_path, sms2, clock2)
    try:
        for a in alarms[:3]:
            side.event(a, "raised", clock2.now_us())
        await d2.step()
        await d2.drain()
    finally:
        await d2.close()
    rows = await fetch_all(dsn, "SELECT state, reason FROM delivery WHERE seq > 5 AND seq IS NOT NULL")
    assert rows and all(r[0] == "failed" for r in rows), rows


async def test_a_provider_that_cannot_be_asked_leaves_a_crashed_send_unconfirmed(
    dsn: str, plant: Plant, catalog: Catalog, tmp_path: Path
) -> None:
    class Refuses(RecordingNotifier):
        async def lookup(self, message: Message, sent_at_us: int) -> Receipt | None:
            raise PermanentError("sms-fake", "isp.RAM_PERMISSION_DENY", "no query permission")

    clock = FakeClock(T0)
    Plantside(dsn).event(_alarm(catalog, "LGGT", "HH"), "raised", T0)
    first = _dispatcher(dsn, plant, catalog, tmp_path, Gated(), clock)
    await first.step()
    await asyncio.sleep(0.3)
    await first.close(drain_s=0.1)  # killed mid-send
    sms = Refuses("sms-fake")
    second = _dispatcher(dsn, plant, catalog, tmp_path, sms, clock)
    await second.step()
    await second.drain()
    await second.close()
    rows = await fetch_all(dsn, "SELECT state FROM delivery WHERE state <> 'planned'")
    assert rows and {r[0] for r in rows} == {"unconfirmed"} and not sms.sent


def test_a_webhook_is_shown_by_its_origin_only() -> None:
    d = Due(1, "k", 1, 0, "A", "raised", "high", 0, "r", Channel.WEBHOOK,
            "https://qyapi.weixin.qq.com/cgi-bin/webhook/send?key=SECRETKEY123", 60, 0, "planned", 0, None, None)  # fmt: skip
    assert masked(d) == "https://qyapi.weixin.qq.com"


async def test_the_database_lost_between_the_send_and_its_record_is_reconciled_once_it_returns(
    dsn: str, plant: Plant, catalog: Catalog, tmp_path: Path
) -> None:
    from psycopg.conninfo import conninfo_to_dict, make_conninfo

    from alarms.notify.console import ConsoleOutbox
    from tests.support.proxy import TcpProxy

    proxy = TcpProxy(int(conninfo_to_dict(dsn)["port"] or 5432))
    await proxy.start()
    outbox = ConsoleOutbox(tmp_path / "out.jsonl", echo=False)

    class CutAfterSend:  # the file takes it, then the database goes away before it is recorded (once)
        template = None
        lookup = outbox.lookup
        cuts = 0

        async def send(self, message: Message) -> Receipt:
            receipt = await outbox.send(message)
            if not self.cuts:
                self.cuts += 1
                await proxy.cut()
            return receipt

    clock = FakeClock(T0)
    d = _dispatcher(dsn.replace(dsn, make_conninfo(dsn, port=str(proxy.port))), plant, catalog, tmp_path,
                    CutAfterSend(), clock)  # fmt: skip
    Plantside(dsn).event(_alarm(catalog, "LGGT", "HH"), "raised", T0)
    try:
        await d.step()
        await d.drain()
        assert {r[0] for r in await fetch_all(dsn, "SELECT state FROM delivery WHERE step = 0")} == {
            "sending"
        }
        await proxy.restore()
        await d._drop_conn()  # the round's connection died with the cut: the run loop reconnects
        for _ in range(2):
            clock.advance(1)
            await d.step()
            await d.drain()
    finally:
        await d.close()
        await proxy.stop()
    lines = (tmp_path / "out.jsonl").read_text("utf-8").splitlines()
    rows = await fetch_all(dsn, "SELECT state FROM delivery WHERE step = 0")
    assert {r[0] for r in rows} == {"sent"} and len(lines) == len(rows)  # each written once
    # the one the file took before the cut is found there; another send the cut interrupted before
    # the file took it (two people on duty, sent concurrently) is found missing and sent again
    outcomes = await fetch_all(dsn, "SELECT outcome FROM delivery_attempt ORDER BY delivery_id, attempt")
    assert "recovered" in {o[0] for o in outcomes}
    assert {o[0] for o in outcomes} <= {"recovered", "not_found", "accepted"}, outcomes
