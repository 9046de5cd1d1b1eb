"""routemeter's HTTP middleware against opentelemetry-instrumentation-asgi in stable semconv mode.

The same requests go through both, each into its own MeterProvider, with one deterministic
clock: each request's duration is what the app under test says it took (a context variable, so
requests on a real server cannot see each other's time). Where the two differ on purpose
(``http.route``, ``error.type`` for exceptions, the response size of a response without
``content-length``) a test pins the difference.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable
from contextvars import ContextVar
from typing import Any

import httpx
import opentelemetry.instrumentation.asgi as otel_asgi
import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import (
    HistogramDataPoint,
    InMemoryMetricReader,
    MetricsData,
)
from opentelemetry.sdk.metrics.view import ExplicitBucketHistogramAggregation, View
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Mount, Route

import routemeter
from routemeter import _report
from routemeter._config import ConfigError
from routemeter.export._setup import HTTP_DURATION_VIEW_NAME, current_handle
from routemeter.integrations import _asgi, _http
from routemeter.recording import _instruments as ins
from routemeter.recording._bounds import HTTP_ROUTE_LIMIT
from support.asgi import serve

_elapsed: ContextVar[float] = ContextVar("elapsed", default=0.0)


def clock() -> float:
    """Both middlewares' clock: 0 at a request's start, then what its app said it took."""
    return _elapsed.get()


TOOK = {"/ok": 0.003, "/echo": 0.04, "/missing": 0.0004, "/fail": 1.5, "/stream": 12.0}


async def app(scope: dict, receive: Callable, send: Callable) -> None:
    """A bare ASGI app: each path answers one way and takes a known time."""
    if scope["type"] == "websocket":
        await receive()
        await send({"type": "websocket.accept"})
        await send({"type": "websocket.send", "text": "hi"})
        await send({"type": "websocket.close"})
        return
    path = scope["path"]
    _elapsed.set(TOOK.get(path, 0.02))
    if path == "/raise":
        raise RuntimeError("boom")
    if path == "/raise-after-start":
        await send({"type": "http.response.start", "status": 200, "headers": []})
        raise KeyError("late")
    if path == "/stream":
        await send({"type": "http.response.start", "status": 200, "headers": []})
        for _ in range(3):
            await send({"type": "http.response.body", "body": b"chunk", "more_body": True})
        await send({"type": "http.response.body", "body": b""})
        return
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    status = {"/missing": 404, "/fail": 503, "/empty": 204}.get(path, 200)
    answer = b"" if path == "/empty" else (body or b"hello, world")
    headers = [(b"content-type", b"text/plain"), (b"content-length", str(len(answer)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": answer})


@pytest.fixture(autouse=True)
def _same_clock(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(otel_asgi, "default_timer", clock)
    monkeypatch.setattr(_http, "_clock", clock)


@pytest.fixture(autouse=True)
def _quiet_uvicorn_errors(caplog: pytest.LogCaptureFixture) -> None:
    """The apps that raise on purpose: uvicorn's tracebacks of them are noise here."""
    caplog.set_level(logging.CRITICAL, logger="uvicorn.error")


def instrumentation_provider() -> tuple[MeterProvider, InMemoryMetricReader]:
    """A MeterProvider as setup() builds for the `opentelemetry` choice (its duration View)."""
    reader = InMemoryMetricReader()
    view = View(
        instrument_name=HTTP_DURATION_VIEW_NAME,
        aggregation=ExplicitBucketHistogramAggregation(ins.DURATION_BUCKETS),
    )
    return MeterProvider(metric_readers=[reader], views=[view]), reader


def ours(recorder: str = "aggregate") -> InMemoryMetricReader:
    """routemeter set up with an in-memory reader: what our middleware records into."""
    reader = InMemoryMetricReader()
    routemeter.setup(readers=[reader], exporters="none", set_global=False, recorder=recorder)
    return reader


def exported(data: MetricsData | None) -> dict[str, dict[str, Any]]:
    """The http.server.* metrics: everything a backend sees but the times, per attribute set."""
    out: dict[str, dict[str, Any]] = {}
    for rm in data.resource_metrics if data else ():
        for sm in rm.scope_metrics:
            for metric in sm.metrics:
                if not metric.name.startswith("http.server."):
                    continue
                assert metric.name not in out
                points: dict[frozenset, Any] = {}
                for p in metric.data.data_points:
                    key = frozenset(p.attributes.items())
                    if isinstance(p, HistogramDataPoint):
                        points[key] = {
                            "count": p.count,
                            "sum": p.sum,
                            "bucket_counts": list(p.bucket_counts),
                            "explicit_bounds": list(p.explicit_bounds),
                            "min": p.min,
                            "max": p.max,
                        }
                    else:
                        points[key] = {"value": p.value}
                out[metric.name] = {
                    "unit": metric.unit,
                    "description": metric.description,
                    "data": type(metric.data).__name__,
                    "temporality": metric.data.aggregation_temporality,
                    "monotonic": getattr(metric.data, "is_monotonic", None),
                    "points": points,
                }
    return out


def merged(metrics: dict[str, dict[str, Any]], drop: str) -> dict[str, dict[str, Any]]:
    """``metrics`` as they would be without the ``drop`` attribute: points merged."""
    out = {}
    for name, metric in metrics.items():
        points: dict[frozenset, Any] = {}
        for key, point in metric["points"].items():
            key = frozenset((k, v) for k, v in key if k != drop)
            seen = points.get(key)
            if seen is None:
                points[key] = dict(point)
            elif "value" in point:
                seen["value"] += point["value"]
            else:
                seen["count"] += point["count"]
                seen["sum"] += point["sum"]
                seen["bucket_counts"] = [
                    a + b
                    for a, b in zip(seen["bucket_counts"], point["bucket_counts"], strict=True)
                ]
                seen["min"] = min(seen["min"], point["min"])
                seen["max"] = max(seen["max"], point["max"])
        out[name] = {**metric, "points": points}
    return out


def attribute_sets(metrics: dict[str, dict[str, Any]], name: str) -> list[dict[str, Any]]:
    return sorted((dict(k) for k in metrics[name]["points"]), key=lambda a: repr(sorted(a.items())))


def scope(
    method: str = "GET",
    path: str = "/ok",
    *,
    kind: str = "http",
    headers: Iterable[tuple[bytes, bytes]] = (),
    scheme: str | None = "http",
    version: str | None = "1.1",
) -> dict[str, Any]:
    s: dict[str, Any] = {
        "type": kind,
        "asgi": {"version": "3.0"},
        "method": method,
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": [(b"host", b"testserver"), *headers],
        "client": ("127.0.0.1", 51000),
        "server": ("127.0.0.1", 8000),
    }
    if scheme is not None:
        s["scheme"] = scheme
    if version is not None:
        s["http_version"] = version
    if kind == "websocket":
        del s["method"]
    return s


async def call(asgi: Callable, s: dict[str, Any], body: bytes = b"") -> list[dict[str, Any]]:
    """One request straight into ``asgi``, in a task of its own (its own clock reading)."""
    incoming = [{"type": "http.request", "body": body, "more_body": False}]
    if s["type"] == "websocket":
        incoming = [{"type": "websocket.connect"}]
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return incoming.pop(0) if incoming else {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    task = asyncio.ensure_future(asgi(s, receive, send))
    try:
        await task
    except Exception:
        if not any(m["type"] == "http.response.start" for m in sent):
            sent.append({"type": "http.response.start", "status": 500})
    return sent


REQUESTS: list[tuple[dict[str, Any], bytes]] = [
    (scope("GET", "/ok"), b""),
    (scope("GET", "/ok"), b""),
    (scope("POST", "/echo", headers=[(b"content-length", b"27")]), b'{"model": "gpt-4o-mini", "x"'),
    (scope("POST", "/echo", headers=[(b"Content-Length", b"5")]), b"hello"),
    (scope("POST", "/echo", headers=[(b"content-length", b"nope")]), b"hi"),
    (scope("PURGE", "/ok"), b""),
    (scope("get", "/ok"), b""),
    (scope("GET", "/missing"), b""),
    (scope("GET", "/fail"), b""),
    (scope("DELETE", "/fail"), b""),
    (scope("GET", "/stream"), b""),
    (scope("GET", "/ok", scheme="https", version="2"), b""),
    (scope("GET", "/ok", scheme=None, version=None), b""),
    (scope("POST", "/metrics"), b""),  # the mounted exposition's path: not recorded
    (scope(kind="websocket", path="/ws"), b""),  # websockets: not recorded
]


async def run_both(
    requests: list[tuple[dict[str, Any], bytes]], inner: Callable = app, *, fresh: bool = True
) -> tuple[dict[str, dict[str, Any]], dict[str, dict[str, Any]]]:
    """``requests`` through our middleware and the instrumentation's, as instrument_app builds
    them; ``fresh`` builds the instrumentation anew per request, so the response size it keeps
    on itself cannot carry over between requests (pinned separately)."""
    ours_reader = ours()
    provider, theirs_reader = instrumentation_provider()
    mine = _http.HttpMetrics(inner, excluded_path="/metrics")
    theirs = _asgi._opentelemetry_middleware(inner, "/metrics", provider)
    for s, body in requests:
        if fresh:
            theirs = _asgi._opentelemetry_middleware(inner, "/metrics", provider)
        assert await call(mine, dict(s), body) == await call(theirs, dict(s), body)
    return exported(ours_reader.get_metrics_data()), exported(theirs_reader.get_metrics_data())


async def test_same_metrics_as_the_instrumentation():
    """Methods (_OTHER, case), 2xx/4xx/5xx, body sizes, schemes, versions, a stream, the
    excluded path and a websocket: our export equals the instrumentation's, point for point."""
    mine, theirs = await run_both(REQUESTS)
    assert mine == theirs
    assert set(mine) == {spec.name for spec in ins.ALL if spec.name.startswith("http.server.")}
    assert {"http.request.method": "_OTHER", "url.scheme": "http"} in attribute_sets(
        mine, "http.server.active_requests"
    )
    failed = [a for a in attribute_sets(mine, "http.server.request.duration") if "error.type" in a]
    assert {(a["http.request.method"], a["error.type"]) for a in failed} == {
        ("GET", "503"),
        ("DELETE", "503"),
    }


@pytest.mark.integration
def test_same_metrics_as_the_instrumentation_under_uvicorn():
    """Under a real uvicorn server, the same requests give the same export from both."""
    ours_reader = ours()
    provider, theirs_reader = instrumentation_provider()
    mine = _http.HttpMetrics(app, excluded_path="/metrics")
    theirs = _asgi._opentelemetry_middleware(app, "/metrics", provider)

    def drive(client: httpx.Client) -> list[int]:
        statuses = [client.get("/stream").status_code]  # first: no size to carry over
        statuses += [client.get("/ok").status_code for _ in range(3)]
        statuses.append(client.post("/echo", content=b"x" * 300).status_code)
        statuses.append(client.request("PURGE", "/ok").status_code)
        statuses.append(client.get("/missing").status_code)
        statuses.append(client.get("/fail").status_code)
        statuses.append(client.post("/metrics").status_code)
        return statuses

    with (
        serve(mine, lifespan="off") as a,
        serve(theirs, lifespan="off") as b,
        httpx.Client(base_url=a, timeout=10) as ca,
        httpx.Client(base_url=b, timeout=10) as cb,
    ):
        assert drive(ca) == drive(cb) == [200, 200, 200, 200, 200, 200, 404, 503, 200]
    mine_data = exported(ours_reader.get_metrics_data())
    assert mine_data == exported(theirs_reader.get_metrics_data())
    [echo] = [
        p
        for k, p in mine_data["http.server.request.body.size"]["points"].items()
        if ("http.request.method", "POST") in k
    ]
    assert echo["sum"] == 300


async def test_both_recorders_export_the_same():
    """The aggregate and the SDK recorder export the same HTTP metrics for the same requests."""
    aggregate, _ = await run_both(REQUESTS)
    routemeter.shutdown()
    reader = ours("sdk")
    mine = _http.HttpMetrics(app, excluded_path="/metrics")
    for s, body in REQUESTS:
        await call(mine, dict(s), body)
    assert exported(reader.get_metrics_data()) == aggregate


async def test_route_template_is_added_to_the_instrumentation_attributes():
    """Starlette's matched route template (under its mount) becomes http.route; without it the
    export equals the instrumentation's, which never sets a route."""

    async def item(request: Request) -> PlainTextResponse:
        return PlainTextResponse(f"item {request.path_params['item_id']}")

    starlette = Starlette(
        routes=[
            Route("/items/{item_id}", item),
            Mount("/api", routes=[Route("/chat", item, methods=["POST"])]),
        ]
    )
    requests = [
        (scope("GET", "/items/1"), b""),
        (scope("GET", "/items/2"), b""),
        (scope("POST", "/api/chat", headers=[(b"content-length", b"0")]), b""),
        (scope("GET", "/api/chat"), b""),  # 405: a partial match still names its route
        (scope("GET", "/nowhere"), b""),  # 404: no route
    ]
    for s, _ in requests:
        s["path_params"] = {"item_id": "1"}
    mine, theirs = await run_both(requests, starlette)
    routes = {
        (a.get("http.route"), a["http.response.status_code"])
        for a in attribute_sets(mine, "http.server.request.duration")
    }
    assert routes == {
        ("/items/{item_id}", 200),
        ("/api/chat", 200),
        ("/api/chat", 405),
        (None, 404),
    }
    assert merged(mine, "http.route") == theirs
    assert not any(
        "http.route" in a for a in attribute_sets(theirs, "http.server.request.duration")
    )


async def test_an_app_that_raises_gets_its_exception_as_error_type():
    """An exception before the response records the class as error.type (the instrumentation
    records no error.type); after a 200 start, the 200 stays and error.type is added."""
    requests = [(scope("GET", "/raise"), b""), (scope("GET", "/raise-after-start"), b"")]
    mine, theirs = await run_both(requests)
    duration = "http.server.request.duration"
    assert {frozenset(a.items()) for a in attribute_sets(mine, duration)} == {
        frozenset(
            {
                "http.request.method": "GET",
                "url.scheme": "http",
                "network.protocol.version": "1.1",
                "error.type": "KeyError",
                "http.response.status_code": 200,
            }.items()
        ),
        frozenset(
            {
                "http.request.method": "GET",
                "url.scheme": "http",
                "network.protocol.version": "1.1",
                "error.type": "RuntimeError",
            }.items()
        ),
    }
    assert merged(mine, "error.type") == theirs
    [active] = mine["http.server.active_requests"]["points"].values()
    assert active == {"value": 0}


async def test_response_size_is_this_responses_own():
    """A response without content-length records no size, and content-length 0 records 0; the
    instrumentation keeps the previous response's value on itself (and never records 0)."""
    requests = [
        (scope("GET", "/ok"), b""),  # 12 bytes
        (scope("GET", "/stream"), b""),  # no content-length
        (scope("GET", "/empty"), b""),  # content-length: 0
    ]
    mine, theirs = await run_both(requests, fresh=False)
    size = "http.server.response.body.size"
    by_status = {dict(k)["http.response.status_code"]: p for k, p in mine[size]["points"].items()}
    assert {s: (p["count"], p["sum"]) for s, p in by_status.items()} == {200: (1, 12), 204: (1, 0)}
    theirs_by_status = {
        dict(k)["http.response.status_code"]: p for k, p in theirs[size]["points"].items()
    }
    assert {s: (p["count"], p["sum"]) for s, p in theirs_by_status.items()} == {200: (2, 24)}
    # everything else is the same
    del mine[size], theirs[size]
    assert mine == theirs


async def test_requests_in_flight_are_counted_while_they_run():
    """http.server.active_requests is 1 while a request runs and 0 after, by method and scheme."""
    reader = ours()
    release = asyncio.Event()
    started = asyncio.Event()

    async def slow(s: dict, receive: Callable, send: Callable) -> None:
        started.set()
        await release.wait()
        await app(s, receive, send)

    task = asyncio.ensure_future(call(_http.HttpMetrics(slow), scope("POST", "/ok")))
    await started.wait()
    [during] = exported(reader.get_metrics_data())["http.server.active_requests"]["points"].items()
    release.set()
    await task
    [after] = exported(reader.get_metrics_data())["http.server.active_requests"]["points"].items()
    key = frozenset({("http.request.method", "POST"), ("url.scheme", "http")})
    assert during == (key, {"value": 1})
    assert after == (key, {"value": 0})


async def test_route_templates_beyond_the_cap_become_other():
    """Distinct http.route values are capped; later ones fold into _OTHER."""
    reader = ours()

    class Template:
        def __init__(self, path_format: str) -> None:
            self.path_format = path_format

    mine = _http.HttpMetrics(app)
    for i in range(HTTP_ROUTE_LIMIT + 5):
        s = scope("GET", "/ok")
        s["route"] = Template(f"/r{i}/{{item_id}}")
        await call(mine, s)
    secret = scope("GET", "/ok")
    secret["route"] = Template("/keys/sk-proj-abcdefghijklmnopqrstuvwxyz")
    await call(mine, secret)
    routes = [
        a["http.route"]
        for a in attribute_sets(exported(reader.get_metrics_data()), "http.server.request.duration")
    ]
    assert len(routes) == HTTP_ROUTE_LIMIT + 1
    assert "_OTHER" in routes
    assert "/r0/{item_id}" in routes
    assert not any("sk-proj" in r for r in routes)


async def test_captured_methods_are_capped(monkeypatch: pytest.MonkeyPatch):
    """With all methods captured (the instrumentation's variable), client-chosen methods are
    still capped: past the allow-list they become _OTHER."""
    from routemeter.recording._bounds import HTTP_METHOD_LIMIT

    monkeypatch.setenv(_http.CAPTURE_ALL_METHODS, "true")
    reader = ours()
    mine = _http.HttpMetrics(app)
    for i in range(HTTP_METHOD_LIMIT + 10):
        await call(mine, scope(f"X{i}", "/ok"))
    await call(mine, scope("GET", "/ok"))
    active = attribute_sets(exported(reader.get_metrics_data()), "http.server.active_requests")
    methods = {a["http.request.method"] for a in active}
    assert len(methods) == HTTP_METHOD_LIMIT + 2  # the first ones, _OTHER, and GET
    assert {"X0", "_OTHER", "GET"} <= methods


async def test_recording_failures_never_reach_the_app(monkeypatch: pytest.MonkeyPatch):
    """A recorder that fails at a request's end: the app answers as usual, the failure is
    reported, and the request no longer counts as in flight."""
    reader = ours()
    handle = current_handle()
    assert handle is not None
    assert handle.recorder is not None

    def broken(raw: Any) -> Any:
        raise RuntimeError("recording broke")

    monkeypatch.setattr(handle.recorder.http, "finished", broken)
    before = _report.counts["http metrics"]
    sent = await call(_http.HttpMetrics(app), scope("GET", "/ok"))
    assert sent[0]["status"] == 200
    assert _report.counts["http metrics"] == before + 1
    [active] = exported(reader.get_metrics_data())["http.server.active_requests"]["points"].values()
    assert active == {"value": 0}


@pytest.mark.integration
def test_mounted_metrics_show_the_http_families():
    """instrument_app's /metrics shows the four HTTP families under their Prometheus names, with
    the route, from routemeter's scope; scrapes of /metrics are not counted."""

    async def chat(request: Request) -> PlainTextResponse:
        return PlainTextResponse(await request.body())

    routemeter.setup(exporters="prometheus", prometheus_server=False, set_global=False)
    wrapped = routemeter.instrument_app(
        Starlette(routes=[Route("/v1/chat/{model}", chat, methods=["POST"])])
    )
    with serve(wrapped) as url, httpx.Client(base_url=url, timeout=10) as client:
        for _ in range(3):
            assert client.post("/v1/chat/gpt-4o", content=b"0123456789").status_code == 200
        client.get("/metrics")
        text = client.get("/metrics").text
    samples = [line for line in text.splitlines() if line.startswith("http_server_")]
    route = 'http_route="/v1/chat/{model}"'
    for family in (
        "http_server_request_duration_seconds_count",
        "http_server_request_body_size_bytes_count",
        "http_server_response_body_size_bytes_count",
    ):
        [line] = [s for s in samples if s.startswith(family + "{")]
        assert route in line
        assert 'otel_scope_name="routemeter"' in line
        assert float(line.rsplit(" ", 1)[1]) == 3
    assert 'le="81.92"' in text
    assert any(s.startswith("http_server_active_requests{") for s in samples)
    assert "/metrics" not in "".join(samples)


def test_direct_exposition_renders_the_http_families_as_the_exporter():
    """The mounted /metrics renders the HTTP families (float body-size buckets, routes with
    braces, a request in flight) byte for byte as the OTel Prometheus exporter would."""
    from opentelemetry.exporter.prometheus import PrometheusMetricReader
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.util.instrumentation import InstrumentationScope
    from prometheus_client import CollectorRegistry, generate_latest

    from routemeter._config import load
    from routemeter.export._exposition import Exposition
    from routemeter.export._setup import _bounds
    from routemeter.recording._pricing import Prices
    from routemeter.recording.aggregate._recorder import AggregateRecorder

    merged, direct = CollectorRegistry(), CollectorRegistry()
    merged_reader = PrometheusMetricReader(registry=merged)
    direct_reader = PrometheusMetricReader(registry=direct)
    resource = Resource.create({"service.name": "http-exposition"})
    provider = MeterProvider(metric_readers=[merged_reader, direct_reader], resource=resource)
    recorder = AggregateRecorder(
        _bounds(load({})),
        Prices(),
        limit=2000,
        scope=InstrumentationScope("routemeter", "0.1.0"),
        resource=resource,
    )
    recorder.attach(merged_reader)
    recorder.attach(direct_reader, merge=False)
    try:
        for i, (status, route, error, sizes) in enumerate(
            [
                (200, "/v1/chat/{model}", None, (120, 3400)),
                (200, "/v1/chat/{model}", None, (0, 12_000)),
                (503, None, "503", (None, 7)),
                (None, "/items/{item_id}", "RuntimeError", (None, None)),
            ]
        ):
            token = object()
            began = recorder.http_begin("POST", "http", token)
            raw = ("POST", "http", "1.1", status, route, error)
            recorder.http_end(began, token, raw, 0.001 * 7**i, *sizes)
        recorder.http_begin("GET", "https", object())  # still in flight
        text = generate_latest(direct).decode() + Exposition(recorder).text()
        assert text == generate_latest(merged).decode()
        assert "http_server_request_body_size_bytes_bucket{" in text
        assert 'le="0.0"' in text
    finally:
        provider.shutdown()


def test_opentelemetry_choice_uses_the_instrumentation(monkeypatch: pytest.MonkeyPatch):
    """ROUTEMETER_HTTP_INSTRUMENTATION=opentelemetry wraps the app in the instrumentation's
    middleware (its scope on the exported points); the default is routemeter's."""
    for choice, scope_name in (
        ("opentelemetry", "opentelemetry.instrumentation.asgi"),
        (None, "routemeter"),
    ):
        if choice is None:
            monkeypatch.delenv("ROUTEMETER_HTTP_INSTRUMENTATION", raising=False)
        else:
            monkeypatch.setenv("ROUTEMETER_HTTP_INSTRUMENTATION", choice)
        with routemeter.testing.capture() as metrics:
            assert current_handle().config.http_instrumentation == (choice or "routemeter")
            asyncio.run(call(routemeter.instrument_app(app), scope("GET", "/ok")))
            [point] = metrics.points("http.server.request.duration")
        assert point["scope"] == scope_name
        assert point["attributes"]["http.response.status_code"] == 200


def test_bad_http_instrumentation_fails_setup(monkeypatch: pytest.MonkeyPatch):
    """A value outside routemeter/opentelemetry fails setup() naming the variable and choices."""
    monkeypatch.setenv("ROUTEMETER_HTTP_INSTRUMENTATION", "otel")
    with pytest.raises(ConfigError) as failed:
        routemeter.setup(exporters="none", set_global=False)
    assert str(failed.value) == (
        "ROUTEMETER_HTTP_INSTRUMENTATION='otel' is not valid: allowed: routemeter, opentelemetry"
    )


def test_method_and_status_rules_match_the_instrumentation(monkeypatch: pytest.MonkeyPatch):
    """Method normalisation and status rules, value by value, as the instrumentation applies
    them (sanitize_method; error.type below 100 and from 500; non-integer statuses)."""
    from opentelemetry.util.http import sanitize_method

    for method in ("GET", "get", "Post", "QUERY", "PURGE", "GET ", " get", "", "_OTHER"):
        expected = sanitize_method(method).strip() or None if method else None
        assert _http.normal_method(method) == expected, method
    monkeypatch.setenv(_http.CAPTURE_ALL_METHODS, "true")
    assert _http.normal_method("purge", all_methods=True) == sanitize_method("purge") == "PURGE"
    statuses = {200: (200, None), 404: (404, None), 499: (499, None), 500: (500, "500")}
    statuses |= {99: (99, "99"), 0: (None, None), None: (None, None), "abc": (None, "abc")}
    for status, attributes in statuses.items():
        assert _http.status_attributes(status) == attributes, status


def _sizes(headers: list[tuple[bytes, bytes]] | None) -> tuple[int | None, int | None]:
    """A request's and a response's body size read from the same headers."""
    request = _http.request_headers(headers, want_id=False)[0]
    response = _http.response_start({"type": "http.response.start", "headers": headers}, None)[0]
    return request, response


def test_body_sizes_read_the_first_content_length_only():
    """The first content-length header counts, in any case; not a number or negative: no size."""
    assert _sizes([(b"content-length", b"12"), (b"content-length", b"3")]) == (12, 12)
    assert _sizes([(b"Content-Length", b" 7 ")]) == (7, 7)
    assert _sizes([(b"content-length", b"x"), (b"content-length", b"3")]) == (None, None)
    assert _sizes([(b"content-length", b"-1")]) == (None, None)
    assert _sizes([(b"accept-charset", b"utf-8")]) == (None, None)
    assert _sizes(None) == (None, None)


def test_the_request_id_is_the_clients_first_plain_one_or_new():
    """One pass reads the request's size and id: the first x-request-id, when plain; else new."""
    size, given = _http.request_headers(
        [(b"X-Request-Id", b"req-1"), (b"content-length", b"5"), (b"x-request-id", b"req-2")],
        want_id=True,
    )
    assert (size, given) == (5, "req-1")
    _, made = _http.request_headers([(b"x-request-id", b"alice@example.com")], want_id=True)
    assert made is not None
    assert "@" not in made
    assert _http.request_headers([(b"x-request-id", b"req-1")], want_id=False) == (None, None)


def test_the_response_gets_the_id_unless_the_app_set_its_own():
    """The id is added to a copy of the response start; an app's own id, in any case, is kept."""
    headers = [(b"content-length", b"2")]
    start = {"type": "http.response.start", "status": 200, "headers": headers}
    size, sent = _http.response_start(start, "req-9")
    assert size == 2
    assert sent["headers"] == [(b"content-length", b"2"), (b"x-request-id", b"req-9")]
    assert start["headers"] is headers
    assert headers == [(b"content-length", b"2")]
    own = {**start, "headers": [(b"X-Request-ID", b"mine")]}
    assert _http.response_start(own, "req-9") == (None, own)
    assert _http.response_start(start, None) == (2, start)


def test_the_status_fast_path_answers_as_the_rules_do():
    """Every status the lookup table answers gets the same attributes as the full rules."""
    for status, attributes in _http._STATUSES.items():
        assert _http.status_attributes(status) == attributes, status
