"""The /metrics endpoints: loopback by default, an optional bearer token
(ROUTEMETER_METRICS_TOKEN) on both the standalone and the mounted endpoint, a warning that
says how to fix an endpoint exposed beyond loopback without one, and a standalone server that
idle or slow clients cannot starve."""

from __future__ import annotations

import contextlib
import logging
import socket
import threading
import time

import httpx
import pytest
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route

import routemeter
from routemeter.export import _guard, _readers
from routemeter.export._guard import is_loopback
from routemeter.export._server import HEAD_TIMEOUT_S, MAX_HANDLERS, THREAD_NAME
from support.asgi import serve
from support.net import closed_by_server, still_open

TOKEN = "t0k3n-" + "9f8e7d6c5b4a3210" * 2


@pytest.fixture(autouse=True)
def _fresh_warnings(monkeypatch):
    """Each test sees the once-per-process warnings afresh."""
    monkeypatch.setattr(_guard, "_warned", set())


@routemeter.route("default")
def routed() -> None:
    routemeter.current().requested("gpt-4o")


def scrape(url: str, token: str | None = None, method: str = "GET") -> httpx.Response:
    headers = {"authorization": f"Bearer {token}"} if token else {}
    return httpx.request(method, url, headers=headers, timeout=10)


def test_standalone_endpoint_binds_loopback_by_default():
    """The standalone /metrics server listens on loopback unless told otherwise."""
    handle = routemeter.setup(prometheus_port=0, set_global=False)
    assert handle.prometheus is not None
    assert handle.prometheus.server is not None
    host, port = handle.prometheus.server.server_address[:2]
    assert is_loopback(host), host
    assert handle.config.prometheus_host == "localhost"
    assert scrape(f"http://{'[::1]' if ':' in host else host}:{port}/metrics").status_code == 200


def test_token_protects_the_standalone_endpoint(monkeypatch):
    """With a token the standalone /metrics answers 401 to a missing or wrong one, 200 to it."""
    monkeypatch.setenv("ROUTEMETER_METRICS_TOKEN", TOKEN)
    handle = routemeter.setup(prometheus_host="127.0.0.1", prometheus_port=0, set_global=False)
    url = handle.metrics_url
    assert url is not None
    for wrong in (None, "nope", TOKEN + "x", TOKEN[:-1]):
        r = scrape(url, wrong)
        assert r.status_code == 401
        assert r.headers["www-authenticate"].startswith("Bearer")
        assert TOKEN not in r.text
    assert httpx.get(url, headers={"authorization": f"Basic {TOKEN}"}).status_code == 401
    routed()
    ok = httpx.get(url, headers={"authorization": f"bearer {TOKEN}"}, timeout=10)
    assert ok.status_code == 200
    assert "gen_ai_server_request_duration_seconds_count" in ok.text


def make_app():
    async def hello(request):
        return PlainTextResponse("hello")

    return routemeter.instrument_app(Starlette(routes=[Route("/hello", hello)]))


@pytest.mark.integration
def test_token_protects_the_mounted_endpoints():
    """With a token the mounted /metrics and /metrics/stats answer 401 without it, 200 with."""
    routemeter.setup(
        exporters="prometheus", prometheus_server=False, metrics_token=TOKEN, set_global=False
    )
    with serve(make_app()) as url:
        assert scrape(f"{url}/hello").text == "hello"
        for path in ("/metrics", "/metrics/stats"):
            for method in ("GET", "HEAD"):
                denied = scrape(f"{url}{path}", None, method)
                assert denied.status_code == 401
                assert denied.headers["www-authenticate"].startswith("Bearer")
                assert scrape(f"{url}{path}", "wrong-token-0123456789", method).status_code == 401
            assert scrape(f"{url}{path}", TOKEN).status_code == 200
        assert "http_server_request_duration_seconds" in scrape(f"{url}/metrics", TOKEN).text


def test_bad_token_fails_setup_without_echoing_it(monkeypatch):
    """A bad token fails setup() naming the variable; no error or `config` row shows it."""
    for bad in ("short", "has spaces in the middle of it"):
        monkeypatch.setenv("ROUTEMETER_METRICS_TOKEN", bad)
        with pytest.raises(routemeter.ConfigError, match="ROUTEMETER_METRICS_TOKEN") as info:
            routemeter.setup(set_global=False)
        assert bad not in str(info.value)
        with pytest.raises(routemeter.ConfigError) as info:
            routemeter.setup(metrics_token=bad, exporters="none", set_global=False)
        assert bad not in str(info.value)
    monkeypatch.setenv("ROUTEMETER_METRICS_TOKEN", TOKEN)
    rows = routemeter.Config.describe(routemeter.setup(exporters="none").config)
    assert (
        "metrics_token",
        "ROUTEMETER_METRICS_TOKEN",
        "<redacted>",
        "env:ROUTEMETER_METRICS_TOKEN",
    ) in rows


class _NotBound:
    """Stands in for the standalone server: the test never listens beyond loopback."""

    server_address = ("0.0.0.0", 9464)

    def shutdown(self) -> None:
        pass

    def server_close(self) -> None:
        pass


@pytest.mark.parametrize("token", [None, TOKEN])
def test_standalone_beyond_loopback_warns_how_to_fix(monkeypatch, caplog, token):
    """Standalone /metrics beyond loopback without a token warns with both fixes."""
    monkeypatch.setattr(_readers, "_serve", lambda *a, **k: (_NotBound(), None))
    caplog.set_level(logging.WARNING, logger="routemeter")
    routemeter.setup(prometheus_host="0.0.0.0", metrics_token=token, set_global=False)
    warnings = [r.getMessage() for r in caplog.records if "beyond loopback" in r.getMessage()]
    if token is None:
        [message] = warnings
        assert "ROUTEMETER_METRICS_TOKEN" in message
        assert "OTEL_EXPORTER_PROMETHEUS_HOST=127.0.0.1" in message
    else:
        assert warnings == []


@pytest.mark.parametrize("token", [None, TOKEN])
async def test_mounted_endpoint_scraped_from_beyond_loopback_warns_once(caplog, token):
    """Mounted /metrics answering a non-loopback peer without a token warns once."""
    routemeter.setup(
        exporters="prometheus", prometheus_server=False, metrics_token=token, set_global=False
    )
    caplog.set_level(logging.WARNING, logger="routemeter")
    transport = httpx.ASGITransport(app=make_app(), client=("10.20.30.40", 40000))
    headers = {"authorization": f"Bearer {token}"} if token else {}
    async with httpx.AsyncClient(transport=transport, base_url="http://router") as client:
        for _ in range(3):
            assert (await client.get("/metrics", headers=headers)).status_code == 200
    warnings = [r.getMessage() for r in caplog.records if "beyond loopback" in r.getMessage()]
    if token is None:
        [message] = warnings
        assert "10.20.30.40" in message
        assert "ROUTEMETER_METRICS_TOKEN" in message
    else:
        assert warnings == []


def test_loopback_addresses():
    """localhost, 127.0.0.0/8 and ::1 are loopback; the wildcard and names are not."""
    assert all(map(is_loopback, ["localhost", "127.0.0.1", "127.9.9.9", "::1", "[::1]"]))
    assert not any(map(is_loopback, ["0.0.0.0", "::", "10.0.0.1", "router.internal", ""]))


# --- a bounded standalone server --------------------------------------------------------------


def server_threads() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith(THREAD_NAME)]


@contextlib.contextmanager
def idle_clients(address: tuple[str, int], silent: int, halves: int):
    """``silent`` connections that send nothing and ``halves`` that send half a request line."""
    socks: list[socket.socket] = []
    try:
        for i in range(silent + halves):
            socks.append(socket.create_connection(address, timeout=5))
            if i >= silent:
                socks[-1].sendall(b"GET /metr")
        yield socks
    finally:
        for s in socks:
            s.close()


def test_idle_connections_do_not_starve_the_scrape():
    """With 300 idle or half-sent connections open, a scrape answers at once, on no extra thread."""
    handle = routemeter.setup(prometheus_host="127.0.0.1", prometheus_port=0, set_global=False)
    routed()
    assert handle.prometheus is not None
    address, url = handle.prometheus.address, handle.metrics_url
    assert address is not None
    assert url is not None
    before = threading.active_count()
    started = time.monotonic()
    with idle_clients(address, silent=200, halves=100) as socks:
        time.sleep(0.2)
        assert server_threads() == [THREAD_NAME]  # waiting connections hold no thread
        r = scrape(url)
        elapsed = time.monotonic() - started
        assert r.status_code == 200
        assert "gen_ai_server_request_duration_seconds_count" in r.text
        assert elapsed < 2.0, elapsed
        assert len(server_threads()) <= 1 + MAX_HANDLERS
        assert threading.active_count() - before <= MAX_HANDLERS
        assert all(map(still_open, socks))  # they were all still open during the scrape


@pytest.mark.integration
def test_idle_connections_are_closed_after_the_head_timeout():
    """Connections that send nothing or half a request line are closed HEAD_TIMEOUT_S (5 s) in."""
    handle = routemeter.setup(prometheus_host="127.0.0.1", prometheus_port=0, set_global=False)
    assert handle.prometheus is not None
    address = handle.prometheus.address
    assert address is not None
    with idle_clients(address, silent=50, halves=50) as socks:
        opened = time.monotonic()
        time.sleep(HEAD_TIMEOUT_S - 1.0)
        assert all(map(still_open, socks))
        for s in socks:
            assert closed_by_server(s, max(0.0, opened + HEAD_TIMEOUT_S + 1.5 - time.monotonic()))
    assert server_threads() == [THREAD_NAME]


def test_shutdown_leaves_no_server_thread():
    """routemeter.shutdown() with connections open stops the server at once, leaving no thread."""
    handle = routemeter.setup(prometheus_host="127.0.0.1", prometheus_port=0, set_global=False)
    assert handle.prometheus is not None
    address, url = handle.prometheus.address, handle.metrics_url
    assert address is not None
    assert url is not None
    with idle_clients(address, silent=20, halves=20) as socks:
        assert scrape(url).status_code == 200
        started = time.monotonic()
        routemeter.shutdown()
        assert time.monotonic() - started < 1.0
        assert server_threads() == []
        assert all(closed_by_server(s, 1.0) for s in socks)
    with pytest.raises(httpx.ConnectError):
        scrape(url)
