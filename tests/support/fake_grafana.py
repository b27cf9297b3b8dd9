"""A loopback Grafana for ``hazardwatch grafana push``: exactly the HTTP API endpoints the push calls,
with Grafana 11's semantics for them, over a real socket (tests.support.http_server).

What it keeps as Grafana does: a Bearer token checked on every /api call but /api/health (401, or 403
for a Viewer's writes); folders, datasources and dashboards by uid with versions counting up from 1;
a folder title and a datasource name or uid unique (409); a folder update with a stale version 412;
a datasource's password kept encrypted and shown only as ``secureJsonFields.password``, kept on an
update that leaves ``secureJsonData`` out; a read-only (file-provisioned) datasource 403 on update,
a provisioned dashboard 400 on save. Every request is recorded (``server.requests``).
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass, field
from typing import Any

from tests.support.http_server import LoopbackHttpServer, RawRequest, Reply

__all__ = ["ADMIN_TOKEN", "VIEWER_TOKEN", "FakeGrafana"]

ADMIN_TOKEN = "glsa_admin_0123456789abcdef"
VIEWER_TOKEN = "glsa_viewer_0123456789abcdef"
WRITES = ("POST", "PUT", "DELETE", "PATCH")


def _error(code: int, message: str, **more: Any) -> Reply:
    return Reply(code, {"message": message, **more})


@dataclass
class FakeGrafana:
    version: str = "11.6.0"
    prefix: str = ""  # a Grafana served under a sub-path ("/grafana"), as behind a reverse proxy
    tokens: dict[str, str] = field(default_factory=lambda: {ADMIN_TOKEN: "Admin", VIEWER_TOKEN: "Viewer"})
    folders: dict[str, dict[str, Any]] = field(default_factory=dict)
    datasources: dict[str, dict[str, Any]] = field(default_factory=dict)
    passwords: dict[str, str] = field(default_factory=dict)  # datasource uid -> secureJsonData.password
    dashboards: dict[str, dict[str, Any]] = field(default_factory=dict)  # uid -> {dashboard, meta}
    # (method, path) -> the reply to give instead, once (a 500, a hang): what a sick Grafana does
    faults: dict[tuple[str, str], object] = field(default_factory=dict)
    server: LoopbackHttpServer = field(init=False)
    _next_id: int = 1

    def __post_init__(self) -> None:
        self.server = LoopbackHttpServer(self.handle)

    @property
    def url(self) -> str:
        return self.server.url + self.prefix + "/"

    async def start(self) -> FakeGrafana:
        await self.server.start()
        return self

    async def stop(self) -> None:
        await self.server.stop()

    @property
    def requests(self) -> list[RawRequest]:
        return self.server.requests

    def writes(self) -> list[tuple[str, str]]:
        """(method, path) of every write request, in order (paths without the prefix)."""
        return [(r.method, r.path.removeprefix(self.prefix)) for r in self.requests if r.method in WRITES]

    def bodies(self, method: str, path: str) -> list[dict[str, Any]]:
        return [
            json.loads(r.body)
            for r in self.requests
            if (r.method, r.path.removeprefix(self.prefix)) == (method, path)
        ]

    def _id(self) -> int:
        self._next_id += 1
        return self._next_id

    # --- dispatch -----------------------------------------------------------------------------

    async def handle(self, request: RawRequest) -> object:
        path = request.path.removeprefix(self.prefix) if request.path.startswith(self.prefix + "/") else ""
        fault = self.faults.pop((request.method, path), None)
        if fault is not None:
            return fault
        if not path.startswith("/api/"):
            return Reply(404, None, raw=b"<html>404 page not found</html>")
        if path == "/api/health" and request.method == "GET":
            return Reply(200, {"commit": "fake", "database": "ok", "version": self.version})
        role = self._role(request)
        if role is None:
            return _error(401, "Invalid API key", messageId="api-keys.invalid", statusCode=401)
        if request.method in WRITES and role != "Admin":
            return _error(403, "You'll need additional permissions to perform this action.")
        body: Any = json.loads(request.body) if request.body else None
        parts = path.removeprefix("/api/").split("/")
        route = (request.method, *parts)
        match route:
            case ("GET", "folders", uid):
                return self._get_folder(uid)
            case ("POST", "folders"):
                return self._create_folder(body)
            case ("PUT", "folders", uid):
                return self._update_folder(uid, body)
            case ("GET", "datasources", "uid", uid):
                return self._get_datasource(uid)
            case ("POST", "datasources"):
                return self._create_datasource(body)
            case ("PUT", "datasources", "uid", uid):
                return self._update_datasource(uid, body)
            case ("GET", "dashboards", "uid", uid):
                return self._get_dashboard(uid)
            case ("POST", "dashboards", "db"):
                return self._save_dashboard(body)
        return _error(404, "Not found")

    def _role(self, request: RawRequest) -> str | None:
        scheme, _, token = (request.header("Authorization") or "").partition(" ")
        return self.tokens.get(token) if scheme == "Bearer" else None

    # --- folders ------------------------------------------------------------------------------

    def _folder_view(self, folder: dict[str, Any]) -> dict[str, Any]:
        return {**folder, "url": f"/dashboards/f/{folder['uid']}/", "canSave": True, "canEdit": True}

    def _get_folder(self, uid: str) -> Reply:
        if uid not in self.folders:
            return _error(404, "folder not found", messageId="folder.notFound", statusCode=404)
        return Reply(200, self._folder_view(self.folders[uid]))

    def _create_folder(self, body: dict[str, Any]) -> Reply:
        uid, title = body.get("uid") or f"f{self._id()}", body.get("title") or ""
        if not title:
            return _error(400, "folder title cannot be empty")
        if uid in self.folders or uid in self.dashboards:
            return _error(409, "a folder or dashboard with the same uid already exists")
        if any(f["title"] == title for f in self.folders.values()):
            return _error(409, "a folder with the same name already exists in the current location")
        self.folders[uid] = {"id": self._id(), "uid": uid, "title": title, "version": 1}
        return Reply(200, self._folder_view(self.folders[uid]))

    def _update_folder(self, uid: str, body: dict[str, Any]) -> Reply:
        folder = self.folders.get(uid)
        if folder is None:
            return _error(404, "folder not found")
        if not body.get("overwrite") and body.get("version") != folder["version"]:
            return _error(412, "the folder has been changed by someone else", status="version-mismatch")
        title = body.get("title") or folder["title"]
        if any(f["title"] == title and f["uid"] != uid for f in self.folders.values()):
            return _error(409, "a folder with the same name already exists in the current location")
        folder.update(title=title, version=folder["version"] + 1)
        return Reply(200, self._folder_view(folder))

    # --- datasources --------------------------------------------------------------------------

    def _datasource_view(self, uid: str) -> dict[str, Any]:
        ds = copy.deepcopy(self.datasources[uid])
        ds["secureJsonFields"] = {"password": True} if self.passwords.get(uid) else {}
        return ds

    def _get_datasource(self, uid: str) -> Reply:
        if uid not in self.datasources:
            return _error(404, "Data source not found")
        return Reply(200, self._datasource_view(uid))

    _DS_FIELDS = ("name", "type", "access", "url", "user", "basicAuth", "isDefault", "jsonData")

    def _create_datasource(self, body: dict[str, Any]) -> Reply:
        uid = body.get("uid") or f"ds{self._id()}"
        if uid in self.datasources:
            return _error(409, "data source with the same uid already exists")
        if any(d["name"] == body.get("name") for d in self.datasources.values()):
            return _error(409, "data source with the same name already exists")
        ds: dict[str, Any] = {
            "id": self._id(), "uid": uid, "orgId": 1, "name": "", "type": "", "typeLogoUrl": "",
            "access": "proxy", "url": "", "user": "", "database": "", "basicAuth": False,
            "basicAuthUser": "", "withCredentials": False, "isDefault": False, "jsonData": {},
            "version": 1, "readOnly": False,
        }  # fmt: skip
        ds.update({k: copy.deepcopy(body[k]) for k in self._DS_FIELDS if k in body})
        self.datasources[uid] = ds
        self._store_secrets(uid, body)
        view = self._datasource_view(uid)
        return Reply(
            200, {"datasource": view, "id": ds["id"], "message": "Datasource added", "name": ds["name"]}
        )

    def _update_datasource(self, uid: str, body: dict[str, Any]) -> Reply:
        ds = self.datasources.get(uid)
        if ds is None:
            return _error(404, "Data source not found")
        if ds["readOnly"]:
            return _error(403, "Cannot update read-only data source")
        if body.get("version") is not None and body["version"] < ds["version"]:
            return _error(409, "Datasource has already been updated by someone else")
        if any(d["name"] == body.get("name") and u != uid for u, d in self.datasources.items()):
            return _error(409, "data source with the same name already exists")
        # a PUT replaces the fields (absent ones take their defaults) but keeps unsent secrets
        ds.update({"user": "", "basicAuth": False, "isDefault": False, "jsonData": {}})
        ds.update({k: copy.deepcopy(body[k]) for k in self._DS_FIELDS if k in body})
        ds["version"] += 1
        self._store_secrets(uid, body)
        view = self._datasource_view(uid)
        return Reply(
            200, {"datasource": view, "id": ds["id"], "message": "Datasource updated", "name": ds["name"]}
        )

    def _store_secrets(self, uid: str, body: dict[str, Any]) -> None:
        secure = body.get("secureJsonData") or {}
        if "password" in secure:
            self.passwords[uid] = secure["password"]

    # --- dashboards ---------------------------------------------------------------------------

    def _get_dashboard(self, uid: str) -> Reply:
        if uid not in self.dashboards:
            return _error(404, "Dashboard not found")
        return Reply(200, copy.deepcopy(self.dashboards[uid]))

    def _save_dashboard(self, body: dict[str, Any]) -> Reply:
        board = copy.deepcopy(body.get("dashboard") or {})
        uid, title = board.get("uid"), board.get("title")
        if not uid or not title:
            return _error(400, "Dashboard title cannot be empty" if not title else "uid required here")
        folder_uid = body.get("folderUid") or ""
        if folder_uid and folder_uid not in self.folders:
            return _error(400, "folder not found")
        existing = self.dashboards.get(uid)
        if existing is not None and existing["meta"].get("provisioned"):
            return _error(400, "Cannot save provisioned dashboard")
        version = 1
        if existing is not None:
            if not body.get("overwrite") and board.get("version") != existing["dashboard"]["version"]:
                return _error(
                    412, "The dashboard has been changed by someone else", status="version-mismatch"
                )
            version = existing["dashboard"]["version"] + 1
        if not body.get("overwrite") and any(
            d["dashboard"]["title"] == title and d["meta"]["folderUid"] == folder_uid and u != uid
            for u, d in self.dashboards.items()
        ):
            return _error(
                412, "A dashboard with the same name in the folder already exists", status="name-exists"
            )
        board_id = existing["dashboard"]["id"] if existing else self._id()
        board.update(id=board_id, uid=uid, version=version)
        folder = self.folders.get(folder_uid, {})
        self.dashboards[uid] = {
            "dashboard": board,
            "meta": {
                "type": "db", "slug": title.lower().replace(" ", "-"), "version": version,
                "folderUid": folder_uid, "folderTitle": folder.get("title", "General"),
                "folderId": folder.get("id", 0), "provisioned": False, "canSave": True,
            },
        }  # fmt: skip
        return Reply(
            200,
            {
                "id": board_id,
                "uid": uid,
                "status": "success",
                "version": version,
                "url": f"/d/{uid}/",
                "folderUid": folder_uid,
            },
        )
