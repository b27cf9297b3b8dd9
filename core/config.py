"""The plant config from a path: YAML loaded (``core.yaml_loader``), then validated, checked and
resolved (``core.plant_build``). The one entry point every command loads a plant through.
"""

from __future__ import annotations

import contextlib
import gc
import os
from collections.abc import Iterator, Mapping
from pathlib import Path

from core.errors import ConfigError, ConfigIssue
from core.plant import Plant
from core.plant_build import Prevalidated, build_plant
from core.yaml_loader import SourceMap, load_document

__all__ = ["collector_paused", "load_plant", "load_plant_located", "tune_collector_for_service"]


def load_plant(path: str | os.PathLike[str], env: Mapping[str, str] | None = None) -> Plant:
    """Load and validate a plant config (a file, or a folder holding ``plant.yaml``).

    Raises ConfigError listing every problem found, each at its file:line.
    """
    return load_plant_located(path, env)[0]


def load_plant_located(
    path: str | os.PathLike[str], env: Mapping[str, str] | None = None
) -> tuple[Plant, SourceMap]:
    """``load_plant``, plus the SourceMap of the plant's document, so that a problem found
    later (compiling rules or sources) can still be reported at its ``file:line``."""
    p = Path(path)
    if p.is_dir():
        p = p / "plant.yaml"
    if not p.exists():
        raise ConfigError(
            [
                ConfigIssue(
                    str(path), 0, "", "no such file (expected a plant YAML or a folder with plant.yaml)"
                )
            ]
        )
    with collector_paused():
        early = Prevalidated(p)
        loaded = load_document(p, env, on_part=early.take)
        return build_plant(loaded, p, early), loaded.source


# Allocations between young-generation collections for a long-running engine process (Python's
# default is 700). The engine's hot paths (an alarm flood makes ~10 tracked objects per edge,
# kept until stored) otherwise trigger a full collection every few hundred milliseconds, and a
# full collection walks every alarm and alarm definition built since the plant was frozen:
# 30-70 ms of a stalled event loop at 22,000 alarms (bench/alarms.py). Young collections at this
# size take a few milliseconds.
LONG_RUNNING_GC_THRESHOLD = 10_000


def tune_collector_for_service() -> None:
    """Fewer, still short, collections for a process that runs for days (``run``, ``demo``)."""
    _, older, oldest = gc.get_threshold()
    gc.set_threshold(LONG_RUNNING_GC_THRESHOLD, older, oldest)


@contextlib.contextmanager
def collector_paused(*, keep: bool = False) -> Iterator[None]:
    """Python's cycle collector paused while a plant is built (or compiled: rows per rule).
    Loading allocates millions of objects (events, dicts, path tuples, models) that form no
    cycles, and every few hundred allocations the collector would scan them again: half the
    load time of a 10k-tag plant, growing with its size. Whatever cycles the work leaves are
    collected once it resumes; a caller that had it paused keeps it paused.

    ``keep``: what the work built lives as long as the process (the plant a command checks or
    runs), so when it succeeds everything alive is frozen (``gc.freeze``) instead of being
    scanned on resume: the first collection after a 100k-tag load would walk all of it
    (about 0.3 s each, twice per ``check``), and later ones during the run again. A failed
    load leaves its garbage (a traceback's cycles) to the collector as usual."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
        if keep:
            gc.freeze()
    finally:
        if was_enabled:
            gc.enable()
