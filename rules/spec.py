"""The compiled rule set and what the engine emits: RuleKind, Severity, RuleSet, ConditionEdges.

A ``RuleSet`` is a table of rules, one per (tag, level) or (interlock, output), held as
read-only numpy columns indexed by rule. Rule indexes are dense and only valid within one
compiled set; ``keys`` (``TAG_KEY:KIND`` or ``HAZARD_SOURCE.INTERLOCK:KIND``) are stable across
restarts and config edits and are what snapshots and the alarm manager store.

Thresholds are direction-normalised: a HIGH rule becomes active at ``x >= set_at`` and clears
at ``x < clear_at``; a LOW rule (``LOW_KINDS``) becomes active at ``x <= set_at`` and clears
at ``x > clear_at``. What ``x`` is for each kind is defined in rules/reference.py.
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
    "NEVER",
    "PAIR_KINDS",
    "TAG_KINDS",
    "UNSEEN",
    "ActiveCondition",
    "ConditionEdges",
    "InterlockTable",
    "RuleKind",
    "RuleSet",
    "Severity",
    "rank_of",
]

NEVER = np.iinfo(np.int64).max  # a deadline that is not running
UNSEEN = np.iinfo(np.int64).min  # timestamp of a tag that has not reported yet


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


def _ro(a: np.ndarray) -> np.ndarray:
    a = np.ascontiguousarray(a)
    a.flags.writeable = False
    return a


class _Table:
    """Frozen tables keyed by ``keys``: every array field is made read-only once."""

    keys: tuple[str, ...]

    def __post_init__(self) -> None:
        for name, v in vars(self).items():
            if isinstance(v, np.ndarray):
                object.__setattr__(self, name, _ro(v))

    def __len__(self) -> int:
        return len(self.keys)


@dataclass(frozen=True, eq=False)
class InterlockTable(_Table):
    """Safety instrumented functions: one row per interlock, inputs in CSR order by ``ptr``."""

    keys: tuple[str, ...]  # HAZARD_SOURCE.CODE
    names: tuple[str, ...]
    m: np.ndarray  # int64 votes needed as configured
    in_service: np.ndarray  # bool
    fe_tag: np.ndarray  # int64 final element position feedback tag
    fe_safe: np.ndarray  # float64
    fe_tol: np.ndarray  # float64
    rule: np.ndarray  # int64 (n, 5): rule index of each INTERLOCK_KINDS output
    ptr: np.ndarray  # int64 (n + 1,): inputs of interlock i are ptr[i]:ptr[i+1]
    in_tag: np.ndarray  # int64 per input
    in_lo: np.ndarray  # float64: input trips when in_lo <= x <= in_hi (xor in_invert)
    in_hi: np.ndarray
    in_invert: np.ndarray  # bool ("!=")
    in_bypass: np.ndarray  # int64 bypass switch tag, -1 when none


@dataclass(frozen=True, eq=False)
class RuleSet(_Table):
    """Compiled rules (see the module docstring). Built by rules.compile, never on the hot path."""

    keys: tuple[str, ...]
    descriptions: tuple[str, ...]
    subjects: tuple[str, ...]  # tag key, or interlock key
    kind: np.ndarray  # uint8 RuleKind
    tag: np.ndarray  # int64 registry index of the tag, -1 for interlock rules
    tag2: np.ndarray  # int64 partner (DEVIATION) or command (MISMATCH) tag, else -1
    set_at: np.ndarray  # float64
    clear_at: np.ndarray  # float64
    limit: np.ndarray  # float64 reported with edges (NaN when none)
    on_us: np.ndarray  # int64 on-delay (STALE: stale time, FROZEN: frozen time)
    off_us: np.ndarray  # int64 off-delay
    window_us: np.ndarray  # int64 ROC window
    band: np.ndarray  # float64 FROZEN: band around the tag's limits
    # float64 (n, 4), kind-specific: FROZEN the tag's alarm limits (NaN padded);
    # OUT_OF_RANGE [range low, range high]; STATE [alarm value]
    params: np.ndarray
    severity: np.ndarray  # uint8 Severity
    latched: np.ndarray  # bool: the alarm manager latches it until reset
    tag_keys: tuple[str, ...]  # registry keys, indexed by tag
    interlocks: InterlockTable
    # samples stamped more than this ahead of their arrival are rejected (CLOCK_AHEAD)
    ahead_us: int = 300_000_000

    @property
    def n_tags(self) -> int:
        return len(self.tag_keys)

    def index_of(self, key: str) -> int:
        return self.keys.index(key)

    def rules_of_tag(self, tag: int) -> np.ndarray:
        return np.flatnonzero(self.tag == tag)


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
