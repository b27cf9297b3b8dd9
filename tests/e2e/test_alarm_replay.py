"""A run of the alarm service killed with SIGKILL at random moments and restarted leaves the
database exactly as a run that was never interrupted: no lost transition, no duplicated
journal or outbox row (issue 11, restart safety).

tests/e2e/alarm_driver.py feeds the rule engine readings that are a pure function of the step
number, in virtual time, so two runs see identical inputs and stamp identical times. Run A goes
through uninterrupted; run B is killed at random (seeded) steps, at a random moment within the
step (between the evaluation, the fsynced commit and the marker write), and restarted until it
completes; B's writer also loses the COMMIT reply of some transactions (injected after the
commit), so it stores those commits twice. Every alarm table of B must then equal A's row for
row, every column included.
"""

from __future__ import annotations

import json
import random
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg.rows import dict_row

from core.clock import US_PER_S, from_datetime
from storage.db import Backend
from tests.e2e.alarm_driver import at
from tests.support.databases import migrated_db

ROOT = Path(__file__).resolve().parents[2]
STEPS = 600
KILLS = 24
# Run B: the first and every 3rd transaction of each start's writer commits but its reply is
# lost, and the writer stores the same commits again after its backoff (0.25-0.5 s): at least
# in the last start, which no kill interrupts (a start between kills lasts ~0.2 s).
LOSE_ACK_EVERY = 3
PLANT = """\
name: 重放测试园区
reference: {reference}
enterprises:
  - code: RP
    name: 重放化工
    county: 孝义市
    devices:
      - {{protocol: OPCUA, id: dcs, endpoint: "opc.tcp://127.0.0.1:4840", namespace_uri: "urn:test:rp"}}
    hazard_sources:
      - code: RP-HS1
        name: 液氨储罐区
        kind: STORAGE
        grade: 2
        units:
          - code: U1
            name: 储罐
            equipment: [{{code: V1, name: 液氨储罐1}}]
        tags:
          # no delays: every condition is a function of the readings and the condition before
          # (OPC UA tags have no stale timer, the readings stay inside the range, quality good)
          - {{code: LT1, name: 液位, equipment: V1, kind: LEVEL, unit: m, range: [0, 10],
              source: {{device: dcs, node: s=V1.LT1}},
              limits: {{h: 8, hh: 9, deadband: 0, on_delay_s: 0, off_delay_s: 0}}}}
          - {{code: PT1, name: 压力, equipment: V1, kind: PRESSURE, unit: MPa, range: [0, 2.5],
              source: {{device: dcs, node: s=V1.PT1}},
              limits: {{h: 1.6, hh: 2.0, deadband: 0.1, on_delay_s: 0, off_delay_s: 0}}}}
          - {{code: AT1, name: 氨气, equipment: V1, kind: GAS, unit: ppm, range: [0, 100],
              source: {{device: dcs, node: s=V1.AT1}}, gas: {{gas: NH3, detector: TOXIC}}}}
"""
# Every column of every table the alarm writer fills. Times are virtual (the steps'), so they
# must match too; audit_log.id is left out: an identity drawn from a sequence, not the writer's.
TABLES = {
    "alarm_journal": "SELECT * FROM alarm_journal ORDER BY seq, n",
    "notification": "SELECT * FROM notification ORDER BY seq, n",
    "alarm_state": "SELECT * FROM alarm_state ORDER BY key",
    "rule_state": "SELECT * FROM rule_state ORDER BY key",
    "alarm_writer": "SELECT * FROM alarm_writer",
    "audit_log": "SELECT at, actor, action, target, detail, seq FROM audit_log ORDER BY seq, target, action",
    "alarm_command": "SELECT * FROM alarm_command ORDER BY id",
}


@dataclass
class Life:
    """One start of the driver in run B: the step it resumed at, the last step it finished."""

    resumed: int
    reached: int
    killed: bool
    seq_at_start: int  # the last commit made before it (stored or logged), from its first line


class Driver:
    def __init__(self, config: Path, dsn: str, work: Path, *options: str) -> None:
        self.config, self.dsn, self.work, self.options = config, dsn, work, options
        self.marker = work / "marker.json"
        self.out = work / "driver.out"

    def start(self, *once: str) -> subprocess.Popen[bytes]:
        cmd = [
            sys.executable, "-m", "tests.e2e.alarm_driver", "--config", str(self.config), "--dsn", self.dsn,
            "--log-dir", str(self.work / "alarm_log"), "--marker", str(self.marker), "--steps", str(STEPS),
            *self.options, *once,
        ]  # fmt: skip
        with self.out.open("ab") as out:
            return subprocess.Popen(cmd, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)

    def step(self) -> int:
        """The last step finished (-1: none)."""
        try:
            return int(json.loads(self.marker.read_text(encoding="utf-8")))
        except FileNotFoundError:
            return -1

    def output(self) -> str:
        return self.out.read_text(encoding="utf-8")

    def seq_at_start(self) -> int:
        """The last commit made before the latest start (its line "resume <step> seq <seq>")."""
        line = [x for x in self.output().splitlines() if x.startswith("resume ")][-1]
        return int(line.split()[3])

    def finish(self, proc: subprocess.Popen[bytes]) -> None:
        rc = proc.wait(timeout=60)
        assert rc == 0, f"driver exited {rc}:\n{self.output()}"


Row = dict[str, Any]


def dump(dsn: str) -> dict[str, list[Row]]:
    """Every table of TABLES, its rows as column -> value."""
    with psycopg.connect(dsn, row_factory=dict_row) as conn:
        return {table: conn.execute(sql).fetchall() for table, sql in TABLES.items()}


def wait_until(what: Any, timeout_s: float, why: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not what():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout_s} s waiting for {why}")
        time.sleep(0.001)


def run_killed(driver: Driver, commit_steps: list[int], rng: random.Random) -> list[Life]:
    """Let the driver kill itself once between a step's commit and its marker; then kill it
    KILLS times, each once it has finished a random step (``commit_steps``: one that commits,
    and one of its own), at a random moment within the next step or two; restart it each time,
    then let it complete."""
    die_at = commit_steps[4]
    proc = driver.start("--die-after-commit-at", str(die_at))
    assert proc.wait(timeout=60) == -signal.SIGKILL, driver.output()
    assert driver.step() == die_at - 1
    lives = [Life(0, die_at - 1, True, driver.seq_at_start())]
    for target in sorted(rng.sample([s for s in commit_steps if die_at < s < STEPS // 2], KILLS)):
        resumed = driver.step() + 1
        own = next(s for s in commit_steps if s >= max(target, resumed))
        proc = driver.start()
        wait_until(lambda s=own, p=proc: driver.step() >= s or p.poll() is not None, 60, f"step {own}")
        time.sleep(rng.uniform(0.0, 0.01))  # a step takes 2-7 ms (fsyncs)
        alive = proc.poll() is None
        proc.send_signal(signal.SIGKILL)
        assert proc.wait(timeout=10) == -signal.SIGKILL, driver.output()
        lives.append(Life(resumed, driver.step(), alive, driver.seq_at_start()))
    resumed = driver.step() + 1
    driver.finish(driver.start())
    lives.append(Life(resumed, STEPS - 1, False, driver.seq_at_start()))
    return lives


@pytest.fixture(params=[Backend.POSTGRES, Backend.TIMESCALEDB], ids=str)
def backend(request: pytest.FixtureRequest) -> Backend:
    return Backend(request.param)


def test_a_killed_run_stores_exactly_what_an_uninterrupted_run_stores(
    backend: Backend, tmp_path: Path
) -> None:
    config = tmp_path / "plant.yaml"
    config.write_text(PLANT.format(reference=ROOT / "config" / "reference"), encoding="utf-8")
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    with migrated_db(backend) as dsn_a, migrated_db(backend) as dsn_b:
        a = Driver(config, dsn_a, tmp_path / "a")
        a.finish(a.start())
        want = dump(dsn_a)
        journal = want["alarm_journal"]
        step_of = {seq: (from_datetime(arrival) - at(0)) // US_PER_S for seq, arrival in _arrivals(journal)}
        actions = {r["action"] for r in journal}
        assert len(step_of) >= STEPS // 8 and actions >= {"RAISED", "RERAISED", "RETURNED"}, actions
        assert sorted(step_of) == list(range(len(step_of))), "every commit of A journals"
        b = Driver(config, dsn_b, tmp_path / "b", "--lose-ack-every", str(LOSE_ACK_EVERY))
        lives = run_killed(b, sorted(step_of.values()), random.Random(20261130))
        got = dump(dsn_b)

    # not vacuous: every kill landed in a live driver, before the run completed, after it had
    # finished a step of its own that commits (in A)
    kills = lives[1:-1]  # the first start killed itself
    assert len(kills) >= 20 and all(life.killed for life in kills), lives
    for life in kills:
        assert life.resumed <= life.reached < STEPS - 1, life
        assert any(life.resumed <= s <= life.reached for s in step_of.values()), (life, lives)
    # and commits were stored twice (a lost COMMIT reply, retried): the tables must not show it
    stored_again = b.output().count("stored again ")
    assert stored_again >= 1, b.output()
    differs = {table: diff(rows, got[table]) for table, rows in want.items() if got[table] != rows}
    assert not differs, "\n".join(f"{table} differs: {d}" for table, d in differs.items())
    # each start resumed with every commit made before (none lost, none made twice): the last
    # commit of A before the step it resumed at, or (killed between a step's commit and its
    # marker) the step's own
    replayed = 0
    for life in lives:
        before = max((q for q, s in step_of.items() if s < life.resumed), default=-1)
        own = max((q for q, s in step_of.items() if s == life.resumed), default=before)
        assert life.seq_at_start in (before, own), (life, before, own, lives)
        replayed += life.seq_at_start == own != before
    assert replayed >= 1, lives  # the start after the driver killed itself at least
    print(
        f"{len(kills)} kills, {replayed} between a step's commit and its marker, {stored_again} stored twice"
    )


def _arrivals(journal: list[Row]) -> list[tuple[int, Any]]:
    """(seq, arrival) of each commit in the journal."""
    return sorted({(r["seq"], r["arrival"]) for r in journal})


def diff(want: list[Row], got: list[Row]) -> str:
    """The first row that differs (the columns that do) and the counts, for a readable failure."""
    counts = f"{len(want)} rows wanted, {len(got)} got"
    for i, (w, g) in enumerate(zip(want, got, strict=False)):
        if w != g:
            cols = {c: (w[c], g[c]) for c in w if w[c] != g[c]}
            return f"row {i} ({counts}): (wanted, got) {cols}; wanted row {w}"
    return f"{counts}; first extra: {(got[len(want) :] or want[len(got) :])[:1]}"
