"""Vectorized rule engine: limits, data quality and interlock conditions (DESIGN.md: rules/).

Compile a plant into a RuleSet once, then feed the engine every batch and a timer tick::

    engine = RuleEngine.from_plant(plant, registry)
    edges = engine.evaluate(batch, now_us)   # ConditionEdges: only transitions
    edges = engine.tick(now_us)              # delays, stale data, bypass age without new data
    engine.active()                          # ActiveCondition list for the live view
    snap = engine.snapshot(); engine.restore(snap)

rules/reference.py defines the semantics; the engine is tested equal to it. The kinds,
severities and edges are shared types in core/conditions.py.
"""

from rules.compile import compile_rules
from rules.engine import RuleEngine
from rules.interlock import InterlockStatus
from rules.ruleset import RuleSet
from rules.snapshot import EngineSnapshot

__all__ = [
    "EngineSnapshot",
    "InterlockStatus",
    "RuleEngine",
    "RuleSet",
    "compile_rules",
]
