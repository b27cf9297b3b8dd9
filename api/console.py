"""The operator console: ``GET /`` redirects to ``/console/``, which serves the static files of
``api/console_static/`` (package data). Only files present when the app was built are served
(an index of names, so no request path ever reaches the file system); none need a token."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, HTTPException
from fastapi.responses import FileResponse, RedirectResponse

__all__ = ["STATIC", "router"]

STATIC = Path(__file__).resolve().parent / "console_static"
_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
    ".png": "image/png",
}
_PLAIN = "text/plain; charset=utf-8"  # LICENSE files and anything else vendored


def _index(root: Path) -> dict[str, Path]:
    if not root.is_dir():
        return {}
    return {p.relative_to(root).as_posix(): p for p in sorted(root.rglob("*")) if p.is_file()}


_FILES = _index(STATIC)

router = APIRouter(include_in_schema=False)


@router.get("/")
async def root() -> RedirectResponse:
    return RedirectResponse("/console/", status_code=307)


@router.get("/console")
async def console_bare() -> RedirectResponse:
    return RedirectResponse("/console/", status_code=307)


@router.get("/console/{name:path}")
async def console_file(name: str) -> FileResponse:
    path = _FILES.get(name or "index.html")
    if path is None:
        raise HTTPException(404, "not found")
    # revalidated on every load (ETag), so a new release's files are picked up at once
    return FileResponse(
        path, media_type=_TYPES.get(path.suffix, _PLAIN), headers={"Cache-Control": "no-cache"}
    )
