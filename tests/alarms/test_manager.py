"""alarms.manager: edges, commands and timers become commits that say what changed, who must
be told, and what an operator's command did; commands are checked in the one writer."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from alarms.journal import Commit
from alarms.manager import AlarmManager
from alarms.model import Catalog
from alarms.store import PendingCommand
from core.conditions import ConditionEdges
from core.config import load_plant
from core.settings import AlarmSettings
from rules.compile import compile_rules

PLANT = Path(__file__).resolve().parents[1] / "core" / "data" / "two_enterprises.yaml"
HH = "AA.V1.LT1:HH"  # high, not latching
GAS = "AA.V1.AT1:GAS_L2"  # critical, latching
BB_GAS = "BB.G1.AT1:GAS_L1"
MIN = 60_000_000


@pytest.fixture(scope="module")
def catalog() -> Catalog:
    plant = load_plant(PLANT)
    return Catalog(plant, compile_rules(plant))


@pytest.fixture
def manager(catalog: Catalog) -> AlarmManager:
    return AlarmManager(catalog, AlarmSettings())


def edges(catalog: Catalog, *rows: tuple[str, bool, int, float]) -> ConditionEdges:
    """(key, active, ts, value) per edge; the limit is 8.6 for every one (unused by the checks)."""
    idx = [catalog.by_key(k).rule for k, *_ in rows]  # type: ignore[union-attr]
    return ConditionEdges.of(
        np.array(idx), np.array([r[1] for r in rows]), np.array([r[2] for r in rows]),
        np.array([r[3] for r in rows]), np.full(len(rows), 8.6), np.full(len(rows), 3, np.uint8),
    )  # fmt: skip


def cmd(
    key: str, command: str, role: str = "enterprise_operator", enterprise: str | None = "AA", **args: object
) -> PendingCommand:
    return PendingCommand(f"id-{command}-{key}", key, command, "张三", role, enterprise, dict(args), 0)


def actions(c: Commit) -> list[tuple[str, str, str, str]]:
    return [(j.alarm_key, j.action, j.old_status, j.new_status) for j in c.journal]


def test_an_edge_raises_an_alarm_with_its_outbox_row_and_rule_state(
    manager: AlarmManager, catalog: Catalog
) -> None:
    c = manager.edges(edges(catalog, (HH, True, 1_000, 8.9)), now_us=2_000)
    assert c is not None and c.seq == 0 and c.arrival_us == 2_000
    assert actions(c) == [(HH, "RAISED", "normal", "unacknowledged")]
    assert c.journal[0].at_us == 1_000 and c.journal[0].value == 8.9 and c.journal[0].actor == "engine"
    (row,) = c.alarms
    assert (row.status, row.priority, row.enterprise, row.raised_at_us, row.condition) == (
        "unacknowledged", "high", "AA", 1_000, True,
    )  # fmt: skip
    (out,) = c.outbox
    assert (out.n, out.event, out.priority) == (0, "raised", "high") and "8.9" in out.message_zh
    assert [(r.key, r.active, r.since_us) for r in c.rules] == [(HH, True, 1_000)]
    assert manager.alarms[HH] == row and manager.seq == 0
    assert manager.edges(edges(catalog), now_us=3_000) is None  # no edges, no commit


def test_a_gas_alarm_latches_until_reset_and_reset_is_resolved(
    manager: AlarmManager, catalog: Catalog
) -> None:
    manager.edges(edges(catalog, (GAS, True, 1, 200.0)), 1)
    off = manager.edges(edges(catalog, (GAS, False, 2, 10.0)), 2)
    assert (
        off is not None
        and actions(off) == [(GAS, "RETURNED", "unacknowledged", "latched")]
        and not off.outbox
    )
    early = manager.command(cmd(GAS, "reset"), 3)
    assert [(o.status, o.result) for o in early.commands] == [("applied", "normal")]
    assert actions(early) == [(GAS, "RESET", "latched", "normal")]
    assert [o.event for o in early.outbox] == ["resolved"] and early.journal[0].actor == "张三"
    assert early.audit[0][:3] == ("张三", "reset", GAS)


def test_commands_are_checked_and_a_rejection_is_stored_with_its_reason(
    manager: AlarmManager, catalog: Catalog
) -> None:
    manager.edges(edges(catalog, (HH, True, 1, 9.0), (GAS, True, 1, 200.0)), 1)
    cases = [
        (cmd("AA.V1.NOPE:HH", "ack"), "unknown alarm 'AA.V1.NOPE:HH'"),
        (
            cmd(HH, "ack", enterprise="BB"),
            f"unknown alarm {HH!r}",
        ),  # another enterprise's: not told it exists
        (cmd(HH, "ack", role="bureau_duty", enterprise=None), "role bureau_duty may not ack alarms"),
        (cmd(HH, "remove", reason="维修"), "role enterprise_operator may not remove alarms"),
        (cmd(HH, "teleport"), "unknown command 'teleport'"),
        (cmd(HH, "reset"), "cannot reset: the alarm is unacknowledged, not latched"),
        (cmd(GAS, "reset"), "condition is still active"),
        (cmd(HH, "shelve", minutes=61, reason="噪声"), "high alarms may be shelved for at most 60 min"),
        (cmd(HH, "shelve", minutes=float("nan"), reason="x"), "shelve needs minutes > 0, got nan"),
        (cmd(GAS, "shelve", minutes=5, reason="x"), "critical alarms cannot be shelved"),
        (cmd(HH, "shelve", minutes=True, reason="x"), "shelve needs minutes > 0, got True"),
        (cmd(HH, "ack", enterprise=None), "role enterprise_operator needs the actor's enterprise"),
        (
            PendingCommand("id-list", HH, "ack", "张三", "engineer", None, [1], 0),
            "command arguments must be a mapping",
        ),  # type: ignore[arg-type]
    ]
    for command, reason in cases:
        c = manager.command(command, 5)
        (outcome,) = c.commands
        assert outcome.status == "rejected" and outcome.result is None
        assert reason in (outcome.reason or ""), (command, outcome.reason)
        assert c.journal == () and c.alarms == () and c.audit[0][1].endswith("rejected")
    assert manager.alarms[HH].status == "unacknowledged"


def test_ack_comment_and_shelving_that_runs_out(manager: AlarmManager, catalog: Catalog) -> None:
    manager.edges(edges(catalog, (HH, True, 1, 9.0)), 1)
    ack = manager.command(cmd(HH, "ack", comment="已通知巡检"), 10)
    assert actions(ack) == [(HH, "ACKED", "unacknowledged", "acknowledged")]
    assert (manager.alarms[HH].acked_by, manager.alarms[HH].acked_at_us) == ("张三", 10)
    note = manager.command(cmd(HH, "comment", text="现场确认"), 11)
    assert actions(note) == [(HH, "COMMENT", "acknowledged", "acknowledged")] and note.journal[0].detail == {
        "text": "现场确认"
    }
    shelve = manager.command(cmd(HH, "shelve", minutes=30, reason="仪表检修"), 20)
    assert actions(shelve) == [(HH, "SHELVED", "acknowledged", "shelved")]
    assert manager.alarms[HH].shelved_until_us == 20 + 30 * MIN
    assert manager.tick(20 + 30 * MIN - 1) is None
    expired = manager.tick(20 + 30 * MIN)
    assert expired is not None
    assert actions(expired) == [
        (HH, "SHELVE_EXPIRED", "shelved", "unacknowledged"),
        (HH, "RERAISED", "shelved", "unacknowledged"),
    ]
    assert [o.event for o in expired.outbox] == ["reraised"]  # still active: told again


def test_seq_counts_every_commit_and_continues_from_the_stored_one(catalog: Catalog) -> None:
    m = AlarmManager(catalog, AlarmSettings(), seq=41)
    a = m.edges(edges(catalog, (BB_GAS, True, 1, 30.0)), 1)
    b = m.command(cmd(BB_GAS, "ack", enterprise="BB"), 2)
    assert a is not None and (a.seq, b.seq) == (42, 43)
    again = AlarmManager(catalog, AlarmSettings(), seq=43, alarms=m.alarms)
    c = again.edges(edges(catalog, (BB_GAS, False, 3, 1.0)), 3)
    assert c is not None and c.seq == 44 and actions(c) == [(BB_GAS, "RETURNED", "acknowledged", "latched")]


def test_a_rule_with_several_edges_in_one_batch_is_stored_as_its_last(
    manager: AlarmManager, catalog: Catalog
) -> None:
    c = manager.edges(edges(catalog, (HH, True, 1, 9.0), (HH, False, 2, 5.0)), 3)
    assert c is not None and actions(c) == [
        (HH, "RAISED", "normal", "unacknowledged"),
        (HH, "RETURNED", "unacknowledged", "returned_unacknowledged"),
    ]
    assert [(r.key, r.active, r.since_us) for r in c.rules] == [(HH, False, 2)]
    assert [(a.key, a.condition) for a in c.alarms] == [(HH, False)]


def test_the_timer_looks_only_at_shelved_alarms_and_they_survive_a_restart(
    manager: AlarmManager, catalog: Catalog
) -> None:
    manager.edges(edges(catalog, (HH, True, 1, 9.0), (BB_GAS, True, 1, 30.0)), 1)
    manager.command(cmd(HH, "shelve", minutes=10, reason="检修"), 2)
    assert manager.shelved == {HH}
    again = AlarmManager(catalog, AlarmSettings(), seq=manager.seq, alarms=manager.alarms)
    assert again.shelved == {HH}  # rebuilt from the stored rows
    expired = again.tick(2 + 10 * MIN)
    assert expired is not None and {j.alarm_key for j in expired.journal} == {HH}
    assert again.shelved == set() and again.alarms[HH].status == "unacknowledged"
    manager.command(cmd(HH, "unshelve"), 3)
    assert manager.shelved == set()


def test_a_note_on_an_alarm_never_raised_gives_it_a_normal_row(manager: AlarmManager) -> None:
    """A comment or feedback on an alarm that never left normal stores its first row, so whose
    alarm it is (tenancy: alarms.commands.alarm_history) and its labels are known."""
    c = manager.command(cmd(HH, "comment", text="巡检发现液位计卡涩"), 5)
    assert actions(c) == [(HH, "COMMENT", "normal", "normal")]
    [row] = c.alarms
    assert (row.key, row.enterprise, row.status, row.condition, row.acked, row.since_us) == (
        HH, "AA", "normal", False, True, 5,
    )  # fmt: skip
    again = manager.command(cmd(HH, "comment", text="已更换"), 6)
    assert again.alarms == ()  # it has its row now; a note changes nothing in it


def test_shelvings_that_run_out_together_are_handled_in_key_order(
    manager: AlarmManager, catalog: Catalog
) -> None:
    """The same order in every process (a set's order depends on PYTHONHASHSEED)."""
    keys = sorted(k for k in catalog.rules.keys if k.endswith((":H", ":HH", ":L", ":LL")))[:6]
    for k in reversed(keys):
        manager.edges(edges(catalog, (k, True, 1, 9.0)), 1)
        manager.command(cmd(k, "shelve", minutes=10, reason="检修"), 2)
    expired = manager.tick(2 + 10 * MIN)
    assert expired is not None
    assert list(dict.fromkeys(j.alarm_key for j in expired.journal)) == keys
