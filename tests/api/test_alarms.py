"""The alarm endpoints against real PostgreSQL and the real engine (tests.support.api_engine):
each role's allowed and forbidden commands, tenancy (404 alike for foreign and unknown alarms),
argument checks, the engine's refusals, idempotency keys, pending commands, the list's filters
and order, an alarm's detail, and the audit rows of submissions."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from uuid import uuid4

import httpx
import psycopg
import pytest

from alarms.rationale import defaults_for
from api.alarm_views import RATIONALE_DEFAULTS, AlarmItem
from core.plant import Plant
from core.settings import ApiSettings
from tests.api.conftest import PLANT, login, make_client
from tests.support.api_engine import AA_GAS, AA_HH, BB_GAS, Engine, running_engine
from tests.support.databases import fetch_all

UNKNOWN = "ZZ.X1.YY1:HH"
DUE = (datetime.now(UTC) + timedelta(hours=2)).isoformat()


class Api:
    """The client with one login per user."""

    def __init__(self, client: httpx.AsyncClient) -> None:
        self.client = client
        self.headers: dict[str, dict[str, str]] = {}

    async def as_(self, user: str) -> dict[str, str]:
        if user not in self.headers:
            self.headers[user] = await login(self.client, user)
        return self.headers[user]

    async def get(self, user: str, path: str, **params: Any) -> httpx.Response:
        return await self.client.get(path, params=params, headers=await self.as_(user))

    async def command(
        self, user: str, alarm: str, action: str, body: dict[str, Any] | None = None, key: str | None = None
    ) -> httpx.Response:
        headers = {**await self.as_(user), **({"Idempotency-Key": key} if key else {})}
        return await self.client.post(f"/api/v1/alarms/{alarm}/{action}", json=body, headers=headers)


@pytest.fixture
async def api(client: httpx.AsyncClient, plant: Plant) -> Api:
    app = client._transport.app  # type: ignore[attr-defined]
    app.state.hw.extras[RATIONALE_DEFAULTS] = defaults_for(PLANT, plant)
    return Api(client)


@pytest.fixture
async def engine(seeded: str, plant: Plant, tmp_path: Path) -> AsyncIterator[Engine]:
    """The engine running, with AA's high and critical alarms and BB's critical one raised."""
    async with running_engine(plant, seeded, tmp_path) as e:
        await e.raise_(AA_HH, AA_GAS, BB_GAS)
        yield e


# (user, alarm, action, body, status, alarm status once applied)
APPLIED: list[tuple[str, str, str, dict[str, Any] | None, int, str | None]] = [
    ("op_aa", AA_HH, "ack", {"comment": "现场确认"}, 200, "acknowledged"),
    ("op_aa", AA_HH, "shelve", {"minutes": 30, "reason": "液位计检修"}, 200, "shelved"),
    ("op_aa", AA_HH, "comment", {"text": "仪表漂移"}, 200, "unacknowledged"),
    (
        "op_aa",
        AA_HH,
        "feedback",
        {"cause_category": "instrument_fault", "action": "更换变送器", "handler": "李强"},
        200,
        "unacknowledged",
    ),
    ("op_aa", AA_HH, "respond", {"text": "已处置"}, 200, "unacknowledged"),
    ("admin_aa", AA_HH, "remove", {"reason": "检修"}, 200, "out_of_service"),
    ("bureau_xy", AA_HH, "supervise", {"text": "请立即核查", "due_at": DUE}, 200, "unacknowledged"),
    ("bureau_xy", AA_HH, "comment", {"text": "已电话询问"}, 200, "unacknowledged"),
    ("bureau_city", BB_GAS, "supervise", {"text": "请立即核查", "due_at": DUE}, 200, "unacknowledged"),
    ("admin", BB_GAS, "ack", None, 200, "acknowledged"),
    ("op_bb", BB_GAS, "ack", None, 200, "acknowledged"),
    # the engine refuses: critical alarms cannot be shelved, high ones for at most 60 min (settings.alarms)
    ("op_aa", AA_GAS, "shelve", {"minutes": 10, "reason": "检修"}, 409, None),
    ("op_aa", AA_HH, "shelve", {"minutes": 61, "reason": "检修"}, 409, None),
    ("op_aa", AA_HH, "unshelve", None, 409, None),
]
# refused by the API before anything is submitted: (user, alarm, action, body, status)
REFUSED: list[tuple[str, str, str, dict[str, Any] | None, int]] = [
    # another enterprise's or county's alarm: as unknown, whatever the role (404 before 403)
    ("op_aa", BB_GAS, "ack", None, 404),
    ("op_bb", AA_HH, "ack", None, 404),
    ("bureau_xy", BB_GAS, "supervise", {"text": "请立即核查", "due_at": DUE}, 404),
    ("bureau_xy", BB_GAS, "comment", {"text": "x"}, 404),
    ("op_aa", BB_GAS, "supervise", {"text": "x", "due_at": DUE}, 404),
    ("eng_aa", BB_GAS, "remove", {"reason": "x"}, 404),
    ("approver_aa", BB_GAS, "ack", None, 404),
    ("op_aa", UNKNOWN, "ack", None, 404),
    ("op_aa", "AA.V1.LT1:NOPE", "ack", None, 404),
    ("op_aa", "AA.V1", "ack", None, 404),
    # a role that may not
    ("op_aa", AA_HH, "supervise", {"text": "x", "due_at": DUE}, 403),
    ("approver_aa", AA_HH, "ack", None, 403),
    ("eng_aa", AA_HH, "ack", None, 403),
    ("bureau_xy", AA_HH, "ack", None, 403),
    ("bureau_city", AA_HH, "shelve", {"minutes": 30, "reason": "x"}, 403),
    ("op_aa", AA_HH, "remove", {"reason": "x"}, 403),
    ("op_aa", AA_HH, "restore", None, 403),
    ("bureau_city", AA_HH, "restore", None, 403),
    ("approver_aa", AA_HH, "comment", {"text": "x"}, 403),
]


@pytest.mark.parametrize(("user", "alarm", "action", "body", "code", "result"), APPLIED)
async def test_each_role_may_do_what_it_may_on_alarms_in_its_scope(
    api: Api,
    engine: Engine,
    user: str,
    alarm: str,
    action: str,
    body: dict[str, Any] | None,
    code: int,
    result: str | None,
) -> None:
    r = await api.command(user, alarm, action, body)
    assert r.status_code == code, r.text
    if code == 200:
        got = r.json()
        assert (got["status"], got["alarm_status"]) == ("applied", result)
        assert datetime.fromisoformat(got["applied_at"]).utcoffset() == timedelta(0)
    else:
        assert r.json()["detail"] and r.json()["command_id"]


async def test_foreign_unknown_and_forbidden_are_refused_before_submitting(api: Api, seeded: str) -> None:
    for user, alarm, action, body, code in REFUSED:
        r = await api.command(user, alarm, action, body)
        assert r.status_code == code, (user, alarm, action, r.text)
        if code == 404:
            unknown = await api.command(user, UNKNOWN, action, body)
            assert r.json() == unknown.json() == {"detail": "alarm not found"}  # nothing tells them apart
    assert await fetch_all(seeded, "SELECT count(*) FROM alarm_command") == [(0,)]
    assert await fetch_all(seeded, "SELECT count(*) FROM audit_log WHERE action LIKE 'alarm %'") == [(0,)]


async def test_the_engine_refusal_says_why(api: Api, engine: Engine) -> None:
    r = await api.command("op_aa", AA_GAS, "shelve", {"minutes": 10, "reason": "检修"})
    assert r.status_code == 409
    assert r.json()["detail"] == "critical alarms cannot be shelved"


async def test_remove_and_restore_by_the_engineer(api: Api, engine: Engine) -> None:
    r = await api.command("eng_aa", AA_HH, "remove", {"reason": "变送器更换"})
    assert r.json()["alarm_status"] == "out_of_service"
    r = await api.command("eng_aa", AA_HH, "restore")
    assert (r.status_code, r.json()["alarm_status"]) == (200, "unacknowledged"), r.text


MALFORMED: list[tuple[str, dict[str, Any] | None, str]] = [
    ("shelve", {"minutes": 0, "reason": "检修"}, "minutes"),
    ("shelve", {"minutes": 7 * 1440 + 1, "reason": "检修"}, "minutes"),
    ("shelve", {"minutes": True, "reason": "检修"}, "minutes"),
    ("shelve", {"minutes": 30}, "reason"),
    ("shelve", {"minutes": 30, "reason": "  "}, "reason"),
    ("ack", {"comment": "x", "colour": "red"}, "colour"),
    ("comment", None, "text"),
    ("comment", {"text": "a\x00b"}, "text"),
    ("comment", {"text": "长" * 2001}, "text"),
    ("feedback", {"cause_category": "aliens", "action": "x", "handler": "y"}, "cause_category"),
    (
        "feedback",
        {"cause_category": "leak", "action": "x", "handler": "y", "handled_at": "2026-11-30T10:00:00"},
        "handled_at",
    ),
]


async def test_malformed_arguments_are_422_naming_the_field(api: Api, seeded: str) -> None:
    for action, body, field in MALFORMED:
        r = await api.command("op_aa", AA_HH, action, body)
        assert r.status_code == 422, (action, body, r.text)
        assert [e["loc"] for e in r.json()["detail"]] == [["body", field]], (action, body)
    assert await fetch_all(seeded, "SELECT count(*) FROM alarm_command") == [(0,)]


async def test_an_unknown_action_or_a_bad_idempotency_key_is_422(api: Api, seeded: str) -> None:
    r = await api.command("op_aa", AA_HH, "explode")
    assert (r.status_code, r.json()["detail"][0]["loc"]) == (422, ["path", "action"])
    r = await api.command("op_aa", AA_HH, "ack", key="not-a-uuid")
    assert (r.status_code, r.json()["detail"][0]["loc"]) == (422, ["header", "Idempotency-Key"])


async def test_an_idempotency_key_replayed_answers_the_same_and_submits_once(
    api: Api, engine: Engine, seeded: str
) -> None:
    key = str(uuid4())
    first = await api.command("op_aa", AA_HH, "ack", {"comment": "一次"}, key=key)
    again = await api.command("op_aa", AA_HH, "ack", {"comment": "一次"}, key=key)
    assert first.status_code == again.status_code == 200
    assert first.json() == again.json()
    assert first.json()["command_id"] == key
    assert await fetch_all(seeded, "SELECT count(*) FROM alarm_command") == [(1,)]
    assert await fetch_all(seeded, "SELECT count(*) FROM audit_log WHERE action = 'alarm ack'") == [(1,)]
    acks = await fetch_all(seeded, "SELECT count(*) FROM alarm_journal WHERE action = 'ACKED'")
    assert acks == [(1,)]
    # the key is not another command's: another action, other args or another user
    for user, action, body in (
        ("op_aa", "reset", {"comment": "一次"}),
        ("op_aa", "ack", {"comment": "两次"}),
        ("admin_aa", "ack", {"comment": "一次"}),
    ):
        r = await api.command(user, AA_HH, action, body, key=key)
        assert (r.status_code, r.json()["detail"][0]["loc"]) == (422, ["header", "Idempotency-Key"]), r.text
    assert await fetch_all(seeded, "SELECT count(*) FROM alarm_command") == [(1,)]


async def test_concurrent_retries_with_one_key_submit_and_audit_once(seeded: str, plant: Plant) -> None:
    async with make_client(seeded, plant, ApiSettings(command_wait_s=0.2)) as client:
        app = client._transport.app  # type: ignore[attr-defined]
        async with app.router.lifespan_context(app):
            api = Api(client)
            await api.as_("op_aa")
            key = str(uuid4())
            answers = await asyncio.gather(
                *(api.command("op_aa", AA_HH, "comment", {"text": "重试"}, key=key) for _ in range(12))
            )
    assert [r.status_code for r in answers] == [202] * 12
    assert await fetch_all(seeded, "SELECT id::text FROM alarm_command") == [(key,)]
    assert await fetch_all(seeded, "SELECT count(*) FROM audit_log WHERE action = 'alarm comment'") == [(1,)]


async def test_a_submission_is_audited_with_who_and_from_where(api: Api, engine: Engine, seeded: str) -> None:
    r = await api.command("bureau_xy", AA_HH, "supervise", {"text": "请立即核查", "due_at": DUE})
    rows = await fetch_all(
        seeded,
        "SELECT actor, role, action, target, address, detail FROM audit_log WHERE action LIKE 'alarm %'",
    )
    assert len(rows) == 1
    actor, role, action, target, address, detail = rows[0]
    assert (actor, role, action, target, address) == (
        "孙强 (bureau_xy)",
        "bureau_duty",
        "alarm supervise",
        AA_HH,
        "127.0.0.1",
    )
    assert detail["command_id"] == r.json()["command_id"]
    assert detail["args"]["text"] == "请立即核查"
    assert detail["via"] == "token"


async def test_without_an_engine_a_command_is_202_pending_and_pollable(
    seeded: str, plant: Plant, tmp_path: Path
) -> None:
    async with make_client(seeded, plant, ApiSettings(command_wait_s=0.2)) as client:
        app = client._transport.app  # type: ignore[attr-defined]
        async with app.router.lifespan_context(app):
            api = Api(client)
            r = await api.command("op_aa", AA_HH, "comment", {"text": "无引擎"})
            assert r.status_code == 202, r.text
            command_id = r.json()["command_id"]
            assert r.json() == {
                "command_id": command_id,
                "status": "pending",
                "alarm_status": None,
                "applied_at": None,
            }
            assert r.headers["location"] == f"/api/v1/commands/{command_id}"
            path = f"/api/v1/commands/{command_id}"
            for user in ("op_aa", "bureau_xy", "bureau_city", "admin"):
                got = await api.get(user, path)
                assert (got.status_code, got.json()["status"]) == (200, "pending"), user
            for user in ("op_bb", "admin_aa"):  # another enterprise's; AA's admin: scope, not only own
                got = await api.get(user, path)
                assert got.status_code == (200 if user == "admin_aa" else 404), user
            unknown = await api.get("op_bb", f"/api/v1/commands/{uuid4()}")
            assert unknown.json() == (await api.get("op_bb", path)).json()
            async with running_engine(plant, seeded, tmp_path):
                done: dict[str, Any] = {}

                async def applied() -> bool:
                    done.update((await api.get("op_aa", path)).json())
                    return done["status"] == "applied"

                async with asyncio.timeout(15):
                    while not await applied():
                        await asyncio.sleep(0.05)
            assert (done["action"], done["actor"], done["args"]) == (
                "comment",
                "张伟 (op_aa)",
                {"text": "无引擎"},
            )
            assert done["alarm_status"] == "normal"


async def test_the_list_is_scoped_ordered_and_filtered(api: Api, engine: Engine) -> None:
    assert (await api.command("op_aa", AA_GAS, "ack")).status_code == 200

    async def keys(user: str, **params: Any) -> list[str]:
        r = await api.get(user, "/api/v1/alarms", **params)
        assert r.status_code == 200, r.text
        page = r.json()
        assert page["total"] >= len(page["items"])
        return [a["key"] for a in page["items"]]

    # awaiting acknowledgement first, then priority, then the oldest change
    assert await keys("admin") == [BB_GAS, AA_HH, AA_GAS]
    assert await keys("bureau_city") == [BB_GAS, AA_HH, AA_GAS]
    assert await keys("op_aa") == [AA_HH, AA_GAS]
    assert await keys("bureau_xy") == [AA_HH, AA_GAS]
    assert await keys("op_bb") == [BB_GAS]
    assert await keys("op_aa", enterprise="BB") == []
    assert await keys("admin", priority="critical") == [BB_GAS, AA_GAS]
    assert await keys("admin", state="acknowledged") == [AA_GAS]
    assert await keys("admin", hazard_source="AA-HS1") == [AA_HH, AA_GAS]
    assert await keys("admin", limit=1, offset=1) == [AA_HH]
    page = (await api.get("admin", "/api/v1/alarms", limit=1, offset=1)).json()
    assert (page["total"], page["limit"], page["offset"]) == (3, 1, 1)
    page = (await api.get("admin", "/api/v1/alarms", limit=1, offset=5)).json()
    assert (page["total"], page["items"]) == (3, [])
    now = datetime.now(UTC)
    assert await keys(
        "admin", start=(now - timedelta(hours=1)).isoformat(), end=(now + timedelta(minutes=1)).isoformat()
    ) == [BB_GAS, AA_HH, AA_GAS]
    assert await keys("admin", start=(now + timedelta(minutes=1)).isoformat()) == []
    # a cleared, acknowledged alarm is history: listed only when not asking for active ones
    await api.command("op_aa", AA_HH, "ack")
    await engine.clear(AA_HH)
    assert await keys("op_aa") == [AA_GAS]
    assert await keys("op_aa", active="false") == [AA_GAS, AA_HH]
    assert await keys("op_aa", state="normal") == [AA_HH]
    item = (await api.get("op_aa", "/api/v1/alarms", state="normal")).json()["items"][0]
    assert {
        k: item[k]
        for k in (
            "enterprise",
            "county",
            "hazard_source",
            "unit",
            "subject",
            "subject_name",
            "kind",
            "condition",
            "priority",
            "status",
            "acked",
            "acked_by",
        )
    } == {
        "enterprise": "AA",
        "county": "孝义市",
        "hazard_source": "AA-HS1",
        "unit": "U1",
        "subject": "AA.V1.LT1",
        "subject_name": "液位",
        "kind": "HH",
        "condition": "高高报",
        "priority": "high",
        "status": "normal",
        "acked": True,
        "acked_by": "张伟 (op_aa)",
    }
    assert item["value"] == 1.0 and item["limit"] == 8.6
    assert datetime.fromisoformat(item["raised_at"]).utcoffset() == timedelta(0)


BAD_FILTERS: list[tuple[dict[str, Any], str]] = [
    ({"limit": 0}, "limit"),
    ({"limit": 1001}, "limit"),
    ({"offset": -1}, "offset"),
    ({"priority": "urgent"}, "priority"),
    ({"state": "angry"}, "state"),
    ({"start": "2026-11-30T10:00:00"}, "start"),
    ({"start": "2026-11-30T10:00:00Z", "end": "2026-11-30T10:00:00Z"}, "end"),
    ({"start": "2025-01-01T00:00:00Z", "end": "2026-11-30T00:00:00Z"}, "end"),  # > max_history_days
]


async def test_bad_list_filters_are_422_naming_the_field(api: Api) -> None:
    for params, field in BAD_FILTERS:
        r = await api.get("op_aa", "/api/v1/alarms", **params)
        assert r.status_code == 422, (params, r.text)
        assert r.json()["detail"][0]["loc"] == ["query", field], params


async def test_the_detail_has_journal_rationalization_and_masked_deliveries(
    api: Api, engine: Engine, seeded: str
) -> None:
    await api.command("op_aa", AA_HH, "ack", {"comment": "现场确认"})
    await api.command("bureau_xy", AA_HH, "supervise", {"text": "请立即核查", "due_at": DUE})
    async with await psycopg.AsyncConnection.connect(seeded, autocommit=True) as conn:
        for i, (channel, recipient, state) in enumerate(
            [
                ("sms", "13812345678", "sent"),
                ("webhook", "https://qyapi.weixin.qq.com/send?key=SECRET", "failed"),
            ]
        ):
            await conn.execute(
                """INSERT INTO delivery (key, seq, n, alarm_key, event, priority, step, receiver, target, channel,
                                         person, recipient, group_interval_s, due_at, state, attempts, sent_at,
                                         report_status, report_code, updated_at)
                   VALUES (%s, 1, 0, %s, 'raised', 'high', %s, 'duty_room', 'duty_room', %s, 'li.na', %s, 60,
                           now(), %s, 1, now(), 'DELIVERED', 'DELIVRD', now())""",
                (f"d{i}", AA_HH, i, channel, recipient, state),
            )
    r = await api.get("bureau_xy", f"/api/v1/alarms/{AA_HH}")
    assert r.status_code == 200, r.text
    d = r.json()
    assert (d["alarm"]["key"], d["alarm"]["status"], d["alarm"]["acked_by"]) == (
        AA_HH,
        "acknowledged",
        "张伟 (op_aa)",
    )
    journal = [(j["action"], j["actor"]) for j in d["journal"]]
    assert journal == [("RAISED", "engine"), ("ACKED", "张伟 (op_aa)"), ("SUPERVISE", "孙强 (bureau_xy)")]
    assert d["journal"][2]["detail"]["text"] == "请立即核查"
    assert d["journal"][1]["command_id"] is not None
    assert d["rationalization"]["action"].startswith("立即核对现场及冗余仪表")
    assert (d["rationalization"]["response_s"], d["rationalization"]["source"]) == (300, "default for HH")
    assert [
        (x["channel"], x["recipient"], x["state"], x["person"], x["attempts"]) for x in d["deliveries"]
    ] == [
        ("sms", "138****5678", "sent", "li.na", 1),
        ("webhook", "https://qyapi.weixin.qq.com", "failed", "li.na", 1),
    ]
    assert "13812345678" not in r.text and "SECRET" not in r.text
    foreign = await api.get("op_bb", f"/api/v1/alarms/{AA_HH}")
    unknown = await api.get("op_bb", f"/api/v1/alarms/{UNKNOWN}")
    assert foreign.status_code == unknown.status_code == 404
    assert foreign.json() == unknown.json()


async def test_a_never_raised_alarm_of_the_scope_may_be_commented_but_is_no_detail(
    api: Api, engine: Engine
) -> None:
    never = "AA.V1.LT1:H"
    assert (await api.get("op_aa", f"/api/v1/alarms/{never}")).status_code == 404
    r = await api.command("op_aa", never, "comment", {"text": "巡检正常"})
    assert (r.status_code, r.json()["alarm_status"]) == (200, "normal"), r.text
    assert (await api.get("op_aa", f"/api/v1/alarms/{never}")).json()["journal"][0]["action"] == "COMMENT"
    assert (await api.command("op_bb", "AA.V1.PT1:H", "comment", {"text": "x"})).status_code == 404
    item = (await api.get("op_aa", "/api/v1/alarms", state="normal")).json()["items"][0]
    assert (item["key"], item["value"], item["limit"]) == (never, None, None)  # a note's row: no edge yet


async def test_control_characters_in_keys_and_filters_are_422(api: Api) -> None:
    for path, params, loc in (
        ("/api/v1/alarms/AA.V1%00LT1:HH", {}, ["path", "alarm"]),
        ("/api/v1/alarms", {"enterprise": "A\x00A"}, ["query", "enterprise"]),
        ("/api/v1/alarms", {"hazard_source": "AA\nHS1"}, ["query", "hazard_source"]),
    ):
        r = await api.get("op_aa", path, **params)
        assert (r.status_code, r.json()["detail"][0]["loc"]) == (422, loc), r.text
    r = await api.command("op_aa", "AA.V1%00LT1:HH", "ack")
    assert (r.status_code, r.json()["detail"][0]["loc"]) == (422, ["path", "alarm"]), r.text


async def test_the_list_items_are_exactly_the_details_alarm_json(api: Api, engine: Engine) -> None:
    # the list is serialized by hand (orjson) for speed; the detail goes through pydantic's AlarmItem
    assert (await api.command("op_aa", AA_GAS, "ack", {"comment": "现场确认"})).status_code == 200
    assert (await api.command("op_aa", AA_HH, "shelve", {"minutes": 30, "reason": "检修"})).status_code == 200
    assert (await api.command("op_aa", "AA.V1.LT1:H", "comment", {"text": "巡检正常"})).status_code == 200
    r = await api.get("admin", "/api/v1/alarms", active="false")
    assert r.headers["content-type"] == "application/json"
    items = r.json()["items"]
    assert {i["key"] for i in items} == {BB_GAS, AA_HH, AA_GAS, "AA.V1.LT1:H"}
    for item in items:
        detail = (await api.get("admin", f"/api/v1/alarms/{item['key']}")).json()["alarm"]
        assert list(item) == list(detail) == list(AlarmItem.model_fields)
        assert item == detail
    by_key = {i["key"]: i for i in items}
    assert by_key[AA_HH]["shelved_until"].endswith("Z") and by_key[AA_GAS]["acked_at"].endswith("Z")
    assert by_key["AA.V1.LT1:H"]["value"] is None  # a note's row holds NaN


async def test_a_command_waiting_for_the_engine_holds_no_pooled_connection(seeded: str, plant: Plant) -> None:
    # one connection, no engine: the command waits its 3 s while another request is answered
    async with make_client(seeded, plant, ApiSettings(pool_size=1, command_wait_s=3.0)) as client:
        app = client._transport.app  # type: ignore[attr-defined]
        async with app.router.lifespan_context(app):
            api = Api(client)
            await api.as_("op_aa")
            command = asyncio.create_task(api.command("op_aa", AA_HH, "comment", {"text": "引擎未运行"}))
            async with asyncio.timeout(10):  # submitted: now it only waits for the engine
                while await fetch_all(seeded, "SELECT count(*) FROM alarm_command") != [(1,)]:
                    await asyncio.sleep(0.02)
            async with asyncio.timeout(1.5):  # the pool's own wait would be 10 s, then 503
                r = await api.get("op_aa", "/api/v1/alarms")
            assert r.status_code == 200, r.text
            assert not command.done()  # it was still waiting for the engine meanwhile
            assert (await command).status_code == 202
