"""EngineSnapshot: rule and tag state keyed by stable keys, so a restart resumes delays.

The alarm manager persists it (``to_dict`` is JSON-safe: NaN becomes None). Restoring into a
different rule set (config edited) keeps the state of every rule and tag whose key still
exists; new rules start idle. Reported severity and limit are kept only for FROZEN (they are
dynamic there); every other rule takes them from the new rule set. The snapshot also records
each rule's on- and off-delay, so a deadline running at the snapshot is moved by the edit:
it expires at its start + the new delay (e.g. an approved bypass duration changed while a
bypass is active). ROC rules also keep their ring of kept samples (``rings``, optional
``roc`` in the dict form); without it (older files) a ring restarts from the reference and
newest sample in ``aux``/``aux2``. Version 1 snapshots (no delays, no ROC candidate, no held
values) still load: their deadlines are kept as they were.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from core.conditions import RuleKind
from core.quality import is_bad
from rules.ruleset import NEVER, UNSEEN, RuleSet

__all__ = ["RULE_FIELDS", "EngineSnapshot"]

# name -> dtype of the per-rule state both engines keep
RULE_FIELDS: dict[str, np.dtype] = {
    "active": np.dtype(np.bool_),
    "since": np.dtype(np.int64),
    "due_on": np.dtype(np.int64),
    "due_off": np.dtype(np.int64),
    "last": np.dtype(np.float64),
    "sev": np.dtype(np.uint8),
    "lim": np.dtype(np.float64),
    "aux_v": np.dtype(np.float64),
    "aux_ts": np.dtype(np.int64),
    "aux2_v": np.dtype(np.float64),  # ROC: the candidate anchor
    "aux2_ts": np.dtype(np.int64),
}
# the delays of the rule set a snapshot was taken from (not engine state)
DELAY_FIELDS: dict[str, np.dtype] = {"on_us": np.dtype(np.int64), "off_us": np.dtype(np.int64)}
SNAP_FIELDS = {**RULE_FIELDS, **DELAY_FIELDS}
TAG_FIELDS: dict[str, np.dtype] = {
    "value": np.dtype(np.float64),
    "quality": np.dtype(np.uint8),
    "ts": np.dtype(np.int64),
    "held": np.dtype(np.float64),  # last valid value
}
_V1_RULE_FIELDS = ("active", "since", "due_on", "due_off", "last", "sev", "lim", "aux_v", "aux_ts")
_V1_TAG_FIELDS = ("value", "quality", "ts")
_FLOAT_FIELDS = ("last", "lim", "aux_v", "aux2_v")

Ring = tuple[tuple[int, ...], tuple[float, ...]]  # ROC kept samples, oldest first: (ts, value)


def initial_rule_state(rules: RuleSet) -> dict[str, np.ndarray]:
    n = len(rules)
    return {
        "active": np.zeros(n, bool),
        "since": np.zeros(n, np.int64),
        "due_on": np.full(n, NEVER, np.int64),
        "due_off": np.full(n, NEVER, np.int64),
        "last": np.full(n, np.nan),
        "sev": rules.severity.copy(),
        "lim": rules.limit.copy(),
        "aux_v": np.full(n, np.nan),
        "aux_ts": np.zeros(n, np.int64),
        "aux2_v": np.full(n, np.nan),
        "aux2_ts": np.zeros(n, np.int64),
    }


def initial_tag_state(n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    return np.full(n, np.nan), np.zeros(n, np.uint8), np.full(n, UNSEEN, np.int64), np.full(n, np.nan)


@dataclass(frozen=True, eq=False)
class EngineSnapshot:
    rule_keys: tuple[str, ...]
    rules: Mapping[str, np.ndarray]  # SNAP_FIELDS (DELAY_FIELDS may be absent), aligned with rule_keys
    tag_keys: tuple[str, ...]
    tags: Mapping[str, np.ndarray]  # TAG_FIELDS, aligned with tag_keys
    rings: Mapping[str, Ring] = field(default_factory=dict)  # ROC rule key -> kept samples

    @classmethod
    def build(
        cls,
        rules: RuleSet,
        state: Mapping[str, Sequence[Any] | np.ndarray],
        tags: Sequence[Sequence[Any] | np.ndarray],
        rings: Mapping[int, Ring] | None = None,
    ) -> EngineSnapshot:
        """``rings``: rule index -> kept samples of each ROC rule with any."""
        rs = {n: np.array(state[n], dtype=dt) for n, dt in RULE_FIELDS.items()}
        rs["on_us"], rs["off_us"] = rules.on_us.copy(), rules.off_us.copy()
        ts = {n: np.array(a, dtype=dt) for (n, dt), a in zip(TAG_FIELDS.items(), tags, strict=True)}
        kept = {rules.keys[r]: (tuple(t), tuple(v)) for r, (t, v) in sorted((rings or {}).items()) if t}
        return cls(rules.keys, rs, rules.tag_keys, ts, kept)

    def rings_for(self, rules: RuleSet, per_window: int) -> dict[int, Ring]:
        """The kept samples of ``rules``' ROC rules, by rule index (only where the key has some),
        fitted to the (possibly edited) window: at most one per ``window / per_window``, and none
        before the newest one a window older than the newest kept (the next sample drops them)."""
        out = {}
        for r, k in enumerate(rules.keys):
            if k in self.rings and rules.kind[r] == RuleKind.ROC:
                win = max(1, int(rules.window_us[r]))
                grain = -(-win // per_window)
                ts, vs = self.rings[k]
                keep = [0]
                for i in range(1, len(ts)):
                    if ts[i] >= ts[keep[-1]] + grain:
                        keep.append(i)
                cut = ts[keep[-1]] - win
                while len(keep) > 1 and ts[keep[1]] <= cut:
                    del keep[0]
                out[r] = (tuple(ts[i] for i in keep), tuple(vs[i] for i in keep))
        return out

    def for_rules(self, rules: RuleSet) -> tuple[dict[str, np.ndarray], tuple[np.ndarray, ...]]:
        """State aligned with ``rules`` (and its tags); defaults where a key is new."""
        state = initial_rule_state(rules)
        where = {k: i for i, k in enumerate(self.rule_keys)}
        pairs = [(i, where[k]) for i, k in enumerate(rules.keys) if k in where]
        if pairs:
            dst, src = (np.array(p, np.int64) for p in zip(*pairs, strict=True))
            for name in RULE_FIELDS:
                if name in ("sev", "lim"):
                    frozen = rules.kind[dst] == RuleKind.FROZEN
                    state[name][dst[frozen]] = self.rules[name][src[frozen]]
                else:
                    state[name][dst] = self.rules[name][src]
            if "on_us" in self.rules:  # running deadlines: their start + the new delay
                for due, delay in (("due_on", "on_us"), ("due_off", "off_us")):
                    d = state[due]
                    run = d[dst] != NEVER
                    d[dst[run]] += getattr(rules, delay)[dst[run]] - self.rules[delay][src[run]]
        tags = initial_tag_state(rules.n_tags)
        twhere = {k: i for i, k in enumerate(self.tag_keys)}
        tpairs = [(i, twhere[k]) for i, k in enumerate(rules.tag_keys) if k in twhere]
        if tpairs:
            dst, src = (np.array(p, np.int64) for p in zip(*tpairs, strict=True))
            for arr, name in zip(tags, TAG_FIELDS, strict=True):
                arr[dst] = self.tags[name][src]
        return state, tags

    def equals(self, other: EngineSnapshot) -> bool:
        if self.rule_keys != other.rule_keys or self.tag_keys != other.tag_keys:
            return False
        same = [np.array_equal(self.rules[n], other.rules[n], equal_nan=True) for n in _FLOAT_FIELDS]
        same += [np.array_equal(self.rules[n], other.rules[n]) for n in RULE_FIELDS if n not in _FLOAT_FIELDS]
        same += [
            np.array_equal(self.tags[n], other.tags[n], equal_nan=n in ("value", "held")) for n in TAG_FIELDS
        ]
        return all(same) and self.rings == other.rings

    def differences(self, other: EngineSnapshot) -> list[str]:
        """Which fields differ (test diagnostics)."""
        out = []
        for n in RULE_FIELDS:
            a, b = self.rules[n], other.rules[n]
            bad = ~((a == b) | (np.isnan(a) & np.isnan(b)) if a.dtype.kind == "f" else (a == b))
            out += [f"{self.rule_keys[i]}.{n}: {a[i]!r} != {b[i]!r}" for i in np.flatnonzero(bad)]
        for n in TAG_FIELDS:
            a, b = self.tags[n], other.tags[n]
            bad = ~((a == b) | (np.isnan(a) & np.isnan(b)) if a.dtype.kind == "f" else (a == b))
            out += [f"{self.tag_keys[i]}.{n}: {a[i]!r} != {b[i]!r}" for i in np.flatnonzero(bad)]
        for k in sorted(set(self.rings) | set(other.rings)):
            if self.rings.get(k) != other.rings.get(k):
                out.append(f"{k}.ring: {self.rings.get(k)!r} != {other.rings.get(k)!r}")
        return out

    # --- JSON-safe form -----------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        def clean(vals: list[Any]) -> list[Any]:
            return [None if isinstance(v, float) and math.isnan(v) else v for v in vals]

        return {
            "version": 2,
            "rules": {
                k: clean(list(row))
                for k, row in zip(
                    self.rule_keys,
                    zip(*(self.rules[n].tolist() for n in SNAP_FIELDS), strict=False),
                    strict=True,
                )
            },
            "tags": {
                k: clean(list(row))
                for k, row in zip(
                    self.tag_keys,
                    zip(*(self.tags[n].tolist() for n in TAG_FIELDS), strict=False),
                    strict=True,
                )
            },
            "roc": {k: [list(t), list(v)] for k, (t, v) in self.rings.items()},
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> EngineSnapshot:
        version = data.get("version")
        if version not in (1, 2):
            raise ValueError(f"unknown rule engine snapshot version {version!r}")
        v1 = version == 1
        rule_spec = {n: SNAP_FIELDS[n] for n in _V1_RULE_FIELDS} if v1 else SNAP_FIELDS
        tag_spec = {n: TAG_FIELDS[n] for n in _V1_TAG_FIELDS} if v1 else TAG_FIELDS

        def columns(rows: Mapping[str, list[Any]], spec: dict[str, np.dtype]) -> dict[str, np.ndarray]:
            cols = list(zip(*rows.values(), strict=True)) if rows else [()] * len(spec)
            return {
                n: np.array([math.nan if v is None else v for v in col], dtype=dt)
                for (n, dt), col in zip(spec.items(), cols, strict=True)
            }

        rules, tags = columns(data["rules"], rule_spec), columns(data["tags"], tag_spec)
        if v1:  # the ROC candidate starts at the anchor; held = the value where it was valid
            rules["aux2_v"], rules["aux2_ts"] = rules["aux_v"].copy(), rules["aux_ts"].copy()
            valid = ~is_bad(tags["quality"]) & ~np.isnan(tags["value"])
            tags["held"] = np.where(valid, tags["value"], np.nan)
        rings = {
            k: (tuple(int(x) for x in t), tuple(float(x) for x in v))
            for k, (t, v) in data.get("roc", {}).items()
        }
        return cls(tuple(data["rules"]), rules, tuple(data["tags"]), tags, rings)
