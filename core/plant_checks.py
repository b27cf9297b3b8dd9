"""Cross-reference rules of a plant config: what no single key's validation can see.

Unique codes and keys, known equipment and devices, units that fit the kind, limits inside
the instrument range and in order, deadbands that let an alarm clear, GB/T 50493 gas levels,
rate, deviation and state alarms, interlock voting and references, a unit's suppression by
design (its tag in the unit's hazard source, one comparison); devices and tag sources by
``core.source_checks``. ``check_plant`` runs them all and returns every finding at its
file:line.

The rules read the document as validation reads it: the validated model's own dump when
the document validates, else ``core.plant.normalise``'s form of it, so that a structural
error in one tag never hides a cross-reference error in another. Either way every value is
spelled and typed as the model holds it and every default is the model's.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Hashable
from typing import Any

from core.alarm_defaults import LOW_LIMITS
from core.errors import ConfigIssue
from core.gas_levels import GasReference, resolve_gas
from core.plant import RateOfChange, Tag, given_or_default, resolve_key
from core.source_checks import SourceChecks
from core.units import KIND_UNITS, finite, finite_pair
from core.yaml_loader import PathKey, SourceMap

__all__ = ["PlantChecker", "check_plant"]

_NO_RANGE_KINDS = ("DISCRETE", "COUNTER")  # a switch or a counter has no instrument range
_SUPPRESS_OPS = ("below", "above", "equals")  # core.plant.SuppressWhen: exactly one


class PlantChecker(SourceChecks):
    """The cross-reference rules over one plant document; ``issues`` collects every finding."""

    def __init__(self, data: dict[str, Any], source: SourceMap, ref: GasReference) -> None:
        super().__init__(source)
        self.data = data
        self.ref = ref
        self.keys: dict[str, PathKey] = {}
        self.tag_kind: dict[str, str] = {}
        self.tag_unit: dict[str, str] = {}
        self.tag_range: dict[str, tuple[float, float]] = {}
        # rule references (deviation partner, state command) checked once every key is known
        self.rule_refs: list[tuple[str, str, Any, PathKey]] = []

    def run(self) -> None:
        ent_codes: dict[str, PathKey] = {}
        hs_codes: dict[str, PathKey] = {}
        device_ids: dict[str, PathKey] = {}
        equipment_codes: dict[tuple[str, str], PathKey] = {}
        interlocks: list[tuple[str, PathKey, dict[str, Any]]] = []
        suppressing: list[tuple[str, dict[str, list[str]], dict[str, Any], PathKey]] = []  # checked last
        for i, ent in _items(self.data.get("enterprises")):
            at: PathKey = ("enterprises", i)
            code = ent.get("code")
            self._unique(ent_codes, code, (*at, "code"), "enterprise code")
            devices: dict[str, dict[str, Any]] = {}
            for d, dev in _items(ent.get("devices")):
                self._unique(device_ids, dev.get("id"), (*at, "devices", d, "id"), "device id")
                self.device(dev, (*at, "devices", d))
                if isinstance(dev.get("id"), str):
                    devices[dev["id"]] = dev
            for h, hs in _items(ent.get("hazard_sources")):
                hat: PathKey = (*at, "hazard_sources", h)
                self._unique(hs_codes, hs.get("code"), (*hat, "code"), "hazard source code")
                equipment = set()
                unit_codes: dict[str, PathKey] = {}  # suppression by design targets HS.UNIT
                for u, unit in _items(hs.get("units")):
                    self._unique(unit_codes, unit.get("code"), (*hat, "units", u, "code"), "unit code")
                    for k, e in _items(unit.get("equipment")):
                        if isinstance(e.get("code"), Hashable):  # a list or mapping: validation reports it
                            equipment.add(e.get("code"))
                        where = (*hat, "units", u, "equipment", k, "code")
                        if isinstance(e.get("code"), str):
                            first = equipment_codes.setdefault((str(code), e["code"]), where)
                            if first != where:
                                self.err(
                                    where,
                                    f"duplicate equipment code {e['code']!r} (first at {self._where(first)})",
                                )
                for t, tag in _items(hs.get("tags")):
                    self._tag(str(code), tag, (*hat, "tags", t), equipment, devices)
                units = [
                    (u, unit)
                    for u, unit in _items(hs.get("units"))
                    if isinstance(unit.get("suppress_when"), dict)
                ]
                if units:  # one tag map per hazard source, not per unit (1,000 units of 100 tags)
                    own = _tag_keys_by_code(str(code), hs)
                    suppressing += [
                        (str(code), own, unit, (*hat, "units", u, "suppress_when")) for u, unit in units
                    ]
                interlocks += [
                    (str(code), (*hat, "interlocks", k), il) for k, il in _items(hs.get("interlocks"))
                ]
        self.shared_buses_and_registers()
        for ent_code, at, il in interlocks:
            self._interlock(ent_code, il, at)
        for ent_code, key, ref, at in self.rule_refs:
            self._rule_ref(ent_code, key, ref, at)
        for ent_code, own, unit, at in suppressing:
            self._suppress_when(ent_code, own, unit, at)

    def _unique(self, seen: dict[str, PathKey], value: Any, at: PathKey, what: str) -> None:
        if not isinstance(value, str):
            return
        if value in seen:
            self.err(at, f"duplicate {what} {value!r} (first at {self._where(seen[value])})")
        else:
            seen[value] = at

    # --- tags ----------------------------------------------------------------------

    def _tag(
        self,
        ent: str,
        tag: dict[str, Any],
        at: PathKey,
        equipment: set[Any],
        devices: dict[str, dict[str, Any]],
    ) -> None:
        eq, code, kind = tag.get("equipment"), tag.get("code"), tag.get("kind")
        if isinstance(eq, str) and eq not in equipment:
            known = ", ".join(sorted(str(e) for e in equipment)) or "none"
            self.err(
                (*at, "equipment"), f"unknown equipment {eq!r} (this hazard source's units have: {known})"
            )
        key = f"{ent}.{eq}.{code}"
        keyed = isinstance(eq, str) and isinstance(code, str)
        unit = given_or_default(tag, Tag, "unit")
        if keyed:
            self._unique(self.keys, key, (*at, "code"), "tag key")
            if isinstance(kind, str):
                self.tag_kind[key] = kind
            if isinstance(unit, str):
                self.tag_unit[key] = unit
        kind_units = KIND_UNITS.get(kind) if isinstance(kind, str) else None
        if kind_units is not None and isinstance(unit, str) and unit not in kind_units:
            allowed = ", ".join(repr(u) for u in sorted(kind_units))
            self.err((*at, "unit"), f"unit mismatch: {unit!r} is not a {kind} unit (use one of {allowed})")
        given_range = tag.get("range")
        rng = finite_pair(given_range)
        if rng is not None and rng[0] >= rng[1]:
            self.err((*at, "range"), f"range low {rng[0]:g} must be below high {rng[1]:g}")
            rng = None
        if keyed and rng is not None:
            self.tag_range[key] = rng
        if kind not in (None, *_NO_RANGE_KINDS) and given_range is None:
            self.err((*at, "range"), f"a {kind} tag needs its instrument range [low, high]")
        self._within_span(tag, ("resolution",), at, rng, "FROZEN would take every reading for unchanged")
        source = tag.get("source")
        if isinstance(source, dict):
            self.tag_source(key, source, (*at, "source"), devices, rng)
        limits = tag.get("limits")
        if isinstance(limits, dict):
            self._limits(limits, (*at, "limits"), rng)
            if limits.get("deadband_pct") is not None and given_range is None:
                self.err(
                    (*at, "limits", "deadband_pct"),
                    "deadband_pct is a share of the range and this tag has none: give deadband",
                )
        gas = tag.get("gas")
        if kind == "GAS" and not isinstance(gas, dict):
            self.err(at, "a GAS tag needs a gas: block (gas, detector; preset or level1/level2)")
        if gas is not None and kind not in ("GAS", None):
            self.err((*at, "gas"), f"gas: belongs to GAS tags, this one is {kind}")
        if kind == "GAS" and isinstance(gas, dict):
            if limits is not None:
                self.err(
                    (*at, "limits"),
                    "gas detector levels come from gas: (preset or level1/level2), not limits:",
                )
            self._gas(gas, (*at, "gas"), unit if isinstance(unit, str) else "", rng)
        self._rule_settings(ent, key, kind, tag, at)
        rationalization = tag.get("rationalization")
        if isinstance(rationalization, dict):
            self._rationalization(rationalization, tag, (*at, "rationalization"))

    def _limits(self, limits: dict[str, Any], at: PathKey, rng: tuple[float, float] | None) -> None:
        present = [(n, v) for n in ("ll", "l", "h", "hh") if (v := finite(limits.get(n))) is not None]
        for (lo_name, lo), (hi_name, hi) in itertools.pairwise(present):
            if hi <= lo:
                self.err((*at, hi_name), f"must be above {lo_name} ({lo:g}), is {hi:g}")
        if rng is not None:
            for name, v in present:
                if not rng[0] <= v <= rng[1]:
                    self.err(
                        (*at, name),
                        f"{v:g} is outside the instrument range [{rng[0]:g}, {rng[1]:g}]: "
                        "it can never be reached",
                    )
        if limits.get("deadband") is not None and limits.get("deadband_pct") is not None:
            self.err((*at, "deadband_pct"), "give deadband or deadband_pct, not both")
        self._within_span(limits, ("deadband",), at, rng, "an alarm would never clear")
        db, field = finite(limits.get("deadband")), "deadband"
        pct = finite(limits.get("deadband_pct")) if db is None and rng is not None else None
        if pct is not None and rng is not None:
            db, field = pct / 100 * (rng[1] - rng[0]), "deadband_pct"
        if db and rng is not None and db < rng[1] - rng[0]:
            for name, v in present:
                clear = v + db if name in LOW_LIMITS else v - db
                if rng[0] <= v <= rng[1] and not rng[0] < clear < rng[1]:
                    self.err(
                        (*at, field),
                        f"a deadband of {db:g} clears {name.upper()} ({v:g}) at {clear:g}, outside the "
                        f"instrument range [{rng[0]:g}, {rng[1]:g}]: the alarm would never clear",
                    )

    def _within_span(
        self,
        block: dict[str, Any],
        path: tuple[str, ...],
        at: PathKey,
        rng: tuple[float, float] | None,
        why: str,
    ) -> None:
        """A tolerance-like setting (deadband, resolution, deviation) must be below the range span."""
        v = finite(block.get(path[-1]))
        if v is not None and rng is not None and v >= rng[1] - rng[0]:
            self.err((*at, *path), f"{v:g} is not below the range span {rng[1] - rng[0]:g}: {why}")

    def _rule_settings(self, ent: str, key: str, kind: Any, tag: dict[str, Any], at: PathKey) -> None:
        """rate:, deviation: and state: (rules/): which kinds they suit, and their tag references."""
        rate, span_rng = tag.get("rate"), self.tag_range.get(key)
        if rate is not None and kind == "DISCRETE":
            self.err((*at, "rate"), "a rate-of-change alarm needs an analog tag, this one is DISCRETE")
        if isinstance(rate, dict) and (finite(rate.get("deadband")) or 0.0) >= (
            finite(rate.get("max_per_min")) or math.inf
        ):
            self.err(
                (*at, "rate", "deadband"),
                "the rate deadband must be below max_per_min, or the alarm never clears",
            )
        if isinstance(rate, dict) and span_rng is not None:
            limit = finite(rate.get("max_per_min"))
            window = finite(given_or_default(rate, RateOfChange, "window_s"))  # None: validation reports it
            fastest = (span_rng[1] - span_rng[0]) * 60 / window if window else math.inf
            if limit is not None and limit > fastest:
                self.err(
                    (*at, "rate", "max_per_min"),
                    f"{limit:g} per min can never be measured: the whole range [{span_rng[0]:g}, "
                    f"{span_rng[1]:g}] within window_s ({window:g} s) is {fastest:g} per min",
                )
        deviation = tag.get("deviation")
        if isinstance(deviation, dict) and isinstance(deviation.get("tag"), str):
            self.rule_refs.append((ent, key, deviation["tag"], (*at, "deviation", "tag")))
        if isinstance(deviation, dict):
            v = finite(deviation.get("max"))
            if v is not None and span_rng is not None and v > span_rng[1] - span_rng[0]:
                self.err(
                    (*at, "deviation", "max"),
                    f"{v:g} is more than the range span {span_rng[1] - span_rng[0]:g}: it can never be reached",
                )
        state = tag.get("state")
        if state is None:
            return
        if kind not in ("DISCRETE", None):
            self.err((*at, "state"), f"state: belongs to DISCRETE tags, this one is {kind}")
        if isinstance(state, dict):
            if state.get("alarm_value") is None and state.get("command") is None:
                self.err((*at, "state"), "give alarm_value, command or both")
            if isinstance(state.get("command"), str):
                self.rule_refs.append((ent, key, state["command"], (*at, "state", "command")))

    def _rationalization(self, names: dict[str, Any], tag: dict[str, Any], at: PathKey) -> None:
        """An override names an alarm this tag has: one for an alarm that is never raised would
        stand in the master alarm table as if it were."""
        have = _alarm_names(tag)
        for name in names:
            if name not in have:
                self.err(
                    (*at, name),
                    f"this tag has no {name} alarm to rationalize (its alarms: {', '.join(have)})",
                )

    def _rule_ref(self, ent: str, key: str, ref: str, at: PathKey) -> None:
        target = resolve_key(ent, ref)
        if target not in self.keys:
            self.err(at, f"unknown tag {ref!r}")
        elif target == key:
            self.err(at, f"{ref!r} is this tag itself")
        elif at[-2] == "deviation":
            kind, other = self.tag_kind.get(key), self.tag_kind.get(target)
            unit, other_unit = self.tag_unit.get(key), self.tag_unit.get(target)
            if kind != other:
                self.err(at, f"redundant transmitter {ref!r} is a {other} tag, this one is {kind}")
            elif unit != other_unit:
                self.err(
                    at, f"redundant transmitter {ref!r} measures in {other_unit!r}, this one in {unit!r}"
                )

    def _suppress_when(self, ent: str, own: dict[str, list[str]], unit: dict[str, Any], at: PathKey) -> None:
        """A unit's suppression by design: one comparison, on a tag of its own hazard source
        (``own``: tag code -> its keys there, made once per hazard source), that can be both
        true and false: inside the tag's range, of the tag's kind."""
        sw: dict[str, Any] = unit["suppress_when"]
        name = f"unit {unit.get('code')!r}"
        given = [n for n in _SUPPRESS_OPS if sw.get(n) is not None]
        if len(given) != 1:
            self.err(
                at,
                f"{name}: suppress_when needs exactly one of {', '.join(_SUPPRESS_OPS)}"
                + (f", has {' and '.join(given)}" if given else ""),
            )
        ref = sw.get("tag")
        if not isinstance(ref, str):
            return
        if "." in ref:
            key = resolve_key(ent, ref)
        else:  # a bare tag code: the hazard source's one tag of that code
            keys = own.get(ref, [])
            if len(keys) > 1:
                self.err(
                    (*at, "tag"),
                    f"{name}: tag code {ref!r} is ambiguous in this hazard source ({', '.join(keys)}): "
                    "write EQUIPMENT.CODE",
                )
                return
            key = keys[0] if keys else ref
        if key not in own.get(key.rpartition(".")[2], ()):
            other = " (it belongs to another hazard source)" if key in self.keys else ""
            self.err((*at, "tag"), f"{name}: unknown tag {ref!r} in this hazard source{other}")
            return
        kind = self.tag_kind.get(key)
        if kind == "GAS":
            self.err(
                (*at, "tag"),
                f"{name}: tag {ref!r} is a GAS detector: a leak's reading must never decide that "
                "the unit is shut down (use a flow, a pressure or a run status)",
            )
            return
        if len(given) == 1:
            self._suppress_comparison(name, ref, key, kind, given[0], sw.get(given[0]), (*at, given[0]))

    def _suppress_comparison(
        self, name: str, ref: str, key: str, kind: str | None, op: str, value: Any, at: PathKey
    ) -> None:
        """The comparison of a suppress_when on its tag, refused where it is always or never true:
        a switch is 0 or 1 (equals only), a counter only grows (no below/above), an analog
        reading never equals a number exactly, and a limit on or past the range's end."""
        v = finite(value)
        if v is None:
            return
        if kind == "DISCRETE":
            if op != "equals":
                self.err(at, f"{name}: tag {ref!r} is DISCRETE: use equals: 0 or equals: 1, not {op}")
            elif v not in (0, 1):
                self.err(at, f"{name}: tag {ref!r} is DISCRETE (0 or 1): equals {v:g} is never true")
            return
        if kind == "COUNTER":
            if op != "equals":
                self.err(
                    at,
                    f"{name}: tag {ref!r} is a COUNTER (it only accumulates): {op} cannot tell "
                    "a shut-down unit",
                )
            return
        if op == "equals":
            self.err(
                at,
                f"{name}: tag {ref!r} is {kind}: an analog reading never equals {v:g} exactly "
                "(use below or above)",
            )
            return
        rng = self.tag_range.get(key)
        if rng is not None and not rng[0] < v < rng[1]:
            self.err(
                at,
                f"{name}: {op} {v:g} is not strictly inside the range [{rng[0]:g}, {rng[1]:g}] of tag "
                f"{ref!r}: the unit would count as always or never shut down",
            )

    # --- gas detectors (GB/T 50493-2019) ----------------------------------------------

    def _gas(self, gas: dict[str, Any], at: PathKey, unit: str, rng: tuple[float, float] | None) -> None:
        levels = resolve_gas(gas, unit, self.ref, lambda p, m: self.err((*at, *p), m))
        if levels is None:
            return
        _kind, l1, l2 = levels
        if rng is not None:
            for name, v in (("level1", l1), ("level2", l2)):
                if not rng[0] <= v <= rng[1]:
                    self.err(
                        (*at, name), f"{v:g} {unit} is outside the detector range [{rng[0]:g}, {rng[1]:g}]"
                    )

    # --- interlocks ------------------------------------------------------------------

    def _interlock(self, ent: str, il: dict[str, Any], at: PathKey) -> None:
        voting = il.get("voting")
        inputs = il.get("inputs")
        if isinstance(voting, str) and "oo" in voting and isinstance(inputs, list):
            m, _, n = voting.partition("oo")
            if m.isdigit() and n.isdigit():
                if not 1 <= int(m) <= int(n):
                    self.err((*at, "voting"), f"voting {voting}: M must be between 1 and N")
                elif int(n) != len(inputs):
                    self.err((*at, "voting"), f"voting {voting} needs {n} inputs, has {len(inputs)}")
        for k, inp in _items(inputs):
            self._ref(ent, inp.get("tag"), (*at, "inputs", k, "tag"))
            self._in_range(ent, inp.get("tag"), inp.get("value"), (*at, "inputs", k, "value"), _trip(inp))
            if inp.get("bypass") is not None:
                self._ref(ent, inp.get("bypass"), (*at, "inputs", k, "bypass"), want="DISCRETE")
        fe = il.get("final_element")
        if isinstance(fe, dict):
            self._ref(ent, fe.get("tag"), (*at, "final_element", "tag"))
            self._in_range(
                ent,
                fe.get("tag"),
                fe.get("safe_value"),
                (*at, "final_element", "safe_value"),
                "it can never be reported",
            )
            ref = fe.get("tag")
            fe_kind = self.tag_kind.get(resolve_key(ent, ref)) if isinstance(ref, str) else None
            if fe_kind not in (None, "DISCRETE"):
                self.err(
                    (*at, "final_element", "tag"),
                    f"final element {ref!r} must be the DISCRETE position feedback of a valve or "
                    f"breaker (demand without action is judged on it), is {fe_kind}",
                )

    def _in_range(
        self, ent: str, ref: Any, value: Any, at: PathKey, why: str | Callable[[bool], str]
    ) -> None:
        """An interlock's trip value or safe position must lie inside its tag's instrument range."""
        v, rng = finite(value), self.tag_range.get(resolve_key(ent, ref)) if isinstance(ref, str) else None
        if v is not None and rng is not None and not rng[0] <= v <= rng[1]:
            because = why if isinstance(why, str) else why(v > rng[1])
            self.err(at, f"{v:g} is outside the range [{rng[0]:g}, {rng[1]:g}] of tag {ref!r}: {because}")

    def _ref(self, ent: str, ref: Any, at: PathKey, want: str | None = None) -> None:
        if not isinstance(ref, str):
            return
        key = resolve_key(ent, ref)
        if key not in self.keys:
            self.err(at, f"unknown tag {ref!r}")
        elif want is not None and self.tag_kind.get(key) != want:
            self.err(at, f"tag {ref!r} must be a {want} tag, is {self.tag_kind.get(key)}")


def _alarm_names(tag: dict[str, Any]) -> list[str]:
    """The names (core.plant.TagRationalization) of the alarms a tag's settings give it."""
    limits, state, dq = tag.get("limits"), tag.get("state"), tag.get("data_quality")
    names = [n for n in ("ll", "l", "h", "hh") if isinstance(limits, dict) and limits.get(n) is not None]
    if tag.get("kind") == "GAS":
        names += ["level1", "level2"]
    names += [n for n in ("rate", "deviation") if tag.get(n) is not None]
    if isinstance(state, dict):
        names += ["state"] if state.get("alarm_value") is not None else []
        names += ["mismatch"] if state.get("command") is not None else []
    names.append("bad_quality")
    if not (isinstance(dq, dict) and dq.get("stale_s") == 0):  # 0: off (else by source, maybe off)
        names.append("stale")
    if tag.get("range") is not None:
        names.append("out_of_range")
    if isinstance(dq, dict) and dq.get("frozen_s"):
        names.append("frozen")
    names.append("clock_ahead")
    return names


def _trip(inp: dict[str, Any]) -> Callable[[bool], str]:
    """What an input comparing against a value above (or below) its tag's range does."""

    def why(above: bool) -> str:
        op = inp.get("op")
        never = op == "==" or (op in (">", ">=") if above else op in ("<", "<="))
        return "the input can never trip" if never else "the input always trips"

    return why


def _items(v: Any) -> list[tuple[int, dict[str, Any]]]:
    return [(i, x) for i, x in enumerate(v) if isinstance(x, dict)] if isinstance(v, list) else []


def _tag_keys_by_code(ent: str, hs: dict[str, Any]) -> dict[str, list[str]]:
    """The hazard source's tag keys ENTERPRISE.EQUIPMENT.CODE by tag code."""
    out: dict[str, list[str]] = {}
    for _, t in _items(hs.get("tags")):
        eq, code = t.get("equipment"), t.get("code")
        if isinstance(eq, str) and isinstance(code, str):
            out.setdefault(code, []).append(f"{ent}.{eq}.{code}")
    return out


def check_plant(data: dict[str, Any], source: SourceMap, ref: GasReference) -> list[ConfigIssue]:
    """Every cross-reference problem of the plant document ``data`` (see the module docstring)."""
    checker = PlantChecker(data, source, ref)
    checker.run()
    return checker.issues
