"""The compiled rule set: RuleSet and its InterlockTable.

A ``RuleSet`` is a table of rules, one per (tag, level) or (interlock, output), held as
read-only numpy columns indexed by rule. Rule indexes are dense and only valid within one
compiled set; ``keys`` (``TAG_KEY:KIND`` or ``HAZARD_SOURCE.INTERLOCK:KIND``) are stable across
restarts and config edits and are what snapshots and the alarm manager store.

Thresholds are direction-normalised: a HIGH rule becomes active at ``x >= set_at`` and clears
at ``x < clear_at``; a LOW rule (``LOW_KINDS``) becomes active at ``x <= set_at`` and clears
at ``x > clear_at``. What ``x`` is for each kind is defined in rules/reference.py. The kinds,
severities and the edges the engine emits are shared types in core/conditions.py.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["NEVER", "UNSEEN", "InterlockTable", "RuleSet"]

NEVER = np.iinfo(np.int64).max  # a deadline that is not running
UNSEEN = np.iinfo(np.int64).min  # timestamp of a tag that has not reported yet


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
