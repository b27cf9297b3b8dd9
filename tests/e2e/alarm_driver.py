"""A deterministic alarm run for kill tests: the rule engine and the AlarmService fed readings
that are a pure function of the step number, in virtual time.

``python -m tests.e2e.alarm_driver --config X --dsn Y --log-dir Z --marker M --steps N``
resumes after the step in the marker file (or at 0) and, for each step k up to N - 1: the
readings of step k (stamped t0 + k s), ``engine.evaluate``, ``svc.edges`` (logged with fsync
before it returns), then k into the marker (atomic, fsynced). Before the first step the
engine is aligned with the rule state ``recover`` returns, as hazardwatch/runtime.py does, so a
step re-run after a kill gives what an uninterrupted run gave: no edge if its commit was
logged, the same edges if it was not. Operator commands are not part of it (engine edges only).

``--lose-ack-every K``: the first and every K-th transaction of the writer commit, then fail
as if the connection dropped before the COMMIT reply came back (the only way a commit is
stored twice: a kill never does it, ``recover`` stores only what ``alarm_writer.seq`` lacks);
the writer stores the same commits again, which must change nothing.
``--die-after-commit-at K``: SIGKILL itself after step K's edges were handed over (their commit
logged), before its marker: a kill at the one moment that re-runs a step whose commit is kept.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import signal
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from alarms import store
from alarms.journal import Commit
from alarms.model import Catalog
from alarms.service import AlarmService
from core.atomic import write_json_atomic
from core.batch import ReadingBatch
from core.clock import US_PER_S
from core.config import load_plant
from core.errors import DatabaseUnavailable
from core.settings import AlarmSettings
from rules.compile import compile_rules
from rules.engine import RuleEngine
from storage.db import BlockingConn

T0_US = 1_767_225_600 * US_PER_S  # 2026-01-01 00:00 UTC, step 0
GOOD = 0xC0
# tag key -> (value when quiet, values that cross its limits): quiet most of the time, so alarms
# stay raised across several steps (and across restarts) before they clear
PROFILES: dict[str, tuple[tuple[float, float], tuple[float, ...]]] = {
    "RP.V1.LT1": ((5.0, 7.9), (8.2, 8.6, 9.3, 9.7)),  # H 8, HH 9, no deadband
    "RP.V1.PT1": ((1.0, 1.45), (1.55, 1.7, 1.95, 2.1, 2.3)),  # H 1.6, HH 2.0, deadband 0.1
    "RP.V1.AT1": ((0.0, 20.0), (30.0, 45.0, 60.0, 75.0)),  # gas level 1 ≈ 28.7, level 2 ≈ 57.4 ppm
}
_HOLD_STEPS = 3  # a value is held this many steps


def at(step: int) -> int:
    return T0_US + step * US_PER_S


def value(key: str, step: int) -> float:
    """The reading of ``key`` at ``step``: seeded by the tag and the step, never the process."""
    quiet, high = PROFILES[key]
    rng = random.Random(f"{key}/{step // _HOLD_STEPS}")
    if rng.random() < 0.45:
        return rng.choice(high)
    return round(rng.uniform(*quiet), 3)


def readings(tag_keys: tuple[str, ...], step: int) -> ReadingBatch:
    n = len(tag_keys)
    return ReadingBatch(
        np.arange(n, dtype=np.int32),
        np.full(n, at(step), np.int64),
        np.array([value(k, step) for k in tag_keys], np.float64),
        np.full(n, GOOD, np.uint8),
    )


class StepClock:
    """The step's virtual time for everything the service stamps; real time for waiting."""

    def __init__(self) -> None:
        self.now = T0_US

    def now_us(self) -> int:
        return self.now

    def monotonic(self) -> float:
        return time.monotonic()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


def lose_acks(every: int) -> None:
    """Make the first and every ``every``-th ``store.write`` raise after its transaction
    committed (the first: a run stores something twice even if it writes only a few times)."""
    write, calls, lost = store.write, 0, -1

    def committed_then_lost(conn: BlockingConn, commits: Sequence[Commit]) -> None:
        nonlocal calls, lost
        if commits[0].seq <= lost:
            print(f"stored again {commits[0].seq}..{lost}", flush=True)
        write(conn, commits)
        calls += 1
        if calls == 1 or calls % every == 0:
            lost = commits[-1].seq
            print(f"ack lost {commits[0].seq}..{lost}", flush=True)
            raise DatabaseUnavailable("alarm_driver: connection lost before the COMMIT reply (injected)")

    store.write = committed_then_lost


def last_step(marker: Path) -> int:
    try:
        return int(json.loads(marker.read_text(encoding="utf-8")))
    except FileNotFoundError:
        return -1


async def run(
    config: Path,
    dsn: str,
    log_dir: Path,
    marker: Path,
    steps: int,
    *,
    pause_s: float = 0.0,
    lose_ack_every: int = 0,
    die_at: int = -1,
) -> int:
    plant = load_plant(config)
    engine = RuleEngine(compile_rules(plant))
    clock = StepClock()
    svc = AlarmService(Catalog(plant, engine.rules), AlarmSettings(), log_dir, dsn, clock)
    first = last_step(marker) + 1
    clock.now = at(first)  # what recover stamps (a release of suppressed alarms) is of this step
    rules = await svc.recover()
    engine.align_conditions({k: (r.active, r.since_us) for k, r in rules.items()})
    if lose_ack_every:  # after recover: its own stores would end the run instead of retrying
        lose_acks(lose_ack_every)
    svc.start()
    print(f"resume {first} seq {svc.manager.seq}", flush=True)  # the last commit made before
    for step in range(first, steps):
        clock.now = at(step)
        edges = engine.evaluate(readings(engine.rules.tag_keys, step), clock.now)
        svc.edges(edges)
        if step == die_at:  # the commit is logged, the marker not written: the step runs again
            os.kill(os.getpid(), signal.SIGKILL)
        write_json_atomic(marker, step)
        await asyncio.sleep(pause_s)  # the writer stores commits while the run goes on
    return 0 if await svc.close() else 1


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tests.e2e.alarm_driver", description=__doc__)
    p.add_argument("--config", type=Path, required=True)
    p.add_argument("--dsn", required=True)
    p.add_argument("--log-dir", type=Path, required=True)
    p.add_argument("--marker", type=Path, required=True)
    p.add_argument("--steps", type=int, required=True)
    p.add_argument("--pause-s", type=float, default=0.0)
    p.add_argument("--lose-ack-every", type=int, default=0)
    p.add_argument("--die-after-commit-at", type=int, default=-1)
    a = p.parse_args(argv)
    return asyncio.run(
        run(
            a.config, a.dsn, a.log_dir, a.marker, a.steps,
            pause_s=a.pause_s, lose_ack_every=a.lose_ack_every, die_at=a.die_after_commit_at,
        )
    )  # fmt: skip


if __name__ == "__main__":
    sys.exit(main())
