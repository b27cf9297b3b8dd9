"""TagIdCache: the database ids of every tag, kept beside the spool for a start during an outage.

After each successful registry sync the ids (tag key -> ``tag.id``) are written here; a
later start that cannot reach the database collects with them and spools, instead of
collecting nothing. Invariant: the cache serves only a plant whose every tag it knows: a
tag added since has no id yet, so ``load`` returns None and the start must wait for the
database. Written atomically (core.atomic), so a crash never leaves half a file.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from pathlib import Path

from core.atomic import write_json_atomic

__all__ = ["TagIdCache"]

FILE_NAME = "tag-ids.json"


class TagIdCache:
    def __init__(self, spool_dir: Path) -> None:
        self.path = spool_dir / FILE_NAME

    def save(self, ids: Mapping[str, int]) -> None:
        """Replace the cache with ``ids`` (sorted by key, so the file diffs cleanly)."""
        write_json_atomic(self.path, {k: int(ids[k]) for k in sorted(ids)})

    def load(self, keys: Iterable[str]) -> dict[str, int] | None:
        """The cached ids if they cover every key in ``keys``; None when there is no usable
        cache (missing, unreadable, not a key -> id object, or a key it does not know)."""
        try:
            ids = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        if not isinstance(ids, dict) or any(k not in ids for k in keys):
            return None
        try:
            return {str(k): int(v) for k, v in ids.items()}
        except (TypeError, ValueError):
            return None  # an id that is not a number: written by something else
