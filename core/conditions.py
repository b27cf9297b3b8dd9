"""Condition kinds, severities and edges: what the rule engine emits and alarms consume.

``RuleKind`` names each kind of condition a rule watches (limits, gas levels, data quality,
interlock states); ``LABELS`` are the operator-facing names (Chinese, as on the plant's
alarm lists). ``Severity`` is ordered: a larger value outranks a smaller one; ``rank_of``
breaks ties within one severity.

``ConditionEdges`` is the struct-of-arrays batch of condition transitions. Its ``rule`` is a
rule index, valid only within the compiled rule set that produced it (rules/ruleset.py);
``RuleSet.keys`` map indexes to keys that are stable across restarts.

Shared kernel (DESIGN.md: core/): imports nothing else of ours, so alarms and the API use
these types without depending on the rule engine.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from enum import IntEnum

import numpy as np

__all__ = [
    "INTERLOCK_KINDS",
    "LABELS",
    "LIMIT_KINDS",
    "LOW_KINDS",
    "PAIR_KINDS",
    "TAG_KINDS",
    "ActiveCondition",
    "ConditionEdges",
    "RuleKind",
    "Severity",
    "rank_of",
]


class RuleKind(IntEnum):
    LL = 0
    L = 1
    H = 2
    HH = 3
    GAS_L1 = 4
    GAS_L2 = 5
    O2_LOW = 6
    O2_HIGH = 7
    ROC = 8
    DEVIATION = 9
    BAD_QUALITY = 10
    STALE = 11
    OUT_OF_RANGE = 12
    FROZEN = 13
    STATE = 14
    MISMATCH = 15
    TRIP_DEMAND = 16
    NO_ACTION = 17
    INPUT_BYPASSED = 18
    BYPASS_OVERDUE = 19
    OUT_OF_SERVICE = 20
    CLOCK_AHEAD = 21


LOW_KINDS = frozenset({RuleKind.LL, RuleKind.L, RuleKind.O2_LOW, RuleKind.STATE, RuleKind.FROZEN})
LIMIT_KINDS = frozenset(
    {
        RuleKind.LL,
        RuleKind.L,
        RuleKind.H,
        RuleKind.HH,
        RuleKind.GAS_L1,
        RuleKind.GAS_L2,
        RuleKind.O2_LOW,
        RuleKind.O2_HIGH,
    }
)
INTERLOCK_KINDS = (
    RuleKind.TRIP_DEMAND,
    RuleKind.NO_ACTION,
    RuleKind.INPUT_BYPASSED,
    RuleKind.BYPASS_OVERDUE,
    RuleKind.OUT_OF_SERVICE,
)

PAIR_KINDS = frozenset({RuleKind.DEVIATION, RuleKind.MISMATCH})
# rules evaluated on every sample of their one tag
TAG_KINDS = frozenset(
    LIMIT_KINDS
    | {
        RuleKind.ROC,
        RuleKind.BAD_QUALITY,
        RuleKind.STALE,
        RuleKind.OUT_OF_RANGE,
        RuleKind.FROZEN,
        RuleKind.STATE,
        RuleKind.CLOCK_AHEAD,
    }
)

LABELS: dict[RuleKind, str] = {
    RuleKind.LL: "低低报",
    RuleKind.L: "低报",
    RuleKind.H: "高报",
    RuleKind.HH: "高高报",
    RuleKind.GAS_L1: "一级报警",
    RuleKind.GAS_L2: "二级报警",
    RuleKind.O2_LOW: "缺氧报警",
    RuleKind.O2_HIGH: "富氧报警",
    RuleKind.ROC: "变化率报警",
    RuleKind.DEVIATION: "冗余偏差报警",
    RuleKind.BAD_QUALITY: "数据质量坏",
    RuleKind.STALE: "数据中断",
    RuleKind.OUT_OF_RANGE: "超量程",
    RuleKind.FROZEN: "数据冻结",
    RuleKind.STATE: "状态报警",
    RuleKind.MISMATCH: "指令与反馈不一致",
    RuleKind.TRIP_DEMAND: "联锁触发",
    RuleKind.NO_ACTION: "联锁触发未动作",
    RuleKind.INPUT_BYPASSED: "联锁输入旁路",
    RuleKind.BYPASS_OVERDUE: "联锁旁路超时",
    RuleKind.OUT_OF_SERVICE: "联锁停用",
    RuleKind.CLOCK_AHEAD: "时钟超前",
}


class Severity(IntEnum):
    """Ordered: a larger value outranks a smaller one (DOMAIN.md gas and ESD ordering)."""

    LOW = 1
    MEDIUM = 2
    HIGH = 3
    CRITICAL = 4


def rank_of(kind: RuleKind) -> int:
    """Secondary rank within one severity (larger first): DOMAIN.md puts level 2 above level 1
    and, at one level, toxic above combustible. With the default severities (combustible L1
    MEDIUM, toxic L1 HIGH, combustible L2 HIGH, toxic L2 CRITICAL) the only tie is toxic L1 vs
    combustible L2, which the level breaks: combustible L1 < toxic L1 < combustible L2 < toxic L2."""
    return {RuleKind.GAS_L2: 2, RuleKind.GAS_L1: 1}.get(kind, 0)


_EDGE_DTYPES = {
    "rule": np.dtype(np.int64),
    "active": np.dtype(np.bool_),
    "ts": np.dtype(np.int64),
    "value": np.dtype(np.float64),
    "limit": np.dtype(np.float64),
    "severity": np.dtype(np.uint8),
}


@dataclass(frozen=True, eq=False)
class ConditionEdges:
    """Condition transitions, struct of arrays: ``rule`` became ``active`` (or cleared) at ``ts``.

    ``value`` is what the rule compared with ``limit`` (see rules/reference.py per kind).
    Ordered by rule; the edges of one rule in the order they happened.
    """

    rule: np.ndarray
    active: np.ndarray
    ts: np.ndarray
    value: np.ndarray
    limit: np.ndarray
    severity: np.ndarray

    def __len__(self) -> int:
        return len(self.rule)

    @classmethod
    def empty(cls) -> ConditionEdges:
        return cls(*(np.empty(0, dt) for dt in _EDGE_DTYPES.values()))

    @classmethod
    def of(
        cls,
        rule: object,
        active: object,
        ts: object,
        value: object,
        limit: object,
        severity: object,
    ) -> ConditionEdges:
        cols = (rule, active, ts, value, limit, severity)
        arrays = [np.asarray(c, dtype=dt) for c, dt in zip(cols, _EDGE_DTYPES.values(), strict=True)]
        n = max((a.size for a in arrays), default=0)
        return cls(*(np.broadcast_to(a, (n,)).copy() if a.ndim == 0 else a for a in arrays))

    @classmethod
    def concat(cls, parts: Iterable[ConditionEdges]) -> ConditionEdges:
        parts = [p for p in parts if len(p)]
        if not parts:
            return cls.empty()
        if len(parts) == 1:
            return parts[0]
        return cls(*(np.concatenate([getattr(p, n) for p in parts]) for n in _EDGE_DTYPES))

    def select(self, mask: np.ndarray) -> ConditionEdges:
        """The edges where ``mask`` (bool, one per edge) is true, in their order."""
        return ConditionEdges(*(getattr(self, n)[mask] for n in _EDGE_DTYPES))

    def by_rule(self) -> ConditionEdges:
        """The same edges, stably ordered by rule."""
        if len(self) < 2:
            return self
        order = np.argsort(self.rule, kind="stable")
        return ConditionEdges(*(getattr(self, n)[order] for n in _EDGE_DTYPES))

    def rows(self) -> list[tuple[int, bool, int, float, float, int]]:
        """Python rows (tests, logs; never on the hot path)."""
        return list(
            zip(
                self.rule.tolist(),
                self.active.tolist(),
                self.ts.tolist(),
                self.value.tolist(),
                self.limit.tolist(),
                self.severity.tolist(),
                strict=True,
            )
        )

    def equals(self, other: ConditionEdges) -> bool:
        return all(
            np.array_equal(getattr(self, n), getattr(other, n), equal_nan=n in ("value", "limit"))
            for n in _EDGE_DTYPES
        )


@dataclass(frozen=True)
class ActiveCondition:
    """One active condition, for the live view and logs."""

    rule: int
    key: str
    subject: str  # tag key, or interlock key
    kind: RuleKind
    severity: Severity
    value: float
    limit: float
    since_us: int
    description: str
    latched: bool
    rank: int = 0  # rank_of(kind): orders conditions of equal severity
