"""End-to-end helpers: plants whose local files (spool, heartbeat, rule state, certificates)
live in the test's own data directory, so parallel runs never share, and never lock each
other out of, the working directory's ``var/``."""

from __future__ import annotations

from pathlib import Path

from core.plant import Plant


def in_data_dir(plant: Plant, data_dir: Path) -> Plant:
    """``plant`` with ``settings.data_dir`` set to ``data_dir``."""
    settings = plant.settings.model_copy(update={"data_dir": str(data_dir)})
    return plant.model_copy(update={"settings": settings})
