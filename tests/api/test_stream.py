"""GET /api/v1/stream against real PostgreSQL, a real alarm engine and uvicorn: alarm events in
scope only, resuming with Last-Event-ID without gaps or duplicates (also across a replay racing
live rows, and across the hub's database connection being killed), value events (snapshot,
changes, throttle), slow clients dropped, and migration 0008's one NOTIFY per transaction."""

from __future__ import annotations

import itertools
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import replace
from pathlib import Path

import httpx
import psycopg
import pytest

from api.app import ApiConfig, create_app
from api.deps import ApiState
from api.live_hub import BEFORE_ALL, LiveHub, StreamOptions, end_frame, end_streams, hub_for
from api.principal import Scope
from api.routes_stream import event_frames
from api.security import TokenKind, issue_token
from api.users import create_key
from core.backoff import Backoff
from core.plant import Plant
from core.settings import ApiSettings
from storage.db import Backend
from tests.api.conftest import SECRET, login
from tests.support.api_engine import AA_GAS, AA_HH, BB_GAS, running_engine
from tests.support.databases import fetch_all, migrated_db
from tests.support.sse import SseReader, serve
from tests.support.waiting import eventually

FAST = StreamOptions(value_interval_s=0.5, keepalive_s=1.0, reconnect=Backoff(initial_s=1.0, max_s=1.0))
COUNTY = {"AA": "孝义市", "BB": "文水县"}
SCOPES = {
    "op_aa": Scope("AA"),
    "op_bb": Scope("BB"),
    "bureau_xy": Scope(county="孝义市"),
    "bureau_city": Scope(),
}


class Served:
    def __init__(self, http: httpx.AsyncClient, state: ApiState) -> None:
        self.http = http
        self.state = state
        self.readers: list[SseReader] = []

    @property
    def hub(self) -> LiveHub:
        return hub_for(self.state)

    async def open(self, user: str, last_event_id: str | None = None, query: bool = False) -> SseReader:
        headers = await login(self.http, user)
        params = {}
        if last_event_id is not None:
            if query:
                params["last_event_id"] = last_event_id
            else:
                headers["Last-Event-ID"] = last_event_id
        reader = SseReader(self.http, headers, params)
        self.readers.append(reader)
        return await reader.open()


@asynccontextmanager
async def serving(
    dsn: str, plant: Plant, options: StreamOptions = FAST, settings: ApiSettings | None = None
) -> AsyncIterator[Served]:
    app = create_app(ApiConfig(dsn, SECRET, settings or ApiSettings(), plant))
    app.state.hw.extras["stream_options"] = options
    async with serve(app) as http:
        served = Served(http, app.state.hw)
        try:
            yield served
        finally:
            for r in served.readers:
                await r.close()


async def drained(reader: SseReader) -> None:
    """Return once the stream sent a keepalive: nothing was queued for it (no late duplicate)."""
    seen = reader.comments.count("keepalive")
    await eventually(lambda: reader.comments.count("keepalive") > seen, 15)


async def journal(dsn: str, scope: Scope, after: str | None = None) -> list[str]:
    """Journal ids in ``scope`` (after ``after``), in order: what a stream must deliver."""
    rows = await fetch_all(
        dsn, "SELECT j.seq, j.n, s.enterprise FROM alarm_journal j JOIN alarm_state s ON s.key = j.alarm_key"
    )
    lo = tuple(int(x) for x in after.split(".")) if after else (-1, -1)
    return [f"{s}.{n}" for s, n, e in sorted(rows) if (s, n) > lo and scope.allows(e, COUNTY[e])]


async def test_alarm_events_reach_exactly_the_callers_scope(
    seeded: str, plant: Plant, tmp_path: Path
) -> None:
    async with serving(seeded, plant) as srv, running_engine(plant, seeded, tmp_path) as engine:
        readers = {user: await srv.open(user) for user in SCOPES}
        # in journal order each user's last expected event follows the other enterprise's rows,
        # so having it means a leaked row would already be there
        await engine.raise_(BB_GAS)
        await engine.raise_(AA_HH)
        await engine.clear(BB_GAS)
        for user, reader in readers.items():
            expected = await journal(seeded, SCOPES[user])
            assert expected
            await eventually(lambda r=reader, x=expected: len(r.alarm_ids) >= len(x), 15)  # type: ignore[misc]
            assert reader.alarm_ids == expected, user
        first = readers["op_aa"].of("alarm")[0].data
        seq, n = readers["op_aa"].of("alarm")[0].id.split(".")  # type: ignore[union-attr]
        [row] = await fetch_all(
            seeded, "SELECT action, old_status, new_status, actor, value FROM alarm_journal WHERE seq=%s AND n=%s",
            (int(seq), int(n)),
        )  # fmt: skip
        assert first == first | {
            "key": AA_HH, "enterprise": "AA", "county": "孝义市", "hazard_source": "AA-HS1", "subject": "AA.V1.LT1",
            "priority": "high", "action": row[0], "old_status": row[1], "new_status": row[2], "actor": row[3],
            "value": row[4], "limit": 8.6,
        }  # fmt: skip
        assert first["at"].endswith("+00:00")


@pytest.mark.parametrize("query", [False, True], ids=["header", "query"])
async def test_resuming_with_last_event_id_gives_exactly_the_missed_rows_then_live(
    seeded: str, plant: Plant, tmp_path: Path, query: bool
) -> None:
    async with serving(seeded, plant) as srv, running_engine(plant, seeded, tmp_path) as engine:
        first = await srv.open("op_aa")
        await engine.raise_(AA_HH)
        await eventually(lambda: bool(first.alarm_ids), 15)
        last = first.alarm_ids[-1]
        await first.close()
        await engine.raise_(BB_GAS, AA_GAS)  # while disconnected
        await engine.clear(AA_HH)
        missed = await journal(seeded, Scope("AA"), after=last)
        assert len(missed) >= 2
        again = await srv.open("op_aa", last, query=query)
        await eventually(lambda: len(again.alarm_ids) >= len(missed), 15)
        assert again.alarm_ids == missed
        await engine.clear(AA_GAS)  # live after the replay
        expected = await journal(seeded, Scope("AA"), after=last)
        await eventually(lambda: len(again.alarm_ids) >= len(expected), 15)
        await drained(again)
        assert again.alarm_ids == expected


async def test_rows_committed_while_a_replay_runs_come_once(
    client: httpx.AsyncClient, seeded: str, plant: Plant, tmp_path: Path
) -> None:
    state: ApiState = client._transport.app.state.hw  # type: ignore[attr-defined]
    state.extras["stream_options"] = FAST
    hub = hub_for(state)
    async with running_engine(plant, seeded, tmp_path) as engine:
        await engine.raise_(AA_HH)
        early, _, _ = await hub.subscribe(Scope(), None)  # the hub is up
        hub.unsubscribe(early)
        sub, start, snapshot = await hub.subscribe(Scope("AA"), BEFORE_ALL)
        await engine.raise_(AA_GAS)  # after the subscription's start, before its replay runs
        await eventually(lambda: hub.position > start, 15)
        frames = event_frames(state, hub, sub, start, BEFORE_ALL, snapshot)
        expected = await journal(seeded, Scope("AA"))
        ids: list[str] = []
        async for chunk in frames:  # until the queue is drained: a keepalive
            if chunk == b": keepalive\n\n":
                break
            ids += [line[4:] for line in chunk.decode().splitlines() if line.startswith("id: ")]
        await frames.aclose()
        assert ids == expected


async def test_a_client_ahead_of_this_replicas_hub_waits_for_it_and_gets_no_duplicate(
    client: httpx.AsyncClient, seeded: str, plant: Plant, tmp_path: Path
) -> None:
    state: ApiState = client._transport.app.state.hw  # type: ignore[attr-defined]
    state.extras["stream_options"] = FAST
    hub = hub_for(state)
    async with running_engine(plant, seeded, tmp_path) as engine:
        early, _, _ = await hub.subscribe(Scope(), None)  # the hub is up
        hub.unsubscribe(early)
        await _kill_hub_connections(seeded)
        await eventually(lambda: not hub.connected, 15)
        # rows another replica's hub already streamed, this one has not read yet
        await engine.raise_(AA_HH, AA_GAS)
        after = (await journal(seeded, Scope("AA")))[-1]
        sub, start, snapshot = await hub.subscribe(Scope("AA"), tuple(map(int, after.split("."))))  # type: ignore[arg-type]
        assert start >= tuple(map(int, after.split(".")))
        await engine.clear(AA_GAS)
        frames = event_frames(state, hub, sub, start, None, snapshot)
        ids: list[str] = []
        async for chunk in frames:  # until the queue is drained: a keepalive
            if chunk == b": keepalive\n\n" and ids:
                break
            ids += [line[4:] for line in chunk.decode().splitlines() if line.startswith("id: ")]
        await frames.aclose()
        assert ids == await journal(seeded, Scope("AA"), after=after)


async def _kill_hub_connections(dsn: str) -> int:
    killed = await fetch_all(
        dsn,
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
        "WHERE application_name = 'hazardwatch-api-stream' AND datname = current_database()",
    )
    return len(killed)


async def test_a_killed_listener_reconnects_and_the_stream_continues_without_a_gap(
    seeded: str, plant: Plant, tmp_path: Path
) -> None:
    async with serving(seeded, plant) as srv, running_engine(plant, seeded, tmp_path) as engine:
        reader = await srv.open("op_aa")
        await engine.raise_(AA_HH)
        await eventually(lambda: len(reader.alarm_ids) == 1, 15)
        assert await _kill_hub_connections(seeded) == 2  # the listener and its query connection
        await eventually(lambda: not srv.hub.connected, 15)
        await engine.raise_(AA_GAS)  # notified to nobody
        await engine.clear(AA_HH)
        await eventually(lambda: srv.hub.connected, 15)
        expected = await journal(seeded, Scope("AA"))
        await eventually(lambda: len(reader.alarm_ids) >= len(expected), 15)
        await drained(reader)
        assert reader.alarm_ids == expected
        registry = srv.state.extras["metrics_registry"]
        assert registry.get_sample_value("hazardwatch_api_stream_reconnects_total") >= 1


async def _set_latest(dsn: str, values: dict[str, float], quality: int = 192) -> None:
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        await conn.execute(
            """INSERT INTO tag_latest (tag_id, time, value, quality)
               SELECT t.id, clock_timestamp(), v.value, %s FROM tag t JOIN unnest(%s::text[], %s::float8[])
                   AS v (key, value) ON v.key = t.key
               ON CONFLICT (tag_id) DO UPDATE SET time = EXCLUDED.time, value = EXCLUDED.value,
                   quality = EXCLUDED.quality""",
            (quality, list(values), list(values.values())),
        )


async def test_value_events_snapshot_then_throttled_changes_in_scope(seeded: str, plant: Plant) -> None:
    await _set_latest(seeded, {"AA.V1.LT1": 5.0, "BB.G1.AT1": 7.0})
    async with serving(seeded, plant) as srv:
        reader = await srv.open("op_aa")
        await eventually(lambda: bool(reader.of("value")), 15)
        [snapshot] = reader.of("value")
        [item] = snapshot.data["values"]
        assert item["tag"] == "AA.V1.LT1" and item["value"] == 5.0 and item["quality"] == 192
        assert item["quality_name"] == "GOOD" and item["time"].endswith("+00:00")
        for v in range(10):  # ten commits, each notified
            await _set_latest(seeded, {"AA.V1.LT1": 6.0 + v, "BB.G1.AT1": 1.0 + v})
        await _set_latest(seeded, {"AA.V1.PT1": float("nan")}, quality=0x18)

        def latest() -> dict[str, dict[str, object]]:
            return {i["tag"]: i for e in reader.of("value") for i in e.data["values"]}

        await eventually(lambda: latest().get("AA.V1.LT1", {}).get("value") == 15.0, 15)
        await eventually(lambda: "AA.V1.PT1" in latest(), 15)
        assert (
            latest()["AA.V1.PT1"]["value"] is None
            and latest()["AA.V1.PT1"]["quality_name"] == "BAD_COMM_FAILURE"
        )
        await _set_latest(seeded, {"AA.V1.LT1": 99.0})
        await eventually(lambda: latest()["AA.V1.LT1"]["value"] == 99.0, 15)
        assert [i["tag"] for i in reader.of("value")[-1].data["values"]] == ["AA.V1.LT1"]  # only what changed
        events = reader.of("value")
        assert all(i["tag"].startswith("AA.") for e in events for i in e.data["values"])
        gaps = [b.arrived - a.arrived for a, b in itertools.pairwise(events[1:])]  # after the snapshot
        assert all(g >= 0.8 * FAST.value_interval_s for g in gaps), gaps  # the throttle
        assert len(events) - 1 < 11  # eleven commits folded into fewer events


async def test_a_slow_client_is_dropped_told_and_counted_and_resumes(
    seeded: str, plant: Plant, tmp_path: Path
) -> None:
    options = replace(FAST, queue_max=2)
    async with serving(seeded, plant, options) as srv, running_engine(plant, seeded, tmp_path) as engine:
        hub = srv.hub
        reader = await srv.open("op_aa")
        idle, _, _ = await hub.subscribe(Scope("AA"), None)  # a client that never reads
        for i in range(10):  # a chunk per commit: the third overflows the queue of two
            await (engine.raise_ if i % 2 == 0 else engine.clear)(AA_HH)
            end = (await journal(seeded, Scope()))[-1]
            await eventually(lambda e=end: hub.position >= tuple(map(int, e.split("."))), 15)  # type: ignore[misc]
            if idle not in hub.subscribers:
                break
        assert idle not in hub.subscribers and idle.finished
        assert await idle.next(1.0) == end_frame("slow_client")
        assert await idle.next(1.0) is None
        registry = srv.state.extras["metrics_registry"]
        assert registry.get_sample_value("hazardwatch_api_stream_dropped_total") == 1
        # the reading client keeps up; now overflow its queue as a stalled socket would
        [sub] = [s for s in hub.subscribers]
        for _ in range(options.queue_max + 1):
            hub.offer(sub, b": filler\n\n")
        await eventually(lambda: reader.closed, 15)
        assert reader.events[-1].event == "end" and reader.events[-1].data == {"reason": "slow_client"}
        assert registry.get_sample_value("hazardwatch_api_stream_dropped_total") == 2
        last = reader.alarm_ids[-1]
        await engine.raise_(AA_GAS)
        missed = await journal(seeded, Scope("AA"), after=last)
        again = await srv.open("op_aa", last)
        await eventually(lambda: len(again.alarm_ids) >= len(missed), 15)
        assert again.alarm_ids == missed


async def test_streams_hold_no_pooled_connection_and_keep_alive(seeded: str, plant: Plant) -> None:
    async with serving(seeded, plant, settings=ApiSettings(pool_size=2)) as srv:
        readers = [await srv.open(user) for user in ("op_aa", "op_bb", "bureau_city", "admin")]
        headers = await login(srv.http, "op_aa")
        assert (await srv.http.get("/api/v1/auth/me", headers=headers)).status_code == 200
        await eventually(lambda: all("keepalive" in r.comments for r in readers), 15)
        registry = srv.state.extras["metrics_registry"]
        assert registry.get_sample_value("hazardwatch_api_stream_clients") == 4
        await readers[0].close()  # a client going away is unsubscribed at once, not at the next event
        await eventually(lambda: registry.get_sample_value("hazardwatch_api_stream_clients") == 3, 5)


async def test_ending_streams_for_a_shutdown_tells_the_clients(seeded: str, plant: Plant) -> None:
    async with serving(seeded, plant) as srv:
        readers = [await srv.open("op_aa"), await srv.open("bureau_city")]
        await end_streams(srv.state)  # what a stopping server calls before it waits for connections
        await eventually(lambda: all(r.closed for r in readers), 15)
        assert all(r.events[-1].data == {"reason": "shutdown"} for r in readers)


async def test_a_stream_ends_when_its_access_token_expires(seeded: str, plant: Plant) -> None:
    [(user_id, version)] = await fetch_all(
        seeded, "SELECT id, token_version FROM app_user WHERE username = 'op_aa'"
    )
    token = issue_token(SECRET, user_id, version, TokenKind.ACCESS, 2)
    async with serving(seeded, plant) as srv:
        reader = SseReader(srv.http, {"Authorization": f"Bearer {token}"})
        srv.readers.append(reader)
        await reader.open()
        await eventually(lambda: reader.closed, 15)
        assert reader.events[-1].event == "end" and reader.events[-1].data == {"reason": "token_expired"}
        assert not srv.hub.subscribers


async def test_a_stream_opened_with_an_api_key_ends_for_a_new_check_of_the_key(
    seeded: str, plant: Plant
) -> None:
    async with await psycopg.AsyncConnection.connect(seeded, autocommit=True) as conn:
        issued = await create_key(conn, "bureau_city", "SCADA bridge")
    async with serving(seeded, plant, replace(FAST, key_session_s=2.0)) as srv:
        reader = SseReader(srv.http, {"X-API-Key": issued.key})
        srv.readers.append(reader)
        await reader.open()
        await eventually(lambda: reader.closed, 15)
        assert reader.events[-1].data == {"reason": "reauthenticate"}


@pytest.mark.parametrize(
    ("headers", "params", "loc"),
    [
        ({"Last-Event-ID": "abc"}, {}, ["header", "Last-Event-ID"]),
        ({"Last-Event-ID": "1.2.3"}, {}, ["header", "Last-Event-ID"]),
        ({}, {"last_event_id": "-1.0"}, ["query", "last_event_id"]),
        ({"Last-Event-ID": "999999.0"}, {}, ["header", "Last-Event-ID"]),  # after the journal's end
    ],
    ids=["word", "three-parts", "negative", "future"],
)
async def test_a_bad_last_event_id_is_422_naming_it(
    client: httpx.AsyncClient, headers: dict[str, str], params: dict[str, str], loc: list[str]
) -> None:
    auth = await login(client, "op_aa")
    r = await client.get("/api/v1/stream", headers=auth | headers, params=params)
    assert r.status_code == 422, r.text
    assert r.json()["detail"][0]["loc"] == loc


async def test_the_stream_needs_credentials(client: httpx.AsyncClient) -> None:
    r = await client.get("/api/v1/stream")
    assert r.status_code == 401


@pytest.mark.parametrize("backend", [Backend.POSTGRES, Backend.TIMESCALEDB], ids=str)
async def test_one_notify_per_transaction_on_both_backends(backend: Backend) -> None:
    with migrated_db(backend) as dsn:
        async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as listen:
            await listen.execute("LISTEN alarm_journal")
            await listen.execute("LISTEN tag_latest")
            await listen.execute("LISTEN done")
            async with await psycopg.AsyncConnection.connect(dsn) as conn:
                async with conn.transaction():
                    for i in range(3):  # three statements, many rows each
                        await conn.execute(
                            "INSERT INTO tag_latest SELECT g, now(), %s, 192 FROM generate_series(1, 100) g "
                            "ON CONFLICT (tag_id) DO UPDATE SET value = EXCLUDED.value",
                            (float(i),),
                        )
                        await conn.execute(
                            "INSERT INTO alarm_journal (seq, n, alarm_key, action, old_status, new_status, at, "
                            "arrival, actor) SELECT %s, g, 'K', 'raise', 'NORMAL', 'UNACK', now(), now(), 'engine' "
                            "FROM generate_series(0, 9) g",
                            (i + 1,),
                        )
                await conn.execute("NOTIFY done")
                await conn.commit()
            seen = []
            async for note in listen.notifies(timeout=15):
                if note.channel == "done":
                    break
                seen.append((note.channel, note.payload))
        assert sorted(seen) == [("alarm_journal", ""), ("tag_latest", "")]


def test_the_openapi_document_describes_the_stream_with_a_valid_example() -> None:
    app = create_app(ApiConfig("postgresql://nobody@127.0.0.1/none", SECRET))
    operation = app.openapi()["paths"]["/api/v1/stream"]["get"]
    assert {"401", "422", "503"} <= set(operation["responses"])
    example = operation["responses"]["200"]["content"]["text/event-stream"]["example"]
    events = [block for block in example.split("\n\n") if "data: " in block]
    assert [json.loads(block.split("data: ", 1)[1])["key"] for block in events if "event: alarm" in block]
