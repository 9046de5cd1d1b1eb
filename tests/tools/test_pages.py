"""The pages beside /metrics (history, stats over a window, recent requests, the dashboard) on
the mounted endpoint under uvicorn and on the standalone server, with the token in front."""

from __future__ import annotations

import base64

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse
from starlette.routing import Route

import routemeter
from support.asgi import serve

TOKEN = "t0ken-for-the-pages-test"
HOSTILE_AGENT = "Secret-Agent/1.0 (alice@example.com; sk-live-abcdef0123456789)"


@routemeter.route("think")
async def route_chat(body: dict) -> dict:
    rec = routemeter.current()
    rec.requested(body.get("model"))
    with rec.attempt("openai", "gpt-4o-mini") as a:
        a.usage(input_tokens=11, output_tokens=7)
        if body.get("fail"):
            a.error(502)
    return {"ok": not body.get("fail")}


async def chat(request: Request):
    return JSONResponse(await route_chat(await request.json()))


async def own(request: Request):
    return PlainTextResponse("the app's own page")


def _app():
    return routemeter.instrument_app(
        Starlette(
            routes=[
                Route("/v1/chat/completions", chat, methods=["POST"]),
                Route("/metrics/own", own),
            ]
        )
    )


def _post(client: httpx.Client, n: int, **body: object) -> list[str]:
    ids = []
    for _ in range(n):
        r = client.post(
            "/v1/chat/completions",
            json={"model": "gpt-4o", **body},
            headers={"user-agent": HOSTILE_AGENT},
        )
        assert r.status_code == 200
        ids.append(r.headers["x-request-id"])
    return ids


def test_mounted_history_and_window_stats_match_the_ledger():
    """/metrics/history and /metrics/stats?window= count exactly what was served."""
    routemeter.setup(exporters="prometheus", prometheus_server=False, set_global=False)
    with serve(_app()) as url, httpx.Client(base_url=url, timeout=10) as client:
        _post(client, 6)
        _post(client, 3, fail=True)
        history = client.get("/metrics/history", params={"window": "15m", "group_by": "route"})
        windowed = client.get("/metrics/stats", params={"window": "1h"}).json()
        by_model = client.get("/metrics/history?window=1h&group_by=model").json()
        own_page = client.get("/metrics/own")
        bad = client.get("/metrics/history?window=2d")
    assert history.status_code == 200
    assert history.headers["cache-control"] == "no-store"
    [series] = history.json()["series"]
    assert series["route"] == "think"
    assert sum(series["requests"]) == 9
    assert sum(series["errors"]) == 3
    assert sum(series["input_tokens"]) == 99
    assert sum(series["output_tokens"]) == 63
    assert windowed["total"]["requests"] == 9
    assert windowed["total"]["errors_by_type"] == {"502": 3}
    [model] = by_model["series"]
    assert (model["provider"], model["model"], sum(model["requests"])) == (
        "openai",
        "gpt-4o-mini",
        9,
    )
    assert own_page.text == "the app's own page"  # paths that are not ours stay the app's
    assert bad.status_code == 400
    assert "allowed: 15m, 1h, 6h, 24h, 7d, 30d" in bad.json()["error"]


def test_recent_requests_carry_the_request_id_and_nothing_personal():
    """Each response carries x-request-id (the client's when plain, else a new one); the
    summary under that id has the route, models, attempts and usage, never the client's agent."""
    routemeter.setup(exporters="prometheus", prometheus_server=False, set_global=False)
    with serve(_app()) as url, httpx.Client(base_url=url, timeout=10) as client:
        mine = client.post(
            "/v1/chat/completions", json={"model": "gpt-4o"}, headers={"x-request-id": "req-42.a"}
        )
        hostile = client.post(
            "/v1/chat/completions",
            json={"model": "gpt-4o"},
            headers={"x-request-id": "alice@example.com <script>"},
        )
        [generated] = _post(client, 1, fail=True)
        one = client.get("/metrics/requests/req-42.a").json()
        recent = client.get("/metrics/requests/recent?limit=2")
        every_page = [
            client.get(f"/metrics/{p}").text
            for p in ("requests/recent", "stats", "history", "dashboard")
        ]
    assert mine.headers["x-request-id"] == "req-42.a"
    assert hostile.headers["x-request-id"] != "alice@example.com <script>"
    assert one["route"] == "think"
    assert one["requested_model"] == "gpt-4o"
    assert (one["provider"], one["model"], one["outcome"]) == ("openai", "gpt-4o-mini", "ok")
    assert (one["input_tokens"], one["output_tokens"]) == (11, 7)
    assert one["cost_usd"] > 0
    [attempt] = one["attempts"]
    assert attempt["outcome"] == "ok"
    assert attempt["duration_s"] >= 0
    newest, older = recent.json()["requests"]
    assert newest["id"] == generated
    assert newest["outcome"] == "502"
    assert older["id"] == hostile.headers["x-request-id"]
    for text in every_page:
        assert "alice" not in text
        assert "Secret-Agent" not in text
        assert "sk-live" not in text
        assert "127.0.0.1" not in text


def test_an_evicted_request_is_404():
    """With ROUTEMETER_RECENT_REQUESTS=3 the fourth request evicts the first."""
    routemeter.setup(
        exporters="prometheus", prometheus_server=False, set_global=False, recent_requests=3
    )
    with serve(_app()) as url, httpx.Client(base_url=url, timeout=10) as client:
        first, *rest = _post(client, 4)
        gone = client.get(f"/metrics/requests/{first}")
        kept = [client.get(f"/metrics/requests/{i}").status_code for i in rest]
        listed = client.get("/metrics/requests/recent").json()["requests"]
    assert gone.status_code == 404
    assert gone.json() == {"error": "not found: never kept, or evicted since"}
    assert kept == [200, 200, 200]
    assert [r["id"] for r in listed] == rest[::-1]


def test_no_recent_requests_no_request_id():
    """ROUTEMETER_RECENT_REQUESTS=0 keeps nothing and adds no header."""
    routemeter.setup(
        exporters="prometheus", prometheus_server=False, set_global=False, recent_requests=0
    )
    with serve(_app()) as url, httpx.Client(base_url=url, timeout=10) as client:
        r = client.post("/v1/chat/completions", json={})
        listed = client.get("/metrics/requests/recent").json()
    assert "x-request-id" not in r.headers
    assert listed == {"requests": []}


def _basic(token: str) -> str:
    return "Basic " + base64.b64encode(f"anyone:{token}".encode()).decode()


def test_standalone_server_serves_the_pages_behind_the_token():
    """The standalone endpoint answers the same pages; without the token the dashboard asks
    for Basic credentials (a browser prompts) and the JSON pages for a Bearer token."""
    handle = routemeter.setup(
        exporters="prometheus", prometheus_port=0, metrics_token=TOKEN, set_global=False
    )
    assert handle.prometheus is not None
    assert handle.prometheus.address is not None
    host, port = handle.prometheus.address
    for _ in range(5):
        import asyncio

        asyncio.run(route_chat({"model": "gpt-4o"}))
    with httpx.Client(base_url=f"http://{host}:{port}", timeout=10) as client:
        refused = client.get("/metrics/dashboard")
        refused_json = client.get("/metrics/history")
        page = client.get("/metrics/dashboard", headers={"authorization": _basic(TOKEN)})
        wrong = client.get("/metrics/dashboard", headers={"authorization": _basic("nope" * 5)})
        history = client.get(
            "/metrics/history?window=15m", headers={"authorization": f"Bearer {TOKEN}"}
        )
        metrics = client.get("/metrics", headers={"authorization": _basic(TOKEN)})
    assert refused.status_code == 401
    assert refused.headers["www-authenticate"].startswith("Basic")
    assert refused_json.status_code == 401
    assert refused_json.headers["www-authenticate"].startswith("Bearer")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert wrong.status_code == 401
    assert sum(history.json()["series"][0]["requests"]) == 5
    assert "gen_ai_server_request_duration_seconds_count" in metrics.text


@pytest.mark.parametrize("path", ["/metrics/history", "/metrics/requests/recent"])
def test_mounted_pages_ask_for_the_token(path):
    """The mounted pages are behind ROUTEMETER_METRICS_TOKEN like /metrics."""
    routemeter.setup(
        exporters="prometheus", prometheus_server=False, set_global=False, metrics_token=TOKEN
    )
    with serve(_app()) as url, httpx.Client(base_url=url, timeout=10) as client:
        refused = client.get(path)
        allowed = client.get(path, headers={"authorization": f"Bearer {TOKEN}"})
    assert refused.status_code == 401
    assert allowed.status_code == 200


def test_request_ids_with_the_opentelemetry_middleware_too():
    """With ROUTEMETER_HTTP_INSTRUMENTATION=opentelemetry requests still get and return ids."""
    routemeter.setup(
        exporters="prometheus",
        prometheus_server=False,
        set_global=False,
        http_instrumentation="opentelemetry",
    )
    with serve(_app()) as url, httpx.Client(base_url=url, timeout=10) as client:
        [made] = _post(client, 1)
        kept = client.post(
            "/v1/chat/completions", json={"model": "gpt-4o"}, headers={"x-request-id": "abc"}
        )
        found = client.get(f"/metrics/requests/{made}")
    assert kept.headers["x-request-id"] == "abc"
    assert found.status_code == 200
    assert found.json()["route"] == "think"


def test_the_seeds_api_stats_answers_per_hour_model_and_tenant():
    """/metrics/api/stats?period=&group_by= answers from the history: per hour, per model, and
    per tenant for the seed's ``user`` (routemeter records tenants, never users)."""

    @routemeter.route("tenanted")
    async def tenanted(tenant: str) -> None:
        rec = routemeter.current()
        rec.tenant(tenant)
        with rec.attempt("openai", "gpt-4o-mini") as a:
            a.usage(input_tokens=4, output_tokens=2)

    routemeter.setup(
        exporters="prometheus", prometheus_server=False, set_global=False, tenants=["gold"]
    )
    with serve(_app()) as url, httpx.Client(base_url=url, timeout=10) as client:
        _post(client, 3)
        import asyncio

        for tenant in ("gold", "gold", "bronze"):
            asyncio.run(tenanted(tenant))
        hours = client.get("/metrics/api/stats?period=1h&group_by=hour").json()
        models = client.get("/metrics/api/stats?period=24h&group_by=model").json()
        users = client.get("/metrics/api/stats?period=7d&group_by=user").json()
        bad = client.get("/metrics/api/stats?period=2h")
    assert sum(r["requests"] for r in hours["rows"]) == 6
    assert [(r["provider"], r["model"], r["requests"]) for r in models["rows"]] == [
        ("openai", "gpt-4o-mini", 6)
    ]
    assert {r["tenant"]: r["requests"] for r in users["rows"]} == {"gold": 2, "bronze": 1}
    assert bad.status_code == 400
