"""The operator console in a real browser: Debian's chromium driven by Playwright against a real
API server (api.server's uvicorn on a loopback port) over a seeded database, with the real alarm engine.

An operator logs in, sees an alarm the engine raises appear live (no reload), acknowledges it
through the dialog and sees its state change, then opens the trend of the alarmed tag (history
with limit lines; a drag zooms in and re-queries). The bureau sees its county's enterprises and
supervises (督办) an alarm. An alarm's detail (#alarm?key=, where Grafana's alarm tables link)
opens from a fresh tab through the login and from the lists; the console links to Grafana's
hazard source board only when settings.grafana.url is set. Also: the stream resuming after a
server restart, token refresh, a pending command followed until applied, and static files
served by name only. Screenshots go
to docs/img/ with HW_SCREENSHOTS=1, else tmp_path. tests/e2e/test_console_demo.py does the
first over the whole chain, the simulated plant raising the alarm.
"""

from __future__ import annotations

import asyncio
import math
import re
import socket
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import quote

import httpx
import numpy as np
import psycopg
import pytest
from playwright.async_api import Browser, Locator, Page, Route, expect

from alarms.rationale import RationaleDefaults, defaults_for
from api.app import ApiConfig, create_app
from api.server import ApiServer, server_config
from core.batch import ReadingBatch
from core.clock import SystemClock
from core.plant import Plant
from core.quality import Quality
from core.settings import ApiSettings
from storage.writer import BatchWriter
from tests.api.conftest import PASSWORD, PLANT, SECRET
from tests.support.api_engine import AA_GAS, AA_HH, BB_GAS, running_engine
from tests.support.console_browser import chromium, has_class, new_page, screenshot_dir, watch
from tests.support.console_browser import log_in as console_log_in
from tests.support.waiting import eventually

TAG = "AA.V1.LT1"  # the tag of AA_HH; limits h 8, hh 9 (tests/core/data/two_enterprises.yaml)
GRAFANA = "http://grafana.test:3000"  # settings.grafana.url of the link tests; nothing listens there
TIMEOUT_MS = 15_000


@pytest.fixture
def shots(tmp_path: Path) -> Path:
    return screenshot_dir(tmp_path)


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    async with chromium() as b:
        yield b


class LiveServer:
    """The API (console included) served by api.server on one loopback port, on this loop;
    stopped and started again on the same port as a restarted replica would be."""

    def __init__(
        self,
        dsn: str,
        plant: Plant,
        settings: ApiSettings | None = None,
        grafana_url: str = "",
        rationale: RationaleDefaults | None = None,
    ) -> None:
        self.dsn = dsn
        self.plant = plant
        self.settings = settings or ApiSettings(command_wait_s=10.0)
        self.grafana_url = grafana_url
        self.rationale = rationale
        probe = socket.socket()
        probe.bind(("127.0.0.1", 0))
        self.port = probe.getsockname()[1]
        probe.close()
        self.url = f"http://127.0.0.1:{self.port}"
        self._srv: ApiServer | None = None
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        config = ApiConfig(self.dsn, SECRET, self.settings, self.plant, self.rationale, self.grafana_url)
        app = create_app(config)
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", self.port))
        # as `hazardwatch api` serves it (streams ended first at shutdown); signals stay pytest's
        self._srv = srv = ApiServer(server_config(app, "127.0.0.1", self.port), embedded=True)
        self._task = task = asyncio.create_task(srv.serve(sockets=[sock]))
        await eventually(lambda: srv.started or task.done(), timeout=20)
        assert srv.started, task.exception() if task.done() else "uvicorn did not start"

    async def stop(self) -> None:
        if self._srv is not None and self._task is not None:
            self._srv.should_exit = True
            await asyncio.wait_for(self._task, 20)
            self._srv = self._task = None


@pytest.fixture
async def live(seeded: str, plant: Plant) -> AsyncIterator[LiveServer]:
    s = LiveServer(seeded, plant)
    await s.start()
    try:
        yield s
    finally:
        await s.stop()


@pytest.fixture
def server(live: LiveServer) -> str:
    return live.url


async def write_readings(dsn: str, tag: str, hours: float = 24.0, step_s: int = 20, offset_s: int = 0) -> int:
    """A wave through the tag's limits for the last ``hours`` into reading, reading_1m and
    tag_latest (the historian's own writer, closed so that every minute is rolled up)."""
    async with await psycopg.AsyncConnection.connect(dsn) as conn:
        row = await (await conn.execute("SELECT id FROM tag WHERE key = %s", [tag])).fetchone()
    assert row is not None, tag
    now_us = (SystemClock().now_us() // 1_000_000 + offset_s) * 1_000_000
    n = int(hours * 3600 / step_s)
    ts = now_us - np.arange(n, 0, -1, dtype=np.int64) * step_s * 1_000_000
    values = 7.5 + 2.0 * np.sin(np.arange(n) * 2 * math.pi / 540)  # 7.5 ± 2 in 3 h: crosses H 8 and HH 9
    batch = ReadingBatch.from_rows(
        [(int(row[0]), int(t), float(v), int(Quality.GOOD)) for t, v in zip(ts, values, strict=True)]
    )
    writer = await BatchWriter.connect(dsn, np.array([row[0]], dtype=np.int32))
    try:
        await writer.write_resolved(batch)
    finally:
        await writer.close()
    return n


async def log_in(page: Page, base: str, username: str) -> None:
    await console_log_in(page, base, username, PASSWORD)


async def test_operator_sees_a_new_alarm_live_acknowledges_it_and_opens_its_trend(
    server: str, seeded: str, plant: Plant, browser: Browser, shots: Path, tmp_path: Path
) -> None:
    await write_readings(seeded, TAG)
    async with running_engine(plant, seeded, tmp_path / "alarms") as engine:
        page = await new_page(browser)
        errors = watch(page)
        await log_in(page, server, "op_aa")
        await expect(page.locator("#alarm-empty")).to_be_visible()

        await engine.raise_(AA_HH)  # no reload from here on: the stream brings it
        row = page.locator(f'tr[data-key="{AA_HH}"]')
        await expect(row).to_be_visible(timeout=TIMEOUT_MS)
        await expect(row.locator("td.status")).to_have_text("未确认")
        await expect(row).to_have_class(has_class("unacked"))
        await expect(row.locator(".prio")).to_have_text("高")
        beeps = page.locator("#mute")
        await expect(beeps).to_have_attribute("data-beeps", "0")  # high: no sound

        await engine.raise_(AA_GAS)  # critical: listed first (both unacknowledged) and beeps
        gas = page.locator(f'tr[data-key="{AA_GAS}"]')
        await expect(gas).to_be_visible(timeout=TIMEOUT_MS)
        await expect(beeps).to_have_attribute("data-beeps", "1")
        await expect(page.locator("#alarm-rows tr").first).to_have_attribute("data-key", AA_GAS)
        await page.screenshot(path=shots / "console-alarms.png")

        # a refusal shows the engine's reason: critical alarms are never shelved
        dialog = page.locator("#dialog")
        await gas.locator("button[data-action=shelve]").click()
        await dialog.locator("textarea[name=reason]").fill("检修")
        await dialog.locator("#dialog-ok").click()
        await expect(page.locator("#dialog-result")).to_have_text(
            re.compile("^被拒绝：.*critical alarms cannot be shelved"), timeout=TIMEOUT_MS
        )
        await dialog.locator("#dialog-cancel").click()
        await expect(gas.locator("td.status")).to_have_text("未确认")

        await gas.locator("button[data-action=ack]").click()
        await expect(dialog).to_be_visible()
        await dialog.locator("textarea[name=comment]").fill("现场确认氨气浓度偏高，已启动应急处置")
        await dialog.locator("#dialog-ok").click()
        await expect(page.locator("#dialog-result")).to_have_text(
            "已执行：当前状态 已确认", timeout=TIMEOUT_MS
        )
        await dialog.locator("#dialog-cancel").click()
        await expect(gas.locator("td.status")).to_have_text("已确认")
        await expect(gas).not_to_have_class(has_class("unacked"))
        # acknowledged sorts after unacknowledged, whatever its priority
        await expect(page.locator("#alarm-rows tr").first).to_have_attribute("data-key", AA_HH)
        await expect(page.locator("#alarm-rows tr").last).to_have_attribute("data-key", AA_GAS)

        # handling feedback (处置反馈): a cause category, what was done, by whom
        await gas.locator("button[data-action=feedback]").click()
        await dialog.locator("select[name=cause_category]").select_option("leak")
        await dialog.locator("textarea[name=action]").fill("关闭根部阀，启动喷淋吸收")
        await expect(dialog.locator("input[name=handler]")).to_have_value("张伟")
        await dialog.locator("#dialog-ok").click()
        await expect(page.locator("#dialog-result")).to_have_text(
            "已执行：当前状态 已确认", timeout=TIMEOUT_MS
        )
        await dialog.locator("#dialog-cancel").click()
        async with await psycopg.AsyncConnection.connect(seeded) as conn:
            cur = await conn.execute(
                "SELECT actor, detail FROM alarm_journal WHERE alarm_key = %s AND action = 'FEEDBACK'",
                [AA_GAS],
            )
            assert await cur.fetchall() == [
                (
                    "张伟 (op_aa)",
                    {"cause_category": "leak", "action": "关闭根部阀，启动喷淋吸收", "handler": "张伟"},
                )
            ]

        # the hazard sources: AA's two, by the worst active priority (BB's are not in scope)
        await page.click("nav a[data-view=sources]")
        cards = page.locator("#source-cards article")
        await expect(cards).to_have_count(2)
        await expect(page.locator('article[data-code="AA-HS1"]')).to_have_class(has_class("st-critical"))
        await expect(page.locator('article[data-code="AA-HS1"] .grade')).to_have_text("二级")
        await expect(page.locator('article[data-code="AA-HS2"]')).to_have_class(has_class("st-normal"))
        await page.screenshot(path=shots / "console-sources.png")

        await page.click("nav a[data-view=alarms]")
        await row.locator("a.trend-link").click()
        chart = page.locator("#trend-chart")
        await expect(chart).to_have_attribute("data-tag", TAG, timeout=TIMEOUT_MS)
        await expect(chart.locator("canvas")).to_be_visible()
        await expect(chart).to_have_attribute("data-limits-drawn", "2")
        assert "H=8" in (await chart.get_attribute("data-limits") or "")
        assert int(await chart.get_attribute("data-points") or 0) > 100
        hour = await chart.get_attribute("data-bucket")
        assert hour == "raw" or int(hour or 60) < 60  # the last hour, from raw readings
        # a new reading reaches the open chart through the stream's value events
        shown = int(await chart.get_attribute("data-points") or 0)
        await write_readings(seeded, TAG, hours=1 / 3600, step_s=1, offset_s=1)
        await expect(chart).to_have_attribute("data-points", str(shown + 1), timeout=TIMEOUT_MS)

        await page.select_option("#trend-range", "86400")
        await page.click("#trend-form button[type=submit]")
        await expect(chart).to_have_attribute("data-bucket", "60")  # 24 hours: minute rollups
        assert int(await chart.get_attribute("data-points") or 0) > 1000
        await expect(chart).to_have_attribute("data-limits-drawn", "2")
        first_bucket = "60"
        await page.screenshot(path=shots / "console-trend.png")

        # drag across a tenth of the plot: that window is re-queried, from raw readings (raw, or
        # buckets under a minute: reading_1m cannot serve them)
        over = chart.locator(".u-over")
        box = await over.bounding_box()
        assert box is not None
        y = box["y"] + box["height"] / 2
        await page.mouse.move(box["x"] + box["width"] * 0.88, y)
        await page.mouse.down()
        await page.mouse.move(box["x"] + box["width"] * 0.99, y, steps=8)
        await page.mouse.up()
        await expect(chart).not_to_have_attribute("data-bucket", first_bucket or "", timeout=TIMEOUT_MS)
        zoomed = await chart.get_attribute("data-bucket")
        assert zoomed == "raw" or int(zoomed or 60) < 60, zoomed
        assert int(await chart.get_attribute("data-points") or 0) > 100
        await expect(chart).to_have_attribute("data-limits-drawn", "2")

        assert not errors, errors


async def test_bureau_sees_its_jurisdiction_and_supervises_an_alarm_the_operator_sees_live(
    server: str, seeded: str, plant: Plant, browser: Browser, shots: Path, tmp_path: Path
) -> None:
    async with running_engine(plant, seeded, tmp_path / "alarms") as engine:
        await engine.raise_(AA_HH, BB_GAS)
        operator = await new_page(browser)
        bureau = await new_page(browser)
        errors = [watch(operator), watch(bureau)]
        await log_in(operator, server, "op_aa")
        mine = operator.locator(f'tr[data-key="{AA_HH}"]')
        await expect(mine).to_be_visible()
        await expect(mine.locator("button[data-action=respond]")).to_have_count(0)

        await log_in(bureau, server, "bureau_xy")  # 孝义市: AA only, never BB (文水县)
        await bureau.click("nav a[data-view=bureau]")
        county = bureau.locator('section.county[data-county="孝义市"]')
        await expect(county).to_be_visible(timeout=TIMEOUT_MS)
        await expect(county.locator('tr[data-code="AA"]')).to_be_visible()
        await expect(bureau.locator("section.county")).to_have_count(1)
        row = bureau.locator(f'#bureau-alarms tr[data-key="{AA_HH}"]')
        await expect(row).to_be_visible()
        await expect(bureau.locator("#bureau-alarms tr")).to_have_count(1)  # not BB's gas alarm

        await row.locator("button[data-action=supervise]").click()
        dialog = bureau.locator("#dialog")
        await dialog.locator("textarea[name=text]").fill("请立即核查液位高高报警原因并反馈")
        await dialog.locator("#dialog-ok").click()
        await expect(bureau.locator("#dialog-result")).to_contain_text("已执行", timeout=TIMEOUT_MS)
        await dialog.locator("#dialog-cancel").click()
        async with await psycopg.AsyncConnection.connect(seeded) as conn:
            cur = await conn.execute(
                "SELECT actor, detail->>'text' FROM alarm_journal WHERE alarm_key = %s AND action = 'SUPERVISE'",
                [AA_HH],
            )
            assert await cur.fetchall() == [("孙强 (bureau_xy)", "请立即核查液位高高报警原因并反馈")]
        # the enterprise's operator sees the supervision arrive, and may answer it
        await expect(mine.locator(".supervised")).to_have_text("督办", timeout=TIMEOUT_MS)
        await expect(mine.locator("button[data-action=respond]")).to_be_visible()

        # the city bureau sees both counties; picking an enterprise narrows its alarms
        await bureau.click("#logout")
        await log_in(bureau, server, "bureau_city")
        await bureau.click("nav a[data-view=bureau]")
        await expect(bureau.locator("section.county")).to_have_count(2, timeout=TIMEOUT_MS)
        await expect(bureau.locator("#bureau-alarms tr")).to_have_count(2)
        await engine.raise_(AA_GAS)  # the counts follow the alarms while the view is open
        await expect(bureau.locator('tr[data-code="AA"] td').nth(2)).to_have_text("2", timeout=TIMEOUT_MS)
        await expect(bureau.locator('tr[data-code="AA"]')).to_have_class(has_class("st-critical"))
        await expect(bureau.locator("#bureau-alarms tr")).to_have_count(3)
        await bureau.locator('tr[data-code="BB"]').click()
        await expect(bureau.locator('tr[data-code="BB"]')).to_have_class(has_class("picked"))
        await expect(bureau.locator("#bureau-alarms tr")).to_have_count(1)
        await expect(bureau.locator("#bureau-alarms tr")).to_have_attribute("data-key", BB_GAS)
        await bureau.locator('tr[data-code="BB"]').click()
        await expect(bureau.locator("#bureau-alarms tr")).to_have_count(3)
        await bureau.screenshot(path=shots / "console-bureau.png")
        assert errors == [[], []]


async def test_a_dropped_stream_resumes_where_it_left_off(
    live: LiveServer, seeded: str, plant: Plant, browser: Browser, tmp_path: Path
) -> None:
    async with running_engine(plant, seeded, tmp_path / "alarms") as engine:
        page = await new_page(browser)
        errors = watch(page)
        await log_in(page, live.url, "op_aa")
        await engine.raise_(AA_HH)
        await expect(page.locator(f'tr[data-key="{AA_HH}"]')).to_be_visible(timeout=TIMEOUT_MS)

        await live.stop()  # the stream drops; the page keeps trying
        await expect(page.locator("#link")).to_have_text("○ 重连中", timeout=TIMEOUT_MS)
        await engine.raise_(AA_GAS)  # while nobody serves the page
        await engine.clear(AA_HH)
        await live.start()
        await expect(page.locator("#link")).to_have_text("● 实时", timeout=30_000)
        # resumed after the last event it saw (Last-Event-ID): the alarm raised meanwhile is
        # there, and the one whose condition cleared meanwhile shows it (returned, unacknowledged)
        gas = page.locator(f'tr[data-key="{AA_GAS}"]')
        await expect(gas).to_be_visible(timeout=TIMEOUT_MS)
        await expect(gas.locator("td.status")).to_have_text("未确认")
        hh = page.locator(f'tr[data-key="{AA_HH}"] td.status')
        await expect(hh).to_have_text("已恢复未确认")
        assert not errors, errors


async def test_a_stream_dropped_before_any_alarm_event_reloads_the_list(
    live: LiveServer, seeded: str, plant: Plant, browser: Browser, tmp_path: Path
) -> None:
    """A quiet plant: no alarm event carried a position before the drop, so the reconnect can
    only start from now; what was raised meanwhile comes from reloading the list (review F5)."""
    async with running_engine(plant, seeded, tmp_path / "alarms") as engine:
        page = await new_page(browser)
        errors = watch(page)
        await log_in(page, live.url, "op_aa")
        await expect(page.locator("#link")).to_have_text("● 实时", timeout=TIMEOUT_MS)
        await live.stop()
        await expect(page.locator("#link")).to_have_text("○ 重连中", timeout=TIMEOUT_MS)
        await engine.raise_(AA_GAS)  # while nobody serves the page
        await live.start()
        await expect(page.locator("#link")).to_have_text("● 实时", timeout=30_000)
        await expect(page.locator(f'tr[data-key="{AA_GAS}"]')).to_be_visible(timeout=TIMEOUT_MS)
        assert not errors, errors


async def test_tokens_are_refreshed_before_they_expire_and_after_a_401(server: str, browser: Browser) -> None:
    page = await new_page(browser)
    errors = watch(page)
    await log_in(page, server, "op_aa")
    stored = "() => JSON.parse(sessionStorage.getItem('hw.tokens'))"
    first = await page.evaluate(stored)
    assert first["access"] and first["refresh"] and "hw.tokens" not in page.url

    # a token the server no longer takes: the call is refused once, refreshed, and retried
    await page.evaluate(
        "(t) => sessionStorage.setItem('hw.tokens', JSON.stringify(t))", {**first, "access": "x"}
    )
    await page.click("nav a[data-view=sources]")
    await expect(page.locator("#source-cards article")).to_have_count(2)
    second = await page.evaluate(stored)
    assert second["access"] not in ("x", first["access"])
    assert [e.split(" ")[0] for e in errors] == ["401"], errors  # the one refusal, nothing else
    errors.clear()

    # one about to expire: refreshed ahead of time by the timer the page sets when it loads
    await page.evaluate(
        "(t) => sessionStorage.setItem('hw.tokens', JSON.stringify(t))", {**second, "expiresAt": 0}
    )
    await page.reload()
    await expect(page.locator("#main")).to_be_visible()
    await page.wait_for_function(
        "(old) => JSON.parse(sessionStorage.getItem('hw.tokens')).access !== old", arg=second["access"]
    )
    assert (await page.evaluate(stored))["expiresAt"] > 0
    assert not errors, errors


async def test_a_command_the_engine_has_not_applied_yet_is_followed_until_it_is(
    seeded: str, plant: Plant, browser: Browser, tmp_path: Path
) -> None:
    live = LiveServer(seeded, plant, ApiSettings(command_wait_s=0))  # answers 202 at once
    await live.start()
    try:
        async with running_engine(plant, seeded, tmp_path / "alarms") as engine:
            await engine.raise_(AA_HH)
        page = await new_page(browser)
        errors = watch(page)
        await log_in(page, live.url, "op_aa")
        row = page.locator(f'tr[data-key="{AA_HH}"]')
        await row.locator("button[data-action=ack]").click()
        await page.locator("#dialog-ok").click()  # nobody applies commands now
        result = page.locator("#dialog-result")
        await expect(result).to_have_text(re.compile("^已提交，等待报警引擎处理"))
        await expect(result).to_have_class("pending")
        async with running_engine(plant, seeded, tmp_path / "alarms"):  # the engine is back
            await expect(result).to_have_text("已执行：当前状态 已确认", timeout=TIMEOUT_MS)
            await page.locator("#dialog-cancel").click()
            await expect(row.locator("td.status")).to_have_text("已确认")
        assert not errors, errors
    finally:
        await live.stop()


def board(enterprise: str, hazard_source: str | None = None) -> str:
    """Grafana's hazard source board for an enterprise and one of its sources (issue 14's link)."""
    query = f"var-enterprise={quote(enterprise, safe='')}"
    if hazard_source is not None:
        query += f"&var-hazard_source={quote(hazard_source, safe='')}"
    return f"{GRAFANA}/d/hw-hazard-source/?{query}"


def alarm_link(base: str, key: str) -> str:
    """The console's alarm detail as Grafana's alarm tables link to it (the key percent-encoded)."""
    return f"{base}/console/#alarm?key={quote(key, safe='')}"


async def answer_as_grafana(page: Page) -> list[str]:
    """What the page's tabs ask of GRAFANA (nothing listens there: the browser is answered here)."""
    asked: list[str] = []

    async def grafana(route: Route) -> None:
        asked.append(route.request.url)
        await route.fulfill(status=200, content_type="text/html", body="<title>Grafana</title>")

    await page.context.route(f"{GRAFANA}/**", grafana)
    return asked


async def opened_by(page: Page, link: Locator) -> str:
    """The address of the tab a click on ``link`` opens (closed again)."""
    async with page.context.expect_page() as opening:
        await link.click()
    tab = await opening.value
    await tab.wait_for_load_state()
    url = tab.url
    await tab.close()
    return url


async def test_an_alarm_link_opened_before_login_shows_the_alarm_after_it(
    seeded: str, plant: Plant, browser: Browser, shots: Path, tmp_path: Path
) -> None:
    """Grafana's alarm tables link to #alarm?key=...: a fresh tab shows the login first, then the
    alarm (journal, priority, actions), which is acknowledged from there and links back to its
    hazard source board. Unknown, foreign and impossible keys are one answer."""
    live = LiveServer(seeded, plant, grafana_url=GRAFANA + "/", rationale=defaults_for(PLANT, plant))
    await live.start()
    try:
        async with running_engine(plant, seeded, tmp_path / "alarms") as engine:
            await engine.raise_(AA_HH, BB_GAS)
            page = await new_page(browser)
            errors = watch(page)
            asked = await answer_as_grafana(page)
            await page.goto(alarm_link(live.url, AA_HH))
            await expect(page.locator("#login-form")).to_be_visible()
            await page.fill("input[name=username]", "op_aa")
            await page.fill("input[name=password]", PASSWORD)
            await page.click("#login-form button[type=submit]")

            view = page.locator("#view-alarm")
            await expect(view).to_be_visible(timeout=TIMEOUT_MS)
            assert page.url == alarm_link(live.url, AA_HH)
            await expect(page.locator("nav a[data-view=alarms]")).to_have_class(has_class("active"))
            await expect(page.locator("#alarm-key")).to_have_text(AA_HH)
            await expect(page.locator("#alarm-title")).to_have_text("液位 高高报")
            facts = view.locator(".detail-state")
            await expect(facts.locator(".prio")).to_have_text("高")
            await expect(facts.locator(".status")).to_have_text("未确认")
            await expect(facts).to_contain_text("AA-HS1")
            rationale = page.locator("#alarm-rationale")  # config/reference's default for HH
            await expect(rationale).to_contain_text("立即核对现场及冗余仪表")
            await expect(rationale).to_contain_text("300 秒")
            journal = page.locator("#alarm-journal tbody tr")
            await expect(journal).to_have_count(1)
            await expect(journal.first).to_have_attribute("data-action", "RAISED")
            await expect(journal.first.locator("td").nth(1)).to_have_text("报警")
            await expect(journal.first.locator("td").nth(2)).to_have_text("正常 → 未确认")
            await expect(journal.first.locator("td").nth(4)).to_have_text("报警引擎")

            actions = page.locator("#alarm-actions")
            trend = actions.locator("a.trend-link")
            await expect(trend).to_have_attribute("href", f"#trend?tag={quote(TAG, safe='')}&range=3600")
            grafana = actions.locator("a.grafana-link")
            await expect(grafana).to_have_attribute("href", board("AA", "AA-HS1"))
            await expect(grafana).to_have_attribute("target", "_blank")
            await expect(grafana).to_have_attribute("rel", "noopener")
            assert await opened_by(page, grafana) == board("AA", "AA-HS1")  # the CSP lets it go
            assert asked == [board("AA", "AA-HS1")]

            # acknowledged from the detail, which follows the alarm's stream event
            await actions.locator("button[data-action=ack]").click()
            dialog = page.locator("#dialog")
            await dialog.locator("textarea[name=comment]").fill("已通知现场核实")
            await dialog.locator("#dialog-ok").click()
            await expect(page.locator("#dialog-result")).to_have_text(
                "已执行：当前状态 已确认", timeout=TIMEOUT_MS
            )
            await dialog.locator("#dialog-cancel").click()
            await expect(facts.locator(".status")).to_have_text("已确认", timeout=TIMEOUT_MS)
            await expect(journal).to_have_count(2)
            acked = journal.nth(1)
            await expect(acked).to_have_attribute("data-action", "ACKED")
            await expect(acked.locator("td").nth(2)).to_have_text("未确认 → 已确认")
            await expect(acked.locator("td").nth(4)).to_have_text("张伟 (op_aa)")
            await expect(actions.locator("button[data-action=ack]")).to_have_count(0)
            await expect(facts).to_contain_text("张伟 (op_aa)")  # acknowledged by
            # a note is journaled with its text (an ack's comment goes to the audit log only)
            await actions.locator("button[data-action=comment]").click()
            await dialog.locator("textarea[name=text]").fill("现场确认为仪表漂移")
            await dialog.locator("#dialog-ok").click()
            await expect(page.locator("#dialog-result")).to_contain_text("已执行", timeout=TIMEOUT_MS)
            await dialog.locator("#dialog-cancel").click()
            await expect(journal).to_have_count(3, timeout=TIMEOUT_MS)
            await expect(journal.nth(2)).to_have_attribute("data-action", "COMMENT")
            await expect(journal.nth(2).locator("td").nth(1)).to_have_text("备注")
            await expect(journal.nth(2).locator("td").nth(5)).to_have_text("现场确认为仪表漂移")
            await page.screenshot(path=shots / "console-alarm.png")

            # the list's rows open the same view
            await page.click("nav a[data-view=alarms]")
            await page.locator(f'tr[data-key="{AA_HH}"] a.detail-link').click()
            await expect(page.locator("#alarm-key")).to_have_text(AA_HH)
            await expect(journal).to_have_count(3)
            assert page.url == alarm_link(live.url, AA_HH)

            # no key, an unknown one, another enterprise's, one no alarm can have: one answer
            missing = page.locator("#alarm-missing")
            await page.goto(alarm_link(live.url, ""))
            await expect(missing).to_have_text("报警不存在或无权查看")
            await expect(page.locator("#alarm-journal")).to_have_count(0)
            await expect(page.locator("#alarm-title")).to_have_text("")
            refused = []
            for key, code in (("AA.V1.LT1:NOPE", 404), (BB_GAS, 404), ("AA.V1.LT1\x01", 422)):
                await page.click("nav a[data-view=alarms]")
                await expect(page.locator("#view-alarms")).to_be_visible()
                await page.goto(alarm_link(live.url, key))
                refused.append(f"{code} GET {live.url}/api/v1/alarms/{quote(key, safe='')}")
                await eventually(lambda: refused[-1] in errors, timeout=10)
                await expect(missing).to_have_text("报警不存在或无权查看")
                await expect(page.locator("#alarm-key")).to_have_text(key)
                await expect(page.locator("#alarm-actions")).to_have_count(0)
            assert errors == refused, errors

            await page.click("nav a[data-view=sources]")
            card = page.locator('article[data-code="AA-HS2"]')
            await expect(card.locator("a.grafana-link")).to_have_attribute("href", board("AA", "AA-HS2"))
    finally:
        await live.stop()


@pytest.mark.parametrize("grafana_url", [GRAFANA, ""], ids=["grafana", "no-grafana"])
async def test_the_console_links_to_grafana_boards_only_when_there_is_grafana(
    seeded: str, plant: Plant, browser: Browser, tmp_path: Path, grafana_url: str
) -> None:
    """Hazard source cards, the bureau's enterprises and alarms, and an alarm's detail link to
    the hazard source board; settings.grafana.url "" shows none of these links."""
    live = LiveServer(seeded, plant, grafana_url=grafana_url)
    await live.start()
    try:
        async with running_engine(plant, seeded, tmp_path / "alarms") as engine:
            await engine.raise_(AA_HH, BB_GAS)
        page = await new_page(browser)
        errors = watch(page)
        asked = await answer_as_grafana(page)
        await console_log_in(page, live.url, "bureau_city", PASSWORD)

        async def links_to(link: Locator, *where: str) -> None:
            if grafana_url:
                await expect(link).to_have_attribute("href", board(*where))
            else:
                await expect(link).to_have_count(0)

        await page.click("nav a[data-view=sources]")
        await expect(page.locator("#source-cards article")).to_have_count(3)
        for enterprise, source in (("AA", "AA-HS1"), ("AA", "AA-HS2"), ("BB", "BB-HS1")):
            await links_to(page.locator(f'article[data-code="{source}"] a.grafana-link'), enterprise, source)

        await page.click("nav a[data-view=bureau]")
        await expect(page.locator("section.county")).to_have_count(2, timeout=TIMEOUT_MS)
        for enterprise in ("AA", "BB"):
            await links_to(page.locator(f'tr[data-code="{enterprise}"] a.grafana-link'), enterprise)
        alarm = page.locator(f'#bureau-alarms tr[data-key="{BB_GAS}"]')
        await links_to(alarm.locator("a.grafana-link"), "BB", "BB-HS1")
        if grafana_url:  # the enterprise's board opens; the row is not picked by that click
            assert await opened_by(page, page.locator('tr[data-code="BB"] a.grafana-link')) == board("BB")
            await expect(page.locator('tr[data-code="BB"]')).not_to_have_class(has_class("picked"))
            await expect(page.locator("#bureau-alarms tr")).to_have_count(2)

        await alarm.locator("a.detail-link").click()
        await expect(page.locator("#alarm-key")).to_have_text(BB_GAS)
        await expect(page.locator("#alarm-journal tbody tr")).to_have_count(1)
        await expect(page.locator("#alarm-actions button[data-action=supervise]")).to_be_visible()
        await expect(page.locator("#alarm-rationale")).to_have_text("未配置处置说明")  # no defaults given
        await links_to(page.locator("#alarm-actions a.grafana-link"), "BB", "BB-HS1")
        assert asked == ([board("BB")] if grafana_url else [])
        assert not errors, errors
    finally:
        await live.stop()


async def test_console_files_are_served_by_name_only(client: httpx.AsyncClient) -> None:
    r = await client.get("/")
    assert (r.status_code, r.headers["location"]) == (307, "/console/")
    page = await client.get("/console/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "script-src 'self'" in page.headers["content-security-policy"]
    assert '<script type="module" src="app.js">' in page.text
    js = await client.get("/console/vendor/uPlot.iife.min.js")
    assert js.status_code == 200 and js.headers["content-type"].startswith("text/javascript")
    for path in (
        "/console/nope.js",
        "/console/../api/console.py",
        "/console/%2e%2e/app.py",
        "/console//etc/passwd",
    ):
        assert (await client.get(path)).status_code == 404, path
