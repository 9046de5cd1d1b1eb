"""Helpers for the integration tests: optional packages, loopback upstreams, dead ports.

Everything here is loopback only. ``OpenAIStub`` is a small OpenAI-compatible chat server that
answers with chosen headers, so LiteLLM's real HTTP path (headers, streaming, 429s) runs end to
end; ``dead_port()`` holds a port that refuses connections, so a deployment pointed at it fails
for real and LiteLLM reports the failure as it would in production.
"""

from __future__ import annotations

import importlib
import json
import os
import socket
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import ModuleType
from typing import Any, ClassVar


def require(module: str, why: str) -> ModuleType:
    """Import ``module``; skip the test when it is missing, but fail under CI=true: CI must
    never skip silently."""
    import pytest

    try:
        return importlib.import_module(module)
    except ImportError as e:
        message = f"{module} is not installed ({why}): {e}"
        if os.environ.get("CI") == "true":
            pytest.fail(f"{message}; CI=true so these tests may not skip")
        pytest.skip(message, allow_module_level=True)


@contextmanager
def dead_port() -> Iterator[int]:
    """A loopback port that refuses connections: bound, never listening, held until exit."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        yield int(sock.getsockname()[1])


RATE_LIMITED: Mapping[str, str] = {
    "x-ratelimit-limit-requests": "500",
    "x-ratelimit-remaining-requests": "0",
    "x-ratelimit-remaining-tokens": "0",
}
HEADROOM: Mapping[str, str] = {
    "x-ratelimit-limit-requests": "500",
    "x-ratelimit-remaining-requests": "499",
    "x-ratelimit-remaining-tokens": "149000",
}
USAGE: Mapping[str, int] = {"prompt_tokens": 11, "completion_tokens": 7, "total_tokens": 18}


class JSONHandler(BaseHTTPRequestHandler):
    """A quiet HTTP/1.1 handler of JSON requests, for the loopback upstream stubs."""

    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def json_body(self) -> dict[str, Any]:
        length = int(self.headers.get("content-length") or 0)
        body: dict[str, Any] = json.loads(self.rfile.read(length) or b"{}")
        return body


class _Handler(JSONHandler):
    stub: ClassVar[OpenAIStub]

    def do_POST(self) -> None:
        body = self.json_body()
        model = str(body.get("model", ""))
        self.stub.requests.append(model)
        if model.startswith("limited"):
            self._send(
                429,
                {"error": {"message": "slow down", "type": "rate_limit_error"}},
                RATE_LIMITED,
            )
            return
        if body.get("stream"):
            self._stream(model, bool((body.get("stream_options") or {}).get("include_usage")))
            return
        self._send(
            200,
            {
                "id": "chatcmpl-stub",
                "object": "chat.completion",
                "created": 1,
                "model": f"{model}-2024-07-18",
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": "hi"},
                        "finish_reason": "stop",
                    }
                ],
                "usage": dict(USAGE),
            },
            HEADROOM,
        )

    def _send(self, status: int, payload: Any, headers: Mapping[str, str]) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        for name, value in headers.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)

    def _stream(self, model: str, include_usage: bool) -> None:
        self.send_response(200)
        self.send_header("content-type", "text/event-stream")
        self.send_header("connection", "close")
        for name, value in HEADROOM.items():
            self.send_header(name, value)
        self.end_headers()
        base = {"id": "chatcmpl-stub", "object": "chat.completion.chunk", "created": 1}
        base["model"] = f"{model}-2024-07-18"
        for i, text in enumerate(["He", "llo", " there"]):
            delta: dict[str, Any] = {"content": text}
            if i == 0:
                delta["role"] = "assistant"
            chunk = {**base, "choices": [{"index": 0, "delta": delta, "finish_reason": None}]}
            self.wfile.write(f"data: {json.dumps(chunk)}\n\n".encode())
            self.wfile.flush()
        final = {**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}
        self.wfile.write(f"data: {json.dumps(final)}\n\n".encode())
        if include_usage:
            usage = {**base, "choices": [], "usage": dict(USAGE)}
            self.wfile.write(f"data: {json.dumps(usage)}\n\n".encode())
        self.wfile.write(b"data: [DONE]\n\n")
        self.wfile.flush()
        self.close_connection = True


class OpenAIStub:
    """An OpenAI-compatible ``/v1/chat/completions`` on loopback. Models named ``limited*``
    answer 429 with exhausted rate-limit headers; every other model answers 200 (or a short
    stream) with ``HEADROOM`` headers and ``USAGE``."""

    def __init__(self) -> None:
        handler = type("Handler", (_Handler,), {"stub": self})
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.server.daemon_threads = True
        self.requests: list[str] = []
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def api_base(self) -> str:
        return f"http://localhost:{self.server.server_address[1]}/v1"

    def __enter__(self) -> OpenAIStub:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
        self._thread.join(timeout=5)
