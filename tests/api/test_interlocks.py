"""Interlocks (effective voting from tag_latest, demand history) and the bypass permit workflow,
against real PostgreSQL, on tests/api/data/interlock_plant.yaml (AA in 孝义市, BB in 文水县)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from api.users import add_user
from core.config import load_plant
from core.plant import Plant
from storage.registry_sync import sync_registry
from tests.api.conftest import PASSWORD, login, make_client
from tests.support.api_users import add_users
from tests.support.databases import fetch_all

PLANT = Path(__file__).resolve().parent / "data" / "interlock_plant.yaml"
IL_AA = "AA-HS1.IL-101"  # 2oo3, inputs AA.V1.PT1A/B/C with switches AA.V1.HS1A/B/C, max 8 h
IL_AA2 = "AA-HS1.IL-102"  # 1oo2, max 2 h
IL_BB = "BB-HS1.IL-501"  # 1oo1
GOOD, BAD = 0xC0, 0x00

Headers = Callable[[str], Awaitable[dict[str, str]]]


@pytest.fixture(scope="module")
def il_plant() -> Plant:
    return load_plant(PLANT)


@pytest.fixture
async def il_dsn(dsn: str, il_plant: Plant) -> str:
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        await sync_registry(conn, il_plant, now_us=1_700_000_000_000_000)
        await add_users(conn)
        # an approver bound to no enterprise (sees both), for BB's permits
        await add_user(conn, "approver_city", "周杰", "approver", PASSWORD)
    return dsn


@pytest.fixture
async def api(il_dsn: str, il_plant: Plant) -> AsyncIterator[httpx.AsyncClient]:
    async with make_client(il_dsn, il_plant) as c:
        app = c._transport.app  # type: ignore[attr-defined]
        async with app.router.lifespan_context(app):
            yield c


@pytest.fixture
def as_(api: httpx.AsyncClient) -> Headers:
    """Authorization headers of a user, logging in once per test."""
    cache: dict[str, dict[str, str]] = {}

    async def get(user: str) -> dict[str, str]:
        if user not in cache:
            cache[user] = await login(api, user)
        return cache[user]

    return get


async def set_latest(dsn: str, **values: float | tuple[float, int]) -> None:
    """tag_latest rows now: tag key with "." written as "__" -> value or (value, quality)."""
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        for name, v in values.items():
            value, quality = v if isinstance(v, tuple) else (v, GOOD)
            cur = await conn.execute(
                """INSERT INTO tag_latest (tag_id, time, value, quality)
                   SELECT id, now(), %s, %s FROM tag WHERE key = %s
                   ON CONFLICT (tag_id) DO UPDATE SET time = excluded.time, value = excluded.value,
                       quality = excluded.quality""",
                (value, quality, name.replace("__", ".")),
            )
            assert cur.rowcount == 1, name


async def sql(dsn: str, query: str, *params: Any) -> None:
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        await conn.execute(query, params)  # type: ignore[arg-type]


async def one(api: httpx.AsyncClient, headers: dict[str, str], key: str) -> dict[str, Any]:
    r = await api.get(f"/api/v1/interlocks/{key}", headers=headers)
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


def request_body(**over: Any) -> dict[str, Any]:
    return {
        "interlock": IL_AA,
        "input_tag": "AA.V1.PT1A",
        "reason": "压力变送器PT1A校验",
        "compensating_measures": "现场专人监护，DCS压力趋势每15分钟确认一次",
        "duration_min": 60,
        **over,
    }


async def requested(api: httpx.AsyncClient, headers: dict[str, str], **over: Any) -> dict[str, Any]:
    r = await api.post("/api/v1/bypasses", json=request_body(**over), headers=headers)
    assert r.status_code == 201, r.text
    body: dict[str, Any] = r.json()
    assert body["state"] == "requested"
    return body


# --- effective voting -------------------------------------------------------------------------


async def test_effective_voting_follows_bypass_switches_and_bad_inputs(
    api: httpx.AsyncClient, as_: Headers, il_dsn: str
) -> None:
    h = await as_("op_aa")
    await set_latest(
        il_dsn, AA__V1__PT1A=2.1, AA__V1__PT1B=1.0, AA__V1__PT1C=1.0,
        AA__V1__HS1A=0, AA__V1__HS1B=0, AA__V1__HS1C=0, AA__V1__XV1=1,
    )  # fmt: skip
    il = await one(api, h, IL_AA)
    assert (il["voting"], il["effective_voting"], il["votes"], il["demand"]) == ("2oo3", "2oo3", 1, False)
    assert (il["can_trip"], il["degraded"], il["cannot_trip"]) == (True, False, False)
    assert [i["tripped"] for i in il["inputs"]] == [True, False, False]
    assert il["inputs"][0] | {"time": None} == {
        "tag": "AA.V1.PT1A", "name": "压力A", "op": ">=", "trip_value": 2.0, "value": 2.1,
        "quality": GOOD, "time": None, "tripped": True, "failed": False, "bypass_switch": "AA.V1.HS1A",
        "bypass_switch_value": 0.0, "bypassed": False, "votes": True,
    }  # fmt: skip
    assert il["final_element"]["tag"] == "AA.V1.XV1" and il["final_element"]["safe"] is False

    # one input bypassed: a 2oo3 votes 2oo2, its trip no longer counts
    await set_latest(il_dsn, AA__V1__HS1A=1)
    il = await one(api, h, IL_AA)
    assert (il["effective_voting"], il["can_vote"], il["votes"]) == ("2oo2", 2, 0)
    assert (il["can_trip"], il["degraded"]) == (True, True)
    assert il["bypassed_inputs"] == ["AA.V1.PT1A"] and il["failed_inputs"] == []
    assert il["unpermitted_bypasses"] == ["AA.V1.PT1A"]  # the switch is on, no permit

    # the two left trip: demand on 2oo2
    await set_latest(il_dsn, AA__V1__PT1B=2.2, AA__V1__PT1C=2.0)
    il = await one(api, h, IL_AA)
    assert (il["effective_voting"], il["votes"], il["demand"]) == ("2oo2", 2, True)

    # and one of them BAD: 1oo1 (the engine's min(M, inputs left)), still able to trip
    await set_latest(il_dsn, AA__V1__PT1B=(2.2, BAD), AA__V1__PT1C=1.0)
    il = await one(api, h, IL_AA)
    assert (il["effective_voting"], il["can_trip"], il["demand"]) == ("1oo1", True, False)
    assert il["failed_inputs"] == ["AA.V1.PT1B"]
    assert il["inputs"][1]["failed"] and not il["inputs"][1]["tripped"]

    # the last one bypassed too: nothing left to vote, the function cannot trip
    await set_latest(il_dsn, AA__V1__HS1C=1, AA__V1__XV1=0)
    il = await one(api, h, IL_AA)
    assert (il["effective_voting"], il["can_trip"], il["cannot_trip"], il["degraded"]) == (
        "0oo0", False, True, True,
    )  # fmt: skip
    assert il["final_element"]["safe"] is True and il["final_element"]["valid"] is True

    # inputs that never reported are failed: IL-102 has no readings at all
    il2 = await one(api, h, IL_AA2)
    assert (il2["effective_voting"], il2["cannot_trip"]) == ("0oo0", True)
    assert [i["value"] for i in il2["inputs"]] == [None, None]
    assert il2["final_element"]["valid"] is False


async def test_list_filters_and_scope(api: httpx.AsyncClient, as_: Headers) -> None:
    async def keys(user: str, query: str = "") -> list[str]:
        r = await api.get(f"/api/v1/interlocks{query}", headers=await as_(user))
        assert r.status_code == 200, r.text
        return [i["key"] for i in r.json()]

    assert await keys("op_aa") == [IL_AA, IL_AA2]
    assert await keys("op_bb") == [IL_BB]
    assert await keys("bureau_xy") == [IL_AA, IL_AA2]  # 孝义市: AA only
    assert await keys("bureau_city") == [IL_AA, IL_AA2, IL_BB]
    assert await keys("admin", "?enterprise=BB") == [IL_BB]
    assert await keys("admin", "?hazard_source=AA-HS1") == [IL_AA, IL_AA2]
    assert await keys("op_aa", "?enterprise=BB") == []


async def test_foreign_or_unknown_interlock_is_404_alike(api: httpx.AsyncClient, as_: Headers) -> None:
    h = await as_("op_aa")
    foreign = await api.get(f"/api/v1/interlocks/{IL_BB}", headers=h)
    unknown = await api.get("/api/v1/interlocks/XX-HS1.IL-9", headers=h)
    assert foreign.status_code == unknown.status_code == 404
    assert foreign.json() == unknown.json()
    assert (await api.get(f"/api/v1/interlocks/{IL_BB}", headers=await as_("bureau_xy"))).status_code == 404
    assert (await api.get(f"/api/v1/interlocks/{IL_BB}", headers=await as_("op_bb"))).status_code == 200


async def test_demand_history_is_the_trip_demand_and_no_action_journal(
    api: httpx.AsyncClient, as_: Headers, il_dsn: str
) -> None:
    rows = [
        (1, f"{IL_AA}:TRIP_DEMAND", "raise", "normal", "unack_active", 2.0),
        (2, f"{IL_AA}:INPUT_BYPASSED", "raise", "normal", "unack_active", 1.0),  # not a demand
        (3, f"{IL_AA}:NO_ACTION", "raise", "normal", "unack_active", 1.0),
        (4, f"{IL_AA2}:TRIP_DEMAND", "raise", "normal", "unack_active", 1.0),  # another interlock
        (5, f"{IL_AA}:TRIP_DEMAND", "clear", "unack_active", "unack_rtn", 0.0),
    ]
    for seq, key, action, old, new, value in rows:
        await sql(
            il_dsn,
            """INSERT INTO alarm_journal (seq, n, alarm_key, action, old_status, new_status, at, arrival,
                   value, "limit", actor, detail)
               VALUES (%s, 0, %s, %s, %s, %s, now(), now(), %s, 2, 'engine', '{"votes": 2}')""",
            seq, key, action, old, new, value,
        )  # fmt: skip
    il = await one(api, await as_("op_aa"), IL_AA)
    got = [(e["seq"], e["kind"], e["action"], e["new_status"]) for e in il["demand_history"]]
    assert got == [
        (5, "TRIP_DEMAND", "clear", "unack_rtn"),
        (3, "NO_ACTION", "raise", "unack_active"),
        (1, "TRIP_DEMAND", "raise", "unack_active"),
    ]
    assert il["demand_history"][0]["detail"] == {"votes": 2}
    r = await api.get(f"/api/v1/interlocks/{IL_AA}?limit=1", headers=await as_("op_aa"))
    assert [e["seq"] for e in r.json()["demand_history"]] == [5]


# --- the bypass workflow ----------------------------------------------------------------------


async def audit(dsn: str) -> list[tuple[Any, ...]]:
    return [
        (r[0], r[1], r[2], r[3]["bypass_id"])
        for r in await fetch_all(
            dsn,
            "SELECT action, actor, target, detail FROM audit_log WHERE action LIKE 'bypass.%%' ORDER BY id",
        )
    ]


async def test_request_approve_restore_is_recorded_on_the_row_and_audited(
    api: httpx.AsyncClient, as_: Headers, il_dsn: str
) -> None:
    eng, approver = await as_("eng_aa"), await as_("approver_aa")
    b = await requested(api, eng)
    bid = b["id"]
    assert b["requested_by"] == "陈静 (eng_aa)" and b["duration_min"] == 60
    assert b["compensating_measures"].startswith("现场专人监护")
    assert (b["enterprise"], b["county"], b["hazard_source"]) == ("AA", "孝义市", "AA-HS1")
    assert datetime.fromisoformat(b["starts_at"]).utcoffset() == timedelta(0)

    r = await api.post(f"/api/v1/bypasses/{bid}/approve", json={"note": "同意"}, headers=approver)
    assert r.status_code == 200, r.text
    b = r.json()
    assert (b["state"], b["decided_by"], b["decision_note"]) == ("active", "杨勇 (approver_aa)", "同意")

    # the permit covers the switched input: no unpermitted bypass left
    await set_latest(il_dsn, AA__V1__HS1A=1, AA__V1__PT1A=1, AA__V1__PT1B=1, AA__V1__PT1C=1)
    il = await one(api, await as_("op_aa"), IL_AA)
    assert [(x["id"], x["state"]) for x in il["bypasses"]] == [(bid, "active")]
    assert il["bypassed_inputs"] == ["AA.V1.PT1A"] and il["unpermitted_bypasses"] == []

    r = await api.post(f"/api/v1/bypasses/{bid}/restore", headers=eng)
    assert r.status_code == 200, r.text
    b = r.json()
    assert (b["state"], b["restored_by"]) == ("restored", "陈静 (eng_aa)")
    assert b["restored_at"] is not None
    assert (await one(api, await as_("op_aa"), IL_AA))["bypasses"] == []  # no longer open

    # terminal: each further transition is 409 naming the state
    for action in ("approve", "reject", "restore"):
        r = await api.post(f"/api/v1/bypasses/{bid}/{action}", json={"note": "x"}, headers=await as_("admin"))
        assert r.status_code == 409, (action, r.text)
        assert r.json()["detail"]["state"] == "restored"

    assert await audit(il_dsn) == [
        ("bypass.request", "陈静 (eng_aa)", IL_AA, bid),
        ("bypass.approve", "杨勇 (approver_aa)", IL_AA, bid),
        ("bypass.restore", "陈静 (eng_aa)", IL_AA, bid),
    ]
    got = (await api.get(f"/api/v1/bypasses/{bid}", headers=await as_("bureau_xy"))).json()
    assert got == b


async def test_reject_needs_a_note_and_ends_the_request(
    api: httpx.AsyncClient, as_: Headers, il_dsn: str
) -> None:
    b = await requested(api, await as_("admin_aa"), input_tag=None)  # the whole function
    approver = await as_("approver_aa")
    r = await api.post(f"/api/v1/bypasses/{b['id']}/reject", json={}, headers=approver)
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "note"]
    r = await api.post(f"/api/v1/bypasses/{b['id']}/reject", json={"note": "补偿措施不足"}, headers=approver)
    assert r.status_code == 200, r.text
    assert (r.json()["state"], r.json()["decision_note"], r.json()["input_tag"]) == (
        "rejected",
        "补偿措施不足",
        None,
    )
    r = await api.post(f"/api/v1/bypasses/{b['id']}/approve", headers=approver)
    assert r.status_code == 409 and r.json()["detail"]["state"] == "rejected"
    r = await api.post(f"/api/v1/bypasses/{b['id']}/restore", headers=await as_("eng_aa"))
    assert r.status_code == 409 and r.json()["detail"]["state"] == "rejected"
    rows = await fetch_all(il_dsn, "SELECT state, decided_by FROM interlock_bypass")
    assert rows == [("rejected", "杨勇 (approver_aa)")]
    assert [a for a, *_ in await audit(il_dsn)] == ["bypass.request", "bypass.reject"]


async def test_four_eyes(api: httpx.AsyncClient, as_: Headers, il_dsn: str) -> None:
    admin = await as_("admin")  # may request and approve, but not both for one permit
    b = await requested(api, admin)
    r = await api.post(f"/api/v1/bypasses/{b['id']}/approve", headers=admin)
    assert r.status_code == 403 and "four eyes" in r.json()["detail"]
    assert (await fetch_all(il_dsn, "SELECT state FROM interlock_bypass")) == [("requested",)]
    r = await api.post(f"/api/v1/bypasses/{b['id']}/approve", headers=await as_("approver_aa"))
    assert r.status_code == 200 and r.json()["state"] == "active"
    # and the table refuses it too, whatever a future code path does
    with pytest.raises(psycopg.errors.CheckViolation):
        await sql(il_dsn, "UPDATE interlock_bypass SET decided_by_id = requested_by_id")


async def test_only_engineers_and_admins_request(api: httpx.AsyncClient, as_: Headers, il_dsn: str) -> None:
    for user in ("op_aa", "approver_aa", "bureau_xy", "bureau_city"):
        r = await api.post("/api/v1/bypasses", json=request_body(), headers=await as_(user))
        assert r.status_code == 403, user
    assert await fetch_all(il_dsn, "SELECT id FROM interlock_bypass") == []


async def test_roles_of_the_transitions(api: httpx.AsyncClient, as_: Headers) -> None:
    b = await requested(api, await as_("eng_aa"))
    bid = b["id"]
    for user in ("op_aa", "eng_aa", "admin_aa", "bureau_xy"):
        for action in ("approve", "reject"):
            r = await api.post(
                f"/api/v1/bypasses/{bid}/{action}", json={"note": "x"}, headers=await as_(user)
            )
            assert r.status_code == 403, (user, action)
    assert (
        await api.post(f"/api/v1/bypasses/{bid}/approve", headers=await as_("approver_aa"))
    ).status_code == 200
    for user in ("op_aa", "approver_aa", "bureau_city"):
        r = await api.post(f"/api/v1/bypasses/{bid}/restore", headers=await as_(user))
        assert r.status_code == 403, user
    # anyone in scope reads; the requester's side restores (another engineer-side user: admin_aa)
    assert (await api.get(f"/api/v1/bypasses/{bid}", headers=await as_("op_aa"))).json()["state"] == "active"
    r = await api.post(
        f"/api/v1/bypasses/{bid}/restore", json={"note": "校验完成"}, headers=await as_("admin_aa")
    )
    assert r.status_code == 200 and r.json()["restore_note"] == "校验完成"


BAD_REQUESTS: list[tuple[dict[str, Any], str]] = [
    ({"interlock": "XX-HS1.IL-9"}, "interlock"),
    ({"interlock": IL_BB}, "interlock"),  # outside eng_aa's scope: as unknown
    ({"input_tag": "AA.V1.PT1"}, "input_tag"),
    ({"input_tag": "AA.V1.HS1A"}, "input_tag"),  # a switch, not an input
    ({"duration_min": 481}, "duration_min"),  # IL-101 max_bypass_h 8
    ({"interlock": IL_AA2, "input_tag": None, "duration_min": 121}, "duration_min"),  # max 2 h
    ({"duration_min": 0}, "duration_min"),
    ({"start": "2026-11-30T08:00:00"}, "start"),  # naive: no offset
    ({"start": "not a time"}, "start"),
    ({"start": "2020-01-01T00:00:00+08:00"}, "start"),  # would have ended already
    ({"start": "2099-01-01T00:00:00Z"}, "start"),  # too far ahead
    ({"start": "9999-12-31T23:59:59-12:00"}, "start"),  # no overflow: a clean 422
    ({"start": "0001-01-01T00:00:00+08:00"}, "start"),
    ({"reason": "校验\u0000"}, "reason"),  # PostgreSQL text cannot hold NUL
    ({"reason": "  "}, "reason"),
    ({"compensating_measures": ""}, "compensating_measures"),
    ({"approved": True}, "approved"),  # unknown fields are refused
]


async def test_bad_requests_are_422_naming_the_field(
    api: httpx.AsyncClient, as_: Headers, il_dsn: str
) -> None:
    h = await as_("eng_aa")
    for over, field in BAD_REQUESTS:
        r = await api.post("/api/v1/bypasses", json=request_body(**over), headers=h)
        assert r.status_code == 422, (over, r.text)
        assert [e["loc"] for e in r.json()["detail"]] == [["body", field]], over
    assert await fetch_all(il_dsn, "SELECT id FROM interlock_bypass") == []


async def test_foreign_interlock_request_reads_as_unknown(api: httpx.AsyncClient, as_: Headers) -> None:
    h = await as_("eng_aa")
    foreign = await api.post(
        "/api/v1/bypasses", json=request_body(interlock=IL_BB, input_tag=None), headers=h
    )
    unknown = await api.post(
        "/api/v1/bypasses", json=request_body(interlock="ZZ.IL", input_tag=None), headers=h
    )
    assert foreign.json()["detail"][0]["msg"].replace(IL_BB, "?") == unknown.json()["detail"][0][
        "msg"
    ].replace("ZZ.IL", "?")


async def test_tenancy_of_permits(api: httpx.AsyncClient, as_: Headers) -> None:
    aa = await requested(api, await as_("eng_aa"))
    bb = await requested(api, await as_("admin"), interlock=IL_BB, input_tag="BB.G1.PT1")
    r = await api.post(f"/api/v1/bypasses/{bb['id']}/approve", headers=await as_("approver_city"))
    assert r.status_code == 200 and r.json()["county"] == "文水县"

    async def ids(user: str, query: str = "") -> list[str]:
        r = await api.get(f"/api/v1/bypasses{query}", headers=await as_(user))
        assert r.status_code == 200, r.text
        return [b["id"] for b in r.json()]

    assert await ids("op_aa") == [aa["id"]]
    assert await ids("bureau_xy") == [aa["id"]]
    assert await ids("op_bb") == [bb["id"]]
    assert await ids("bureau_city") == [bb["id"], aa["id"]]  # newest request first
    assert await ids("op_aa", "?enterprise=BB") == []
    assert await ids("admin", f"?interlock={IL_BB}") == [bb["id"]]
    assert await ids("admin", "?hazard_source=AA-HS1") == [aa["id"]]
    assert await ids("admin", "?state=active") == [bb["id"]]
    assert await ids("admin", "?state=requested&state=active") == [bb["id"], aa["id"]]
    assert (await api.get("/api/v1/bypasses?state=bogus", headers=await as_("admin"))).status_code == 422
    assert (await api.get("/api/v1/bypasses?interlock=%00", headers=await as_("admin"))).status_code == 422

    unknown = str(uuid.uuid4())
    for user in ("op_aa", "eng_aa", "approver_aa", "admin_aa", "bureau_xy"):
        h = await as_(user)
        a = await api.get(f"/api/v1/bypasses/{bb['id']}", headers=h)
        b = await api.get(f"/api/v1/bypasses/{unknown}", headers=h)
        assert a.status_code == b.status_code == 404 and a.json() == b.json(), user
        for action in ("approve", "reject", "restore"):  # 404 before any role check: nothing leaks
            a = await api.post(f"/api/v1/bypasses/{bb['id']}/{action}", json={"note": "x"}, headers=h)
            b = await api.post(f"/api/v1/bypasses/{unknown}/{action}", json={"note": "x"}, headers=h)
            assert a.status_code == b.status_code == 404 and a.json() == b.json(), (user, action)
    # op_bb sees BB's permit with the interlock, AA's is absent
    il = await one(api, await as_("op_bb"), IL_BB)
    assert [b["id"] for b in il["bypasses"]] == [bb["id"]]
    assert (await api.get("/api/v1/bypasses/not-a-uuid", headers=await as_("admin"))).status_code == 422


# --- by the clock -----------------------------------------------------------------------------


async def shift(dsn: str, bypass_id: str, by: timedelta) -> None:
    """Time passes for one permit: its stored times move back by ``by``."""
    await sql(
        dsn,
        """UPDATE interlock_bypass SET starts_at = starts_at - %s, expires_at = expires_at - %s,
               requested_at = requested_at - %s, decided_at = decided_at - %s WHERE id = %s""",
        by, by, by, by, bypass_id,
    )  # fmt: skip


async def test_an_approved_permit_expires_by_the_clock_and_is_still_restorable(
    api: httpx.AsyncClient, as_: Headers, il_dsn: str
) -> None:
    eng, approver, admin = await as_("eng_aa"), await as_("approver_aa"), await as_("admin")
    b = await requested(api, eng, duration_min=60)
    await api.post(f"/api/v1/bypasses/{b['id']}/approve", headers=approver)
    await shift(il_dsn, b["id"], timedelta(minutes=61))

    got = (await api.get(f"/api/v1/bypasses/{b['id']}", headers=eng)).json()
    assert got["state"] == "expired"
    assert datetime.fromisoformat(got["expires_at"]) < datetime.now(UTC)
    assert [x["id"] for x in (await api.get("/api/v1/bypasses?state=expired", headers=admin)).json()] == [
        b["id"]
    ]
    assert (await api.get("/api/v1/bypasses?state=active", headers=admin)).json() == []
    # an overdue permit stays with the interlock until it is restored; it covers no switch any more
    await set_latest(il_dsn, AA__V1__HS1A=1)
    il = await one(api, eng, IL_AA)
    assert [(x["id"], x["state"]) for x in il["bypasses"]] == [(b["id"], "expired")]
    assert il["unpermitted_bypasses"] == ["AA.V1.PT1A"]

    r = await api.post(f"/api/v1/bypasses/{b['id']}/restore", headers=eng)
    assert r.status_code == 200 and r.json()["state"] == "restored"


async def test_start_ahead_is_approved_until_it_starts(
    api: httpx.AsyncClient, as_: Headers, il_dsn: str
) -> None:
    start = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    b = await requested(api, await as_("eng_aa"), start=start, duration_min=30)
    r = await api.post(f"/api/v1/bypasses/{b['id']}/approve", headers=await as_("approver_aa"))
    assert r.json()["state"] == "approved"
    await shift(il_dsn, b["id"], timedelta(minutes=61))
    assert (await api.get(f"/api/v1/bypasses/{b['id']}", headers=await as_("op_aa"))).json()[
        "state"
    ] == "active"


async def test_a_request_whose_period_passed_cannot_be_approved(
    api: httpx.AsyncClient, as_: Headers, il_dsn: str
) -> None:
    b = await requested(api, await as_("eng_aa"), duration_min=10)
    await shift(il_dsn, b["id"], timedelta(minutes=11))
    r = await api.post(f"/api/v1/bypasses/{b['id']}/approve", headers=await as_("approver_aa"))
    assert r.status_code == 409 and r.json()["detail"]["state"] == "requested"
    r = await api.post(
        f"/api/v1/bypasses/{b['id']}/reject", json={"note": "过期"}, headers=await as_("approver_aa")
    )
    assert r.status_code == 200


async def test_a_backdated_request_runs_from_its_start(api: httpx.AsyncClient, as_: Headers) -> None:
    start = datetime.now(UTC) - timedelta(minutes=30)
    b = await requested(api, await as_("eng_aa"), start=start.isoformat(), duration_min=60)
    assert datetime.fromisoformat(b["starts_at"]) == start
    r = await api.post(f"/api/v1/bypasses/{b['id']}/approve", headers=await as_("approver_aa"))
    assert r.json()["state"] == "active"
    left = datetime.fromisoformat(r.json()["expires_at"]) - datetime.now(UTC)
    assert timedelta(minutes=29) < left <= timedelta(minutes=30)


async def test_concurrent_decisions_take_turns(api: httpx.AsyncClient, as_: Headers, il_dsn: str) -> None:
    """Two decisions on one request, both held up behind a lock on its row until each waits: the
    first to get the row wins, the other sees its outcome (409), never both applied."""
    b = await requested(api, await as_("eng_aa"))
    h1, h2 = await as_("approver_aa"), await as_("approver_city")
    async with await psycopg.AsyncConnection.connect(il_dsn) as holder:
        await holder.execute("SELECT 1 FROM interlock_bypass WHERE id = %s FOR UPDATE", (b["id"],))
        both = asyncio.gather(
            api.post(f"/api/v1/bypasses/{b['id']}/approve", headers=h1),
            api.post(f"/api/v1/bypasses/{b['id']}/reject", json={"note": "不同意"}, headers=h2),
        )
        async with asyncio.timeout(30):
            while True:  # both requests wait on the row lock
                n = await fetch_all(
                    il_dsn,
                    "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND datname = current_database()",
                )
                if n[0][0] >= 2:
                    break
                await asyncio.sleep(0.02)
        await holder.rollback()
        r1, r2 = await both
    assert sorted([r1.status_code, r2.status_code]) == [200, 409]
    won = r1 if r1.status_code == 200 else r2
    lost = r2 if won is r1 else r1
    assert lost.json()["detail"]["state"] == won.json()["state"]
    assert len([a for a, *_ in await audit(il_dsn) if a != "bypass.request"]) == 1
