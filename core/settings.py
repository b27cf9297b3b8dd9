"""Runtime settings that live beside the plant in the same YAML (section ``settings``).

Each subsystem reads its own section; defaults are the documented ones in
docs/configuration.md. Secrets are never written here: use ``${ENV}`` substitution.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["Settings", "StorageSettings"]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class StorageSettings(_Section):
    # None: take DATABASE_URL from the environment; when that is unset too, the demo
    # starts an embedded PostgreSQL under var/.
    dsn: str | None = None
    spool_dir: str = "var/spool"
    spool_max_bytes: int = Field(default=256 * 1024 * 1024, gt=0)
    spool_segment_bytes: int = Field(default=8 * 1024 * 1024, gt=0)
    raw_retention_days: int = Field(default=400, ge=30)  # SAWS Order 40: at least 30 days
    rollup_retention_days: int = Field(default=5 * 366, ge=30)
    partitions_ahead_days: int = Field(default=7, ge=1)
    retention_interval_s: float = Field(default=3600.0, gt=0)
    embedded_dir: str = "var/pg"


class Settings(_Section):
    storage: StorageSettings = StorageSettings()
