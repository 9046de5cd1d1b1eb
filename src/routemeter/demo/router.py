"""The demo router: an OpenAI-compatible endpoint that routes by label, falls back, caches and
rate-limits, instrumented with routemeter the way a real router would be.

Labels follow claude-code-router: ``long_context`` when the prompt is large, ``background`` for
small-model requests, ``think`` when reasoning is asked for, ``default`` otherwise. Each label
has a fallback chain; a provider/model that fails ``cooldown_after`` times in a row is skipped
for ``cooldown_s``. Every response carries ``routemeter_demo``: the server-side facts (route,
attempts, fallbacks, cache, usage billed) from which the expected metrics follow exactly.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections import OrderedDict
from collections.abc import AsyncGenerator, Awaitable, Callable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any, Final

from starlette.applications import Starlette
from starlette.requests import Request as HTTPRequest
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

import routemeter
from routemeter.demo.providers import (
    APIError,
    APIStatusError,
    Billed,
    UpstreamRequest,
    Upstreams,
    count_tokens,
)
from routemeter.integrations._http import ASGIApp

Target = tuple[str, str]
"""(gen_ai.provider.name, model)"""

CHAINS: Final[Mapping[str, tuple[Target, ...]]] = {
    "background": (
        ("openai", "gpt-4o-mini"),
        ("gcp.gemini", "gemini-2.5-flash"),
        ("anthropic", "claude-3-5-haiku"),
    ),
    "think": (("anthropic", "claude-sonnet-4-5"), ("openai", "o4-mini")),
    "long_context": (("gcp.gemini", "gemini-2.5-flash"), ("anthropic", "claude-sonnet-4-5")),
    "default": (
        ("anthropic", "claude-sonnet-4-5"),
        ("openai", "gpt-4o"),
        ("gcp.gemini", "gemini-2.5-flash"),
    ),
}
"""Fallback chain per route label, primary first."""

REASONS: Final[Mapping[str, str]] = {
    "background": "small_model_requested",
    "think": "reasoning_requested",
    "long_context": "prompt_over_threshold",
    "default": "default",
}
COOLDOWN_REASON: Final = "primary_cooling_down"
CACHE_NAME: Final = "responses"
SERVER_PORT: Final = 443


@dataclass(frozen=True, slots=True)
class RouterSettings:
    long_context_tokens: int = 6_000
    cache_size: int = 48
    client_rate: float = 5.0
    """Requests per second each client key may sustain (token-bucket refill)."""
    client_burst: int = 10
    cooldown_after: int = 3
    cooldown_s: float = 2.0


def classify(body: Mapping[str, Any], long_context_tokens: int) -> str:
    """The route label for a request body, in claude-code-router's order."""
    messages = body.get("messages") or []
    if count_tokens(messages) > long_context_tokens:
        return "long_context"
    model = str(body.get("model", ""))
    if "haiku" in model or model.endswith("-mini"):
        return "background"
    if body.get("reasoning_effort") or body.get("thinking"):
        return "think"
    return "default"


def error_type(exc: APIError) -> str:
    return str(exc.status_code) if isinstance(exc, APIStatusError) else type(exc).__name__


class TokenBuckets:
    """Per-client token buckets: the router's own rate limit."""

    def __init__(self, rate: float, burst: int) -> None:
        self.rate = rate
        self.burst = float(burst)
        self._buckets: dict[str, tuple[float, float]] = {}

    def allow(self, client: str, now: float) -> bool:
        tokens, last = self._buckets.get(client, (self.burst, now))
        tokens = min(self.burst, tokens + (now - last) * self.rate)
        allowed = tokens >= 1.0
        self._buckets[client] = (tokens - 1.0 if allowed else tokens, now)
        return allowed


class ResponseCache:
    """An LRU of finished non-streaming responses that reports its size to routemeter."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._entries: OrderedDict[str, dict[str, Any]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: str) -> dict[str, Any] | None:
        found = self._entries.get(key)
        if found is not None:
            self._entries.move_to_end(key)
        return found

    def put(self, key: str, value: dict[str, Any]) -> tuple[bool, int]:
        """Store ``value``; return whether it is a new entry and how many were evicted."""
        if key in self._entries:  # a concurrent miss for the same prompt stored it first
            self._entries[key] = value
            self._entries.move_to_end(key)
            return False, 0
        self._entries[key] = value
        routemeter.cache_entries(CACHE_NAME, 1)
        evicted = 0
        while len(self._entries) > self.capacity:
            self._entries.popitem(last=False)
            evicted += 1
        if evicted:
            routemeter.cache_evicted(CACHE_NAME, evicted)
            routemeter.cache_entries(CACHE_NAME, -evicted)
        return True, evicted


def cache_key(body: Mapping[str, Any]) -> str:
    keyed = {k: body.get(k) for k in ("model", "messages", "max_tokens", "reasoning_effort")}
    return hashlib.sha256(json.dumps(keyed, sort_keys=True).encode()).hexdigest()


class Cooldowns:
    """Consecutive failures per target; at ``after`` in a row the target rests ``period_s``."""

    def __init__(self, after: int, period_s: float) -> None:
        self.after = after
        self.period_s = period_s
        self._failures: dict[Target, int] = {}
        self._until: dict[Target, float] = {}

    def available(self, target: Target, now: float) -> bool:
        return self._until.get(target, 0.0) <= now

    def failed(self, target: Target, now: float) -> bool:
        """Count a failure; True when it starts a cooldown."""
        if not self.available(target, now):
            return False
        count = self._failures.get(target, 0) + 1
        if count < self.after:
            self._failures[target] = count
            return False
        self._failures[target] = 0
        self._until[target] = now + self.period_s
        return True

    def succeeded(self, target: Target) -> None:
        self._failures[target] = 0


@dataclass(slots=True)
class Facts:
    """What the router did for one request, sent back to the client as ``routemeter_demo``."""

    route: str
    stream: bool
    requested_model: str | None
    status: int = 200
    rate_limited: bool = False
    cache: str | None = None
    decision: dict[str, str] | None = None
    attempts: list[dict[str, Any]] = field(default_factory=list)
    fallbacks: list[dict[str, str]] = field(default_factory=list)
    cooldowns: list[dict[str, str]] = field(default_factory=list)
    cache_stored: bool = False
    cache_evictions: int = 0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(slots=True)
class Call:
    """One client request on its way through the router."""

    body: dict[str, Any]
    client: str
    facts: Facts
    error_body: dict[str, Any] | None = None

    @property
    def upstream_request(self) -> UpstreamRequest:
        max_tokens = self.body.get("max_tokens")
        effort = self.body.get("reasoning_effort")
        return UpstreamRequest(
            messages=self.body["messages"],
            max_tokens=max_tokens if type(max_tokens) is int and max_tokens > 0 else 1024,
            reasoning_effort=effort if isinstance(effort, str) else None,
        )

    def fail(self, status: int, kind: str, message: str) -> None:
        self.facts.status = status
        self.error_body = {"error": {"message": message, "type": kind, "code": status}}

    def error_response(self) -> JSONResponse:
        body = {**(self.error_body or {}), "routemeter_demo": self.facts.as_dict()}
        headers = {"x-routemeter-route": self.facts.route}
        if self.facts.rate_limited:
            headers["retry-after"] = "1"
        return JSONResponse(body, status_code=self.facts.status, headers=headers)

    def reply(self, body: Mapping[str, Any]) -> JSONResponse:
        return JSONResponse(
            {**body, "routemeter_demo": self.facts.as_dict()},
            headers={"x-routemeter-route": self.facts.route},
        )


class Router:
    """Routing state shared by every handler: upstreams, cache, rate limiter, cooldowns."""

    def __init__(self, upstreams: Upstreams, settings: RouterSettings | None = None) -> None:
        self.upstreams = upstreams
        self.settings = settings = settings or RouterSettings()
        self.cache = ResponseCache(settings.cache_size)
        self.limiter = TokenBuckets(settings.client_rate, settings.client_burst)
        self.cooldowns = Cooldowns(settings.cooldown_after, settings.cooldown_s)

    def admit(self, call: Call) -> bool:
        """The client's token bucket has room; otherwise the call is failed with a 429."""
        if self.limiter.allow(call.client, time.monotonic()):
            return True
        call.facts.rate_limited = True
        call.fail(429, "rate_limit_error", "too many requests for this API key; slow down")
        return False

    def plan(self, call: Call) -> tuple[list[Target], str]:
        """The targets to try, in order, and why the first; cooling-down ones go only if all
        are."""
        label = call.facts.route
        chain = CHAINS[label]
        now = time.monotonic()
        live = [t for t in chain if self.cooldowns.available(t, now)] or list(chain)
        reason = REASONS[label] if live[0] == chain[0] else COOLDOWN_REASON
        call.facts.decision = {"provider": live[0][0], "model": live[0][1], "reason": reason}
        return live, reason

    def observe(self, target: Target, headers: Mapping[str, str]) -> None:
        routemeter.ratelimit_from_headers(target[0], target[1], headers)

    def failed(self, call: Call, target: Target, exc: APIError, next_target: Target | None) -> None:
        why = error_type(exc)
        if isinstance(exc, APIStatusError):
            self.observe(target, exc.headers)
        call.facts.attempts.append(
            {"provider": target[0], "model": target[1], "outcome": why, "usage": None}
        )
        if next_target is not None:
            call.facts.fallbacks.append(
                {
                    "from_provider": target[0],
                    "from_model": target[1],
                    "to_provider": next_target[0],
                    "to_model": next_target[1],
                    "error_type": why,
                }
            )
        if self.cooldowns.failed(target, time.monotonic()):
            routemeter.cooldown(target[0], target[1], why, seconds=self.settings.cooldown_s)
            call.facts.cooldowns.append(
                {"provider": target[0], "model": target[1], "error_type": why}
            )

    def succeeded(
        self, call: Call, target: Target, billed: Billed, headers: Mapping[str, str]
    ) -> None:
        self.cooldowns.succeeded(target)
        self.observe(target, headers)
        call.facts.attempts.append(
            {
                "provider": target[0],
                "model": target[1],
                "response_model": self.upstreams[target].profile.served_as,
                "outcome": "ok",
                "usage": billed.as_dict(),
            }
        )

    def all_failed(self, call: Call) -> None:
        tried = ", ".join(
            f"{a['provider']}/{a['model']}: {a['outcome']}" for a in call.facts.attempts
        )
        call.fail(502, "upstream_error", f"every provider failed ({tried})")


def _openai_usage(billed: Billed) -> dict[str, Any]:
    return {
        "prompt_tokens": billed.input,
        "completion_tokens": billed.output,
        "total_tokens": billed.input + billed.output,
        "prompt_tokens_details": {"cached_tokens": billed.cache_read},
        "completion_tokens_details": {"reasoning_tokens": billed.reasoning},
    }


def _completion(model: str, text: str, billed: Billed) -> dict[str, Any]:
    return {
        "id": f"chatcmpl-{time.monotonic_ns():x}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}
        ],
        "usage": _openai_usage(billed),
    }


def _chunk(model: str, choices: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    return {
        "id": "chatcmpl-stream",
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": model,
        "choices": choices,
        **extra,
    }


def translate(event: Mapping[str, Any], model: str) -> dict[str, Any] | None:
    """An upstream streaming event as an OpenAI chunk for the client (None: nothing to send)."""
    kind = event.get("type")
    if kind is None:  # already OpenAI-shaped; the router sends its own usage chunk
        choices = event.get("choices")
        return _chunk(model, list(choices)) if choices else None
    if kind == "message_start":
        return _chunk(model, [{"index": 0, "delta": {"role": "assistant"}}])
    if kind == "content_block_delta":
        text = event.get("delta", {}).get("text", "")
        return _chunk(model, [{"index": 0, "delta": {"content": text}, "finish_reason": None}])
    if kind == "message_delta":
        return _chunk(model, [{"index": 0, "delta": {}, "finish_reason": "stop"}])
    return None


def sse(obj: Mapping[str, Any] | str) -> bytes:
    data = obj if isinstance(obj, str) else json.dumps(obj, separators=(",", ":"))
    return f"data: {data}\n\n".encode()


Completer = Callable[[Call], Awaitable[Response]]
Streamer = Callable[[Call], AsyncGenerator[bytes, None]]


def _handlers(router: Router, label: str) -> tuple[Completer, Streamer]:
    """The two handlers of one route label: a coroutine and an async generator."""
    upstreams = router.upstreams

    @routemeter.route(
        label,
        baseline_model="claude-sonnet-4-5",  # savings: against sending everything to Sonnet
        slo=routemeter.SLO(duration_s=2.5),
    )
    async def complete(call: Call) -> Response:
        rec = routemeter.current()
        rec.requested(call.facts.requested_model)
        if isinstance(call.body.get("user"), str):
            rec.tenant(call.body["user"])  # an app-chosen name; key-shaped ones fold to _OTHER
        if not router.admit(call):
            rec.rate_limited()
            return call.error_response()
        key = cache_key(call.body)
        cached = router.cache.get(key)
        rec.cache(CACHE_NAME, hit=cached is not None)
        call.facts.cache = "miss" if cached is None else "hit"
        if cached is not None:
            return call.reply(cached)
        with rec.decide() as d:
            targets, reason = router.plan(call)
            d.choose(*targets[0], reason)
        for i, target in enumerate(targets):
            upstream = upstreams[target]
            try:
                with rec.attempt(
                    target[0],
                    target[1],
                    server_address=upstream.profile.server_address,
                    server_port=SERVER_PORT,
                ) as a:
                    result = await upstream.complete(call.upstream_request)
                    a.usage(result.body)
            except APIError as e:
                router.failed(call, target, e, targets[i + 1] if i + 1 < len(targets) else None)
                continue
            router.succeeded(call, target, result.billed, result.headers)
            body = _completion(upstream.profile.served_as, result.text, result.billed)
            call.facts.cache_stored, call.facts.cache_evictions = router.cache.put(key, body)
            return call.reply(body)
        router.all_failed(call)
        rec.error(502)  # what the client gets; each attempt keeps its own error.type
        return call.error_response()

    @routemeter.route(
        label,
        baseline_model="claude-sonnet-4-5",
        slo=routemeter.SLO(ttft_s=1.0, duration_s=10.0),
    )
    async def stream(call: Call) -> AsyncGenerator[bytes, None]:
        rec = routemeter.current()
        rec.requested(call.facts.requested_model)
        if isinstance(call.body.get("user"), str):
            rec.tenant(call.body["user"])
        if not router.admit(call):
            rec.rate_limited()
            return  # nothing yielded: the endpoint answers call.error_response()
        with rec.decide() as d:
            targets, reason = router.plan(call)
            d.choose(*targets[0], reason)
        for i, target in enumerate(targets):
            upstream = upstreams[target]
            model = upstream.profile.served_as
            try:
                with rec.attempt(
                    target[0],
                    target[1],
                    server_address=upstream.profile.server_address,
                    server_port=SERVER_PORT,
                ) as a:
                    opened = await upstream.stream(call.upstream_request)
                    async for event in opened.events:
                        a.chunk(event)
                        chunk = translate(event, model)
                        if chunk is not None:
                            yield sse(chunk)
            except APIError as e:  # the simulated providers fail only before the first event
                router.failed(call, target, e, targets[i + 1] if i + 1 < len(targets) else None)
                continue
            router.succeeded(call, target, opened.billed, opened.headers)
            options = call.body.get("stream_options") or {}
            if isinstance(options, dict) and options.get("include_usage"):
                yield sse(_chunk(model, [], usage=_openai_usage(opened.billed)))
            yield sse(_chunk(model, [], routemeter_demo=call.facts.as_dict()))
            yield sse("[DONE]")
            return
        router.all_failed(call)
        rec.error(502)

    return complete, stream


async def _prepend(first: bytes, rest: AsyncGenerator[bytes, None]) -> AsyncGenerator[bytes, None]:
    try:
        yield first
        async for chunk in rest:
            yield chunk
    finally:
        await rest.aclose()


def _client_key(request: HTTPRequest) -> str:
    """The API key identifies the client for rate limiting (never a metric attribute)."""
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else "anonymous"


def _bad_request(message: str) -> JSONResponse:
    body = {"error": {"message": message, "type": "invalid_request_error", "code": 400}}
    return JSONResponse(body, status_code=400)


def build_app(router: Router) -> ASGIApp:
    """The router's Starlette app, instrumented: HTTP metrics and ``GET /metrics`` on its port."""
    handlers = {label: _handlers(router, label) for label in CHAINS}
    threshold = router.settings.long_context_tokens

    async def chat_completions(request: HTTPRequest) -> Response:
        try:
            body = await request.json()
        except ValueError:
            return _bad_request("the body must be JSON")
        messages = body.get("messages") if isinstance(body, dict) else None
        if not isinstance(messages, list) or not all(isinstance(m, dict) for m in messages):
            return _bad_request("'messages' must be a list of message objects")
        label = classify(body, threshold)
        streaming = body.get("stream") is True
        model = body.get("model")
        facts = Facts(label, streaming, model if isinstance(model, str) else None)
        call = Call(body, _client_key(request), facts)
        complete, stream = handlers[label]
        if not streaming:
            return await complete(call)
        chunks = stream(call)
        first = await anext(chunks, None)
        if first is None:
            return call.error_response()
        return StreamingResponse(
            _prepend(first, chunks),
            media_type="text/event-stream",
            headers={"x-routemeter-route": label, "cache-control": "no-cache"},
        )

    async def healthz(request: HTTPRequest) -> Response:
        return JSONResponse({"status": "ok", "routes": sorted(CHAINS)})

    app = Starlette(
        routes=[
            Route("/v1/chat/completions", chat_completions, methods=["POST"]),
            Route("/healthz", healthz, methods=["GET"]),
        ]
    )
    return routemeter.instrument_app(app)
