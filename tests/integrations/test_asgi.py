"""instrument_app under a real uvicorn server: HTTP metrics, mounted /metrics, lifespan flush."""

from __future__ import annotations

import os

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, StreamingResponse
from starlette.routing import Route

import routemeter
from support.asgi import serve
from support.otlp_receiver import OTLPReceiver
from support.prometheus import promtool_check_metrics, require_prometheus


@routemeter.route("default")
async def route_chat(body: dict) -> dict:
    rec = routemeter.current()
    rec.requested(body.get("model"))
    with rec.attempt("openai", "gpt-4o-mini") as a:
        a.usage(input_tokens=3, output_tokens=4)
    return {"ok": True}


@routemeter.route("streaming")
async def route_stream(body: dict):
    with routemeter.current().attempt("openai", "gpt-4o-mini") as a:
        for i in range(3):
            a.chunk()
            yield f"data: {i}\n\n".encode()
        a.usage(output_tokens=3)


async def chat(request: Request):
    body = await request.json()
    if body.get("stream"):
        return StreamingResponse(route_stream(body), media_type="text/event-stream")
    return JSONResponse(await route_chat(body))


def make_app():
    return routemeter.instrument_app(
        Starlette(routes=[Route("/v1/chat/completions", chat, methods=["POST"])])
    )


def test_metrics_mounted_with_http_and_genai_families(monkeypatch):
    """GET /metrics on the app shows HTTP server metrics (seconds, wide buckets) and ours."""
    routemeter.setup(exporters="prometheus", prometheus_server=False, set_global=False)
    with serve(make_app()) as url, httpx.Client(base_url=url, timeout=10) as client:
        for stream in (False, True, False):
            r = client.post("/v1/chat/completions", json={"model": "gpt-4o", "stream": stream})
            assert r.status_code == 200
        assert client.post("/v1/chat/completions", json={}).status_code == 200
        text = client.get("/metrics").text
    assert "http_server_request_duration_seconds_bucket" in text
    assert 'le="81.92"' in text
    assert 'gen_ai_server_request_duration_seconds_count{gen_ai_operation_name="chat"' in text
    assert 'llm_router_route="streaming"' in text
    assert "gen_ai_server_time_to_first_token_seconds_count" in text
    assert 'http_route="/metrics"' not in text
    assert 'url_path="/metrics"' not in text


@pytest.mark.integration
def test_exposition_passes_promtool():
    """promtool check metrics finds nothing to flag in the exposition."""
    require_prometheus()
    routemeter.setup(exporters="prometheus", prometheus_server=False, set_global=False)
    with serve(make_app()) as url, httpx.Client(base_url=url, timeout=10) as client:
        for stream in (False, True):
            client.post("/v1/chat/completions", json={"model": "gpt-4o", "stream": stream})
        text = client.get("/metrics").text
    code, output = promtool_check_metrics(text)
    assert code == 0, output
    assert output.strip() == "", output


def test_lifespan_shutdown_flushes_otlp(monkeypatch):
    """Stopping the server flushes OTLP at lifespan shutdown: the tail is exported."""
    with OTLPReceiver() as receiver:
        monkeypatch.setenv("OTEL_METRICS_EXPORTER", "otlp")
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf")
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.http_endpoint)
        routemeter.setup(set_global=False, export_interval_ms=3_600_000)
        with serve(make_app()) as url, httpx.Client(base_url=url, timeout=10) as client:
            for _ in range(7):
                client.post("/v1/chat/completions", json={"model": "gpt-4o"})
        # the server has stopped; routemeter is still set up (no shutdown() called yet)
        [point] = receiver.latest("gen_ai.server.request.duration")
        assert point["count"] == 7


def test_instrument_app_leaves_the_environment_and_other_instrumentation_alone(monkeypatch):
    """With ROUTEMETER_HTTP_INSTRUMENTATION=opentelemetry, stable HTTP semconv for our
    middleware only: the environment is untouched and an ASGI instrumentation the app builds
    afterwards keeps the process's default mode."""
    from opentelemetry.instrumentation._semconv import _StabilityMode
    from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware
    from opentelemetry.sdk.metrics import MeterProvider

    monkeypatch.delenv("OTEL_SEMCONV_STABILITY_OPT_IN", raising=False)
    monkeypatch.setenv("ROUTEMETER_HTTP_INSTRUMENTATION", "opentelemetry")
    routemeter.setup(exporters="prometheus", prometheus_server=False, set_global=False)
    make_app()
    assert "OTEL_SEMCONV_STABILITY_OPT_IN" not in os.environ
    other = OpenTelemetryMiddleware(Starlette(), meter_provider=MeterProvider())
    assert other._sem_conv_opt_in_mode is _StabilityMode.DEFAULT
