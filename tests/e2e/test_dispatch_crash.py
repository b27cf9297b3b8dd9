"""The dispatcher killed in the middle of a send, then restarted: the provider receives each message
once (issue 12, acceptance).

A real dispatcher process (tests/e2e/dispatch_driver.py, the real clock) sends SMS through Aliyun
Dysmsapi played by a loopback gateway in this process, which checks every request's ACS3 signature
(the verifier of tests/alarms/notify/test_aliyun_sms), keeps what SendSms accepted and answers
QuerySendDetails from it. Three alarms of three hazard sources reach the duty room and each source's
包保 trio: eight messages on an ordinary day, two of them flood summaries, sent concurrently. The
gateway SIGKILLs the dispatcher on the third SendSms it receives, before answering, having either
taken the message (the dispatcher dies between the provider's acceptance and its record) or not (it
dies after claiming the attempt, before the provider took it). Either way the delivery is left
``sending``, and so are the other sends in flight; the restarted dispatcher asks QuerySendDetails for
each one's OutId and sends it again only when the gateway has no record of it. Evidence: each
delivery's attempts are ``accepted``, ``recovered``, or ``not_found`` then ``accepted``, and its
provider id is the BizId of the answer that accepted it.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import psycopg
import pytest

from alarms.model import AlarmDef, Catalog
from core.config import load_plant
from rules.compile import compile_rules
from storage.db import Backend
from tests.alarms.notify.test_aliyun_sms import ENV, KEY_ID, KEY_SECRET, acs3_verify
from tests.alarms.test_dispatcher import Plantside
from tests.support.databases import migrated_db
from tests.support.http_server import CLOSE, LoopbackHttpServer, RawRequest, Reply
from tests.support.waiting import eventually

ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / "config" / "demo"
BEIJING = timezone(timedelta(hours=8))
KILL_AT = 3  # the SendSms request the dispatcher dies on
TEMPLATE = ("enterprise", "hazard_source", "tag", "event", "time")
ROUTES = """
route:
  receiver: duty_room
  group_wait: 0s
  group_interval: 1s
  escalation: at_once
receivers:
  - name: duty_room
    targets: [{{kind: duty_room, channels: [sms]}}]
escalations:
  at_once:
    critical: [{{after: 0s, receivers: [baobao]}}]
    high: [{{after: 0s, receivers: [baobao]}}]
    medium: [{{after: 0s, receivers: [baobao]}}]
    low: [{{after: 0s, receivers: [baobao]}}]
channels:
  sms:
    provider: aliyun
    sign_name: 危化监测
    template_code: SMS_123456789
    template_params: [{template}]
    endpoint: {endpoint}
    timeout_s: 10
"""


@dataclass
class Dysmsapi:
    """SendSms and QuerySendDetails of one account: what SendSms took is kept as the send records
    QuerySendDetails pages through (by number and Beijing SendDate), with the OutId it came with.
    ``die`` is called on the ``kill_at``-th SendSms, once, after taking the message or instead of it."""

    kill_at: int
    take_then_die: bool
    die: Callable[[], Awaitable[None]] | None = None
    records: list[dict[str, Any]] = field(default_factory=list)
    sends: int = 0
    killed_out_id: str | None = None
    refused: list[Reply] = field(default_factory=list)
    queried: list[dict[str, str]] = field(default_factory=list)
    nonces: set[str] = field(default_factory=set)

    async def __call__(self, request: RawRequest) -> object:
        refusal = acs3_verify(request, {KEY_ID: KEY_SECRET}, time.time(), self.nonces)
        if refusal is not None:
            self.refused.append(refusal)
            return refusal
        action, q = request.header("x-acs-action"), request.query()
        if request.header("x-acs-version") != "2017-05-25":
            return Reply(400, {"Code": "InvalidVersion", "Message": "?", "RequestId": "loopback"})
        if action == "SendSms":
            return await self._send(q)
        if action == "QuerySendDetails":
            self.queried.append(q)
            return self._query(q)
        return Reply(400, {"Code": "InvalidAction.NotFound", "Message": "?", "RequestId": "loopback"})

    async def _send(self, q: dict[str, str]) -> object:
        self.sends += 1
        n = self.sends
        dying = n == self.kill_at and self.die is not None
        missing = {"PhoneNumbers", "SignName", "TemplateCode", "TemplateParam", "OutId"} - set(q)
        if missing or q["TemplateCode"] != "SMS_123456789" or q["SignName"] != "危化监测":
            return Reply(200, {"Code": "isv.INVALID_PARAMETERS", "Message": "bad", "RequestId": f"req-{n}"})
        if not dying or self.take_then_die:
            now = datetime.now(BEIJING).strftime("%Y-%m-%d %H:%M:%S")
            self.records.append({
                "PhoneNum": q["PhoneNumbers"], "SendStatus": 1 if dying else 3, "ErrCode": "DELIVERED",
                "TemplateCode": q["TemplateCode"], "Content": json.loads(q["TemplateParam"]), "SendDate": now,
                "ReceiveDate": "" if dying else now, "OutId": q["OutId"], "BizId": f"{n}^0",
            })  # fmt: skip
        if dying:
            assert self.die is not None
            self.killed_out_id, die, self.die = q["OutId"], self.die, None
            await die()  # dead before any answer: it never learns whether the message was taken
            return CLOSE
        return Reply(200, {"Code": "OK", "Message": "OK", "BizId": f"{n}^0", "RequestId": f"req-{n}"})

    def _query(self, q: dict[str, str]) -> Reply:
        size, page = int(q.get("PageSize", "0")), int(q.get("CurrentPage", "0"))
        if not 1 <= size <= 50 or page < 1 or not q.get("PhoneNumber") or len(q.get("SendDate", "")) != 8:
            return Reply(200, {"Code": "isv.INVALID_PARAMETERS", "Message": "bad", "RequestId": "req-q"})
        day = f"{q['SendDate'][:4]}-{q['SendDate'][4:6]}-{q['SendDate'][6:]}"
        found = [
            r for r in self.records
            if r["PhoneNum"] == q["PhoneNumber"] and r["SendDate"].startswith(day)
            and ("BizId" not in q or r["BizId"] == q["BizId"])
        ]  # fmt: skip
        shown = [{k: v for k, v in r.items() if k != "BizId"} for r in found[(page - 1) * size : page * size]]
        return Reply(200, {
            "Code": "OK", "Message": "OK", "RequestId": "req-q", "TotalCount": str(len(found)),
            "SmsSendDetailDTOs": {"SmsSendDetailDTO": shown},
        })  # fmt: skip

    def out_ids(self) -> Counter[str]:
        return Counter(r["OutId"] for r in self.records)


class Driver:
    """One tests/e2e/dispatch_driver.py process; its output in ``log``."""

    def __init__(self, proc: asyncio.subprocess.Process, log: Path) -> None:
        self.proc, self.log = proc, log

    @classmethod
    async def start(cls, config_dir: Path, dsn: str, log: Path) -> Driver:
        with log.open("wb") as out:
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "tests.e2e.dispatch_driver", "--config-dir", str(config_dir),
                "--dsn", dsn, cwd=ROOT, env={**os.environ, **ENV}, stdout=out, stderr=out,
            )  # fmt: skip
        return cls(proc, log)

    async def kill(self) -> None:
        if self.proc.returncode is None:
            self.proc.send_signal(signal.SIGKILL)
        await self.proc.wait()

    async def wait(self, timeout: float) -> int:
        try:
            async with asyncio.timeout(timeout):
                return await self.proc.wait()
        except TimeoutError:
            raise AssertionError(f"the dispatcher did not end in {timeout} s:\n{self.text()}") from None

    def text(self) -> str:
        return self.log.read_text(encoding="utf-8", errors="replace")[-4000:]


@pytest.fixture(params=[Backend.POSTGRES, Backend.TIMESCALEDB], ids=["postgres", "timescaledb"])
def dsn(request: pytest.FixtureRequest) -> Iterator[str]:
    with migrated_db(request.param) as url:
        yield url


def _three_sources(catalog: Catalog) -> list[AlarmDef]:
    """One alarm of each of three LHJH hazard sources (their 包保 trios share the principal)."""
    picked: dict[str, AlarmDef] = {}
    for a in catalog:
        hs = str(a.labels["hazard_source"])
        if a.labels["enterprise"] == "LHJH" and a.labels.get("tag") and hs not in picked:
            picked[hs] = a
    assert len(picked) >= 3
    return list(picked.values())[:3]


def _rows(db: psycopg.Connection[Any], sql: str, params: Any = None) -> list[tuple[Any, ...]]:
    return db.execute(sql, params).fetchall()


@pytest.mark.parametrize("taken", [True, False], ids=["killed-after-acceptance", "killed-before-acceptance"])
async def test_a_dispatcher_killed_during_a_send_and_restarted_sends_each_message_once(
    dsn: str, taken: bool, tmp_path: Path
) -> None:
    plant = load_plant(DEMO / "plant.yaml")
    side = Plantside(dsn)
    now_us = time.time_ns() // 1000
    for a in _three_sources(Catalog(plant, compile_rules(plant))):
        side.event(a, "raised", now_us)
    gateway = Dysmsapi(KILL_AT, taken)
    server = LoopbackHttpServer(gateway)
    await server.start()
    config = tmp_path / "config"
    config.mkdir()
    (config / "rosters.yaml").write_bytes((DEMO / "rosters.yaml").read_bytes())
    (config / "routes.yaml").write_text(
        ROUTES.format(template=", ".join(TEMPLATE), endpoint=server.url), encoding="utf-8"
    )
    drivers: list[Driver] = []
    db = psycopg.connect(dsn, autocommit=True)
    try:
        gateway.die = lambda: drivers[0].kill()
        first = await Driver.start(config, dsn, tmp_path / "first.log")
        drivers.append(first)
        assert await first.wait(timeout=90) == -signal.SIGKILL, first.text()
        killed = gateway.killed_out_id
        assert killed is not None, first.text()
        # what the kill left: the message claimed ('sending', an attempt without an outcome)
        left = _rows(
            db,
            """SELECT d.state, a.attempt, a.outcome FROM delivery d
               JOIN delivery_attempt a ON a.delivery_id = d.id WHERE d.key = %s""",
            (killed,),
        )
        assert left == [("sending", 1, None)], first.text()
        assert (killed in gateway.out_ids()) == taken

        second = await Driver.start(config, dsn, tmp_path / "second.log")
        drivers.append(second)
        # due now, that is: each alarm's repeats (repeat_interval, 4 h by default) stay planned
        open_ = (
            "SELECT count(*) FROM delivery WHERE state IN ('planned', 'retry', 'sending') AND due_at <= now()"
        )
        try:
            await eventually(lambda: _rows(db, open_) == [(0,)], timeout=90, interval=0.2)
        except TimeoutError:
            still = _rows(db, open_.replace("count(*)", "key, state, attempts"))
            raise AssertionError(f"deliveries still open: {still}\n{second.text()}") from None
        second.proc.send_signal(signal.SIGTERM)
        assert await second.wait(timeout=30) == 0, second.text()

        assert gateway.refused == [], "every request carries a valid ACS3 signature"
        received = gateway.out_ids()
        assert max(received.values()) == 1, f"a message reached the gateway twice: {received}"
        deliveries = _rows(db, "SELECT key, state FROM delivery WHERE due_at <= now()")
        later = _rows(db, "SELECT DISTINCT state, step > 0 FROM delivery WHERE due_at > now()")
        assert later in ([], [("planned", True)]), later
        assert len(received) >= 8 and {s for _, s in deliveries} == {"sent", "grouped"}, deliveries
        assert {k for k, s in deliveries if s == "sent"} == set(received), "sent is what the gateway took"
        attempts: dict[str, list[str]] = {}
        for key, outcome in _rows(
            db,
            """SELECT d.key, a.outcome FROM delivery_attempt a JOIN delivery d ON d.id = a.delivery_id
               ORDER BY d.key, a.attempt""",
        ):
            attempts.setdefault(key, []).append(outcome)
        assert attempts[killed] == (["recovered"] if taken else ["not_found", "accepted"])
        assert set(attempts) == set(received)
        once = (["accepted"], ["recovered"], ["not_found", "accepted"])
        assert all(outcomes in once for outcomes in attempts.values()), attempts
        # the provider's id is the BizId of the answer; QuerySendDetails records carry none
        issued = {r["OutId"]: r["BizId"] for r in gateway.records}
        ids = dict(_rows(db, "SELECT key, provider_message_id FROM delivery WHERE state = 'sent'"))
        assert ids == {k: issued[k] if a[-1] == "accepted" else "" for k, a in attempts.items()}
        number = next(r["PhoneNum"] for r in gateway.records if r["OutId"] == killed)
        assert any(q["PhoneNumber"] == number for q in gateway.queried), "the restart asked the gateway"
    finally:
        for d in drivers:
            await d.kill()
        db.close()
        await server.stop()
