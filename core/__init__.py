"""Shared kernel of HazardWatch: batches, quality, plant model, registry, clock, errors.

Imports nothing else of ours; every other package builds on it.
"""

from core.batch import ReadingBatch
from core.clock import Clock, FakeClock, SystemClock
from core.config import load_plant
from core.errors import ConfigError, ConfigIssue, HazardWatchError
from core.plant import Plant, Tag
from core.quality import Quality

__all__ = [
    "Clock",
    "ConfigError",
    "ConfigIssue",
    "FakeClock",
    "HazardWatchError",
    "Plant",
    "Quality",
    "ReadingBatch",
    "SystemClock",
    "Tag",
    "load_plant",
]
