"""The dashboard page (``<metrics_path>/dashboard``): one self-contained document, shipped in
the wheel, and read by a real browser (Debian's chromium driven by Playwright) from a real
router under a known load: the charts draw, the tables equal the load's ledger, nothing leaves
loopback and the console stays clean.

Screenshots are kept under the test's tmp path; ``ROUTEMETER_UPDATE_SCREENSHOT=1`` also copies
the desktop one to docs/dashboard.png.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

import routemeter
from routemeter.tools._dashboard import MAX_PAGE_BYTES, SOURCES, page
from support.asgi import serve

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
DESKTOP = {"width": 1280, "height": 900}
PHONE = {"width": 390, "height": 844}
CHARTS = ("c-rps", "c-latency", "c-cost", "c-tokens", "c-errors")
TOKEN = "dashboard-test-token-" + "0123456789abcdef" * 2
WAIT_MS = 15_000


# --- the router and its ledger -------------------------------------------------------------

CHAT_KINDS = {"ok": 6, "fallback": 3, "error": 2, "limited": 2, "upstream429": 1}
"""Requests sent to route ``chat`` by kind; the first two ``ok`` ones hit the cache."""
STREAMS = 4
"""Streamed requests on route ``stream``, three chunks each."""
TRACED_ID = "ledger-upstream-429"
"""The ``x-request-id`` the ``upstream429`` request is sent with."""


LEDGER_ROUTES = {
    "chat": {
        "requests": 14,
        "errors": 4,  # 2 upstream 500s answered as 500, 2 refused by the router itself (429)
        "attempts": 16,  # ok 6, fallback 3x2, error 2, upstream429 2
        "fallbacks": 4,
        "rate_limited": 2,
        "input_tokens": 1000,
        "output_tokens": 200,
    },
    "stream": {
        "requests": 4,
        "errors": 0,
        "attempts": 4,
        "fallbacks": 0,
        "rate_limited": 0,
        "input_tokens": 200,
        "output_tokens": 120,
    },
}
"""What the load sent, per route, as every view must count it."""
LEDGER_PROVIDERS = {
    "openai": {"attempts": 12, "errors": 3, "rate_limited": 1},
    "anthropic": {"attempts": 4, "errors": 3, "rate_limited": 0},
    "gcp.gemini": {"attempts": 4, "errors": 0, "rate_limited": 0},
}
LEDGER_FALLBACKS = {
    ("chat", "anthropic / claude-sonnet-4-5", "openai / gpt-4o", "529"): 3,
    ("chat", "openai / gpt-4o", "anthropic / claude-sonnet-4-5", "429"): 1,
}
LEDGER_OUTCOMES = {"ok": 14, "500": 2, "429": 2}
LEDGER_REQUESTS = 18
GPT_4O = (2.5e-06, 1e-05)
SONNET = (3e-06, 1.5e-05)
"""List prices per input and output token (genai-prices)."""
LEDGER_SAVINGS = 9 * (100 * (SONNET[0] - GPT_4O[0]) + 20 * (SONNET[1] - GPT_4O[1]))
"""Route ``chat`` declares Sonnet its baseline: 9 of its 10 answers came from gpt-4o, one from
Sonnet itself; route ``stream`` asks for the model that answers it, so it saves nothing."""
LEDGER_GOODPUT = 14 / 18
"""Neither route declares an SLO, so every request that succeeded is good."""


@routemeter.route("chat", baseline_model="claude-sonnet-4-5")
async def chat(kind: str, hit: bool) -> int:
    rec = routemeter.current()
    rec.requested("gpt-4o")
    if kind == "limited":
        rec.rate_limited()
        return 429
    rec.cache("responses", hit=hit)
    if kind == "fallback":
        with rec.attempt("anthropic", "claude-sonnet-4-5") as a:
            a.error(529)
    with rec.attempt("openai", "gpt-4o") as a:
        if kind == "error":
            a.error(500)
        elif kind == "upstream429":
            a.error(429)
        else:
            a.usage(input_tokens=100, output_tokens=20)
    if kind == "upstream429":
        with rec.attempt("anthropic", "claude-sonnet-4-5") as a:
            a.usage(input_tokens=100, output_tokens=20)
    if kind == "error":
        rec.error(500)
        return 500
    return 200


@routemeter.route("stream")
async def stream_tokens() -> Any:
    rec = routemeter.current()
    rec.requested("gemini-2.5-flash")
    with rec.attempt("gcp.gemini", "gemini-2.5-flash") as a:
        for _ in range(3):
            await asyncio.sleep(0.002)
            a.chunk()
            yield b"data: token\n\n"
        a.usage(input_tokens=50, output_tokens=30)


async def chat_endpoint(request: Request) -> Response:
    kind = request.query_params["kind"]
    status = await chat(kind, request.query_params.get("hit") == "1")
    return JSONResponse({"kind": kind}, status_code=status)


async def stream_endpoint(request: Request) -> Response:
    return StreamingResponse(stream_tokens(), media_type="text/event-stream")


def router_app() -> Starlette:
    return Starlette(
        routes=[
            Route("/v1/chat", chat_endpoint, methods=["POST"]),
            Route("/v1/stream", stream_endpoint),
        ]
    )


@contextmanager
def router(**settings: Any) -> Iterator[str]:
    """A real uvicorn router on loopback, instrumented with routemeter; yields its base URL."""
    routemeter.setup(exporters="prometheus", prometheus_server=False, set_global=False, **settings)
    with serve(routemeter.instrument_app(router_app())) as url:
        yield url


def drive(url: str) -> None:
    """Send the ledger's requests, one at a time, and check the router answered each."""
    with httpx.Client(base_url=url, timeout=10) as client:
        for kind, count in CHAT_KINDS.items():
            for i in range(count):
                headers = {"x-request-id": TRACED_ID} if kind == "upstream429" else {}
                hit = "1" if kind == "ok" and i < 2 else "0"
                r = client.post("/v1/chat", params={"kind": kind, "hit": hit}, headers=headers)
                assert r.status_code == {"limited": 429, "error": 500}.get(kind, 200)
        for _ in range(STREAMS):
            with client.stream("GET", "/v1/stream") as r:
                assert r.read().count(b"data:") == 3


# --- the browser ---------------------------------------------------------------------------


def require_chromium() -> Any:
    """Playwright's sync API; skip when chromium or playwright is missing, fail under CI=true."""
    missing = []
    if not os.access(CHROMIUM, os.X_OK):
        missing.append(f"{CHROMIUM} (Debian: apt-get install chromium, or make chromium)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        missing.append("playwright (pip install -e '.[dev]')")
    if missing:
        message = "dashboard browser tests need " + " and ".join(missing)
        if os.environ.get("CI") == "true":
            pytest.fail(f"{message}; CI=true so browser tests may not skip")
        pytest.skip(message)
    return sync_playwright


@pytest.mark.parametrize("ci", ["", "true"])
def test_missing_chromium_skips_locally_and_fails_under_ci(monkeypatch, ci):
    """Without /usr/bin/chromium the browser tests skip, but fail when CI=true."""
    monkeypatch.setattr(sys.modules[__name__], "CHROMIUM", "/nonexistent/chromium")
    monkeypatch.setenv("CI", ci)
    expected = pytest.fail.Exception if ci == "true" else pytest.skip.Exception
    with pytest.raises(expected, match="chromium"):
        require_chromium()


@pytest.fixture(scope="module")
def playwright() -> Iterator[Any]:
    """One Playwright driver for the module (each test launches its own browser)."""
    sync_playwright = require_chromium()
    with sync_playwright() as p:
        yield p


@dataclass
class Browser:
    """One page of a fresh chromium, and everything it asked the network and the console."""

    page: Any
    urls: list[str] = field(default_factory=list)
    console: list[str] = field(default_factory=list)

    def problems(self) -> list[str]:
        return [m for m in self.console if m.startswith(("error", "pageerror"))]

    def wait_refreshes(self, at_least: int) -> None:
        self.page.wait_for_function(
            "n => Number(document.body.dataset.refreshes || 0) >= n", arg=at_least, timeout=WAIT_MS
        )

    def refreshes(self) -> int:
        return int(self.page.evaluate("Number(document.body.dataset.refreshes || 0)"))


@contextmanager
def chromium(playwright: Any, viewport: dict[str, int], **context: Any) -> Iterator[Browser]:
    """Headless Debian chromium with a fresh user-data-dir, no downloaded browser."""
    with tempfile.TemporaryDirectory(prefix="routemeter-chromium-") as profile:
        ctx = playwright.chromium.launch_persistent_context(
            profile,
            executable_path=CHROMIUM,
            headless=True,
            args=CHROMIUM_ARGS,
            viewport=viewport,
            **context,
        )
        try:
            ctx.set_default_timeout(WAIT_MS)
            page = ctx.pages[0] if ctx.pages else ctx.new_page()
            browser = Browser(page)
            page.on("request", lambda r: browser.urls.append(r.url))
            page.on("console", lambda m: browser.console.append(f"{m.type}: {m.text}"))
            page.on("pageerror", lambda e: browser.console.append(f"pageerror: {e}"))
            yield browser
        finally:
            ctx.close()


def only_loopback(urls: list[str]) -> None:
    assert urls, "the browser made no request at all"
    away = [u for u in urls if urlparse(u).scheme != "data" and urlparse(u).hostname != "127.0.0.1"]
    assert away == []


def table(page: Any, name: str) -> dict[str, dict[str, str]]:
    """The rows of ``table[data-table=name]`` by row key: each cell's raw value by column."""
    rows: dict[str, dict[str, str]] = page.evaluate(
        """name => Object.fromEntries(Array.from(
            document.querySelectorAll(`table[data-table="${name}"] tbody tr[data-key]`),
            tr => [tr.dataset.key, Object.fromEntries(Array.from(tr.cells,
                td => [td.dataset.col, td.dataset.value]))]))""",
        name,
    )
    return rows


def tile_values(page: Any) -> dict[str, str]:
    """The raw number behind each tile (``data-value``), by tile."""
    values: dict[str, str] = page.evaluate(
        """() => Object.fromEntries(Array.from(document.querySelectorAll("#kpis .kpi"),
            k => [k.dataset.kpi, k.dataset.value]))"""
    )
    return values


def footer(page: Any, name: str) -> dict[str, str]:
    cells: dict[str, str] = page.evaluate(
        """name => Object.fromEntries(Array.from(
            document.querySelectorAll(`table[data-table="${name}"] tfoot td`),
            td => [td.dataset.col, td.dataset.value]))""",
        name,
    )
    return cells


def drawn(page: Any, chart: str) -> dict[str, float]:
    sums: dict[str, float] = json.loads(page.get_attribute(f"#{chart}", "data-sums") or "{}")
    return sums


def canvases_drawn(page: Any) -> None:
    for chart in CHARTS:
        box = page.locator(f"#{chart} canvas").bounding_box()
        assert box is not None, chart
        assert box["width"] > 100, (chart, box)
        assert box["height"] > 100, (chart, box)


def keep_screenshot(page: Any, tmp_path: Path, name: str, docs: bool = False) -> Path:
    shot = tmp_path / name
    page.evaluate("window.scrollTo(0, 0)")
    page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 10_000
    if docs and os.environ.get("ROUTEMETER_UPDATE_SCREENSHOT") == "1":
        shutil.copyfile(shot, ROOT / "docs" / "dashboard.png")
    return shot


def stats_json(url: str, window: str, **kw: Any) -> dict[str, Any]:
    r = httpx.get(f"{url}/metrics/stats", params={"window": window}, timeout=10, **kw)
    assert r.status_code == 200
    body: dict[str, Any] = r.json()
    return body


# --- the page in a browser ----------------------------------------------------------------


@pytest.mark.integration
def test_dashboard_shows_the_routers_ledger(playwright, tmp_path):
    """Under a known load the page's tables and charts equal the ledger and /metrics/stats,
    every chart draws, nothing leaves loopback and the console shows no error."""
    with router() as url:
        drive(url)
        expected = stats_json(url, "1h")
        with chromium(playwright, DESKTOP) as b:
            b.page.goto(f"{url}/metrics/dashboard")
            b.wait_refreshes(1)
            page = b.page

            tiles = tile_values(page)
            assert float(tiles["savings"]) == pytest.approx(LEDGER_SAVINGS, rel=1e-9)
            assert float(tiles["goodput"]) == pytest.approx(LEDGER_GOODPUT, rel=1e-12)
            assert float(tiles["overhead"]) == expected["total"]["overhead"]["p95"]
            assert page.text_content('.kpi[data-kpi="goodput"] .value') == "77.8%"

            routes = table(page, "routes")
            assert set(routes) == set(LEDGER_ROUTES)
            for name, want in LEDGER_ROUTES.items():
                got = {k: int(routes[name][k]) for k in want}
                assert got == want, name
            same = {r["route"]: r for r in expected["routes"]}
            for name, row in routes.items():  # the same numbers as /metrics/stats
                assert float(row["cost_usd"]) == pytest.approx(same[name]["cost_usd"], rel=1e-12)
                assert float(row["cost_usd"]) > 0
                assert float(row["p95"]) == pytest.approx(same[name]["duration"]["p95"])
            total = footer(page, "routes")
            assert int(total["requests"]) == sum(r["requests"] for r in LEDGER_ROUTES.values())
            assert float(total["cost_usd"]) == pytest.approx(expected["total"]["cost_usd"])
            assert routes["stream"]["ttft_p95"] != ""  # streams have a time to first token

            page.click("#tabs button[data-tab=providers]")
            providers = table(page, "providers")
            assert {
                p: {"attempts": int(r["attempts"]), "errors": int(r["errors"])}
                for p, r in providers.items()
            } == {
                p: {"attempts": v["attempts"], "errors": v["errors"]}
                for p, v in LEDGER_PROVIDERS.items()
            }
            page.click("#tabs button[data-tab=targets]")
            targets = table(page, "targets")
            assert int(targets["chat/openai/gpt-4o"]["attempts"]) == 12

            fallbacks = table_rows(page, "fallbacks", ("route", "from", "to", "reason", "count"))
            assert {tuple(r[:4]): int(r[4]) for r in fallbacks} == LEDGER_FALLBACKS
            caches = table_rows(page, "caches", ("route", "name", "lookups", "hits"))
            assert caches == [["chat", "responses", "12", "2"]]

            recent = table(page, "recent")
            assert len(recent) == LEDGER_REQUESTS
            assert recent[TRACED_ID]["outcome"] == "ok"
            assert recent[TRACED_ID]["attempts"] == "2"

            canvases_drawn(page)
            for chart in CHARTS:
                assert page.locator(f"#{chart} .empty").count() == 0, chart
            rps = drawn(page, "c-rps")  # the counts behind the rates it draws
            assert {k: round(v) for k, v in rps.items()} == LEDGER_OUTCOMES
            assert drawn(page, "c-tokens") == {
                "input": sum(r["input_tokens"] for r in LEDGER_ROUTES.values()),
                "output": sum(r["output_tokens"] for r in LEDGER_ROUTES.values()),
            }
            errors = drawn(page, "c-errors")
            for provider, want in LEDGER_PROVIDERS.items():
                assert errors[f"{provider} errors"] == want["errors"]
                assert errors[f"{provider} 429"] == want["rate_limited"]
            cost = drawn(page, "c-cost")
            models = {f"{m['provider']} / {m['model']}": m["cost_usd"] for m in expected["models"]}
            assert cost == pytest.approx(models)

            # the detail view: a click on the traced request shows its two attempts
            page.click(f'#t-recent tr[data-key="{TRACED_ID}"]')
            page.wait_for_function(
                "() => document.querySelectorAll('#detail table[data-table=attempts] tbody tr')"
                ".length === 2 && !document.querySelector('#detail-body p')"
            )
            attempts = table_rows(page, "attempts", ("provider", "model", "outcome"))
            assert attempts == [
                ["openai", "gpt-4o", "429"],
                ["anthropic", "claude-sonnet-4-5", "ok"],
            ]
            assert page.text_content('#detail dd[data-fact="id"]') == TRACED_ID
            keep_screenshot(page, tmp_path, "dashboard-detail.png")
            page.click("#detail-close")
            page.wait_for_function("() => !document.getElementById('detail').open")
            page.click("#tabs button[data-tab=routes]")
            keep_screenshot(page, tmp_path, "dashboard.png", docs=True)

            assert any("/metrics/requests/" + TRACED_ID in u for u in b.urls)
            only_loopback(b.urls)
            assert b.problems() == []


def table_rows(page: Any, name: str, columns: tuple[str, ...]) -> list[list[str]]:
    """The text of the given columns of ``table[data-table=name]``'s body rows, in order."""
    rows: list[list[str]] = page.evaluate(
        """([name, cols]) => Array.from(
            document.querySelectorAll(`table[data-table="${name}"] tbody tr`),
            tr => cols.map(c => (tr.querySelector(`td[data-col="${c}"]`) || {}).textContent))""",
        [name, list(columns)],
    )
    return rows


@pytest.mark.integration
def test_phone_viewport_has_no_horizontal_overflow(playwright, tmp_path):
    """At 390x844 (a phone) the page fits its width: charts, tiles and tables scroll inside."""
    with router() as url:
        drive(url)
        with chromium(
            playwright, PHONE, device_scale_factor=2, is_mobile=True, has_touch=True
        ) as b:
            b.page.goto(f"{url}/metrics/dashboard")
            b.wait_refreshes(1)
            page = b.page
            page.wait_for_timeout(300)  # let the ResizeObserver settle the chart widths
            width = page.evaluate("document.documentElement.scrollWidth")
            inner = page.evaluate("window.innerWidth")
            assert inner == PHONE["width"]
            assert width <= inner
            canvases_drawn(page)
            for chart in CHARTS:
                box = page.locator(f"#{chart} canvas").bounding_box()
                assert box["x"] >= 0, chart
                assert box["x"] + box["width"] <= inner, chart
            keep_screenshot(page, tmp_path, "dashboard-phone.png")
            only_loopback(b.urls)
            assert b.problems() == []


@pytest.mark.integration
def test_window_selector_and_auto_refresh(playwright):
    """The window buttons re-read every panel for that window (kept in the URL's hash); the
    page refreshes itself every 5 s until paused, and at once when resumed."""
    with router() as url:
        drive(url)
        with chromium(playwright, DESKTOP) as b:
            page = b.page
            page.clock.install()
            page.goto(f"{url}/metrics/dashboard#w=24h")
            b.wait_refreshes(1)
            assert any("stats?window=24h" in u for u in b.urls)

            page.click("#windows button[data-window='15m']")
            page.wait_for_function("() => document.body.dataset.window === '15m'")
            b.wait_refreshes(2)
            assert page.evaluate("location.hash") == "#w=15m"
            asked = [parse_qs(urlparse(u).query) for u in b.urls if "/metrics/history" in u]
            assert {"window": ["15m"], "group_by": ["route"]} in asked
            assert {"window": ["15m"], "group_by": ["model"]} in asked
            assert int(table(page, "routes")["chat"]["requests"]) == 14

            before = b.refreshes()
            page.clock.run_for(5_100)
            b.wait_refreshes(before + 1)

            page.click("#pause")
            page.wait_for_function("() => document.body.dataset.busy === '0'")  # none in flight
            paused = b.refreshes()
            page.clock.run_for(60_000)
            page.wait_for_timeout(300)
            assert b.refreshes() == paused
            assert page.get_attribute("#pause", "aria-pressed") == "true"
            page.click("#pause")
            b.wait_refreshes(paused + 1)
            assert b.problems() == []


@pytest.mark.integration
def test_token_protected_page_reads_through_basic_auth(playwright):
    """With a metrics token the page asks for it (Basic: any user name, the token as
    password) and, given it, reads every endpoint with the browser's credentials."""
    with router(metrics_token=TOKEN) as url:
        drive(url)
        denied = httpx.get(f"{url}/metrics/dashboard", timeout=10)
        assert denied.status_code == 401
        assert denied.headers["www-authenticate"].lower().startswith("basic")
        assert httpx.get(f"{url}/metrics/stats?window=1h", timeout=10).status_code == 401
        credentials = {"username": "anyone", "password": TOKEN}
        with chromium(playwright, DESKTOP, http_credentials=credentials) as b:
            b.page.goto(f"{url}/metrics/dashboard")
            b.wait_refreshes(1)
            assert b.page.is_hidden("#status")
            assert int(table(b.page, "routes")["chat"]["requests"]) == 14
            assert len(table(b.page, "recent")) == LEDGER_REQUESTS
            only_loopback(b.urls)
            assert b.problems() == []


@pytest.mark.integration
def test_standalone_server_serves_the_same_page(playwright, tmp_path):
    """The standalone /metrics server serves the page too, and it reads that server's
    endpoints (relative URLs): the same numbers, in dark mode as well."""
    handle = routemeter.setup(
        exporters="prometheus", prometheus_host="127.0.0.1", prometheus_port=0, set_global=False
    )
    with ThreadPoolExecutor(1) as pool:  # Playwright's sync API holds this thread's loop
        for kind in ("ok", "ok", "error"):
            pool.submit(asyncio.run, chat(kind, False)).result(timeout=10)
    assert handle.metrics_url is not None
    served = httpx.get(f"{handle.metrics_url}/dashboard", timeout=10)
    assert served.status_code == 200
    assert served.headers["content-type"].startswith("text/html")
    assert served.content == page()
    with chromium(playwright, DESKTOP, color_scheme="dark") as b:
        b.page.goto(f"{handle.metrics_url}/dashboard#w=15m")
        b.wait_refreshes(1)
        chat_row = table(b.page, "routes")["chat"]
        assert (chat_row["requests"], chat_row["errors"]) == ("3", "1")
        canvases_drawn(b.page)
        keep_screenshot(b.page, tmp_path, "dashboard-dark.png")
        only_loopback(b.urls)
        assert b.problems() == []


@pytest.mark.integration
def test_idle_router_says_no_requests_yet(playwright):
    """Before any request every chart and table says so instead of drawing nothing."""
    with router() as url, chromium(playwright, DESKTOP) as b:
        b.page.goto(f"{url}/metrics/dashboard")
        b.wait_refreshes(1)
        page = b.page
        for chart in CHARTS:
            assert page.text_content(f"#{chart} .empty") == "no requests yet", chart
        for panel in ("#t-stats", "#t-recent"):
            assert page.text_content(f"{panel} td.empty") == "no requests yet"
        assert page.is_hidden("#status")
        assert b.problems() == []


HOSTILE = '<img src="x" onerror="window.pwned=1"><script>window.pwned=2</script>'


def hostile_app() -> Starlette:
    """The page beside canned JSON whose every string is markup: what escaping must defeat
    (routemeter itself never lets such labels through, so a real router cannot serve them)."""
    latency = {"count": 1, "mean": 0.5, "p50": 0.5, "p95": 0.9, "p99": 1.0}
    row = {
        "route": HOSTILE, "requests": 3, "errors": 1, "error_rate": 1 / 3,
        "errors_by_type": {HOSTILE: 1}, "rate": 0.1, "duration": latency,
        "time_to_first_token": latency, "attempts": 3, "fallbacks": 1, "rate_limited": 0,
        "in_flight": 0, "tokens": {"input": 10, "output": 5}, "cost_usd": 0.01,
        "cache_lookups": 1, "cache_hits": 1, "cache_hit_ratio": 1.0,
        "baseline_cost_usd": 0.02, "savings_usd": 0.01, "good": 2, "goodput": 2 / 3,
        "overhead": latency, "attempts_per_request": latency, "unpriced": 0,
    }  # fmt: skip
    upstream = {
        "route": HOSTILE, "provider": HOSTILE, "model": HOSTILE, "attempts": 3, "errors": 1,
        "error_rate": 1 / 3, "success_rate": 2 / 3, "errors_by_type": {HOSTILE: 1}, "rate": 0.1,
        "duration": latency, "time_to_first_chunk": latency, "tokens": {"input": 10},
        "cost_usd": 0.01, "unpriced": 0, "available": 0,
    }  # fmt: skip
    stats = {
        "at": 1_800_000_000, "since": 1_799_996_400, "window_s": 3600, "routes": [row],
        "total": {**row, "route": "*"}, "targets": [upstream], "models": [upstream],
        "providers": [upstream],
        "fallbacks": [{"route": HOSTILE, "from_provider": HOSTILE, "from_model": HOSTILE,
                       "to_provider": HOSTILE, "to_model": HOSTILE, "reason": HOSTILE,
                       "count": 1, "rate": None}],
        "caches": [{"route": HOSTILE, "name": HOSTILE, "lookups": 1, "hits": 1, "hit_ratio": 1.0}],
        "tenants": [],
    }  # fmt: skip
    ts = [1_800_000_000 + 10 * i for i in range(3)]
    point = {
        "requests": [1, 1, 1], "errors": [0, 1, 0], "input_tokens": [3, 3, 4],
        "output_tokens": [1, 2, 2], "cost_usd": [0.003, 0.003, 0.004],
        "p50_s": [0.5] * 3, "p95_s": [0.9] * 3, "p99_s": [1.0] * 3,
        "ttft_p50_s": [0.1] * 3, "ttft_p95_s": [0.2] * 3,
    }  # fmt: skip
    history = {
        "window": "1h", "step_s": 10, "timestamps": ts, "instances": [HOSTILE],
        "outcomes": {"ok": [1, 0, 1], HOSTILE: [0, 1, 0]},
        "providers": [{"provider": HOSTILE, "attempts": [1, 1, 1], "errors": [0, 1, 0],
                       "rate_limited": [0, 0, 0]}],
    }  # fmt: skip
    summary = {
        "id": "evil-1", "start": 1_800_000_010, "route": HOSTILE, "operation": "chat",
        "requested_model": HOSTILE, "provider": HOSTILE, "model": HOSTILE, "stream": True,
        "duration_s": 0.5, "ttft_s": 0.1, "outcome": HOSTILE, "error_type": HOSTILE,
        "input_tokens": 10, "output_tokens": 5, "cost_usd": 0.01,
        "attempts": [{"provider": HOSTILE, "model": HOSTILE, "outcome": HOSTILE,
                      "duration_s": 0.5, "ttft_s": 0.1, "input_tokens": 10, "output_tokens": 5,
                      "cost_usd": 0.01}],
    }  # fmt: skip

    async def answer(request: Request) -> Response:
        sub = request.path_params["sub"]
        if sub == "dashboard":
            return Response(page(), media_type="text/html; charset=utf-8")
        if sub == "stats":
            return JSONResponse(stats)
        if sub == "history":
            group_by = request.query_params["group_by"]
            keys = {"route": HOSTILE} if group_by == "route" else {"provider": HOSTILE}
            if group_by == "model":
                keys["model"] = HOSTILE
            return JSONResponse({**history, "group_by": group_by, "series": [{**keys, **point}]})
        if sub == "requests/recent":
            return JSONResponse({"requests": [summary]})
        if sub == "requests/evil-1":
            return JSONResponse(summary)
        return JSONResponse({"error": "not found"}, status_code=404)

    return Starlette(routes=[Route("/m/{sub:path}", answer)])


@pytest.mark.integration
def test_strings_from_json_never_become_markup(playwright):
    """Labels, error types and models that are HTML reach the page as text: no element, no
    script, no request comes of them (and the page works under any metrics path)."""
    with serve(hostile_app()) as url, chromium(playwright, DESKTOP) as b:
        page = b.page
        page.goto(f"{url}/m/dashboard")
        b.wait_refreshes(1)
        for tab in ("providers", "models", "targets", "routes"):
            page.click(f"#tabs button[data-tab={tab}]")
        page.click("#t-recent tr[data-key='evil-1']")
        page.wait_for_function("() => !document.querySelector('#detail-body p')")
        assert page.evaluate("window.pwned") is None
        assert page.evaluate("document.querySelectorAll('body img, body script[src]').length") == 0
        assert page.evaluate("document.querySelectorAll('body script').length") == 2  # ours
        assert page.text_content("table[data-table=routes] td[data-col=route]") == HOSTILE
        assert page.text_content('#detail dd[data-fact="route"]') == HOSTILE
        assert page.text_content("#latency-route option") == HOSTILE
        assert HOSTILE in (page.text_content("#c-rps .u-legend") or "")
        assert all(urlparse(u).path.startswith("/m/") for u in b.urls)
        assert b.problems() == []


# --- the document itself, and the wheel ----------------------------------------------------


class _Refs(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.refs: list[tuple[str, str, str]] = []
        self.inline: dict[str, list[str]] = {"script": [], "style": []}
        self.csp: str | None = None
        self._open: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        for name, value in attrs:
            if name in ("src", "href", "action", "srcset", "poster", "data"):
                self.refs.append((tag, name, value or ""))
        values = dict(attrs)
        if tag == "meta" and values.get("http-equiv") == "Content-Security-Policy":
            self.csp = values.get("content")
        self._open = tag if tag in self.inline else None

    def handle_data(self, data: str) -> None:
        if self._open is not None:
            self.inline[self._open].append(data)

    def handle_endtag(self, tag: str) -> None:
        self._open = None


def test_page_is_one_self_contained_document():
    """page() is one HTML document under 300 KB that refers to no other file or host, whose
    CSP allows exactly its own inline scripts and styles and connections to its own origin."""
    body = page()
    assert len(body) <= MAX_PAGE_BYTES
    assert page() is body  # built once
    text = body.decode("utf-8")
    parsed = _Refs()
    parsed.feed(text)
    assert parsed.refs == [("link", "href", "data:,")]  # the empty favicon, nothing else
    assert not re.search(r"@import|url\((?!data:)", "".join(parsed.inline["style"]))
    assert len(parsed.inline["script"]) == 2  # uPlot, then the page's own
    assert parsed.inline["script"][0].startswith("/*! https://github.com/leeoniya/uPlot (v1.6.32)")
    assert parsed.csp is not None
    policy = dict(d.strip().split(" ", 1) for d in parsed.csp.split(";"))
    assert policy["default-src"] == "'none'"
    assert policy["connect-src"] == "'self'"

    def digests(blocks: list[str]) -> set[str]:
        return {
            "'sha256-" + base64.b64encode(hashlib.sha256(b.encode()).digest()).decode() + "'"
            for b in blocks
        }

    assert set(policy["script-src"].split()) == digests(parsed.inline["script"])
    assert set(policy["style-src"].split()) == digests(parsed.inline["style"])
    js = parsed.inline["script"][1]
    for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval("):
        assert sink not in js
    assert not re.search(r"""fetch\(\s*[`'"](?:https?:)?//|fetch\(\s*[`'"]/""", js)


def test_wheel_carries_the_page_and_its_licence(tmp_path):
    """A wheel built from the tree holds every page source and uPlot's licence, and the page
    built from the installed wheel is byte for byte the one built from the tree."""
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", str(ROOT), "--no-deps", "--no-build-isolation",
         "--no-index", "-q", "-w", str(tmp_path)],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert built.returncode == 0, built.stderr
    (wheel,) = tmp_path.glob("routemeter-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    missing = [s for s in SOURCES if f"routemeter/tools/dashboard/{s}" not in names]
    assert missing == []
    assert "routemeter/tools/_dashboard.py" in names
    unpacked = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(unpacked)
    probe = (
        "import hashlib, routemeter.tools._dashboard as d;"
        "print(d.__file__); print(hashlib.sha256(d.page()).hexdigest())"
    )
    env = {**os.environ, "PYTHONPATH": str(unpacked)}
    run = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, env=env, timeout=60,
        check=False,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    where, digest = run.stdout.split()
    assert Path(where).is_relative_to(unpacked)
    assert digest == hashlib.sha256(page()).hexdigest()
