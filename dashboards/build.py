"""``hazardwatch grafana build``: the boards as JSON files, plus Grafana's file provisioning.

Output (deterministic: sorted keys, two-space indent, a trailing newline; regenerating from the
same plant and settings changes no byte)::

    OUT/hw-bureau.json, hw-hazard-source.json, hw-alarms.json, hw-data-quality.json
    OUT/provisioning/datasources/hazardwatch.yaml   (the read-only role; password from the env)
    OUT/provisioning/dashboards/hazardwatch.yaml    (a file provider reading OUT)
"""

from __future__ import annotations

import json
import re
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


def write_build(
    plant: Plant,
    settings: Settings | None,
    out_dir: Path,
    *,
    timescaledb: bool = False,
    sslmode: str = "require",
) -> list[Path]:
    """Write every board and the provisioning files under ``out_dir``; the paths written.

    ``timescaledb`` and ``sslmode`` are the provisioned datasource's, written here because Grafana
    expands only plain ``$NAME`` / ``${NAME}`` in provisioning files (Go's os.ExpandEnv: a
    ``${NAME:-default}`` reads a variable named ``NAME:-default``, which is unset, so empty). The
    datasource's fields are dashboards.push.datasource_model's: a push and the file read alike.
    """
    # grafana-client comes with dashboards.push: loaded only when the build is written
    from dashboards.push import SSL_MODES, DatabaseTarget, datasource_model

    if sslmode not in SSL_MODES:
        raise ValueError(f"sslmode {sslmode!r}: one of {', '.join(SSL_MODES)}")
    settings = settings or plant.settings
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for board in build_boards(plant, settings):
        path = out_dir / f"{board['uid']}.json"
        write_text_atomic(path, board_json(board))
        written.append(path)
    # url is ${HAZARDWATCH_DB_HOST} in the template: host:port as Grafana's server reaches it
    db = DatabaseTarget(
        host="", port=0, database="${HAZARDWATCH_DB_NAME}", sslmode=sslmode, timescaledb=timescaledb
    )
    model = datasource_model(settings.grafana, db)
    values: dict[str, Any] = {
        "NAME": model["name"],
        "UID": model["uid"],
        "TYPE": model["type"],
        "ACCESS": model["access"],
        "USER": model["user"],
        "BASIC_AUTH": model["basicAuth"],
        "JSON_DATA": "\n".join(f"      {k}: {_yaml_scalar(v)}" for k, v in model["jsonData"].items()),
        "FOLDER_TITLE": settings.grafana.folder_title,
        "FOLDER_UID": settings.grafana.folder_uid,
    }
    src = resources.files("dashboards") / "provisioning"
    for kind in ("datasources", "dashboards"):
        target = out_dir / "provisioning" / kind / "hazardwatch.yaml"
        target.parent.mkdir(parents=True, exist_ok=True)
        text = (src / kind / "hazardwatch.yaml").read_text(encoding="utf-8")
        text = re.sub(
            r"@([A-Z_]+)@",
            lambda m: values[m[1]] if m[1] == "JSON_DATA" else _yaml_scalar(values[m[1]]),
            text,
        )
        write_text_atomic(target, text)
        written.append(target)
    return written


# What Grafana's environment supplies to the provisioning files; every other "$" is ours, literal.
_PROVISIONING_ENV = frozenset(
    f"${{{name}}}"
    for name in (
        "HAZARDWATCH_DB_HOST",
        "HAZARDWATCH_DB_NAME",
        "HAZARDWATCH_GRAFANA_DB_PASSWORD",
        "HAZARDWATCH_DASHBOARDS",
    )
)


def _yaml_scalar(value: object) -> str:
    """``value`` as a YAML flow scalar (JSON's are YAML's), a settings name with quotes or a
    colon included. Grafana expands ``$`` in every provisioned string and reads ``$$`` as one
    ``$``: a "$" in a title is doubled, or Grafana would put an environment variable there."""
    if isinstance(value, str) and value not in _PROVISIONING_ENV:
        value = value.replace("$", "$$")
    return json.dumps(value, ensure_ascii=False)


@dataclass(frozen=True, slots=True)
class PanelQuery:
    board_uid: str
    panel_id: int
    title: str
    ref_id: str
    raw_sql: str
    format: str
    time_from: str | None  # the panel's own relative range ("24h"), if it overrides the board's
    # the panel's maxDataPoints; Grafana otherwise takes the panel's width in pixels (about 1000)
    max_data_points: int = 1000


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
            board["uid"],
            p["id"],
            p.get("title", ""),
            t["refId"],
            t["rawSql"],
            t["format"],
            p.get("timeFrom"),
            int(p.get("maxDataPoints") or 1000),
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
