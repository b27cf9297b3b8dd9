"""Candidate rule settings for a back-test: an overlay on the plant config, or a whole plant.

An overlay file edits only rule settings of named tags and is validated exactly like the
plant (errors name the overlay's file:line)::

    tags:
      LHJH.G101.PT-101:
        limits: {l: 3.0, h: 5.0, hh: 5.4}
      LHJH.V401.AT-401:
        data_quality: {frozen_s: 3600}

Each block replaces the tag's block of the same name. A file with ``enterprises:`` is a
complete plant config instead.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from core.config import load_plant
from core.errors import ConfigError, ConfigIssue
from core.plant import Plant
from core.plant_build import build_plant
from core.yaml_loader import Loaded, PathKey, SourceMap, load_document

__all__ = ["RULE_BLOCKS", "load_candidate"]

RULE_BLOCKS = ("limits", "gas", "data_quality", "rate", "deviation", "state", "in_service")


def _tag_paths(data: Any) -> dict[str, PathKey]:
    out: dict[str, PathKey] = {}
    ents = data.get("enterprises") if isinstance(data, dict) else None
    for e, ent in enumerate(ents if isinstance(ents, list) else []):
        for h, hs in enumerate(ent.get("hazard_sources") or [] if isinstance(ent, dict) else []):
            for t, tag in enumerate(hs.get("tags") or [] if isinstance(hs, dict) else []):
                if isinstance(tag, dict):
                    key = f"{ent.get('code')}.{tag.get('equipment')}.{tag.get('code')}"
                    out[key] = ("enterprises", e, "hazard_sources", h, "tags", t)
    return out


def load_candidate(plant_path: str | os.PathLike[str], rules_path: str | os.PathLike[str]) -> Plant:
    """The plant with the candidate rule settings applied; ConfigError names file:line."""
    rules_file = Path(rules_path)
    if not rules_file.exists():
        raise ConfigError([ConfigIssue(str(rules_path), 0, "", "no such file")])
    overlay = load_document(rules_file)
    if overlay.issues:
        raise ConfigError(overlay.issues)
    if isinstance(overlay.data, dict) and "enterprises" in overlay.data:
        plant: Plant = load_plant(rules_file)
        return plant
    plant_file = Path(plant_path)
    if plant_file.is_dir():
        plant_file = plant_file / "plant.yaml"
    base = load_document(plant_file)
    issues = list(base.issues)
    tags = overlay.data.get("tags") if isinstance(overlay.data, dict) else None
    if not isinstance(tags, dict):
        issues.append(overlay.source.issue((), "an overlay is a mapping with tags: {TAG_KEY: {limits: ...}}"))
        raise ConfigError(issues)
    extra = sorted(set(overlay.data) - {"tags"})
    issues += [overlay.source.issue((k,), "unknown key (an overlay has only tags:)") for k in extra]
    data, lines = base.data, dict(base.source.lines)
    paths = _tag_paths(data)
    for key, blocks in tags.items():
        at = ("tags", key)
        if key not in paths:
            issues.append(overlay.source.issue(at, f"unknown tag {key!r} (give ENTERPRISE.EQUIPMENT.CODE)"))
            continue
        if not isinstance(blocks, dict):
            issues.append(overlay.source.issue(at, "give the rule settings to replace, e.g. limits: {h: 5}"))
            continue
        target = _at(data, paths[key])
        for name, block in blocks.items():
            if name not in RULE_BLOCKS:
                issues.append(
                    overlay.source.issue(
                        (*at, name), f"only rule settings can be changed: {', '.join(RULE_BLOCKS)}"
                    )
                )
                continue
            target[name] = block
            prefix = (*at, name)
            for path, where in overlay.source.lines.items():
                if path[: len(prefix)] == prefix:
                    lines[(*paths[key], *path[2:])] = where
    if issues:
        raise ConfigError(issues)
    return build_plant(Loaded(data, SourceMap(base.source.root_file, lines), []), plant_file)


def _at(data: Any, path: PathKey) -> dict[str, Any]:
    for part in path:
        data = data[part]
    assert isinstance(data, dict)
    return data
