"""Runtime settings that live beside the plant in the same YAML (section ``settings``).

Each subsystem reads its own section; defaults are the documented ones in
docs/configuration.md. Secrets are never written here: use ``${ENV}`` substitution.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "AckDeadlines",
    "AlarmSettings",
    "ApiSettings",
    "CollectSettings",
    "GrafanaSettings",
    "RuleSettings",
    "Settings",
    "StorageSettings",
]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class StorageSettings(_Section):
    # None: take DATABASE_URL from the environment; when that is unset too, the demo
    # starts an embedded PostgreSQL under <data_dir>/pg.
    dsn: str | None = None
    spool_dir: str = Field(default="spool", min_length=1)  # relative: under Settings.data_dir
    # Upper bounds keep every value a sane int64 / timedelta (docs/configuration.md lists them).
    spool_max_bytes: int = Field(default=256 * 1024 * 1024, gt=0, le=2**40)
    spool_segment_bytes: int = Field(default=8 * 1024 * 1024, gt=0, le=2**30)
    raw_retention_days: int = Field(default=400, ge=30, le=36_600)  # SAWS Order 40: at least 30 days
    rollup_retention_days: int = Field(default=5 * 366, ge=30, le=36_600)
    partitions_ahead_days: int = Field(default=7, ge=1, le=366)
    retention_interval_s: float = Field(default=3600.0, ge=1, le=86400, allow_inf_nan=False)
    embedded_dir: str = Field(default="pg", min_length=1)  # relative: under Settings.data_dir


class RuleSettings(_Section):
    # A sample stamped further ahead of its arrival than this is rejected by the rule
    # engine (a device clock running ahead would otherwise make every later real sample
    # look late); bounded so a typo cannot disable the check or reject normal skew.
    max_clock_ahead_s: float = Field(default=300.0, ge=1.0, le=86400.0, allow_inf_nan=False)


class AlarmSettings(_Section):
    # The longest an operator may shelve an alarm of each priority, in minutes (0: such alarms
    # cannot be shelved). Critical alarms (toxic level 2, SIS demand without action) never are
    # by default: ISA-18.2 asks shelving to be limited by priority.
    max_shelve_min_critical: float = Field(default=0.0, ge=0, le=7 * 1440, allow_inf_nan=False)
    max_shelve_min_high: float = Field(default=60.0, ge=0, le=7 * 1440, allow_inf_nan=False)
    max_shelve_min_medium: float = Field(default=480.0, ge=0, le=7 * 1440, allow_inf_nan=False)
    max_shelve_min_low: float = Field(default=1440.0, ge=0, le=7 * 1440, allow_inf_nan=False)
    # Commits not yet in the database (alarms/journal.py): relative to Settings.data_dir.
    log_dir: str = Field(default="alarm_log", min_length=1)
    # Pending alarm_command rows are read on NOTIFY and at least this often.
    command_poll_s: float = Field(default=1.0, ge=0.05, le=60, allow_inf_nan=False)


class CollectSettings(_Section):
    # 0: every OPC UA device in the main process's event loop; N: spread over N worker
    # processes (collector/opcua/workers.py), because asyncua's pure-Python decoding fills one
    # core's loop at roughly 16-17k changes/s beside the hub, historian and rules.
    opcua_workers: int = Field(default=0, ge=0, le=64)


class ApiSettings(_Section):
    # `hazardwatch api` (api/). The token-signing secret is never here: HAZARDWATCH_JWT_SECRET or
    # HAZARDWATCH_JWT_SECRET_FILE (api/settings.py), so replicas share it and the repo never holds it.
    host: str = Field(default="127.0.0.1", min_length=1)
    port: int = Field(default=8000, ge=1, le=65535)
    access_token_min: float = Field(default=15.0, ge=1, le=24 * 60, allow_inf_nan=False)
    refresh_token_h: float = Field(
        default=12.0, ge=0.1, le=30 * 24, allow_inf_nan=False
    )  # one shift and a half
    # Lockout: this many wrong passwords in a row lock the account for lockout_min (journaled).
    login_max_failures: int = Field(default=5, ge=1, le=100)
    lockout_min: float = Field(default=15.0, ge=1, le=24 * 60, allow_inf_nan=False)
    # Login attempts per client address per minute, per API process (answered 429 beyond).
    login_per_min: int = Field(default=20, ge=1, le=10_000)
    max_body_bytes: int = Field(default=64 * 1024, ge=1024, le=16 * 1024 * 1024)
    request_timeout_s: float = Field(default=30.0, ge=1, le=600, allow_inf_nan=False)
    # How long an alarm command waits for the engine to apply it before answering 202 pending.
    command_wait_s: float = Field(default=5.0, ge=0, le=60, allow_inf_nan=False)
    # Browser origins allowed to call the API from other sites; empty: none (same origin only).
    cors_origins: tuple[str, ...] = ()
    # The longest history window one request may ask for, and the most points it may return.
    max_history_days: int = Field(default=400, ge=1, le=36_600)
    max_history_points: int = Field(default=100_000, ge=100, le=10_000_000)
    pool_size: int = Field(default=10, ge=1, le=200)
    # The engine counts as down (readyz 503) when its heartbeat is older than this.
    engine_stale_s: float = Field(default=30.0, ge=1, le=3600, allow_inf_nan=False)
    # The live stream (api/live_hub.py): chunks queued for one client before it is dropped as too
    # slow; at most one value event per client per interval; a keepalive comment after this much
    # silence (below any proxy's idle timeout); a client taking no bytes this long is cut.
    stream_queue_max: int = Field(default=1000, ge=10, le=100_000)
    stream_value_interval_s: float = Field(default=1.0, ge=0.1, le=60, allow_inf_nan=False)
    stream_keepalive_s: float = Field(default=15.0, ge=1, le=300, allow_inf_nan=False)
    stream_send_timeout_s: float = Field(default=30.0, ge=1, le=600, allow_inf_nan=False)
    # A stream opened with an API key ends after this long and must reconnect (a revoked key or a
    # disabled user then stops streaming); one opened with a token ends when the token expires.
    stream_key_session_s: float = Field(default=3600.0, ge=60, le=86400, allow_inf_nan=False)


_HTTP_URL = r"^https?://[^\s/?#]+(/[^\s?#]*)?$"


class AckDeadlines(_Section):
    # Seconds an alarm of each priority may stay unacknowledged before the boards show it as
    # overdue (DOMAIN.md: escalate unacknowledged high alarms after 5 min, critical after 2 min).
    critical: float = Field(default=120.0, ge=1, le=86400, allow_inf_nan=False)
    high: float = Field(default=300.0, ge=1, le=86400, allow_inf_nan=False)
    medium: float = Field(default=900.0, ge=1, le=86400, allow_inf_nan=False)
    low: float = Field(default=1800.0, ge=1, le=86400, allow_inf_nan=False)


class GrafanaSettings(_Section):
    # `hazardwatch grafana build|push` (dashboards/). Both addresses are as a browser in the
    # control room reaches them: Grafana's alarm rows link to the console's alarm detail, and
    # the console's hazard source cards link to Grafana's detail board (none when url is "").
    url: str = Field(default="", pattern=r"^$|" + _HTTP_URL)
    console_url: str = Field(default="http://127.0.0.1:8000/console/", pattern=_HTTP_URL)
    # Stable identities in Grafana: a second push updates, never duplicates.
    folder_uid: str = Field(default="hazardwatch", pattern=r"^[A-Za-z0-9_-]{1,40}$")
    folder_title: str = Field(default="HazardWatch 重大危险源", min_length=1, max_length=200)
    datasource_uid: str = Field(default="hazardwatch-pg", pattern=r"^[A-Za-z0-9_-]{1,40}$")
    datasource_name: str = Field(default="HazardWatch historian", min_length=1, max_length=200)
    # How often open boards re-run their queries ("" : never); Grafana's own duration syntax.
    refresh: str = Field(default="30s", pattern=r"^$|^[1-9][0-9]{0,4}(s|m|h)$")
    ack_deadline_s: AckDeadlines = AckDeadlines()


class Settings(_Section):
    # Everything kept on local disk (spool, tag-id cache, OPC UA client certificates, rule
    # state, heartbeat, the demo's embedded database) lives under this one directory, so
    # two processes can be kept apart (each locks it) and a deployment backs up or wipes
    # one place. Relative: against the working directory.
    data_dir: str = Field(default="var", min_length=1)
    storage: StorageSettings = StorageSettings()
    rules: RuleSettings = RuleSettings()
    collect: CollectSettings = CollectSettings()
    alarms: AlarmSettings = AlarmSettings()
    api: ApiSettings = ApiSettings()
    grafana: GrafanaSettings = GrafanaSettings()

    def local_path(self, path: str | Path) -> Path:
        """``path`` itself if absolute, else relative to ``data_dir``."""
        p = Path(path)
        return p if p.is_absolute() else Path(self.data_dir) / p

    @property
    def spool_path(self) -> Path:
        return self.local_path(self.storage.spool_dir)

    @property
    def embedded_path(self) -> Path:
        return self.local_path(self.storage.embedded_dir)
