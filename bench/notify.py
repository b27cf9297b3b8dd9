"""Benchmark: a value change in the plant → the SMS gateway receiving SendSms (issue 12, DESIGN.md row 5).

The whole chain of ``hazardwatch run``: a simulator (child process) serves Modbus TCP; ``Runtime``
collects it (ModbusSource under CollectorRunner, hub, historian, live view), the rule engine turns
the probe's value into an edge, the ``AlarmService`` commits the journal and the outbox row, the
dispatcher (woken by the commit's NOTIFY) plans, claims and sends through the Aliyun SMS channel
(ACS3-signed SendSms) to a loopback gateway in a second child process, which stamps each request
as it arrives. Times are ``time.monotonic()`` in all three processes (CLOCK_MONOTONIC: one clock
for the whole machine).

- Background: ``n`` INT16 tags on one Modbus device polled every second, every value changed
  at every poll and none near its limits: ``n`` value changes/s through collection, historian
  and rules (``LEVELS``).
- Probe: ``PROBES`` tags, each in its own enterprise on its own unit of a second Modbus server
  polled every ``PROBE_POLL_S``, each with an H limit and a duty desk of one person (a distinct
  phone number): every ``TICK_S`` the simulator raises the next probe past H (a value unique in
  the run, so each SMS names its raise) and clears it ``HOLD_S`` later. The route has
  group_wait 0s, group_interval 1s, send_resolved false, no escalation, so each raise is one SMS
  and a probe's next raise comes ``PROBES * TICK_S`` later, past its group interval.
- Stages per raise: value set → the probe's batch published by the collector → the edge handed
  to the alarm service → its commit stored (outbox row included) → the dispatcher's send task
  starts (the delivery planned and claimed) → it calls the SMS notifier → the gateway has the
  request. The gateway also counts the dispatcher's QuerySendDetails: lookups (a delivery it
  reconciles as if a crash had interrupted it) and delivery-receipt queries.
- Baselines in the same run: the value change → outbox row committed (everything before the
  dispatcher), and a bare ``AliyunSms.send`` to the same gateway under the same load (what one
  SMS call costs by itself).

Target (issue 12): p99 value change → SMS request ≤ 500 ms at 10,000 value changes/s.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import gc
import json
import os
import re
import tempfile
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from bench.notify_plant import (
    HOLD_S,
    PROBE_H,
    PROBE_POLL_S,
    PROBES,
    TICK_S,
    Child,
    Record,
    bench_plant,
    phone,
)

__all__ = ["STAGES", "Sample", "Window", "main", "match", "render"]

ADMIN = os.environ.get("HW_PG_DSN", "postgresql://postgres@127.0.0.1:5432/postgres")
LEVELS = (1_000, 10_000)  # background value changes/s (tags, each changing once per 1 s poll)
RUNS = 3  # windows per level, in one running system
WINDOW_S = 20.0
WARMUP_S = 4.0
DRAIN_S = 2.0  # after a window: the last raise's SMS
BARE_SENDS = 20  # bare SMS calls per window
TARGET_P99_MS = 500.0
TARGET_LEVEL = 10_000
ENV = {
    "ALIBABA_CLOUD_ACCESS_KEY_ID": "LTAIbenchKeyId0001",
    "ALIBABA_CLOUD_ACCESS_KEY_SECRET": "benchSecret0123456789",
}
BARE_PHONE = "13919999999"
STAGES = ("collected", "edge", "committed", "claimed", "send called", "gateway")
_LABELS = {
    "collected": "value set → batch published (Modbus poll)",
    "edge": "→ edge to the alarm service (hub, rule engine)",
    "committed": "→ commit stored (journal, outbox row, NOTIFY)",
    "claimed": "→ send started (dispatcher: woken by NOTIFY; reads, plans, journals, claims)",
    "send called": "→ SMS notifier called (the send's own connection, the event read)",
    "gateway": "→ gateway has the request (signing, HTTP)",
}


def _delivery_files(folder: Path, gateway_port: int) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "routes.yaml").write_text(
        "route:\n  receiver: probe_duty\n  group_wait: 0s\n  group_interval: 1s\n  repeat_interval: 4h\n"
        "  send_resolved: false\n  escalation: none\n"
        "receivers:\n  - name: probe_duty\n    targets:\n      - {kind: duty_room, channels: [sms]}\n"
        "channels:\n  sms: {provider: aliyun, sign_name: 危化监测, template_code: SMS_BENCH, "
        f"template_params: [tag, value], endpoint: 'http://127.0.0.1:{gateway_port}', rate_per_s: 100}}\n",
        encoding="utf-8",
    )
    desks = "".join(
        f"  P{k}:\n    enterprise: P{k}\n    people: {{p{k}: {{name: probe{k}, phone: '{phone(k)}'}}}}\n"
        f"    shifts: [{{name: ALL, start: '00:00', end: '00:00'}}]\n"
        f"    rotation: {{start: 2026-01-01, cycle: [{{ALL: p{k}}}]}}\n"
        for k in range(PROBES)
    )
    (folder / "rosters.yaml").write_text("desks:\n" + desks, encoding="utf-8")


# --- matching --------------------------------------------------------------------------------


@dataclass
class Sample:
    """One raise: when its value was set and when each stage had it (None: never seen)."""

    probe: int
    value: float
    set_at: float
    at: dict[str, float | None] = field(default_factory=dict)

    def ms(self, stage: str, since: str | None = None) -> float | None:
        end = self.at.get(stage)
        start = self.set_at if since is None else self.at.get(since)
        return None if end is None or start is None else (end - start) * 1000


def match(raises: Sequence[Record], stages: Mapping[str, Sequence[Record]]) -> list[Sample]:
    """Each raise (probe, value, set at) with, per stage, the first record of the same probe and
    value (to ±5: the simulator's noise; any value when the record has none) at or after the
    previous stage's time."""
    out = []
    for k, v, t0 in raises:
        s, t = Sample(k, v, t0), t0
        for name in STAGES:
            found = min((r[2] for r in stages.get(name, ())
                         if r[0] == k and not abs(r[1] - v) >= 5 and r[2] >= t), default=None)  # fmt: skip
            s.at[name] = found
            t = found if found is not None else t
        out.append(s)
    return out


# --- the run ------------------------------------------------------------------------------------


@dataclass
class Window:
    level: int
    samples: list[Sample]
    bare_ms: list[float]
    lookups: int = 0  # QuerySendDetails for the probes' numbers: the dispatcher reconciling a send
    repeated: int = 0  # SendSms of one delivery (OutId) more than once
    reports: int = 0  # QuerySendDetails by BizId: the dispatcher fetching delivery receipts
    background_rate: float = 0.0  # rows/s of the background device into the hub during the window
    failures: int = 0  # collector read errors in the window (a failed device marks its tags BAD)

    def total(self) -> list[float]:
        return [x for s in self.samples if (x := s.ms("gateway")) is not None]

    def committed(self) -> list[float]:
        return [x for s in self.samples if (x := s.ms("committed")) is not None]


class _Probe:
    """Stamps the probe's raises at each stage inside the running system."""

    def __init__(self, tag_probe: dict[int, int], rule_probe: dict[int, int]) -> None:
        self.tag_probe, self.rule_probe = tag_probe, rule_probe
        self.stages: dict[str, list[Record]] = {s: [] for s in STAGES[:-1]}
        self._high = [False] * PROBES
        self._pending: list[tuple[int, int, float]] = []  # (commit seq, probe, value)
        self.background_rows = 0

    def published(self, batch: Any) -> None:
        probes = np.isin(batch.tag, list(self.tag_probe))
        self.background_rows += len(batch) - int(probes.sum())
        for i in np.flatnonzero(probes):
            k, v = self.tag_probe[int(batch.tag[i])], float(batch.value[i])
            if (v > PROBE_H) != self._high[k]:
                self._high[k] = v > PROBE_H
                if v > PROBE_H:
                    self.stages["collected"].append((k, v, time.monotonic()))

    def edges(self, edges: Any, seq: Callable[[], int], deliver: Callable[[Any], None]) -> None:
        hits = [(self.rule_probe[int(r)], float(v)) for r, a, v in zip(edges.rule, edges.active, edges.value, strict=True)
                if a and int(r) in self.rule_probe]  # fmt: skip
        at = time.monotonic()
        deliver(edges)
        for k, v in hits:
            self.stages["edge"].append((k, v, at))
            self._pending.append((seq(), k, v))

    async def watch_commits(self, stored: Callable[[], int]) -> None:
        while True:
            if self._pending:
                done = stored()
                now = time.monotonic()
                for p in [p for p in self._pending if p[0] <= done]:
                    self.stages["committed"].append((p[1], p[2], now))
                    self._pending.remove(p)
            await asyncio.sleep(0.002)

    def claimed(self, send: Callable[..., Any]) -> Callable[..., Any]:
        async def timed(d: Any, *args: Any) -> Any:
            k = next((k for k in range(PROBES) if phone(k) == d.recipient), -1)
            self.stages["claimed"].append((k, float("nan"), time.monotonic()))
            return await send(d, *args)

        return timed

    def sending(self, send: Callable[[Any], Any]) -> Callable[[Any], Any]:
        async def timed(message: Any) -> Any:
            params = dict(message.params)
            k = next((k for k in range(PROBES) if phone(k) == message.recipient), -1)
            self.stages["send called"].append((k, _number(params.get("value", "")), time.monotonic()))
            return await send(message)

        return timed


def _number(text: str) -> float:
    m = re.match(r"-?[\d.]+(?:e[-+]?\d+)?", text)
    return float(m.group()) if m else float("nan")


async def _bare_sends(endpoint: str) -> list[float]:
    """Round trips of bare AliyunSms.send to the gateway, in this loop, under the same load."""
    from alarms.notify import Message
    from alarms.notify.aliyun_sms import AliyunSms, AliyunSmsConfig

    sms = AliyunSms(AliyunSmsConfig("危化监测", "SMS_BENCH", ("tag", "value"), endpoint=endpoint), env=ENV)
    out = []
    try:
        for i in range(BARE_SENDS):
            message = Message(
                BARE_PHONE, (("tag", "LT"), ("value", "1")), f"hw-bare-{uuid.uuid4().hex[:8]}-{i}"
            )
            t0 = time.monotonic()
            await sms.send(message)
            out.append((time.monotonic() - t0) * 1000)
            await asyncio.sleep(0.05)
    finally:
        await sms.aclose()
    return out


async def _level(n_bg: int, gateway: Child, gateway_port: int, tmp: Path) -> list[Window]:
    import psycopg
    from psycopg.conninfo import make_conninfo

    from alarms.delivery_setup import load_delivery
    from core.config import collector_paused, tune_collector_for_service
    from hazardwatch.compile_all import compile_plant
    from hazardwatch.runtime import Runtime, RuntimeOptions

    name = f"hw_bench_notify_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(ADMIN, autocommit=True) as c:
        c.execute(f"CREATE DATABASE {name}".encode())
    dsn = make_conninfo(ADMIN, dbname=name)
    sim = Child("sim", n_bg)
    runtime = None
    try:
        bg_port, probe_port = sim.start()
        folder = tmp / f"plant{n_bg}"
        _delivery_files(folder, gateway_port)
        with collector_paused(keep=True):  # as load_compiled_or_exit does for `run`
            plant = bench_plant(n_bg, bg_port, probe_port)
            plant = plant.model_copy(update={"settings": plant.settings.model_copy(
                update={"data_dir": str(tmp / f"data{n_bg}")})})  # fmt: skip
            compiled = dataclasses.replace(
                compile_plant(plant), delivery=load_delivery(folder, plant, env=ENV)
            )
        tune_collector_for_service()  # as `run` does before it starts
        rules = compiled.engine.rules
        probe = _Probe(
            {compiled.registry.keys.index(f"P{k}.V.LT"): k for k in range(PROBES)},
            {rules.index_of(f"P{k}.V.LT:H"): k for k in range(PROBES)},
        )
        runtime = Runtime(plant, dsn, options=RuntimeOptions(metrics_port=None, rule_state_file=None),
                          compiled=compiled)  # fmt: skip
        publish = runtime._publish

        def published(batch: Any) -> None:
            publish(batch)
            probe.published(batch)

        runtime._publish = published  # type: ignore[method-assign]
        await runtime.start()
        assert runtime.rules is not None and runtime.alarms is not None and runtime.dispatcher is not None
        svc, deliver = runtime.alarms, runtime.rules.on_edges
        assert deliver is not None
        runtime.rules.on_edges = lambda edges: probe.edges(edges, lambda: svc.manager.seq, deliver)
        from alarms.routing_model import Channel

        sms = runtime.dispatcher.channels.notifiers[Channel.SMS]
        sms.send = probe.sending(sms.send)  # type: ignore[method-assign,assignment]
        sender = runtime.dispatcher.sender  # its send task begins once the delivery is claimed
        sender.send = probe.claimed(sender.send)  # type: ignore[method-assign]
        watcher = asyncio.create_task(probe.watch_commits(lambda: svc.stored_seq))
        runners = runtime.runners

        def errors() -> int:
            return sum(r.stats.errors for r in runners)

        await asyncio.sleep(WARMUP_S)
        windows = []
        try:
            for run in range(RUNS):
                for stage in probe.stages.values():
                    stage.clear()
                await gateway.ask(("dump",), 10)
                rows0, errors0, t0 = probe.background_rows, errors(), time.monotonic()
                raises = await sim.ask(("window", WINDOW_S), WINDOW_S + 30)
                background = (probe.background_rows - rows0) / (time.monotonic() - t0)
                failures = errors() - errors0
                await asyncio.sleep(DRAIN_S)
                bare = await _bare_sends(f"http://127.0.0.1:{gateway_port}")
                got = await gateway.ask(("dump",), 10)
                phones = {phone(k): k for k in range(PROBES)}
                sends = [g for g in got if g[2] in phones and g[1] == "SendSms"]
                gw = [(phones[p], _number(json.loads(t).get("value", "")), at) for at, _, p, t, _ in sends]
                lookups = sum(1 for g in got if g[2] in phones and g[1] == "QuerySendDetails")
                repeated = len(sends) - len({g[4] for g in sends})
                reports = sum(1 for g in got if g[1] == "QuerySendDetails/report")
                w = Window(n_bg, match(raises, {**probe.stages, "gateway": gw}), bare, lookups, repeated, reports,
                           background, failures)  # fmt: skip
                windows.append(w)
                total = w.total()
                print(f"  {n_bg:,}/s run {run}: {len(total)}/{len(w.samples)} raises reached the gateway; "
                      f"p50 {_pct(total, 50):.0f} ms, p99 {_pct(total, 99):.0f} ms; commit p50 "
                      f"{_pct(w.committed(), 50):.0f} ms; bare SMS {_pct(bare, 50):.1f} ms; lookups {lookups}, "
                      f"repeated sends {repeated}, receipt queries {reports}; background {background:,.0f} rows/s, "
                      f"collector errors {failures}", flush=True)  # fmt: skip
        finally:
            watcher.cancel()
        return windows
    finally:
        if runtime is not None:
            await runtime.stop()
        sim.close()
        with psycopg.connect(ADMIN, autocommit=True) as c:
            c.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)".encode())


def _pct(values: Sequence[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


def _window_pct(of: Callable[[Window], list[float]], q: float, w: Window) -> float:
    return _pct(of(w), q)


def _stage_pct(stage: str, since: str | None, q: float, w: Window) -> float:
    return _pct([x for m in w.samples if (x := m.ms(stage, since)) is not None], q)


async def _run() -> str:
    import logging

    logging.getLogger("pymodbus").setLevel(logging.CRITICAL)
    # one warning per condition edge, and per alarm that reaches nobody (the background enterprise
    # has no desk), are `run`'s log; here they would bury the benchmark's output
    quiet = [logging.getLogger(name) for name in ("hazardwatch.rule_sink", "alarms.dispatcher")]
    levels = [q.level for q in quiet]
    for q in quiet:
        q.setLevel(logging.ERROR)
    threshold = gc.get_threshold()
    gateway = Child("gateway")
    started = time.monotonic()
    try:
        port = gateway.start()
        windows = []
        with tempfile.TemporaryDirectory() as tmp:
            for level in LEVELS:
                print(f"notify: {level:,} value changes/s ...", flush=True)
                windows += await _level(level, gateway, port, Path(tmp))
    finally:
        gateway.close()
        for q, level in zip(quiet, levels, strict=True):
            q.setLevel(level)
        gc.set_threshold(*threshold)
        gc.unfreeze()
    return render(windows, time.monotonic() - started)


def render(windows: Sequence[Window], elapsed_s: float) -> str:
    """The markdown section: per level, every figure as median (min–max, n runs) over its windows."""
    from bench.report import spread

    def per_run(w: list[Window], f: Callable[[Window], float]) -> list[float]:
        return [x for x in map(f, w) if not np.isnan(x)]

    levels = sorted({w.level for w in windows})
    lines = [
        "## Notification latency: value change → SMS gateway request (bench/notify.py)",
        "",
        "The chain of `hazardwatch run`, nothing stubbed but the gateway: a simulator (child process) serves "
        "Modbus TCP; `Runtime` collects it (ModbusSource, hub, historian, live view, rule engine), the "
        "`AlarmService` commits journal and outbox row into PostgreSQL (127.0.0.1:5432), the dispatcher (woken by "
        "the commit's NOTIFY) plans, claims and sends through the Aliyun SMS channel (ACS3-signed SendSms) to a "
        "loopback gateway in another child process, which stamps each request as it arrives (`time.monotonic()` "
        "in all processes: one clock).",
        "",
        "- **Background**: N INT16 tags (scaled) on one Modbus device polled every 1 s, every value changed between "
        "polls, none near a limit: N value changes/s offered to collection, historian, live view and rules. "
        "The row *background rows/s collected* gives what arrived: a poll's requests (125 registers each) go one "
        "after another, each waiting for the event loop, so a busy loop stretches a poll past its second.",
        f"- **Probe**: {PROBES} tags, each in its own enterprise (its duty desk: one person, a distinct phone) on "
        f"a second Modbus server polled every {PROBE_POLL_S * 1000:.0f} ms; every {TICK_S * 1000:.0f} ms the "
        f"simulator sets the next probe past its H limit (a value unique in the run, so each SMS names its raise) "
        f"and back {HOLD_S:g} s later. Route: group_wait 0s, group_interval 1s (a probe's next raise comes "
        f"{PROBES * TICK_S:g} s later), send_resolved false, no escalation: one SMS per raise, no configured delay.",
        f"- **Latency** = the simulator setting the value (Modbus registers written) → the gateway having the "
        f"SendSms request. {RUNS} windows of {WINDOW_S:g} s per level ({int(WINDOW_S / TICK_S)} raises each) in one "
        "running system; p50/p95/p99 per window, then median (min–max) over the windows; *pooled* = all raises "
        "of the level together.",
        "- Stage times come from wrapping the running system's callbacks (the collectors' publish, the rule "
        "sink's `on_edges`, the dispatcher's send task, the SMS notifier's `send`) and the alarm service's stored "
        "commit sequence, polled every 2 ms; the code under test is unchanged. The first stage is bounded by the "
        f"probe's {PROBE_POLL_S * 1000:.0f} ms poll: a tag polled at the default 1 s adds up to 1 s before "
        "anything else starts.",
        "- **Baselines in the same run**: value change → outbox row committed (everything before the "
        f"dispatcher), and a bare `AliyunSms.send` round trip to the same gateway from the same loop under the same "
        f"load ({BARE_SENDS} per window).",
        "",
        "| figure | " + " | ".join(f"{n:,} tags × 1 Hz (offered)" for n in levels) + " |",
        "|---|" + "---:|" * len(levels),
    ]
    by = {n: [w for w in windows if w.level == n] for n in levels}

    def row(label: str, f: Callable[[Window], float], fmt: str = "{:.0f}", unit: str = " ms") -> None:
        lines.append(
            f"| {label} | " + " | ".join(spread(per_run(by[n], f), fmt, unit) for n in levels) + " |"
        )

    def pooled(label: str, f: Callable[[Window], list[float]], q: float) -> None:
        lines.append(f"| {label} | " + " | ".join(
            f"{_pct([x for w in by[n] for x in f(w)], q):.0f} ms ({sum(len(f(w)) for w in by[n])} raises)"
            for n in levels) + " |")  # fmt: skip

    row("background rows/s collected (measured)", lambda w: w.background_rate, "{:,.0f}", "")
    row("collector read errors in the window", lambda w: w.failures, "{:.0f}", "")
    row(
        "raises reaching the gateway", lambda w: 100 * len(w.total()) / max(len(w.samples), 1), "{:.0f}", " %"
    )
    row("dispatcher lookups of a probe's delivery (QuerySendDetails)", lambda w: w.lookups, "{:.0f}", "")
    row("SendSms repeated for one delivery", lambda w: w.repeated, "{:.0f}", "")
    row("delivery-receipt queries (QuerySendDetails by BizId)", lambda w: w.reports, "{:.0f}", "")
    for q in (50, 95, 99):
        row(f"**value change → SMS request, p{q}**", functools.partial(_window_pct, Window.total, q))
    pooled("value change → SMS request, p99 pooled", Window.total, 99)
    pooled("value change → SMS request, max pooled", Window.total, 100)
    for q in (50, 99):
        row(
            f"baseline: value change → outbox committed, p{q}",
            functools.partial(_window_pct, Window.committed, q),
        )
    row("SMS / committed latency, p50 (per run)", lambda w: _pct(w.total(), 50) / _pct(w.committed(), 50),
        "{:.1f}", "×")  # fmt: skip
    row("SMS / committed latency, p99 (per run)", lambda w: _pct(w.total(), 99) / _pct(w.committed(), 99),
        "{:.1f}", "×")  # fmt: skip
    row("baseline: bare SMS call round trip, p50", lambda w: _pct(w.bare_ms, 50), "{:.1f}")
    lines += ["", "Where the time goes: each stage's time from the one before it, p50 and p99 of the raises per "
              "window, median (min–max) over the windows.", "",
              "| stage | " + " | ".join(f"{n:,} tags p50 | {n:,} tags p99" for n in levels) + " |",
              "|---|" + "---:|---:|" * len(levels)]  # fmt: skip
    prev: str | None = None
    for stage in STAGES:
        cells = []
        for n in levels:
            for q in (50, 99):
                vals = per_run(by[n], functools.partial(_stage_pct, stage, prev, q))
                cells.append(spread(vals, "{:.0f}", " ms"))
        lines.append(f"| {_LABELS[stage]} | " + " | ".join(cells) + " |")
        prev = stage
    lines += ["", *_reading(by)]
    target = by.get(TARGET_LEVEL, [])
    p99s = sorted(per_run(target, lambda w: _pct(w.total(), 99)))
    reached = all(len(w.total()) == len(w.samples) for w in target)
    met = bool(p99s) and p99s[len(p99s) // 2] <= TARGET_P99_MS and reached
    lines += [
        "",
        f"Target (issue 12): p99 value change → SMS request ≤ {TARGET_P99_MS:.0f} ms at {TARGET_LEVEL:,} value "
        f"changes/s: **{'met' if met else 'not met'}** (median of the {len(p99s)} windows' p99"
        f"{'' if reached else '; some raises never reached the gateway'}). Load average (1/5/15 min) when the "
        f"run ended: {' / '.join(f'{x:.2f}' for x in os.getloadavg())} on {os.cpu_count()} CPUs; the benchmark "
        f"took {elapsed_s:.0f} s.",
    ]
    return "\n".join(lines)


def _reading(by: dict[int, list[Window]]) -> list[str]:
    """How to read it: the stage that dominates each level's tail, and what the lookups mean."""
    out = []
    for n, ws in by.items():
        pooled = {}
        prev: str | None = None
        for stage in STAGES:
            pooled[stage] = _pct(
                [x for w in ws for m in w.samples if (x := m.ms(stage, prev)) is not None], 99
            )
            prev = stage
        worst = max(pooled, key=lambda k: -1.0 if np.isnan(pooled[k]) else pooled[k])
        out.append(f"- {n:,} changes/s: the largest stage at p99 (all raises pooled) is *{_LABELS[worst]}*, "
                   f"{pooled[worst]:.0f} ms.")  # fmt: skip
    swept = {n: [_pct(w.total(), 99) for w in ws if w.reports] for n, ws in by.items()}
    clean = {n: [_pct(w.total(), 99) for w in ws if not w.reports] for n, ws in by.items()}
    if any(swept.values()):
        detail = "; ".join(
            f"{n:,}/s: p99 {', '.join(f'{x:.0f}' for x in swept[n]) or '—'} ms with a sweep, "
            f"{', '.join(f'{x:.0f}' for x in clean[n]) or '—'} ms without"
            for n in by
        )
        out.append(
            "- *Receipt sweep*: every `report_every_s` (60 s) the dispatcher fetches the delivery receipts of up "
            "to 100 sent messages (an event read, a QuerySendDetails, a stored report each). Windows with a sweep "
            f"in them against those without: {detail}."
        )
    failed = {n: [f"{_pct(w.total(), 99):.0f}" for w in ws if w.failures] for n, ws in by.items()}
    if any(failed.values()):
        which = "; ".join(f"{n:,}/s: p99 {', '.join(p)} ms" for n, p in failed.items() if p)
        out.append(
            "- *Collector errors*: a window in which a device's read failed (normally the runner's watchdog: no "
            "poll completed within 5 intervals on this shared machine) marks all the device's tags BAD, i.e. "
            "one BAD_QUALITY alarm per background tag at once; that window measures the probe behind an alarm "
            f"flood, not behind the steady load: {which}."
        )
    if any(w.lookups for ws in by.values() for w in ws):
        out.append(
            "- *Lookups*: the dispatcher asked the gateway whether it had accepted a probe's SMS, i.e. it "
            "reconciled a delivery found `sending` as if a crash had interrupted its send. No process crashed "
            "here. This gateway answers from what it accepted, so nothing is sent twice here; a provider whose "
            "records lag behind its sends (Aliyun's QuerySendDetails does) answers *not found* and the SMS goes "
            "out again."
        )
    return out


def main() -> str:
    return asyncio.run(_run())


if __name__ == "__main__":
    print(main())
