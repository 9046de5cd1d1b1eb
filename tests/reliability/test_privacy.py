"""Privacy: canary secrets a client sends (an API key, an email, its IP address, prompt text,
a key-shaped model name, and its user agent, Host header and URL) never appear in what leaves
the process, checked on real exports: the app's /metrics, every page beside it (stats, history,
recent requests, the dashboard) and the OTLP requests on the wire."""

from __future__ import annotations

import httpx
import pytest
from google.protobuf import json_format

import routemeter
from routemeter.demo.router import build_app
from routemeter.demo.run import bind, serving
from support.otlp_receiver import OTLPReceiver

from .hostile import exposition_values, fast_router

pytestmark = pytest.mark.integration

API_KEY = "sk-proj-CANARYkey0123456789abcdefXYZ"
EMAIL = "canary.user@example.com"
CLIENT_IP = "203.0.113.77"
PROMPT = "CANARYPROMPT the zebra sings at midnight"
KEY_MODEL = "sk-ant-api03-CANARYmodel0123456789abcdef"
AGENT = "CanaryAgent/9.9"
HOST = "canary-host.example"
PATH = "/v1/CANARYPATH"
CANARIES = {
    "api key": [API_KEY, "CANARYkey"],
    "email": [EMAIL, "canary.user"],
    "client ip": [CLIENT_IP],
    "prompt": ["CANARYPROMPT", "zebra sings"],
    "key-like model name": [KEY_MODEL, "CANARYmodel"],
    "user agent": ["CanaryAgent"],
    "host header": [HOST],
    "url": ["CANARYPATH", "CANARYQUERY"],
}


def requests() -> list[dict]:
    """Every way a client can hand the router a secret or personal data."""
    headers = {
        "authorization": f"Bearer {API_KEY}",
        "x-api-key": API_KEY,
        "x-forwarded-for": CLIENT_IP,
        "user-agent": AGENT,
        "host": HOST,
    }
    messages = [{"role": "user", "content": f"{PROMPT}; mail me at {EMAIL}"}]
    bodies = [
        {"model": KEY_MODEL, "messages": messages, "user": EMAIL},
        {"model": EMAIL, "messages": messages, "stream": True},
        {"model": f"gpt-4o-{API_KEY}", "messages": messages, "metadata": {"ip": CLIENT_IP}},
        {"model": CLIENT_IP, "messages": messages, "api_key": API_KEY},
        {"model": PROMPT, "messages": messages},
    ]
    # a request id is echoed and kept, unless it is key-, address- or email-shaped
    ids = [API_KEY, CLIENT_IP, "203.0.113.77:443", "canary.user@example.com", KEY_MODEL]
    sent = [
        {
            "method": "POST",
            "url": "/v1/chat/completions?key=CANARYQUERY",
            "json": b,
            "headers": {**headers, "x-request-id": request_id},
        }
        for b, request_id in zip(bodies, ids, strict=True)
    ]
    sent.append({"method": "GET", "url": f"{PATH}?token={API_KEY}", "headers": headers})
    return sent


async def test_canaries_never_leave_the_process():
    """Canary secrets a client sends never appear in /metrics or OTLP payloads."""
    with OTLPReceiver() as receiver:
        routemeter.setup(
            exporters="prometheus,otlp",
            prometheus_server=False,
            otlp_endpoint=receiver.http_metrics_url,
            export_interval_ms=3_600_000,
            set_global=False,
        )
        app = build_app(fast_router())
        async with (
            serving(app, bind("127.0.0.1", 0)) as url,
            httpx.AsyncClient(base_url=url, timeout=30) as client,
        ):
            for request in requests():
                r = await client.request(**request)
                assert r.status_code in (200, 404)
            exposition = (await client.get("/metrics")).text
            pages = {
                page: (await client.get(f"/metrics/{page}")).text
                for page in (
                    "stats",
                    "stats?window=1h",
                    "history?window=1h&group_by=model",
                    "requests/recent",
                    "dashboard",
                )
            }
        routemeter.shutdown()  # flush OTLP
        payloads = [e.request for e in receiver.received]
    assert payloads, "nothing was exported over OTLP"
    wire = b"".join(p.SerializeToString() for p in payloads)
    decoded = "".join(json_format.MessageToJson(p) for p in payloads)
    served = exposition_values(exposition, "gen_ai_server_request_duration_seconds_count")
    for what, needles in CANARIES.items():
        for needle in needles:
            assert needle not in exposition, f"{what} in /metrics"
            for page, text in pages.items():
                assert needle not in text, f"{what} in /metrics/{page}"
            assert needle.encode() not in wire, f"{what} in an OTLP payload"
            assert needle not in decoded, f"{what} in a decoded OTLP payload"
    assert sum(v for _, v in served) == 5
    assert pages["requests/recent"].count('"route"') == 5
    assert 'gen_ai_request_model="_OTHER"' in exposition
