"""``hazardwatch alarms deliveries KEY``: who was told of an alarm, how and when — the dispatcher's
evidence (``delivery``, ``delivery_attempt``): each escalation step, channel and recipient (masked),
its state or why it did not go out, attempts, the provider's message id and its delivery receipt.

Mounted on the alarms app by ``register(app)``; exit codes as ``alarms history``.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from datetime import UTC, datetime

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from alarms.dispatch_send import mask_recipient
from storage.db import Conn, translate_errors

__all__ = ["DeliveryRow", "deliveries_of", "register"]

out = Console()


@dataclass(frozen=True)
class DeliveryRow:
    seq: int | None
    event: str
    step: int
    receiver: str
    channel: str
    recipient: str  # masked
    state: str
    reason: str | None
    attempts: int
    provider: str | None
    provider_message_id: str | None
    due_at: datetime
    sent_at: datetime | None
    report: str | None  # DELIVERED / FAILED / PENDING with the operator's code


async def deliveries_of(conn: Conn, alarm_key: str, limit: int = 200) -> list[DeliveryRow]:
    """An alarm's deliveries (and the flood summaries that carried them), oldest first."""
    with translate_errors("read deliveries"):
        cur = await conn.execute(
            """SELECT d.seq, d.event, d.step, d.receiver, d.channel, d.recipient,
                      CASE WHEN d.state = 'grouped' THEN 'grouped → ' || s.state ELSE d.state END,
                      coalesce(d.reason, s.reason), d.attempts + coalesce(s.attempts, 0),
                      coalesce(d.provider, s.provider), coalesce(d.provider_message_id, s.provider_message_id),
                      d.due_at, coalesce(d.sent_at, s.sent_at),
                      coalesce(d.report_status, s.report_status) || coalesce(' ' || coalesce(d.report_code, s.report_code), '')
               FROM delivery d LEFT JOIN delivery s ON s.id = d.summary_id
               WHERE d.alarm_key = %s ORDER BY d.seq DESC, d.step, d.id LIMIT %s""",
            (alarm_key, limit),
        )
        rows = await cur.fetchall()
    return [
        DeliveryRow(r[0], r[1], r[2], r[3], r[4], mask_recipient(r[4], r[5]), r[6], r[7], r[8], r[9], r[10], r[11], r[12],
                    r[13])
        for r in reversed(rows)
    ]  # fmt: skip


def register(app: typer.Typer, run: object, dsn_of: object, key_arg: object, dsn_opt: object) -> None:
    @app.command("deliveries")
    def deliveries_cmd(
        key: str = key_arg,  # type: ignore[assignment]
        limit: int = typer.Option(200, "--limit", min=1, help="The newest this many deliveries."),
        as_json: bool = typer.Option(False, "--json", help="Print a JSON array instead of a table."),
        dsn: str | None = dsn_opt,  # type: ignore[assignment]
    ) -> None:
        """Who was told of an alarm: each escalation step, channel and person (phones masked), the
        outcome or why it did not go out, attempts, the provider's id and delivery receipt."""

        async def job(conn: Conn) -> list[DeliveryRow]:
            return await deliveries_of(conn, key, limit)

        rows = run(dsn_of(dsn), job)  # type: ignore[operator]
        if as_json:
            doc = [
                {k: v.isoformat() if isinstance(v, datetime) else v for k, v in asdict(r).items()}
                for r in rows
            ]
            typer.echo(json.dumps(doc, ensure_ascii=False, indent=2))
            return
        table = Table(show_edge=False)
        for col in ("commit", "event", "step", "receiver", "channel", "to", "state", "why", "tries", "provider id",
                    "sent (UTC)", "receipt"):  # fmt: skip
            table.add_column(col)
        for r in rows:
            sent = f"{r.sent_at.astimezone(UTC):%Y-%m-%d %H:%M:%S}" if r.sent_at else "-"
            table.add_row(*map(Text, (str(r.seq), r.event, str(r.step), r.receiver, r.channel, r.recipient, r.state,
                                      r.reason or "", str(r.attempts), r.provider_message_id or "", sent,
                                      r.report or "")))  # fmt: skip
        out.print(table)
        out.print(f"{len(rows)} deliver{'y' if len(rows) == 1 else 'ies'}")
