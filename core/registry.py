"""TagRegistry: tag key <-> dense index <-> database id, plus per-tag attribute arrays.

Dense indexes are positions in the plant's tag order and index every vector the hot path
uses (ReadingBatch.tag, rule state). Database ids are stable across restarts and config
edits (storage assigns them); dense indexes are not, so they never leave the process.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from core.plant import Plant, Tag, TagKind

__all__ = ["KIND_CODES", "TagRegistry"]

KIND_CODES: dict[TagKind, int] = {k: i for i, k in enumerate(TagKind)}
NO_DB_ID = -1


def _frozen(a: npt.ArrayLike, dtype: npt.DTypeLike) -> np.ndarray:
    out = np.array(a, dtype=dtype)
    out.flags.writeable = False
    return out


@dataclass(frozen=True, eq=False)
class TagRegistry:
    keys: tuple[str, ...]
    tags: tuple[Tag, ...]
    hazard_sources: tuple[str, ...]  # codes, indexed by ``hazard_source``
    enterprises: tuple[str, ...]  # codes, indexed by ``enterprise``
    range_lo: np.ndarray  # float64, NaN where the tag has no range
    range_hi: np.ndarray
    kind: np.ndarray  # int8, KIND_CODES
    hazard_source: np.ndarray  # int32 index into hazard_sources
    enterprise: np.ndarray  # int32 index into enterprises
    db_id: np.ndarray  # int32, NO_DB_ID until storage has synced the registry
    _index: Mapping[str, int] = field(repr=False)

    @classmethod
    def from_plant(cls, plant: Plant) -> TagRegistry:
        tags: list[Tag] = []
        hs_of: list[int] = []
        ent_of: list[int] = []
        hs_codes: list[str] = []
        ent_codes: list[str] = []
        for e_i, ent in enumerate(plant.enterprises):
            ent_codes.append(ent.code)
            for hs in ent.hazard_sources:
                hs_codes.append(hs.code)
                for tag in hs.tags:
                    tags.append(tag)
                    hs_of.append(len(hs_codes) - 1)
                    ent_of.append(e_i)
        return cls._build(tags, hs_codes, ent_codes, hs_of, ent_of, [NO_DB_ID] * len(tags))

    @classmethod
    def _build(
        cls,
        tags: Sequence[Tag],
        hs_codes: Sequence[str],
        ent_codes: Sequence[str],
        hs_of: Sequence[int],
        ent_of: Sequence[int],
        db_ids: Sequence[int],
    ) -> TagRegistry:
        keys = tuple(t.key for t in tags)
        index = {k: i for i, k in enumerate(keys)}
        if len(index) != len(keys):
            dupes = sorted({k for k in keys if keys.count(k) > 1})
            raise ValueError(f"duplicate tag keys: {', '.join(dupes)}")
        nan = float("nan")
        return cls(
            keys=keys,
            tags=tuple(tags),
            hazard_sources=tuple(hs_codes),
            enterprises=tuple(ent_codes),
            range_lo=_frozen([t.range[0] if t.range else nan for t in tags], np.float64),
            range_hi=_frozen([t.range[1] if t.range else nan for t in tags], np.float64),
            kind=_frozen([KIND_CODES[t.kind] for t in tags], np.int8),
            hazard_source=_frozen(hs_of, np.int32),
            enterprise=_frozen(ent_of, np.int32),
            db_id=_frozen(db_ids, np.int32),
            _index=index,
        )

    def __len__(self) -> int:
        return len(self.keys)

    def __contains__(self, key: object) -> bool:
        return key in self._index

    def index_of(self, key: str) -> int:
        try:
            return self._index[key]
        except KeyError:
            raise KeyError(f"unknown tag key {key!r}") from None

    def indexes_of(self, keys: Iterable[str]) -> np.ndarray:
        return np.fromiter((self.index_of(k) for k in keys), dtype=np.int32)

    def key_of(self, index: int) -> str:
        return self.keys[index]

    def tag(self, key_or_index: str | int) -> Tag:
        i = key_or_index if isinstance(key_or_index, int) else self.index_of(key_or_index)
        return self.tags[i]

    def with_db_ids(self, ids: Mapping[str, int]) -> TagRegistry:
        """A copy whose ``db_id`` vector is filled from ``key -> database id``."""
        missing = [k for k in self.keys if k not in ids]
        if missing:
            raise KeyError(f"no database id for {len(missing)} tag(s), e.g. {missing[0]!r}")
        return TagRegistry._build(
            self.tags,
            self.hazard_sources,
            self.enterprises,
            self.hazard_source.tolist(),
            self.enterprise.tolist(),
            [ids[k] for k in self.keys],
        )

    def db_ids_of(self, indexes: npt.ArrayLike) -> np.ndarray:
        """Database ids for dense indexes, vectorized; raises if the registry is not synced."""
        out = self.db_id[np.asarray(indexes, dtype=np.int64)]
        if out.size and (out == NO_DB_ID).any():
            raise LookupError("registry has no database ids yet: sync it with storage first")
        return out

    def tags_of_hazard_source(self, code: str) -> np.ndarray:
        return np.flatnonzero(self.hazard_source == self.hazard_sources.index(code)).astype(np.int32)
