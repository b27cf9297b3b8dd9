"""``hazardwatch alarms deliveries KEY``: who was told of an alarm, how and when — the dispatcher's
evidence (``delivery``, ``delivery_attempt``): each escalation step, channel and recipient (masked),
its state or why it did not go out, attempts, the provider's message id and its delivery receipt.

Mounted on the alarms app by ``register(app)``; exit codes as ``alarms history``.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from datetime import UTC, datetime

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from alarms.delivery_evidence import DeliveryEvidence, evidence_of
from storage.db import Conn

__all__ = ["register"]

out = Console()


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

        async def job(conn: Conn) -> list[DeliveryEvidence]:
            return await evidence_of(conn, key, limit)

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
