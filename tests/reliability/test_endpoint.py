"""The /metrics endpoints: loopback by default, an optional bearer token
(ROUTEMETER_METRICS_TOKEN) on both the standalone and the mounted endpoint, and a warning that
says how to fix an endpoint exposed beyond loopback without one."""

from __future__ import annotations

import logging

import httpx
import pytest
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route

import routemeter
from routemeter.export import _guard, _readers
from routemeter.export._guard import is_loopback
from support.asgi import serve

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
