"""An alarm's notification evidence as people read it: each delivery (and the flood summary that
carried it) with its recipient masked, for ``hazardwatch alarms deliveries`` and the API's alarm
detail. Recipients are masked here, once, by the dispatcher's rule (``mask_recipient``)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from psycopg.rows import dict_row

from alarms.dispatch_send import mask_recipient
from storage.db import Conn, translate_errors

__all__ = ["DeliveryEvidence", "evidence_of"]


@dataclass(frozen=True, slots=True)
class DeliveryEvidence:
    seq: int | None  # the alarm commit it announces
    event: str
    step: int  # escalation step (0: at once)
    receiver: str
    person: str | None  # the roster's person key
    channel: str
    recipient: str  # masked: 138****1234, w***@example.com, a webhook's origin
    state: str  # 'grouped → sent': carried by a flood summary
    reason: str | None
    attempts: int
    provider: str | None
    provider_message_id: str | None
    due_at: datetime  # times in UTC
    sent_at: datetime | None
    report: str | None  # DELIVERED / FAILED / PENDING with the operator's code
    report_at: datetime | None


def _utc(at: datetime | None) -> datetime | None:
    return None if at is None else at.astimezone(UTC)


async def evidence_of(conn: Conn, alarm_key: str, limit: int = 200) -> list[DeliveryEvidence]:
    """The alarm's newest ``limit`` deliveries, oldest first."""
    with translate_errors("read deliveries"):
        async with conn.cursor(row_factory=dict_row) as cur:
            await cur.execute(
                """SELECT d.seq, d.event, d.step, d.receiver, d.person, d.channel, d.recipient,
                          CASE WHEN d.state = 'grouped' THEN 'grouped → ' || s.state ELSE d.state END AS state,
                          coalesce(d.reason, s.reason) AS reason,
                          d.attempts + coalesce(s.attempts, 0) AS attempts,
                          coalesce(d.provider, s.provider) AS provider,
                          coalesce(d.provider_message_id, s.provider_message_id) AS provider_message_id,
                          d.due_at, coalesce(d.sent_at, s.sent_at) AS sent_at,
                          coalesce(d.report_status, s.report_status)
                              || coalesce(' ' || coalesce(d.report_code, s.report_code), '') AS report,
                          coalesce(d.report_at, s.report_at) AS report_at
                   FROM delivery d LEFT JOIN delivery s ON s.id = d.summary_id
                   WHERE d.alarm_key = %s ORDER BY d.seq DESC NULLS LAST, d.step DESC, d.id DESC LIMIT %s""",
                (alarm_key, limit),
            )
            rows = await cur.fetchall()
    return [
        DeliveryEvidence(
            **{
                **r,
                "recipient": mask_recipient(r["channel"], r["recipient"]),
                **{k: _utc(r[k]) for k in ("due_at", "sent_at", "report_at")},
            }
        )
        for r in reversed(rows)
    ]
