"""The dispatcher: outbox rows to people, through Alertmanager-style stages, with evidence.

Each round (woken by NOTIFY ``notification`` from the alarm writer's commit, by the next due
time, or every ``poll_s``):

1. **plan** pending outbox rows (alarms.delivery_plan): one delivery per escalation step,
   person and channel, stored with the rows marked planned in one transaction;
2. for every delivery now due: **mute** (the alarm is shelved, suppressed or out of service),
   **stop** (a later escalation step or a voice call, when the alarm has been acknowledged or
   has cleared or was raised again since), **inhibit** (a lower level while the higher level of
   the same tag is active: GAS_L1 under GAS_L2, H under HH, L under LL; a failed device's
   data-quality alarms, one per person and step; people only: MQTT and webhooks carry every event);
3. **group** per recipient and channel (SMS, voice, e-mail): at most one message per
   ``group_interval`` of the route; what came in between goes out as one summary (counts and
   the worst alarm). Machine channels (MQTT, webhook, console) carry every event;
4. **rate limit** per channel (``rate_per_s``);
5. **send**: the delivery is marked ``sending`` and its attempt opened (committed) before the
   provider is called, ``sent`` with the provider's message id only after it accepted;
   retryable failures retry with backoff and jitter (at least the provider's Retry-After) up to
   ``max_attempts``, permanent ones fail at once. Every step is journaled in delivery_journal.

Crash safety: the idempotency key is the delivery's, fixed at planning. A delivery found
``sending`` by a dispatcher that did not start it (a crash, or the database lost while
recording) is reconciled: a channel that can be asked (``lookup``: the SMS providers, the file
outbox) says whether it accepted the message; a channel whose receiver deduplicates on the key
(webhook, MQTT) gets it again, and so does a voice call (no provider finds a call by its key, and
a second call beats none); any other is marked ``unconfirmed`` and counted, never sent twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import logging
import uuid
from collections.abc import Callable, Mapping
from typing import Any

from prometheus_client import Counter
from prometheus_client.registry import REGISTRY, CollectorRegistry

from alarms import delivery_store as ds
from alarms.channels import Channels
from alarms.delivery_plan import Told, plan
from alarms.dispatch_send import DispatcherSettings, Sender, masked
from alarms.model import AlarmDef
from alarms.roster import Rosters
from alarms.routing_model import Channel, RouteTree
from core.backoff import Backoff
from core.clock import Clock
from core.errors import StorageError
from core.plant import Plant
from storage.db import Conn, connect, translate_errors

__all__ = ["Dispatcher", "DispatcherSettings"]

log = logging.getLogger(__name__)
US = 1_000_000
_GROUPED = (Channel.SMS, Channel.VOICE, Channel.EMAIL)
_MACHINE = (Channel.MQTT, Channel.WEBHOOK)  # systems mirror the alarm state: every event, never inhibited
_MUTED = ("shelved", "suppressed", "out_of_service")
_HIGHER = {"GAS_L1": "GAS_L2", "H": "HH", "L": "LL"}
_DATA_QUALITY = ("BAD_QUALITY", "STALE")
_SEVERITY = {"critical": 0, "high": 1, "medium": 2, "low": 3}
_HOLD_S = 30  # an inhibited delivery is looked at again this often (sent once the higher level clears)
_LOCK_ID = 0x4857_4E44  # "HWND": the advisory lock of the one dispatcher per database
_RECONNECT = Backoff(initial_s=0.5, max_s=30.0, jitter=0.5, spread="below")


class _Bucket:
    def __init__(self, rate: float) -> None:
        self.rate, self.tokens, self.at = rate, max(rate, 1.0), 0.0

    def take(self, now: float) -> bool:
        self.tokens = min(max(self.rate, 1.0), self.tokens + (now - self.at) * self.rate)
        self.at = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        return False


class Dispatcher:
    def __init__(
        self,
        dsn: str,
        tree: RouteTree,
        channels: Channels,
        rosters: Rosters,
        plant: Plant,
        gas: Mapping[str, str],
        describe: Callable[[str], AlarmDef | None],
        clock: Clock,
        settings: DispatcherSettings | None = None,
        *,
        registry: CollectorRegistry | None = REGISTRY,
    ) -> None:
        self.dsn, self.tree, self.channels, self.rosters = dsn, tree, channels, rosters
        self.plant, self.gas, self.describe, self.clock = plant, gas, describe, clock
        self.settings = settings or DispatcherSettings()
        self._conn: Conn | None = None
        self._lanes: dict[tuple[Channel, str], int] | None = None
        self._buckets = {ch: _Bucket(r) for ch, r in channels.rate_per_s.items()}
        self._inflight: dict[int, asyncio.Task[None]] = {}
        self._sending: set[int] = set()  # deliveries this dispatcher is sending or reconciling
        self._busy: set[tuple[Channel, str]] = set()  # lanes with a send in flight
        self._wake_at_us: int | None = None
        registry = registry or CollectorRegistry()
        self._outcomes = Counter(
            "hazardwatch_notifications", "Delivery attempts and decisions by channel and outcome",
            ["channel", "outcome"], registry=registry,
        )  # fmt: skip
        self.sender = Sender(dsn, channels, describe, clock, self.settings, self._outcomes, self._sent)
        self._reported_at = -float("inf")
        self.run_id = uuid.uuid4().hex  # deliveries this run marks sending carry it
        self._device_of: dict[str, str] | None = None  # tag key -> device id
        # a lane is surely held this long after its last send (the shortest group_interval)
        self._shortest_interval_s = min((r.options.group_interval_s for r in tree.routes()), default=0)

    def _sent(self, d: ds.Due, now_us: int) -> None:
        if d.channel in _GROUPED and self._lanes is not None:  # the next one waits a group_interval
            self._lanes[(d.channel, d.recipient)] = now_us

    # --- the loop ---------------------------------------------------------------------------

    async def run(self) -> None:
        """Rounds until cancelled; reconnects with backoff while the database is away."""
        attempt = 0
        while True:
            try:
                listen = await connect(self.dsn, autocommit=True, application_name="hazardwatch-dispatch")
                try:
                    with translate_errors("wait for notifications"):
                        await self._lead(listen)
                        await listen.execute("LISTEN notification")
                    attempt = 0
                    while True:
                        await self.step()
                        wait = self.settings.poll_s
                        if self._wake_at_us is not None:
                            wait = min(wait, max((self._wake_at_us - self.clock.now_us()) / US, 0.0))
                        with translate_errors("wait for notifications"):
                            async for _ in listen.notifies(timeout=wait, stop_after=1):
                                pass
                finally:
                    await listen.close()
            except StorageError as exc:
                await self._drop_conn()
                delay = _RECONNECT.delay(attempt)
                attempt += 1
                log.warning("dispatcher: database unavailable (%s); retrying in %.1f s", exc, delay)
                await asyncio.sleep(delay)
            except Exception:  # a bug must not end notification for good: loud, then on again
                await self._drop_conn()
                delay = _RECONNECT.delay(attempt)
                attempt += 1
                self._outcomes.labels("none", "dispatcher_error").inc()
                log.exception("dispatcher: round failed; starting again in %.1f s", delay)
                await asyncio.sleep(delay)

    async def _lead(self, listen: Conn) -> None:
        """One dispatcher per database sends (a session advisory lock, held while this connection
        lives): another one, in a second process by mistake or as a standby, waits here."""
        waiting = False
        while True:
            cur = await listen.execute("SELECT pg_try_advisory_lock(%s)", (_LOCK_ID,))
            row = await cur.fetchone()
            if row is not None and row[0]:
                if waiting:
                    log.warning("dispatcher: the other dispatcher is gone; this one sends now")
                return
            if not waiting:
                log.warning("dispatcher: another dispatcher holds this database's lock; standing by")
                waiting = True
            await asyncio.sleep(self.settings.poll_s)

    async def close(self, drain_s: float = 5.0) -> None:
        """Let sends in flight finish (``drain_s``), then cancel what is left: a delivery cancelled
        mid-send stays ``sending`` and the next start reconciles it."""
        if self._inflight:
            await asyncio.wait(list(self._inflight.values()), timeout=drain_s)
        for task in list(self._inflight.values()):
            task.cancel()
        await asyncio.gather(*self._inflight.values(), return_exceptions=True)
        await self._drop_conn()
        await self.sender.aclose()
        for n in self.channels.all():
            aclose = getattr(n, "aclose", None)
            if aclose is not None:
                with contextlib.suppress(Exception):
                    await aclose()

    async def drain(self) -> None:
        """Wait for the sends in flight (tests, shutdown)."""
        while self._inflight:
            await asyncio.gather(*self._inflight.values(), return_exceptions=True)

    async def _db(self) -> Conn:
        if self._conn is None or self._conn.closed:
            self._conn = await connect(self.dsn, application_name="hazardwatch-dispatch")
        return self._conn

    async def _drop_conn(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(Exception):
                await self._conn.close()
            self._conn = None

    async def step(self) -> None:
        """One round: plan what is pending, then handle what is due."""
        conn = await self._db()
        now = self.clock.now_us()
        if self._lanes is None:
            longest = max((r.options.group_interval_s for r in self.tree.routes()), default=0)
            self._lanes = await ds.lanes(conn, now - longest * US)
        while await self._plan(conn, now):
            pass
        self._wake_at_us = None
        await self._handle(conn, now)
        future = await ds.next_due_us(conn, now, self.run_id)
        if future is not None:
            self._wake(future)
        if self.clock.monotonic() - self._reported_at >= self.settings.report_every_s:
            self._reported_at = self.clock.monotonic()  # receipts on a task of their own: never in the way
            self._start(self.sender.reports(), 0)

    # --- planning ---------------------------------------------------------------------------

    async def _plan(self, conn: Conn, now: int) -> bool:
        events = await ds.pending_events(conn, self.settings.batch)
        if not events:
            return False
        told = await ds.told_of(conn, [e.alarm_key for e in events if e.event == "resolved"])
        planned, notes = [], []
        for e in events:
            p = plan(e, self.tree, self.rosters, self.plant, self.gas, told=told.get(e.alarm_key, ()),
                     voice_after_s=self.channels.voice_after_s)  # fmt: skip
            planned.append((e, p.deliveries))
            if e.event != "resolved":  # a resolve in the same batch tells whom its raise will tell
                told[e.alarm_key] = [
                    Told(d.receiver, d.target, d.channel, d.person, d.recipient, d.group_interval_s, d.due_us)
                    for d in p.deliveries if d.step == 0
                ]  # fmt: skip
            steps = sorted({d.step for d in p.deliveries})
            notes.append(
                (
                    e.alarm_key,
                    e.seq,
                    e.n,
                    None,
                    "planned",
                    {"event": e.event, "deliveries": len(p.deliveries), "steps": steps, "gaps": p.gaps},
                )
            )
            for gap in p.gaps:
                log.warning("notification of %s (%s) reaches nobody: %s", e.alarm_key, e.event, gap)
                self._outcomes.labels("none", "nobody").inc()
        await ds.save_plan(conn, planned, now)
        await ds.journal(conn, notes, now)
        return len(events) == self.settings.batch

    # --- due deliveries -----------------------------------------------------------------------

    async def _handle(self, conn: Conn, now: int) -> None:
        assert self._lanes is not None
        # a held lane's rows are left in the database: they would fill the window and starve others
        blocked = set(self._busy) | {
            lane for lane, at in self._lanes.items() if at + self._shortest_interval_s * US > now
        }
        due = await ds.due(conn, now, self.settings.batch * 20, self.run_id, sorted(blocked))
        orphans, self.sender.lost = self.sender.lost, []
        for d in orphans:  # its own sends the database lost track of: reconciled like a crash's
            if d.id not in self._sending:
                self._sending.add(d.id)
                self._start(self.sender.reconcile(d, self.run_id), d.id)
        due = [d for d in due if d.id not in self._sending]
        if not due:
            return
        states = await ds.alarm_states(conn, [d.alarm_key for d in due if d.alarm_key])
        changes: list[tuple[int, str, str | None]] = []
        held: list[tuple[int, int, str]] = []
        lost: dict[tuple[str, int, Channel, str], tuple[str, int]] = {}  # the device's first, and count
        notes: list[tuple[Any, ...]] = []
        ready = []
        for d in due:
            if d.state == "sending":  # another run's (a crash): reconcile it, once
                self._sending.add(d.id)
                self._start(self.sender.reconcile(d, self.run_id), d.id)
                continue
            verdict = self._verdict(d, states) or self._one_per_device(d, states, lost)
            if verdict is None:
                ready.append(d)
                continue
            state, reason = verdict
            note = (d.alarm_key, d.seq, d.n, d.step, state,
                    {"channel": d.channel.value, "recipient": masked(d), "reason": reason})  # fmt: skip
            if state == "held":  # looked at again later; journaled when it starts or changes
                held.append((d.id, now + _HOLD_S * US, reason))
                self._wake(now + _HOLD_S * US)
                if d.reason != reason:
                    notes.append(note)
                continue
            changes.append((d.id, state, reason))
            notes.append(note)
            self._outcomes.labels(d.channel.value, state).inc()
        if held:
            await ds.hold(conn, held, now, [])
        if changes or notes:
            await ds.set_state(conn, changes, now, notes)
        lanes: dict[tuple[Channel, str], list[ds.Due]] = {}
        for d in ready:
            lanes.setdefault((d.channel, d.recipient), []).append(d)
        for lane, members in lanes.items():
            channel = lane[0]
            if lane in self._busy:  # a send in flight: what came since waits for its outcome
                continue
            if channel in _GROUPED:
                interval = min(m.group_interval_s for m in members) * US
                free_at = self._lanes.get(lane, 0) + interval
                if free_at > now:
                    self._wake(free_at)
                    continue
                summaries = [m for m in members if m.alarm_key is None]
                if summaries:  # a summary still to go (retrying) goes first, alone: never re-grouped
                    members = summaries[:1]
                elif len(members) > 1:
                    members = [await self._summary(conn, lane, members, now)]
            for d in members:
                bucket = self._buckets.get(channel)
                if bucket is not None and not bucket.take(now / US):
                    self._wake(now + int(US / bucket.rate))
                    break
                self._sending.add(d.id)
                if channel in _GROUPED:
                    self._busy.add(lane)
                self._start(self.sender.send(d, self.run_id), d.id, lane)

    def _verdict(self, d: ds.Due, states: Mapping[str, ds.AlarmNow]) -> tuple[str, str] | None:
        """(state, reason) when the delivery no longer goes out; None when it does."""
        if d.alarm_key is None or d.event == "resolved":
            return None
        a = states.get(d.alarm_key)
        if a is None:
            return None
        if a.status in _MUTED:
            return "muted", f"the alarm is {a.status}"
        if d.step > 0 or d.channel == Channel.VOICE:
            if a.acked:
                return "stopped", f"acknowledged by {a.acked_by or '?'}"
            if not a.condition:
                return "stopped", "cleared"
            if a.raised_at_us is not None and d.event_at_us is not None and a.raised_at_us > d.event_at_us:
                return "stopped", "raised again since: the new raise escalates"
        higher = _HIGHER.get(a.kind)
        if higher is not None and d.channel not in _MACHINE:
            for s in states.values():
                if s.subject == a.subject and s.kind == higher and s.condition and s.status not in _MUTED:
                    if a.acked:
                        return "stopped", f"acknowledged by {a.acked_by or '?'} while {higher} was active"
                    if not a.condition:
                        return "stopped", f"cleared while {higher} was active"
                    return "held", f"inhibited: {higher} of the same tag is active"
        return None

    def _one_per_device(
        self,
        d: ds.Due,
        states: Mapping[str, ds.AlarmNow],
        lost: dict[tuple[str, int, Channel, str], tuple[str, int]],
    ) -> tuple[str, str] | None:
        """A device that stops answering makes every tag's data-quality alarm fire at once: each
        recipient is told once per device and step (the first such alarm due), the rest inhibited."""
        a = states.get(d.alarm_key or "")
        if a is None or a.kind not in _DATA_QUALITY or d.event == "resolved" or d.channel in _MACHINE:
            return None
        if self._device_of is None:
            self._device_of = {t.key: t.source.device for t in self.plant.tags()}
        device = self._device_of.get(a.subject)
        if device is None:
            return None
        lane = (device, d.step, d.channel, d.recipient)
        first = lost.get(lane)
        if first is None:
            lost[lane] = (d.alarm_key or "", 1)
            return None
        lost[lane] = (first[0], first[1] + 1)
        return "inhibited", f"device {device} has failed: announced once, by {first[0]}"

    def _wake(self, at_us: int) -> None:
        if self._wake_at_us is None or at_us < self._wake_at_us:
            self._wake_at_us = at_us

    async def _summary(
        self, conn: Conn, lane: tuple[Channel, str], members: list[ds.Due], now: int
    ) -> ds.Due:
        channel, recipient = lane
        who = hashlib.sha256(recipient.encode()).hexdigest()[:12]
        first = min(m.id for m in members)
        worst = min(members, key=lambda m: _SEVERITY.get(m.priority, 9))
        key = f"hw-sum-{channel.value}-{who}-{first}"
        draft = ds.Due(
            0,
            key,
            None,
            None,
            None,
            "summary",
            worst.priority,
            0,
            worst.receiver,
            channel,
            recipient,
            min(m.group_interval_s for m in members),
            now,
            "planned",
            0,
            None,
            None,
        )
        summary_id = await ds.group(conn, [m.id for m in members], draft, now)
        await ds.journal(conn, [(m.alarm_key, m.seq, m.n, m.step, "grouped",
                                 {"channel": channel.value, "recipient": masked(m), "summary": summary_id})
                                for m in members], now)  # fmt: skip
        self._outcomes.labels(channel.value, "grouped").inc(len(members))
        return dataclasses.replace(draft, id=summary_id)

    # --- sending ------------------------------------------------------------------------------

    def _start(self, work: Any, delivery_id: int, lane: tuple[Channel, str] | None = None) -> None:
        task: asyncio.Task[None] = asyncio.create_task(work)
        key = id(task)
        self._inflight[key] = task

        def done(_: asyncio.Task[None]) -> None:
            self._inflight.pop(key, None)
            self._sending.discard(delivery_id)
            if lane is not None:
                self._busy.discard(lane)

        task.add_done_callback(done)
