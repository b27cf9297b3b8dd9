"""``hazardwatch grafana build``: the boards as JSON files, plus Grafana's file provisioning.

Output (deterministic: sorted keys, two-space indent, a trailing newline; regenerating from the
same plant and settings changes no byte)::

    OUT/hw-bureau.json, hw-hazard-source.json, hw-alarms.json, hw-data-quality.json
    OUT/provisioning/datasources/hazardwatch.yaml   (the read-only role; password from the env)
    OUT/provisioning/dashboards/hazardwatch.yaml    (a file provider reading OUT)
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from core.atomic import write_text_atomic
from core.plant import Plant
from core.settings import Settings
from dashboards.boards import build_boards

__all__ = ["PanelQuery", "VariableQuery", "board_json", "panel_queries", "variable_queries", "write_build"]


def board_json(board: dict[str, Any]) -> str:
    return json.dumps(board, ensure_ascii=False, sort_keys=True, indent=2) + "\n"


def write_build(plant: Plant, settings: Settings | None, out_dir: Path) -> list[Path]:
    """Write every board and the provisioning files under ``out_dir``; the paths written."""
    settings = settings or plant.settings
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for board in build_boards(plant, settings):
        path = out_dir / f"{board['uid']}.json"
        write_text_atomic(path, board_json(board))
        written.append(path)
    src = resources.files("dashboards") / "provisioning"
    for kind in ("datasources", "dashboards"):
        target = out_dir / "provisioning" / kind / "hazardwatch.yaml"
        target.parent.mkdir(parents=True, exist_ok=True)
        text = (src / kind / "hazardwatch.yaml").read_text(encoding="utf-8")
        text = (
            text.replace("@DATASOURCE_UID@", settings.grafana.datasource_uid)
            .replace("@DATASOURCE_NAME@", settings.grafana.datasource_name)
            .replace("@FOLDER_TITLE@", settings.grafana.folder_title)
            .replace("@FOLDER_UID@", settings.grafana.folder_uid)
        )
        write_text_atomic(target, text)
        written.append(target)
    return written


@dataclass(frozen=True, slots=True)
class PanelQuery:
    board_uid: str
    panel_id: int
    title: str
    ref_id: str
    raw_sql: str
    format: str
    time_from: str | None  # the panel's own relative range ("24h"), if it overrides the board's


@dataclass(frozen=True, slots=True)
class VariableQuery:
    board_uid: str
    name: str
    raw_sql: str
    multi: bool
    include_all: bool


def _panels(board: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for p in board.get("panels", []):
        out.append(p)
        out.extend(p.get("panels", []))  # collapsed rows hold theirs
    return out


def panel_queries(board: dict[str, Any]) -> list[PanelQuery]:
    """Every SQL target of every panel, as the JSON holds it (what Grafana will run)."""
    return [
        PanelQuery(
            board["uid"], p["id"], p.get("title", ""), t["refId"], t["rawSql"], t["format"], p.get("timeFrom")
        )
        for p in _panels(board)
        for t in p.get("targets", [])
        if "rawSql" in t
    ]


def variable_queries(board: dict[str, Any]) -> list[VariableQuery]:
    return [
        VariableQuery(board["uid"], v["name"], v["query"], bool(v.get("multi")), bool(v.get("includeAll")))
        for v in board.get("templating", {}).get("list", [])
        if v.get("type") == "query"
    ]
