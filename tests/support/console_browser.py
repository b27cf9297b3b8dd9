"""Driving the operator console in Debian's chromium through Playwright (its own browser
download is unreachable here; scripts/services.sh installs /usr/bin/chromium). A missing
chromium fails the test, locally too: `make test` runs scripts/services.sh first."""

from __future__ import annotations

import os
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from playwright.async_api import Browser, ConsoleMessage, Page, Request, Response, async_playwright, expect

CHROMIUM = Path("/usr/bin/chromium")
DOCS_IMG = Path(__file__).resolve().parents[2] / "docs" / "img"
VIEWPORT = {"width": 1400, "height": 900}


def screenshot_dir(tmp_path: Path) -> Path:
    """docs/img/ with HW_SCREENSHOTS=1 (the README's pictures), else the test's tmp_path."""
    if os.environ.get("HW_SCREENSHOTS") == "1":
        DOCS_IMG.mkdir(parents=True, exist_ok=True)
        return DOCS_IMG
    return tmp_path


@asynccontextmanager
async def chromium() -> AsyncIterator[Browser]:
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: scripts/services.sh installs Debian's chromium")
    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
        try:
            yield browser
        finally:
            await browser.close()


async def new_page(browser: Browser) -> Page:
    return await browser.new_page(viewport=VIEWPORT, locale="zh-CN")  # type: ignore[arg-type]


async def log_in(page: Page, base: str, username: str, password: str) -> None:
    """Through the login form, until the live stream is connected."""
    await page.goto(base.rstrip("/") + "/")
    await expect(page.locator("#login-form")).to_be_visible()
    await page.fill("input[name=username]", username)
    await page.fill("input[name=password]", password)
    await page.click("#login-form button[type=submit]")
    await expect(page.locator("#main")).to_be_visible()
    await expect(page.locator("#link")).to_have_text("● 实时")


def watch(page: Page) -> list[str]:
    """What went wrong on the page: errors it logs (a CSP violation among them), uncaught
    exceptions, and answers of 400 or more other than the 409 refusals a test provokes."""
    errors: list[str] = []

    def on_console(msg: ConsoleMessage) -> None:
        if msg.type == "error" and not msg.text.startswith("Failed to load resource"):
            errors.append(msg.text)

    def on_response(r: Response) -> None:
        if r.status >= 400 and r.status != 409:
            errors.append(f"{r.status} {r.request.method} {r.url}")

    def on_request(r: Request) -> None:
        if "token=" in r.url or "access_token" in r.url:
            errors.append(f"a token in a URL: {r.url}")

    page.on("console", on_console)
    page.on("response", on_response)
    page.on("request", on_request)
    page.on("pageerror", lambda exc: errors.append(f"uncaught: {exc}"))
    return errors


def has_class(name: str) -> re.Pattern[str]:
    return re.compile(rf"(^|\s){re.escape(name)}(\s|$)")
