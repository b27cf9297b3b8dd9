"""The Grafana benchmark's world: a generated plant and a historian filled as a running one leaves it.

``write_plant`` writes a plant of the generated kind (bench/config.py's ten-tag equipment: levels,
pressure, temperature, flow, two gas detectors, a valve and a bypass switch, one 2oo3 interlock per
complete equipment; half the analog tags on an OPC UA subscription, half polled over Modbus),
sized by ``Scale``. ``load`` fills a migrated scratch database for it, by binary COPY:

- reading_1m: one row per tag and closed minute over ``Scale.minutes``: a polled point 60
  samples, a subscription point the changes it saw; ~0.3 % of minutes missing, one enterprise
  offline for three hours (the city only), ~0.2 % of minutes BAD (a comm failure: no usable
  sample, the newest reading a BAD|COMM_FAILURE marker);
- raw ``reading``: every tag at 1 Hz for the last ``Scale.raw_minutes`` and the current minute so
  far (the closed minutes' rollups computed from them), the current minute listed open in
  reading_1m_open, tag_latest from the newest;
- alarm_state / alarm_journal: ``Scale.annunciations`` annunciations over the range, most from a
  few bad actors, a flood (``Scale.flood`` in 40 minutes in one enterprise), one chattering alarm,
  each acknowledged and cleared or returned and then acknowledged; some left standing (a few past
  their acknowledgement deadline); interlock alarms for the bypassed and the out-of-service ones;
- interlock_bypass: approved permits (one overdue), a restored and a requested one.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np

from bench.api_data import copy_binary
from bench.config import REFERENCE, enterprise_yaml
from core.config import load_plant
from core.plant import Plant
from storage.db import Backend, Conn
from storage.partitions import ensure_partitions
from storage.registry_sync import sync_registry

__all__ = ["Loaded", "Scale", "load", "write_plant"]

MINUTE_US = 60_000_000
DAY_US = 1440 * MINUTE_US
_GOOD, _BAD_COMM = 192, 24  # OPC DA quality bytes: GOOD, BAD|COMM_FAILURE
_ROLLUP = (
    ("tag_id", "int4"), ("bucket", "timestamptz"), ("min", "float8"), ("max", "float8"), ("sum", "float8"),
    ("count", "int4"), ("bad_count", "int4"), ("last_time", "timestamptz"), ("last_value", "float8"),
    ("last_quality", "int2"),
)  # fmt: skip
_READING = (("time", "timestamptz"), ("tag_id", "int4"), ("value", "float8"), ("quality", "int2"))
_LATEST = (("tag_id", "int4"), ("time", "timestamptz"), ("value", "float8"), ("quality", "int2"))
# alarm kinds a tag of each prefix raises, with their priorities
_KINDS = {
    "LT": (("H", "high"), ("HH", "critical"), ("L", "medium"), ("LL", "critical")),
    "PT": (("H", "high"), ("HH", "critical")),
    "TT": (("H", "high"), ("HH", "critical")),
    "FT": (("L", "medium"), ("H", "medium")),
    "AT": (("GAS_L1", "high"), ("GAS_L2", "critical")),
}
_BAD_QUALITY = ("BAD_QUALITY", "low")


@dataclass(frozen=True)
class Scale:
    name: str
    counties: int
    enterprises: int
    hazard_sources: Sequence[int]  # per enterprise (cycled)
    tags_per_source: int
    minutes: int  # of reading_1m, ending at the current minute
    raw_minutes: int  # of raw 1 Hz readings, ending now
    alarm_days: int  # the alarm journal's span, ending now
    annunciations: int  # over the whole range, the flood and the chatter included
    flood: int
    standing: int  # alarms left annunciated at the end
    permits: int  # approved bypass permits (one of them overdue)
    bypass_switches: int  # bypass switches reading 1 (an interlock input bypassed)

    @property
    def tags(self) -> int:
        return sum(self.hazard_sources_of(e) for e in range(self.enterprises)) * self.tags_per_source

    def hazard_sources_of(self, e: int) -> int:
        return self.hazard_sources[e % len(self.hazard_sources)]

    def county_of(self, e: int) -> str:
        names = (
            "孝义市",
            "汾阳市",
            "介休市",
            "文水县",
            "交城县",
            "平遥县",
            "灵石县",
            "中阳县",
            "离石区",
            "柳林县",
        )
        c = e * self.counties // self.enterprises
        return names[c] if c < len(names) else f"县{c}"


def _enterprise_yaml(scale: Scale, e: int) -> str:
    """bench/config.py's enterprise with ``scale``'s sources and county, grades 1-4, no deviation alarms,
    and the first interlock of one source in seven out of service."""
    return enterprise_yaml(
        e,
        [scale.tags_per_source] * scale.hazard_sources_of(e),
        county=scale.county_of(e),
        grade=lambda h: 1 + (e + h) % 4,
        deviation=False,
        in_service=lambda h, first: not ((e + h) % 7 == 3 and first == 0),
    )


def write_plant(folder: Path, scale: Scale) -> Plant:
    """``folder``/plant.yaml (one included file per enterprise), loaded as ``hazardwatch`` loads it."""
    (folder / "enterprises").mkdir(parents=True, exist_ok=True)
    includes = []
    for e in range(scale.enterprises):
        (folder / "enterprises" / f"E{e:03d}.yaml").write_text(_enterprise_yaml(scale, e), encoding="utf-8")
        includes.append(f"  - !include enterprises/E{e:03d}.yaml")
    text = [f"name: Grafana 基准 ({scale.name})", f"reference: {REFERENCE}", "enterprises:", *includes]
    (folder / "plant.yaml").write_text("\n".join(text) + "\n", encoding="utf-8")
    return load_plant(folder)


@dataclass
class Loaded:
    tags: int
    rollup_rows: int
    raw_rows: int
    journal_rows: int
    annunciations: int
    alarm_states: int
    standing: int
    permits: int
    seconds: float
    now: datetime  # when the data ends
    tag_ids: dict[str, int]


def _prefix(key: str) -> str:
    return key.rsplit(".", 1)[1].split("-", 1)[0]


async def load(conn: Conn, backend: Backend, plant: Plant, scale: Scale, seed: int = 14) -> Loaded:
    """Registry, readings, alarms and permits for ``plant`` (module docstring); ``conn`` autocommit."""
    started = time.perf_counter()
    rng = np.random.default_rng(seed)
    now_us = time.time_ns() // 1000
    current = now_us // MINUTE_US * MINUTE_US  # the open minute
    first = current - scale.minutes * MINUTE_US
    report = await sync_registry(conn, plant, now_us=first - MINUTE_US)
    keys = sorted(report.tag_ids, key=report.tag_ids.__getitem__)
    ids = np.array([report.tag_ids[k] for k in keys], np.int32)
    prefix = np.array([_prefix(k) for k in keys])
    analog = ~np.isin(prefix, ("XV", "HS"))
    ent_of = np.array([int(k[1:4]) for k in keys])
    opc = {t.key: t.source.device.endswith("-OPC") for t in plant.tags()}  # a subscription: changes only
    carry = np.array([opc[k] for k in keys], bool)
    if backend is Backend.POSTGRES:
        await ensure_partitions(conn, range(first // DAY_US, now_us // DAY_US + 1))
    base = np.where(prefix == "LT", 5.0, np.where(prefix == "PT", 1.6, np.where(prefix == "TT", 60.0,
                    np.where(prefix == "FT", 200.0, np.where(prefix == "AT", 2.0, 0.0)))))  # fmt: skip
    raw_first = current - scale.raw_minutes * MINUTE_US
    outage = (first + (scale.minutes // 3) * MINUTE_US, first + (scale.minutes // 3 + 180) * MINUTE_US)
    rows = 0
    n = len(ids)
    step = max(1, 2_000_000 // n)  # minutes per COPY: ~2M rows
    for m0 in range(first, raw_first, step * MINUTE_US):
        minutes = np.arange(m0, min(m0 + step * MINUTE_US, raw_first), MINUTE_US, dtype=np.int64)
        k = len(minutes)
        tag = np.tile(ids, k)
        bucket = np.repeat(minutes, n)
        is_carry = np.tile(carry, k)
        count = np.where(is_carry, rng.integers(1, 61, n * k), 60).astype(np.int32)
        bad = rng.random(n * k) < 0.002
        keep = rng.random(n * k) >= 0.003
        if scale.enterprises > 1 and scale.name == "city":
            keep &= ~((np.tile(ent_of, k) == 1) & (bucket >= outage[0]) & (bucket < outage[1]))
        usable_n = rng.integers(0, 30, n * k)  # a BAD minute: a few usable samples at most
        bad_count = np.where(bad, 60 - usable_n, 0).astype(np.int32)
        count = np.where(bad, usable_n, count).astype(np.int32)
        phase = (bucket % DAY_US) / DAY_US * 2 * np.pi
        avg = np.tile(base, k) * (1 + 0.1 * np.sin(phase)) + 0.05 * rng.standard_normal(n * k)
        avg = np.where(np.tile(analog, k), avg, 0.0)
        last_q = np.where(bad, _BAD_COMM, _GOOD).astype(np.int16)
        sel = keep
        vals: dict[str, np.ndarray] = {
            "tag_id": tag[sel], "bucket": bucket[sel],
            "min": np.where(count > 0, avg - 0.02, np.nan)[sel], "max": np.where(count > 0, avg + 0.02, np.nan)[sel],
            "sum": (avg * count)[sel], "count": count[sel], "bad_count": bad_count[sel],
            "last_time": (bucket + 59_000_000)[sel], "last_value": avg[sel], "last_quality": last_q[sel],
        }  # fmt: skip
        await copy_binary(conn, "reading_1m", _ROLLUP, vals)
        rows += int(sel.sum())
    # the last raw_minutes: raw readings at 1 Hz, their closed minutes rolled up from them
    raw = 0
    latest: dict[str, np.ndarray] = {}
    for m0 in range(raw_first, now_us, MINUTE_US):
        secs = np.arange(m0, min(m0 + MINUTE_US, now_us), 1_000_000, dtype=np.int64)
        t = np.repeat(secs, n)
        v = np.tile(base, len(secs)) + 0.05 * rng.standard_normal(len(t)) * np.tile(analog, len(secs))
        q = np.where(rng.random(len(t)) < 0.001, _BAD_COMM, _GOOD).astype(np.int16)
        await copy_binary(
            conn,
            "reading",
            _READING,
            {"time": t, "tag_id": np.tile(ids, len(secs)), "value": v, "quality": q},
        )
        raw += len(t)
        grid, qg = v.reshape(len(secs), n), q.reshape(len(secs), n)
        latest = {"tag_id": ids, "time": np.full(n, secs[-1]), "value": grid[-1], "quality": qg[-1]}
        if m0 < current:
            good = qg == _GOOD
            cnt = good.sum(0).astype(np.int32)
            masked = np.where(good, grid, np.nan)
            with np.errstate(all="ignore"):
                r = {"tag_id": ids, "bucket": np.full(n, m0), "min": np.nanmin(masked, 0), "max": np.nanmax(masked, 0),
                     "sum": np.nansum(masked, 0), "count": cnt, "bad_count": (len(secs) - cnt).astype(np.int32),
                     "last_time": np.full(n, secs[-1]), "last_value": grid[-1], "last_quality": qg[-1]}  # fmt: skip
            await copy_binary(conn, "reading_1m", _ROLLUP, r)
            rows += n
    if not latest:  # no raw readings at this scale: the newest value of each point, as of now
        latest = {"tag_id": ids, "time": np.full(n, now_us - 1_000_000), "value": base.copy(),
                  "quality": np.where(rng.random(n) < 0.005, _BAD_COMM, _GOOD).astype(np.int16)}  # fmt: skip
    # bypass switches reading 1: an interlock input bypassed
    hs = np.flatnonzero(prefix == "HS")
    on = rng.choice(hs, min(scale.bypass_switches, len(hs)), replace=False)
    latest["value"] = latest["value"].copy()
    latest["value"][on] = 1.0
    latest["quality"] = latest["quality"].copy()
    latest["quality"][on] = _GOOD
    await copy_binary(conn, "tag_latest", _LATEST, latest)
    await conn.execute(
        "INSERT INTO reading_1m_open (bucket, tag_lo, tag_hi) VALUES (to_timestamp(%s / 1e6), %s, %s)",
        [current, int(ids.min()), int(ids.max())],
    )
    bypassed = {keys[i] for i in on}
    alarms_from = now_us - scale.alarm_days * DAY_US
    journal, states, annunciations, standing = _alarms(plant, scale, rng, alarms_from, now_us, bypassed)
    await _copy_rows(conn, "alarm_journal", ("seq", "n", "alarm_key", "action", "old_status", "new_status", "at",
                                             "arrival", "value", "limit", "actor"), journal)  # fmt: skip
    await _copy_rows(conn, "alarm_state", ("key", "enterprise", "county", "hazard_source", "unit", "subject", "kind",
                                           "priority", "status", "condition", "acked", "latching", "since",
                                           "value", "limit", "raised_at", "acked_at", "acked_by", "seq"), states)  # fmt: skip
    await conn.execute("INSERT INTO alarm_writer (id, seq, updated_at) VALUES (1, %s, now())", [len(journal)])
    permits = await _permits(conn, plant, scale, rng, datetime.fromtimestamp(now_us / 1e6, UTC))
    await conn.execute(
        "VACUUM ANALYZE reading, reading_1m, reading_1m_open, tag_latest, alarm_state, alarm_journal, "
        "interlock_bypass, tag, hazard_source, enterprise"
    )
    return Loaded(n, rows, raw, len(journal), annunciations, len(states), standing, permits,
                  time.perf_counter() - started, datetime.fromtimestamp(now_us / 1e6, UTC), report.tag_ids)  # fmt: skip


async def _copy_rows(conn: Conn, table: str, columns: Sequence[str], rows: list[tuple[Any, ...]]) -> None:
    names = ", ".join(f'"{c}"' for c in columns)
    async with conn.cursor() as cur, cur.copy(f"COPY {table} ({names}) FROM STDIN".encode()) as cp:
        for r in rows:
            await cp.write_row(r)


def _dt(us: float) -> datetime:
    return datetime.fromtimestamp(us / 1e6, UTC)


def _alarms(
    plant: Plant, scale: Scale, rng: np.random.Generator, first: int, now_us: int, bypassed: set[str]
) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]], int, int]:
    """(journal rows, alarm_state rows, annunciations, standing) as module docstring says."""
    where: dict[str, tuple[str, str, str]] = {}  # tag key -> enterprise, county, hazard source
    defs: list[tuple[str, str, str, str]] = []  # alarm key, subject, kind, priority
    for e in plant.enterprises:
        for h in e.hazard_sources:
            for t in h.tags:
                where[t.key] = (e.code, e.county, h.code)
                for kind, prio in (*_KINDS.get(_prefix(t.key), ()), _BAD_QUALITY):
                    defs.append((f"{t.key}:{kind}", t.key, kind, prio))
    span = now_us - first
    # bad actors: a Zipf-like share of the ordinary annunciations
    weights = 1.0 / np.arange(1, len(defs) + 1) ** 1.1
    order = rng.permutation(len(defs))
    ordinary = scale.annunciations - scale.flood - 30
    picks = order[rng.choice(len(defs), ordinary, p=weights / weights.sum())]
    times: dict[int, list[float]] = {}
    for d, at in zip(picks.tolist(), (first + rng.random(ordinary) * span * 0.98).tolist(), strict=True):
        times.setdefault(d, []).append(at)
    # the flood: 40 minutes in one enterprise, a third of the way in
    flood_ent = plant.enterprises[0].code
    in_ent = [i for i, d in enumerate(defs) if d[0].startswith(flood_ent + ".")]
    t0 = first + span * 0.4
    for d, at in zip(rng.choice(in_ent, scale.flood).tolist(), (t0 + rng.random(scale.flood) * 2400e6).tolist(),
                     strict=True):  # fmt: skip
        times.setdefault(d, []).append(at)
    chatter = in_ent[-1]
    events: list[tuple[float, str, str, str, str, str]] = []  # at, key, action, old, new, actor
    final: dict[int, tuple[str, bool, bool, float | None]] = {}  # status, condition, acked, raised_at
    standing_defs = set(rng.choice(len(defs), scale.standing, replace=False).tolist())
    for d, ts in times.items():
        key = defs[d][0]
        ts.sort()
        raised = None
        for j, at in enumerate(ts):
            end = ts[j + 1] - 1e6 if j + 1 < len(ts) else now_us - 1e6
            if at >= end:
                continue
            raised = at
            events.append((at, key, "RAISED", "normal", "unacknowledged", "engine"))
            last = j + 1 == len(ts) and d in standing_defs
            dur = min(end - at, float(rng.exponential(900e6)) + 30e6)
            ack = min(end - at, float(rng.exponential(300e6)) + 10e6)
            if last:  # left standing: unacknowledged, acknowledged or returned unacknowledged
                what = d % 3
                if what == 1 and ack < now_us - at:
                    events.append((at + ack, key, "ACKED", "unacknowledged", "acknowledged", "张伟 (op)"))
                    final[d] = ("acknowledged", True, True, raised)
                elif what == 2:
                    events.append(
                        (at + dur, key, "RETURNED", "unacknowledged", "returned_unacknowledged", "engine")
                    )
                    final[d] = ("returned_unacknowledged", False, False, raised)
                else:
                    final[d] = ("unacknowledged", True, False, raised)
            elif j % 3 == 2:
                events.append((at + min(ack, dur) * 0.5, key, "RETURNED", "unacknowledged",
                               "returned_unacknowledged", "engine"))  # fmt: skip
                events.append((at + dur, key, "ACKED", "returned_unacknowledged", "normal", "张伟 (op)"))
                final[d] = ("normal", False, True, raised)
            else:
                a = min(ack, dur * 0.5)
                events.append((at + a, key, "ACKED", "unacknowledged", "acknowledged", "张伟 (op)"))
                events.append((at + dur, key, "CLEARED", "acknowledged", "normal", "engine"))
                final[d] = ("normal", False, True, raised)
    # the chattering alarm: 30 annunciations 20 s apart, then acknowledged
    key = defs[chatter][0]
    c0 = first + span * 0.7
    events.append((c0, key, "RAISED", "normal", "unacknowledged", "engine"))
    for j in range(29):
        events.append(
            (c0 + j * 20e6 + 5e6, key, "RETURNED", "unacknowledged", "returned_unacknowledged", "engine")
        )
        events.append(
            (c0 + (j + 1) * 20e6, key, "RERAISED", "returned_unacknowledged", "unacknowledged", "engine")
        )
    events.append((c0 + 30 * 20e6, key, "RETURNED", "unacknowledged", "returned_unacknowledged", "engine"))
    events.append((c0 + 30 * 20e6 + 60e6, key, "ACKED", "returned_unacknowledged", "normal", "张伟 (op)"))
    if chatter not in final:
        final[chatter] = ("normal", False, True, c0 + 29 * 20e6)
    events.sort()
    journal = []
    last_event: dict[str, tuple[int, float]] = {}
    for seq, (at, key, action, old, new, actor) in enumerate(events, 1):
        journal.append((seq, 0, key, action, old, new, _dt(at), _dt(at + 2e5), None, None, actor))
        last_event[key] = (seq, at)
    states = []
    by_key = {x[0]: x for x in defs}
    for d, (status, cond, acked, raised_at) in final.items():
        key, subject, kind, prio = defs[d]
        if key not in last_event:
            continue
        seq, since = last_event[key]
        ent, county, hs = where[subject]
        acked_at = _dt(since) if acked else None
        states.append((key, ent, county, hs, None, subject, kind, prio, status, cond, acked, False, _dt(since),
                       None, None, _dt(raised_at) if raised_at else None, acked_at,
                       "张伟 (op)" if acked else None, seq))  # fmt: skip
    del by_key
    # interlock alarms: an input bypassed (switch on), an interlock out of service
    seq = len(journal)
    for e in plant.enterprises:
        for h in e.hazard_sources:
            for il in h.interlocks:
                ikey = f"{h.code}.{il.code}"
                kinds = []
                if any(f"{e.code}.{i.bypass}" in bypassed for i in il.inputs if i.bypass):
                    kinds.append("INPUT_BYPASSED")
                if not il.in_service:
                    kinds.append("OUT_OF_SERVICE")
                for kind in kinds:
                    seq += 1
                    at = now_us - float(rng.integers(600, 86400)) * 1e6
                    journal.append((seq, 0, f"{ikey}:{kind}", "RAISED", "normal", "unacknowledged", _dt(at),
                                    _dt(at), None, None, "engine"))  # fmt: skip
                    seq += 1
                    journal.append((seq, 0, f"{ikey}:{kind}", "ACKED", "unacknowledged", "acknowledged",
                                    _dt(at + 60e6), _dt(at + 60e6), None, None, "张伟 (op)"))  # fmt: skip
                    states.append((f"{ikey}:{kind}", e.code, e.county, h.code, None, ikey, kind, "high",
                                   "acknowledged", True, True, False, _dt(at + 60e6), None, None, _dt(at),
                                   _dt(at + 60e6), "张伟 (op)", seq))  # fmt: skip
    annunciations = sum(1 for r in journal if r[3] in ("RAISED", "RERAISED"))
    standing = sum(1 for s in states if s[8] != "normal")
    return journal, states, annunciations, standing


async def _permits(conn: Conn, plant: Plant, scale: Scale, rng: np.random.Generator, now: datetime) -> int:
    """Approved permits (the first overdue), one restored, one requested; by two users."""
    cur = await conn.execute(
        """INSERT INTO app_user (username, display_name, role) VALUES ('eng_bench', '陈静', 'engineer'),
           ('approver_bench', '杨勇', 'approver') RETURNING id"""
    )
    eng, approver = [r[0] for r in await cur.fetchall()]
    ils = [(e, h, il) for e in plant.enterprises for h in e.hazard_sources for il in h.interlocks]
    chosen = rng.choice(len(ils), min(len(ils), scale.permits + 2), replace=False).tolist()
    rows = []
    for j, i in enumerate(chosen):
        e, h, il = ils[i]
        state = "approved" if j < scale.permits else ("restored" if j == scale.permits else "requested")
        starts = now - timedelta(hours=10 if j == 0 else 2)
        expires = now - timedelta(hours=1) if j == 0 else now + timedelta(hours=4)
        decided = state != "requested"
        rows.append((uuid.uuid4(), f"{h.code}.{il.code}", e.code, e.county, h.code, "仪表校验", "现场专人监护, 便携式检测仪",
                     starts, expires, state, "陈静 (eng_bench)", eng, starts - timedelta(minutes=5),
                     "杨勇 (approver_bench)" if decided else None, approver if decided else None,
                     starts if decided else None, "杨勇 (approver_bench)" if state == "restored" else None,
                     approver if state == "restored" else None, now - timedelta(minutes=30) if state == "restored" else None))  # fmt: skip
    await _copy_rows(conn, "interlock_bypass", ("id", "interlock", "enterprise", "county", "hazard_source", "reason",
                                                "compensating_measures", "starts_at", "expires_at", "state",
                                                "requested_by", "requested_by_id", "requested_at", "decided_by",
                                                "decided_by_id", "decided_at", "restored_by", "restored_by_id",
                                                "restored_at"), rows)  # fmt: skip
    return scale.permits
