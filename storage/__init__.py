"""HazardWatch historian: PostgreSQL / TimescaleDB storage of readings, rollups and latest values.

See DESIGN.md "Storage model". Everything here speaks core types (ReadingBatch, int64 UTC
microseconds, dense tag indexes mapped to database ids with one numpy take) and raises
core.errors, never psycopg's. Heavier or optional pieces (embedded server, CLI adapter)
are imported from their modules.
"""

from storage.db import Backend, connect
from storage.migrate import require_current_schema, upgrade
from storage.queries import History, Latest, history, latest
from storage.registry_sync import SyncReport, active_tag_ids, sync_registry
from storage.retention import RetentionPolicy, maintain, retention_loop
from storage.spool import Spool
from storage.spooling import SpoolingWriter
from storage.writer import BatchWriter, WriteResult, to_db_ids

__all__ = [
    "Backend",
    "BatchWriter",
    "History",
    "Latest",
    "RetentionPolicy",
    "Spool",
    "SpoolingWriter",
    "SyncReport",
    "WriteResult",
    "active_tag_ids",
    "connect",
    "history",
    "latest",
    "maintain",
    "require_current_schema",
    "retention_loop",
    "sync_registry",
    "to_db_ids",
    "upgrade",
]
