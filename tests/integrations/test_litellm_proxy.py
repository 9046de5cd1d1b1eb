"""RoutemeterCallback inside the real LiteLLM proxy, behind a ccproxy-style router.

The proxy (``litellm.proxy.proxy_server``'s app under uvicorn, on 127.0.0.1, started once for
the module from a real ``config.yaml``) sits in front of a loopback stub that speaks both
OpenAI's ``/v1/chat/completions`` and Anthropic's ``/v1/messages``, streaming or not. The
config's callbacks are the router of docs/integrations.md's recipe, read from there (its
``async_pre_call_hook`` classifies each request as think / background / long_context /
web_search, writes the label into the request metadata and rewrites the model), and
routemeter's callback, labelling by that metadata key. The ``web_search`` group's deployment
fails upstream and falls back to another group.

Each test sends the same mix through both endpoints, in one callback order, and compares what
routemeter exported with a ledger of what the stub served: requests, attempts, fallbacks,
tokens and cost per label, and the model that answered. No network.
"""

from __future__ import annotations

import gc
import json
import os
import secrets
import socket
import threading
import time
import warnings
from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import pytest

from routemeter.recording._pricing import Prices
from routemeter.request._usage import Usage
from routemeter.testing import Capture

from .kit import JSONHandler, require

litellm = require("litellm", "the routemeter[litellm] extra")
with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # the proxy's own pydantic deprecations, at import only
    proxy_server = require("litellm.proxy.proxy_server", "the litellm[proxy] extra (dev)")
uvicorn = require("uvicorn", "the litellm[proxy] extra (dev)")
httpx = require("httpx", "litellm's own HTTP client")

from routemeter.integrations.litellm import RoutemeterCallback  # noqa: E402

pytestmark = pytest.mark.integration

DOCS = Path(__file__).parents[2] / "docs" / "integrations.md"


def router_module() -> str:
    """The router of docs/integrations.md's recipe, as written there, with two changes: the
    long-context threshold small enough for a test body, and no ``routemeter.setup()`` (each
    test sets routemeter up against an in-memory reader)."""
    text = DOCS.read_text()
    start = text.index("```python\n# ccrouter.py\n") + len("```python\n")
    source = text[start : text.index("```", start)]
    for old, new in (
        ("LONG_CONTEXT_CHARS = 240_000", "LONG_CONTEXT_CHARS = 2_000"),
        ("routemeter.setup()", "pass  # routemeter.setup()"),
    ):
        assert source.count(old) == 1, old
        source = source.replace(old, new)
    return source


CLIENT_MODEL = "claude-sonnet-4-5"
SONNET = "claude-sonnet-4-5-20250929"
OPUS = "claude-opus-4-1-20250805"
HAIKU = "claude-3-5-haiku-20241022"
GPT = "gpt-4.1"
GPT_MINI = "gpt-4.1-mini"
FAILING = "claude-sonnet-4-20250514"
"""The stub answers this model with a 500: the web_search group's deployment."""

CONFIG = """\
model_list:
  - model_name: {client}
    litellm_params: {{model: anthropic/{sonnet}, api_base: "{base}", api_key: stub}}
  - model_name: think
    litellm_params: {{model: anthropic/{opus}, api_base: "{base}", api_key: stub}}
  - model_name: background
    litellm_params: {{model: anthropic/{haiku}, api_base: "{base}", api_key: stub}}
  - model_name: long_context
    litellm_params: {{model: openai/{gpt}, api_base: "{base}/v1", api_key: stub}}
  - model_name: web_search
    litellm_params: {{model: anthropic/{failing}, api_base: "{base}", api_key: stub}}
  - model_name: web_search_backup
    litellm_params: {{model: openai/{gpt_mini}, api_base: "{base}/v1", api_key: stub}}
router_settings:
  num_retries: 0
  fallbacks: [{{web_search: [web_search_backup]}}]
litellm_settings:
  callbacks: [ccrouter.router, ccrouter.meter]
general_settings:
  master_key: {key}
"""

OPENAI_USAGE = (11, 7)
ANTHROPIC_USAGE = (20, 5)
PROVIDER = {SONNET: "anthropic", OPUS: "anthropic", HAIKU: "anthropic", FAILING: "anthropic"}
PROVIDER |= {GPT: "openai", GPT_MINI: "openai"}

SERVER = "gen_ai.server.request.duration"
CLIENT = "gen_ai.client.operation.duration"
TOKENS = "llm.router.usage.tokens"
COST = "llm.router.cost.usd"
FALLBACKS = "llm.router.fallbacks"


class _Upstream(JSONHandler):
    """OpenAI chat completions and Anthropic messages, streamed or not, and OpenAI responses;
    ``FAILING`` gets a 500.
    Every request is appended to the stub's ledger as (path, model, stream)."""

    served: ClassVar[list[tuple[str, str, bool]]]

    def do_POST(self) -> None:
        body = self.json_body()
        model, stream = str(body.get("model", "")), bool(body.get("stream"))
        api = self.path.rsplit("/", 1)[-1]  # messages, completions or responses
        self.served.append((api, model, stream))
        if model == FAILING:
            error = {"type": "error", "error": {"type": "api_error", "message": "down"}}
            self._send(500, "application/json", json.dumps(error).encode())
        elif api == "messages":
            self._anthropic(model, stream)
        elif api == "responses":  # LiteLLM sends /v1/messages to OpenAI models this way
            self._responses(model)
        else:
            self._openai(model, stream)

    def _send(self, status: int, kind: str, data: bytes) -> None:
        self.send_response(status)
        self.send_header("content-type", kind)
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _events(self, events: list[tuple[str | None, dict[str, Any] | str]]) -> None:
        data = b"".join(
            (f"event: {name}\n" if name else "").encode()
            + f"data: {body if isinstance(body, str) else json.dumps(body)}\n\n".encode()
            for name, body in events
        )
        self._send(200, "text/event-stream", data)

    def _anthropic(self, model: str, stream: bool) -> None:
        tokens_in, tokens_out = ANTHROPIC_USAGE
        message = {"id": "msg_stub", "type": "message", "role": "assistant", "model": model}
        if not stream:
            message |= {
                "content": [{"type": "text", "text": "hi"}],
                "stop_reason": "end_turn",
                "stop_sequence": None,
                "usage": {"input_tokens": tokens_in, "output_tokens": tokens_out},
            }
            self._send(200, "application/json", json.dumps(message).encode())
            return
        start = message | {
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": {"input_tokens": tokens_in, "output_tokens": 1},
        }
        self._events(
            [
                ("message_start", {"type": "message_start", "message": start}),
                (
                    "content_block_start",
                    {
                        "type": "content_block_start",
                        "index": 0,
                        "content_block": {"type": "text", "text": ""},
                    },
                ),
                *[
                    (
                        "content_block_delta",
                        {
                            "type": "content_block_delta",
                            "index": 0,
                            "delta": {"type": "text_delta", "text": text},
                        },
                    )
                    for text in ("He", "llo")
                ],
                ("content_block_stop", {"type": "content_block_stop", "index": 0}),
                (
                    "message_delta",
                    {
                        "type": "message_delta",
                        "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                        "usage": {"output_tokens": tokens_out},
                    },
                ),
                ("message_stop", {"type": "message_stop"}),
            ]
        )

    def _responses(self, model: str) -> None:
        tokens_in, tokens_out = OPENAI_USAGE
        text = {"type": "output_text", "text": "hi", "annotations": []}
        body = {
            "id": "resp_stub",
            "object": "response",
            "created_at": 1,
            "model": model,
            "status": "completed",
            "output": [
                {
                    "type": "message",
                    "id": "msg_stub",
                    "status": "completed",
                    "role": "assistant",
                    "content": [text],
                }
            ],
            "usage": {
                "input_tokens": tokens_in,
                "output_tokens": tokens_out,
                "total_tokens": tokens_in + tokens_out,
            },
        }
        self._send(200, "application/json", json.dumps(body).encode())

    def _openai(self, model: str, stream: bool) -> None:
        tokens_in, tokens_out = OPENAI_USAGE
        usage = {
            "prompt_tokens": tokens_in,
            "completion_tokens": tokens_out,
            "total_tokens": tokens_in + tokens_out,
        }
        base = {"id": "chatcmpl-stub", "created": 1, "model": model}
        if not stream:
            choice = {
                "index": 0,
                "message": {"role": "assistant", "content": "hi"},
                "finish_reason": "stop",
            }
            body = base | {"object": "chat.completion", "choices": [choice], "usage": usage}
            self._send(200, "application/json", json.dumps(body).encode())
            return
        chunk = base | {"object": "chat.completion.chunk"}
        deltas = [{"role": "assistant", "content": "He"}, {"content": "llo"}]
        self._events(
            [
                (None, chunk | {"choices": [{"index": 0, "delta": d, "finish_reason": None}]})
                for d in deltas
            ]
            + [
                (None, chunk | {"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}),
                (None, chunk | {"choices": [], "usage": usage}),
                (None, "[DONE]"),
            ]
        )


@dataclass
class Proxy:
    """The running proxy: its client, routemeter's callback, and the stub's ledger."""

    client: Any
    meter: Any
    router: Any
    served: list[tuple[str, str, bool]]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


_CALLBACK_LISTS = (
    "callbacks",
    "success_callback",
    "failure_callback",
    "_async_success_callback",
    "_async_failure_callback",
    "input_callback",
    "service_callback",
)


@pytest.fixture(scope="module")
def proxy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Proxy]:
    """The LiteLLM proxy on a free loopback port, configured from config.yaml, in front of the
    stub; LiteLLM's global callback lists and the proxy's router are restored afterwards."""
    served: list[tuple[str, str, bool]] = []
    upstream = ThreadingHTTPServer(("127.0.0.1", 0), type("U", (_Upstream,), {"served": served}))
    upstream.daemon_threads = True
    stub_thread = threading.Thread(target=upstream.serve_forever, daemon=True)
    stub_thread.start()
    here = tmp_path_factory.mktemp("proxy")
    key = "sk-" + secrets.token_hex(16)
    (here / "ccrouter.py").write_text(router_module())
    (here / "config.yaml").write_text(
        CONFIG.format(
            client=CLIENT_MODEL,
            sonnet=SONNET,
            opus=OPUS,
            haiku=HAIKU,
            gpt=GPT,
            gpt_mini=GPT_MINI,
            failing=FAILING,
            base=f"http://127.0.0.1:{upstream.server_address[1]}",
            key=key,
        )
    )
    saved_lists = {name: list(getattr(litellm, name)) for name in _CALLBACK_LISTS}
    saved_env = os.environ.get("CONFIG_FILE_PATH")
    os.environ["CONFIG_FILE_PATH"] = str(here / "config.yaml")
    port = _free_port()
    server = uvicorn.Server(
        uvicorn.Config(
            proxy_server.app,
            host="127.0.0.1",
            port=port,
            log_level="warning",
            timeout_graceful_shutdown=2,
            loop="asyncio",
        )
    )
    thread = threading.Thread(target=server.run, name="litellm-proxy", daemon=True)
    thread.start()
    client = httpx.Client(
        base_url=f"http://127.0.0.1:{port}",
        headers={"authorization": f"Bearer {key}"},
        timeout=30.0,
    )
    try:
        deadline = time.monotonic() + 60
        while not server.started:
            assert thread.is_alive(), "the proxy did not start"
            assert time.monotonic() < deadline, "the proxy did not start in 60 s"
            time.sleep(0.05)
        [meter] = [c for c in litellm.callbacks if isinstance(c, RoutemeterCallback)]
        [router] = [c for c in litellm.callbacks if type(c).__name__ == "Router"]
        yield Proxy(client, meter, router, served)
    finally:
        client.close()
        server.should_exit = True
        thread.join(timeout=30)
        with warnings.catch_warnings():
            # LiteLLM leaves its cached upstream connections to the loop that just closed
            warnings.simplefilter("ignore", ResourceWarning)
            gc.collect()
        for callback in litellm.callbacks:
            if isinstance(callback, RoutemeterCallback):
                callback.close()
        for name, saved in saved_lists.items():
            getattr(litellm, name)[:] = saved
        proxy_server.llm_router = None  # later RoutemeterCallbacks must not watch it
        if saved_env is None:
            os.environ.pop("CONFIG_FILE_PATH", None)
        else:
            os.environ["CONFIG_FILE_PATH"] = saved_env
        upstream.shutdown()
        upstream.server_close()
        stub_thread.join(timeout=5)


@dataclass(frozen=True)
class Call:
    """One client request and what the router should make of it."""

    endpoint: str  # "chat" or "messages"
    stream: bool
    label: str
    body: dict[str, Any]
    served_by: tuple[str, ...]  # the upstream models called, in order (the last one answers)


THINKING = {"type": "enabled", "budget_tokens": 1024}
WEB_SEARCH_TOOL = {
    "name": "web_search_lookup",
    "description": "Search the web",
    "input_schema": {"type": "object", "properties": {"q": {"type": "string"}}},
}


def _calls() -> list[Call]:
    hi = [{"role": "user", "content": "hi"}]
    long = [{"role": "user", "content": "x" * 3_000}]
    calls = []
    for endpoint in ("chat", "messages"):
        for stream in (False, True):
            calls += [
                Call(endpoint, stream, "think", {"messages": hi, "thinking": THINKING}, (OPUS,)),
                Call(endpoint, stream, "default", {"messages": hi}, (SONNET,)),
            ]
        calls += [
            Call(endpoint, False, "background", {"messages": hi, "model": "haiku"}, (HAIKU,)),
            Call(endpoint, False, "long_context", {"messages": long}, (GPT,)),
        ]
    calls.append(
        Call(
            "messages",
            False,
            "web_search",
            {"messages": hi, "tools": [WEB_SEARCH_TOOL]},
            (FAILING, GPT_MINI),
        )
    )
    return calls


def send(proxy: Proxy, call: Call) -> None:
    """One request through the proxy, as a client would send it; its body read to the end."""
    body: dict[str, Any] = {"model": CLIENT_MODEL, "max_tokens": 2048, **call.body}
    if call.stream:
        body["stream"] = True
        if call.endpoint == "chat":
            body["stream_options"] = {"include_usage": True}
    path = "/v1/chat/completions" if call.endpoint == "chat" else "/v1/messages"
    with proxy.client.stream("POST", path, json=body) as response:
        text = response.read().decode()
        assert response.status_code == 200, text


def usage_of(model: str) -> Usage:
    """The usage the stub reports for a model, in its provider's format."""
    tokens = ANTHROPIC_USAGE if PROVIDER[model] == "anthropic" else OPENAI_USAGE
    return Usage(*tokens)


def ledger(calls: list[Call]) -> dict[str, Any]:
    """What routemeter must have exported, from what the stub served."""
    prices = Prices()
    requests: Counter[str] = Counter()
    attempts: Counter[tuple[str, str, str | None]] = Counter()
    tokens: Counter[tuple[str, str]] = Counter()
    cost: defaultdict[str, float] = defaultdict(float)
    answered: Counter[tuple[str, str, str]] = Counter()
    for call in calls:
        requests[call.label] += 1
        *failed, model = call.served_by
        for down in failed:
            attempts[(call.label, down, "500")] += 1
        attempts[(call.label, model, None)] += 1
        usage = usage_of(model)
        tokens[(call.label, "input")] += usage.input or 0
        tokens[(call.label, "output")] += usage.output or 0
        rates = prices.rates(PROVIDER[model], model)
        assert rates is not None, model
        cost[call.label] += rates.cost(usage)
        answered[(call.label, model, model)] += 1
    return {
        "requests": requests,
        "attempts": attempts,
        "tokens": tokens,
        "cost": dict(cost),
        "answered": answered,
    }


def exported(metrics: Capture) -> dict[str, Any]:
    """The same figures, read from what routemeter exported."""
    requests: Counter[str] = Counter()
    for p in metrics.points(SERVER):
        requests[p["attributes"]["llm.router.route"]] += p["count"]
    attempts: Counter[tuple[str, str, str | None]] = Counter()
    answered: Counter[tuple[str, str, str]] = Counter()
    for p in metrics.points(CLIENT):
        a = p["attributes"]
        key = (a["llm.router.route"], a["gen_ai.request.model"], a.get("error.type"))
        attempts[key] += p["count"]
        if "error.type" not in a:
            served = (a["llm.router.route"], a["gen_ai.request.model"], a["gen_ai.response.model"])
            answered[served] += p["count"]
    tokens: Counter[tuple[str, str]] = Counter()
    for p in metrics.points(TOKENS):
        a = p["attributes"]
        tokens[(a["llm.router.route"], a["gen_ai.token.type"])] += p["value"]
    cost: defaultdict[str, float] = defaultdict(float)
    for p in metrics.points(COST):
        cost[p["attributes"]["llm.router.route"]] += p["value"]
    return {
        "requests": requests,
        "attempts": attempts,
        "tokens": tokens,
        "cost": dict(cost),
        "answered": answered,
    }


def settled(proxy: Proxy, metrics: Capture, expected: int) -> None:
    """Wait (at most 20 s) until the proxy's callbacks committed ``expected`` requests."""
    deadline = time.monotonic() + 20
    while metrics.count(SERVER) < expected or proxy.meter.open_requests:
        assert time.monotonic() < deadline, (metrics.count(SERVER), proxy.meter.open_requests)
        time.sleep(0.02)


def order(first: Any, then: Any) -> None:
    """Put ``first`` before ``then`` in LiteLLM's callbacks (the proxy runs hooks in order)."""
    callbacks = litellm.callbacks
    callbacks.remove(first)
    callbacks.insert(callbacks.index(then), first)


@pytest.mark.parametrize("meter_first", [False, True], ids=["router-first", "meter-first"])
def test_labels_served_models_cost_attempts_and_fallbacks_are_exact(
    proxy: Proxy, metrics: Capture, meter_first: bool
) -> None:
    """Per label, in either callback order, every figure is the stub's ledger, exactly."""
    if meter_first:
        order(proxy.meter, proxy.router)
    else:
        order(proxy.router, proxy.meter)
    calls = _calls()
    proxy.served.clear()
    for call in calls:
        send(proxy, call)
    settled(proxy, metrics, len(calls))

    assert [model for _, model, _ in proxy.served] == [m for c in calls for m in c.served_by]
    expected, got = ledger(calls), exported(metrics)
    assert got["requests"] == expected["requests"]
    assert got["attempts"] == expected["attempts"]
    assert got["answered"] == expected["answered"]
    assert got["tokens"] == expected["tokens"]
    assert got["cost"] == pytest.approx(expected["cost"], rel=1e-9)
    assert [
        (
            p["attributes"]["llm.router.route"],
            p["attributes"]["llm.router.fallback.from.model"],
            p["attributes"]["gen_ai.request.model"],
            p["value"],
        )
        for p in metrics.points(FALLBACKS)
    ] == [("web_search", FAILING, GPT_MINI, 1)]
    requested = {p["attributes"]["gen_ai.request.model"] for p in metrics.points(SERVER)}
    assert requested == {CLIENT_MODEL, "haiku"}  # the client's model, not the rewritten one
    assert metrics.value("llm.router.requests.active") == 0


def test_the_client_sees_its_own_model_while_routemeter_records_the_deployment(
    proxy: Proxy, metrics: Capture
) -> None:
    """A re-routed OpenAI-format request is recorded and priced at the model that answered."""
    order(proxy.router, proxy.meter)
    response = proxy.client.post(
        "/v1/chat/completions",
        json={
            "model": CLIENT_MODEL,
            "messages": [{"role": "user", "content": "hi"}],
            "thinking": THINKING,
            "max_tokens": 2048,
        },
    )
    assert response.status_code == 200
    settled(proxy, metrics, 1)

    assert response.json()["model"] == CLIENT_MODEL
    [attempt] = metrics.points(CLIENT)
    assert attempt["attributes"]["gen_ai.request.model"] == OPUS
    assert attempt["attributes"]["gen_ai.response.model"] == OPUS
    [cost] = metrics.points(COST)
    rates = Prices().rates("anthropic", OPUS)
    assert rates is not None
    assert cost["value"] == pytest.approx(rates.cost(usage_of(OPUS)), rel=1e-9)
    [request] = metrics.points(SERVER)
    assert request["attributes"]["llm.router.route"] == "think"
    assert request["attributes"]["gen_ai.request.model"] == CLIENT_MODEL


def _arrived(model: str, call_id: str) -> dict[str, Any]:
    """Request data as the proxy hands it to pre-call hooks: the body's snapshot included."""
    return {
        "model": model,
        "litellm_call_id": call_id,
        "metadata": {},
        "proxy_server_request": {"body": {"model": model}},
    }


async def test_a_label_written_after_arrival_is_used_when_no_upstream_call_started(
    metrics: Capture,
) -> None:
    """Failing before any upstream call, a request still gets the label a later hook wrote."""
    callback = RoutemeterCallback(route=lambda group, metadata: metadata.get("label"))
    try:
        data = _arrived(CLIENT_MODEL, "call-early-failure")
        await callback.async_pre_call_hook(None, None, data, "acompletion")
        data["metadata"]["label"] = "think"  # the router's hook, listed after routemeter
        data["model"] = "think"
        denied = litellm.AuthenticationError("no", "anthropic", OPUS)
        await callback.async_post_call_failure_hook(data, denied, None)
    finally:
        callback.close()
    [request] = metrics.points(SERVER)
    assert request["attributes"] == {
        "llm.router.route": "think",
        "gen_ai.operation.name": "chat",
        "gen_ai.request.model": CLIENT_MODEL,
        "error.type": "401",
    }
    assert metrics.points(CLIENT) == []
    assert metrics.value("llm.router.requests.active") == 0


async def test_a_request_that_never_reaches_upstream_is_committed_incomplete(
    metrics: Capture,
) -> None:
    """A proxy request never heard of again commits as incomplete after idle_s."""
    callback = RoutemeterCallback(idle_s=0.2)
    try:
        await callback.async_pre_call_hook(None, None, _arrived("lost", "call-lost"), None)
        assert callback.open_requests == 1
        deadline = time.monotonic() + 5
        while metrics.count(SERVER) == 0:
            assert time.monotonic() < deadline, "never committed"
            time.sleep(0.02)
    finally:
        callback.close()
    [request] = metrics.points(SERVER)
    assert request["attributes"]["error.type"] == "incomplete"
    assert request["attributes"]["gen_ai.request.model"] == "lost"
    assert callback.open_requests == 0
