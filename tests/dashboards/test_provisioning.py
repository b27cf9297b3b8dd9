"""Grafana's file provisioning as `hazardwatch grafana build` writes it, read the way Grafana reads
it: YAML, then every string through Grafana's interpolation (pkg/services/provisioning/values:
"$$" is a literal "$", the rest Go's os.ExpandEnv, which knows $NAME and ${NAME} only, so a
${NAME:-default} looks up a variable named "NAME:-default" and comes out empty). The datasource
it provisions is the one `grafana push` sends (dashboards.push.datasource_model)."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from core.config import load_plant
from core.plant import Plant
from core.settings import Settings
from dashboards.build import write_build
from dashboards.push import SSL_MODES, TIME_INTERVAL, DatabaseTarget, datasource_model
from hazardwatch.cli import app

ROOT = Path(__file__).resolve().parents[2]
TWO = ROOT / "tests/core/data/two_enterprises.yaml"
COMMITTED = ROOT / "dashboards/build/provisioning"
DATASOURCES = Path("provisioning/datasources/hazardwatch.yaml")
DASHBOARDS = Path("provisioning/dashboards/hazardwatch.yaml")
ALLOWED_ENV = {
    "HAZARDWATCH_DB_HOST",
    "HAZARDWATCH_DB_NAME",
    "HAZARDWATCH_GRAFANA_DB_PASSWORD",
    "HAZARDWATCH_DASHBOARDS",
}
# Grafana's environment in these tests: HOST as host:port, as the datasource's url takes it.
ENV = {
    "HAZARDWATCH_DB_HOST": "db.internal:5433",
    "HAZARDWATCH_DB_NAME": "hw",
    "HAZARDWATCH_GRAFANA_DB_PASSWORD": "pw-Shh-7f3a9c",
    "HAZARDWATCH_DASHBOARDS": "/srv/hazardwatch/dashboards",
    "HOME": "/home/grafana",  # what a "$HOME" in a title must not turn into
}
runner = CliRunner()


# --- Grafana's interpolation, as pkg/services/provisioning/values and Go's os.Expand do it -----


def _shell_name(s: str) -> tuple[str, int]:
    """Go's os.getShellName: the name after a "$" and how many bytes it took."""
    special = "*#$@!?-0123456789"
    if s[0] == "{":
        if len(s) > 2 and s[1] in special and s[2] == "}":
            return s[1], 3
        end = s.find("}", 1)
        if end == 1:
            return "", 2  # "${}": bad syntax, eaten
        if end < 0:
            return "", 1  # no closing brace: the "{" eaten
        return s[1:end], end + 1  # everything up to the brace, ":-default" included
    if s[0] in special:
        return s[0], 1
    n = 0
    while n < len(s) and (s[n] == "_" or (s[n].isascii() and s[n].isalnum())):
        n += 1
    return s[:n], n


def go_expand(s: str, lookup: Callable[[str], str]) -> str:
    """Go's os.Expand."""
    out, i, j = [], 0, 0
    while j < len(s):
        if s[j] == "$" and j + 1 < len(s):
            out.append(s[i:j])
            name, width = _shell_name(s[j + 1 :])
            if name == "" and width == 0:
                out.append("$")  # "$" before no name stays
            elif name:
                out.append(lookup(name))
            j += width
            i = j + 1
        j += 1
    return "".join(out) + s[i:]


def grafana_reads(value: Any, env: dict[str, str], looked_up: set[str] | None = None) -> Any:
    """``value`` (parsed YAML) with every string interpolated as Grafana's provisioning does."""
    if isinstance(value, dict):
        return {k: grafana_reads(v, env, looked_up) for k, v in value.items()}
    if isinstance(value, list):
        return [grafana_reads(v, env, looked_up) for v in value]
    if not isinstance(value, str):
        return value

    def lookup(name: str) -> str:
        if looked_up is not None:
            looked_up.add(name)
        return env.get(name, "")

    return "$".join(go_expand(part, lookup) for part in value.split("$$"))


def test_the_interpolation_model_is_go_s() -> None:
    env = {"A": "1", "A_B": "2"}
    assert grafana_reads("${A}-$A_B-$A.x-$$A-${A:-9}-${}", env) == "1-2-1.x-$A--"
    seen: set[str] = set()
    grafana_reads({"x": ["${TS:-false}"]}, env, seen)
    assert seen == {"TS:-false"}  # a variable of that name: the default is never used


# --- the files ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def demo() -> Plant:
    return load_plant(ROOT / "config/demo")


def load(path: Path) -> dict[str, Any]:
    parsed = yaml.safe_load(path.read_text(encoding="utf-8"))
    assert isinstance(parsed, dict)
    return parsed


def strings(value: Any) -> list[str]:
    if isinstance(value, dict):
        return [s for v in value.values() for s in strings(v)]
    if isinstance(value, list):
        return [s for v in value for s in strings(v)]
    return [value] if isinstance(value, str) else []


def build(demo: Plant, out: Path, settings: Settings | None = None, **options: Any) -> tuple[Any, Any]:
    """The datasource and the dashboard provider as Grafana reads them from ``out``."""
    write_build(demo, settings, out, **options)
    datasources, dashboards = load(out / DATASOURCES), load(out / DASHBOARDS)
    assert datasources["apiVersion"] == 1 and dashboards["apiVersion"] == 1
    [ds] = datasources["datasources"]
    [provider] = dashboards["providers"]
    return grafana_reads(ds, ENV), grafana_reads(provider, ENV)


def test_the_committed_files_are_the_default_build(demo: Plant, tmp_path: Path) -> None:
    write_build(demo, None, tmp_path)
    for rel in (DATASOURCES, DASHBOARDS):
        assert (tmp_path / rel).read_bytes() == (COMMITTED.parent / rel).read_bytes(), rel


@pytest.mark.parametrize("files", ["committed", "built"])
def test_only_the_four_variables_and_no_shell_defaults(demo: Plant, tmp_path: Path, files: str) -> None:
    if files == "built":
        write_build(demo, None, tmp_path, timescaledb=True, sslmode="verify-full")
    base = COMMITTED.parent if files == "committed" else tmp_path
    looked_up: dict[Path, set[str]] = {}
    for rel in (DATASOURCES, DASHBOARDS):
        parsed = load(base / rel)
        for s in strings(parsed):
            assert ":-" not in s, (rel, s)
            assert set(re.findall(r"\$\{([^}]*)\}", s)) <= ALLOWED_ENV, (rel, s)
        grafana_reads(parsed, ENV, looked_up.setdefault(rel, set()))
    assert looked_up == {
        DATASOURCES: {"HAZARDWATCH_DB_HOST", "HAZARDWATCH_DB_NAME", "HAZARDWATCH_GRAFANA_DB_PASSWORD"},
        DASHBOARDS: {"HAZARDWATCH_DASHBOARDS"},
    }


def test_the_datasource_as_grafana_reads_it(demo: Plant, tmp_path: Path) -> None:
    ds, provider = build(demo, tmp_path)
    g = demo.settings.grafana
    assert ds["type"] == "grafana-postgresql-datasource" and ds["access"] == "proxy"
    assert (ds["uid"], ds["name"]) == (g.datasource_uid, g.datasource_name)
    assert ds["user"] == "hazardwatch_grafana" and ds["editable"] is False
    assert ds["url"] == "db.internal:5433"
    assert ds["secureJsonData"] == {"password": ENV["HAZARDWATCH_GRAFANA_DB_PASSWORD"]}
    data = ds["jsonData"]
    assert data["database"] == "hw"
    assert data["timescaledb"] is False  # a YAML bool, which Grafana's jsonData keeps a bool
    assert data["sslmode"] == "require" and data["sslmode"] in SSL_MODES
    assert data["timeInterval"] == TIME_INTERVAL == "1s"
    assert (provider["folder"], provider["folderUid"]) == (g.folder_title, g.folder_uid)
    assert provider["options"]["path"] == ENV["HAZARDWATCH_DASHBOARDS"] and provider["type"] == "file"


@pytest.mark.parametrize(
    ("timescaledb", "sslmode"), [(True, "disable"), (False, "verify-ca"), (True, "verify-full")]
)
def test_timescaledb_and_sslmode_are_written_at_build_time(
    demo: Plant, tmp_path: Path, timescaledb: bool, sslmode: str
) -> None:
    ds, _ = build(demo, tmp_path, timescaledb=timescaledb, sslmode=sslmode)
    assert ds["jsonData"]["timescaledb"] is timescaledb and ds["jsonData"]["sslmode"] == sslmode


@pytest.mark.parametrize(("timescaledb", "sslmode"), [(False, "require"), (True, "verify-full")])
def test_the_provisioned_datasource_is_the_pushed_one(
    demo: Plant, tmp_path: Path, timescaledb: bool, sslmode: str
) -> None:
    ds, _ = build(demo, tmp_path, timescaledb=timescaledb, sslmode=sslmode)
    host, port = ENV["HAZARDWATCH_DB_HOST"].split(":")
    target = DatabaseTarget(
        host, int(port), ENV["HAZARDWATCH_DB_NAME"], sslmode=sslmode, timescaledb=timescaledb
    )
    pushed = datasource_model(demo.settings.grafana, target)
    assert ds["jsonData"] == pushed["jsonData"]
    # isDefault: each Grafana's own choice, which push leaves alone and the file leaves out
    assert {k: ds[k] for k in pushed if k != "isDefault"} == {
        k: v for k, v in pushed.items() if k != "isDefault"
    }


def test_names_with_quotes_colons_and_dollars_arrive_as_written(demo: Plant, tmp_path: Path) -> None:
    grafana = demo.settings.grafana.model_copy(
        update={
            "datasource_name": 'Plant "7": $HOME ${HAZARDWATCH_DB_NAME} 历史库',
            "folder_title": "a $$ b: #c",
        }
    )
    settings = demo.settings.model_copy(update={"grafana": grafana})
    ds, provider = build(demo, tmp_path, settings)
    assert ds["name"] == grafana.datasource_name and provider["folder"] == "a $$ b: #c"


def test_a_bad_sslmode_writes_nothing(demo: Plant, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="'prefer'"):
        write_build(demo, None, tmp_path / "out", sslmode="prefer")
    assert not (tmp_path / "out").exists()


# --- the command line -------------------------------------------------------------------------


def test_cli_build_options(tmp_path: Path) -> None:
    out = tmp_path / "out"
    args = ["grafana", "build", str(ROOT / "config/demo"), "--out", str(out)]
    r = runner.invoke(app, [*args, "--timescaledb", "--db-sslmode", "verify-ca"])
    assert r.exit_code == 0, r.stderr
    data = load(out / DATASOURCES)["datasources"][0]["jsonData"]
    assert data["timescaledb"] is True and data["sslmode"] == "verify-ca"
    r = runner.invoke(app, [*args, "--no-timescaledb"])
    assert r.exit_code == 0, r.stderr
    data = load(out / DATASOURCES)["datasources"][0]["jsonData"]
    assert data["timescaledb"] is False and data["sslmode"] == "require"
    for bad in ("prefer", "allow", "REQUIRE", ""):
        r = runner.invoke(app, [*args[:-1], str(tmp_path / "bad"), "--db-sslmode", bad])
        assert r.exit_code == 2 and f"--db-sslmode {bad!r}: one of disable, require" in r.stderr
        assert not (tmp_path / "bad").exists()


def plant_with_console(tmp_path: Path, console_url: str) -> Path:
    text = TWO.read_text(encoding="utf-8").replace(
        "reference: ../../../config/reference", f"reference: {ROOT}/config/reference"
    )
    plant = tmp_path / "plant.yaml"
    plant.write_text(text + f"settings:\n  grafana:\n    console_url: {console_url}\n", encoding="utf-8")
    return plant


LOOPBACK = "is a loopback address: every alarm link in Grafana would open the viewer's own machine"


@pytest.mark.parametrize(
    ("console_url", "warned"),
    [
        ("http://127.0.0.1:8000/console/", True),
        ("http://localhost:8000/console/", True),
        ("http://LOCALHOST/console/", True),
        ("http://[::1]:8000/console/", True),
        ("http://127.0.1.1/console/", True),
        ("https://duty.example.cn/console/", False),
        ("http://10.20.0.5:8000/console/", False),
        ("http://localhost.example.cn/console/", False),
    ],
)
def test_cli_build_warns_of_a_loopback_console(tmp_path: Path, console_url: str, warned: bool) -> None:
    r = runner.invoke(
        app,
        ["grafana", "build", str(plant_with_console(tmp_path, console_url)), "--out", str(tmp_path / "o")],
    )
    assert r.exit_code == 0, r.stderr  # a warning, not an error: the files are written
    assert (tmp_path / "o" / DATASOURCES).exists()
    lines = [line for line in r.stderr.splitlines() if LOOPBACK in line]
    assert len(lines) == (1 if warned else 0), r.stderr
    if warned:
        assert lines[0].startswith(f"warning: settings.grafana.console_url {console_url} ")
