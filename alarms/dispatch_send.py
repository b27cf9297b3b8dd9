"""Sending one delivery, reconciling one a crash interrupted, and fetching delivery receipts:
the dispatcher's (alarms.dispatcher) work at the provider, each on a connection of its own.

A send's record follows the provider's answer: ``sent`` with the provider's ids, ``retry`` after
backoff (never before the provider's Retry-After) up to ``max_attempts``, ``failed``. A delivery
left ``sending`` by a crash is asked about (``lookup``), sent again where that is safe (webhook,
MQTT: receivers deduplicate; voice: a second call beats none), else marked ``unconfirmed``.
Receipts (``report``) of sent deliveries are fetched every ``report_every_s`` for a day.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from prometheus_client import Counter
from psycopg.pq import TransactionStatus

from alarms import delivery_store as ds
from alarms.channels import Channels
from alarms.delivery_plan import Event
from alarms.delivery_text import event_params, fit, summary_params
from alarms.model import AlarmDef
from alarms.notify import (
    AlarmEvent,
    Message,
    Notifier,
    NotifierConfigError,
    NotifyError,
    PermanentError,
    Receipt,
    RetryableError,
)
from alarms.routing_model import Channel
from core.backoff import Backoff
from core.clock import Clock
from core.errors import StorageError
from core.redact import mask_email, mask_phone
from storage.db import Conn, connect

__all__ = ["DispatcherSettings", "Sender", "mask_recipient", "masked"]

log = logging.getLogger("alarms.dispatcher")
US = 1_000_000
_REPORT_FOR_US = 24 * 3600 * US  # receipts are asked for this long after the send
_ASK_FOR_US = 3600 * US  # a provider that cannot be asked about a crashed send for this long: unconfirmed


@dataclass(frozen=True)
class DispatcherSettings:
    poll_s: float = 1.0  # a missed NOTIFY costs at most this
    batch: int = 500  # outbox rows planned per round
    max_attempts: int = 8  # then a retryable failure is given up (state failed)
    retry: Backoff = field(default_factory=lambda: Backoff(initial_s=2.0, max_s=300.0, jitter=0.3))
    concurrency: int = 32  # sends in flight
    report_every_s: float = 60.0  # delivery receipts fetched this often


class Sender:
    def __init__(
        self,
        dsn: str,
        channels: Channels,
        describe: Callable[[str], AlarmDef | None],
        clock: Clock,
        settings: DispatcherSettings,
        outcomes: Counter,
        on_sent: Callable[[ds.Due, int], None],
    ) -> None:
        self.dsn, self.channels, self.describe, self.clock = dsn, channels, describe, clock
        self.settings, self._outcomes, self.on_sent = settings, outcomes, on_sent
        self._slots = asyncio.Semaphore(settings.concurrency)
        self._idle: list[Conn] = []
        self.lost: list[ds.Due] = []  # this run's sends whose outcome the database did not take

    async def message(self, conn: Conn, d: ds.Due, notifier: Notifier) -> Message:
        template = getattr(notifier, "template", None)
        names = getattr(template, "names", None)
        max_chars = getattr(template, "max_chars", None) or getattr(template, "max_param_chars", None)
        if d.seq is None:  # a summary
            summary = await ds.summary_members(conn, d.id)
            evs = await ds.events(conn, summary)
            members = [(e, self.describe(e.alarm_key)) for e in evs.values()]
            params = summary_params(members, self.clock.now_us()) if members else {}
            return Message(d.recipient, fit(params, names, max_chars), d.key)
        assert d.n is not None
        e = (await ds.events(conn, [(d.seq, d.n)]))[(d.seq, d.n)]
        params = event_params(e, self.describe(e.alarm_key))
        return Message(d.recipient, fit(params, names, max_chars), d.key, _alarm_event(e))

    async def send(self, d: ds.Due, run_id: str) -> None:
        """Claim the delivery (``sending``, an attempt opened, committed) once a slot is free, then
        send it and record the outcome. Claimed only here: a delivery waiting for a slot when the
        process stops is still ``planned``, never mistaken for one interrupted mid-send."""
        attempt = 0
        claiming = False
        started = self.clock.now_us()
        try:
            async with self._slots, self._connection() as conn:
                claiming = True
                attempts = await ds.claim(conn, [d.id], started, run_id)
                if d.id in attempts:  # else changed meanwhile (another run, a state change)
                    attempt = attempts[d.id]
                    await self._send_on(conn, d, attempt)
        except StorageError as exc:
            # claimed, or perhaps claimed (the commit's answer lost), but not recorded: this run
            # reconciles it once the database is back, as it would a crash's (taking it over finds
            # nothing to do when the claim never committed: the delivery is still planned)
            log.warning("delivery %s: the database failed during its send (%s)", d.key, exc)
            if claiming:
                lost = dataclasses.replace(
                    d, claimed_by=run_id, attempts=attempt or d.attempts + 1, sent_at_us=started
                )
                self.lost.append(lost)

    @contextlib.asynccontextmanager
    async def _connection(self) -> AsyncIterator[Conn]:
        """A connection for one send, kept for the next (at most ``concurrency`` idle): opening
        one per send cost tens of milliseconds of the alarm's latency (bench/notify.py)."""
        conn = self._idle.pop() if self._idle else None
        if conn is None or conn.closed:
            conn = await connect(self.dsn, application_name="hazardwatch-dispatch-send")
        ok = False
        try:
            yield conn
            ok = True
        finally:
            idle = not conn.closed and conn.info.transaction_status == TransactionStatus.IDLE
            if ok and idle and len(self._idle) < self.settings.concurrency:
                self._idle.append(conn)
            else:
                with contextlib.suppress(Exception):
                    await conn.close()

    async def aclose(self) -> None:
        while self._idle:
            with contextlib.suppress(Exception):
                await self._idle.pop().close()

    def _notifier(self, d: ds.Due) -> Notifier:
        try:
            notifier = self.channels.notifier(d.channel, d.recipient)
        except (NotifierConfigError, ValueError) as exc:  # e.g. a webhook URL its notifier refuses
            raise PermanentError(d.channel.value, "CONFIG", str(exc)) from None
        if notifier is None:
            raise PermanentError(d.channel.value, "NO_CHANNEL", "the channel is not configured")
        return notifier

    async def _send_on(self, conn: Conn, d: ds.Due, attempt: int) -> None:
        try:
            notifier = self._notifier(d)
        except PermanentError as exc:
            await self._finish(conn, d, attempt, exc)
            return
        message = await self.message(conn, d, notifier)
        try:
            receipt = await notifier.send(message)
        except NotifyError as exc:
            await self._finish(conn, d, attempt, exc)
            return
        except Exception as exc:  # a notifier's bug: retried, and loud
            log.exception("notifier %r failed on %s", notifier, d.key)
            await self._finish(conn, d, attempt, RetryableError(d.channel.value, "ERROR", type(exc).__name__))
            return
        now = self.clock.now_us()
        await ds.finish(conn, d.id, attempt, state="sent", outcome="accepted", now_us=now,
                        provider=receipt.provider, provider_message_id=receipt.provider_message_id,
                        request_id=receipt.request_id or None,
                        note=(d.alarm_key, d.seq, d.n, d.step, "sent",
                              {"channel": d.channel.value, "recipient": masked(d),
                               "provider": receipt.provider, "id": receipt.provider_message_id}))  # fmt: skip
        self._outcomes.labels(d.channel.value, "sent").inc()
        self.on_sent(d, now)

    async def _finish(self, conn: Conn, d: ds.Due, attempt: int, exc: NotifyError) -> None:
        now = self.clock.now_us()
        retry = isinstance(exc, RetryableError) and attempt < self.settings.max_attempts
        state = "retry" if retry else "failed"
        due = None
        if retry:
            wait = self.settings.retry.delay(attempt - 1)
            after = getattr(exc, "retry_after_s", None)
            due = now + int(max(wait, after or 0.0) * US)
        detail = str(exc)
        outcome = "retryable" if isinstance(exc, RetryableError) else "permanent"
        await ds.finish(conn, d.id, attempt, state=state, outcome=outcome, now_us=now, code=exc.code,
                        detail=detail, due_us=due,
                        note=(d.alarm_key, d.seq, d.n, d.step, state,
                              {"channel": d.channel.value, "recipient": masked(d), "code": exc.code,
                               "attempt": attempt}))  # fmt: skip
        self._outcomes.labels(d.channel.value, state).inc()
        if state == "failed" and d.seq is None:  # a summary: those it carried were not told either
            await ds.fail_members(conn, d.id, f"the summary that carried it failed: {exc.code}", now)
        level = logging.WARNING if retry else logging.ERROR
        log.log(
            level,
            "delivery %s (%s to %s) attempt %d: %s",
            d.key,
            d.channel.value,
            masked(d),
            attempt,
            "will retry" if retry else f"failed: {detail}",
        )

    async def reconcile(self, d: ds.Due, run_id: str) -> None:
        """A delivery another run left ``sending`` (a crash): taken over (so no other run does the
        same), then asked about, sent again where that is safe, or marked unconfirmed."""
        try:
            async with self._slots, self._connection() as conn:
                if await ds.take_over(conn, d.id, d.claimed_by, run_id, self.clock.now_us()):
                    await self._reconcile_on(conn, d)
        except StorageError as exc:  # still 'sending', now this run's: reconciled once the database is back
            log.warning("delivery %s: the database failed while reconciling it (%s)", d.key, exc)
            self.lost.append(dataclasses.replace(d, claimed_by=run_id))

    async def _reconcile_on(self, conn: Conn, d: ds.Due) -> None:
        try:
            notifier: Notifier | None = self._notifier(d)
        except PermanentError:
            notifier = None
        now = self.clock.now_us()
        attempt = max(d.attempts, 1)
        if d.channel == Channel.VOICE:  # no provider finds a call by its key: a second call beats none
            await ds.finish(conn, d.id, attempt, state="retry", outcome="not_found", now_us=now, due_us=now,
                            detail="interrupted; a call cannot be looked up: called again")  # fmt: skip
            return
        lookup = getattr(notifier, "lookup", None)
        if notifier is not None and lookup is not None:
            message = await self.message(conn, d, notifier)
            try:
                receipt = await lookup(message, d.sent_at_us or now)
            except RetryableError as exc:
                if now - (d.sent_at_us or now) > _ASK_FOR_US:
                    await self._unconfirmed(
                        conn, d, attempt, now, f"the provider could not be asked for an hour: {exc.code}"
                    )
                    return
                log.warning(
                    "delivery %s: cannot ask %s whether it was sent (%s); asking again later",
                    d.key,
                    d.channel.value,
                    exc,
                )
                await ds.postpone(conn, d.id, now + int(self.settings.retry.delay(0) * US), now)
                return
            except NotifyError as exc:
                await self._unconfirmed(conn, d, attempt, now, f"the provider cannot be asked: {exc.code}")
                return
            if receipt is not None:
                await ds.finish(conn, d.id, attempt, state="sent", outcome="recovered", now_us=now,
                                provider=receipt.provider, provider_message_id=receipt.provider_message_id,
                                note=(d.alarm_key, d.seq, d.n, d.step, "recovered",
                                      {"channel": d.channel.value, "recipient": masked(d)}))  # fmt: skip
                self._outcomes.labels(d.channel.value, "recovered").inc()
                return
            await ds.finish(
                conn,
                d.id,
                attempt,
                state="retry",
                outcome="not_found",
                now_us=now,
                due_us=now,
                detail="the provider has no record of it: sent again",
            )
            return
        if notifier is not None and getattr(notifier, "idempotent", False):
            await ds.finish(
                conn,
                d.id,
                attempt,
                state="retry",
                outcome="not_found",
                now_us=now,
                due_us=now,
                detail="interrupted; the receiver deduplicates on the idempotency key",
            )
            return
        await self._unconfirmed(conn, d, attempt, now, "the channel cannot be asked")

    async def _unconfirmed(self, conn: Conn, d: ds.Due, attempt: int, now: int, why: str) -> None:
        await ds.finish(conn, d.id, attempt, state="unconfirmed", outcome="unconfirmed", now_us=now,
                        detail=f"interrupted between the send and its record; {why}, so it is not sent again",
                        note=(d.alarm_key, d.seq, d.n, d.step, "unconfirmed",
                              {"channel": d.channel.value, "recipient": masked(d), "why": why}))  # fmt: skip
        self._outcomes.labels(d.channel.value, "unconfirmed").inc()
        log.error(
            "delivery %s (%s to %s) was interrupted and cannot be confirmed: not sent again",
            d.key,
            d.channel.value,
            masked(d),
        )

    async def reports(self) -> int:
        """Fetch the delivery receipts of sent deliveries not final yet (on a connection of its own,
        off the dispatcher's round); how many were stored."""
        conn = await connect(self.dsn, application_name="hazardwatch-dispatch-receipts")
        try:
            return await self._reports_on(conn)
        finally:
            await conn.close()

    async def _reports_on(self, conn: Conn) -> int:
        now = self.clock.now_us()
        stored = 0
        for d, provider, message_id in await ds.awaiting_report(conn, now - _REPORT_FOR_US, 100):
            try:
                notifier: Notifier | None = self._notifier(d)
            except PermanentError:
                continue
            report = getattr(notifier, "report", None)
            if notifier is None or report is None:
                continue
            message = await self.message(conn, d, notifier)
            try:
                got = await report(Receipt(provider, message_id, d.key), message, d.sent_at_us or now)
            except NotifyError as exc:
                log.debug("receipt of %s not fetched: %s", d.key, exc)
                continue
            if got is not None:
                await ds.store_report(conn, d.id, got, now)
                stored += 1
        return stored


def masked(d: ds.Due) -> str:
    """The recipient as logs and the journal show it (``mask_recipient``)."""
    return mask_recipient(d.channel, d.recipient)


def mask_recipient(channel: str, recipient: str) -> str:
    """A delivery's recipient fit for logs, journals and screens: phones and e-mail masked, a
    webhook by its origin only (chat-robot URLs carry their token in the path or query)."""
    if channel == Channel.EMAIL:
        return mask_email(recipient)
    if channel == Channel.WEBHOOK:
        parts = urlsplit(recipient)
        return f"{parts.scheme}://{parts.hostname or '?'}{f':{parts.port}' if parts.port else ''}"
    return mask_phone(recipient) if channel in (Channel.SMS, Channel.VOICE, Channel.CONSOLE) else recipient


def _alarm_event(e: Event) -> AlarmEvent:
    return AlarmEvent(e.alarm_key, e.event, e.priority, tuple(sorted(e.labels.items())), e.message_zh,
                      e.message_en, e.at_us)  # fmt: skip
