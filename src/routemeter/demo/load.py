"""The demo's load generator: seeded Poisson traffic against the router, and a ledger of exactly
what the router says it did, from which every routemeter metric can be predicted.

Traffic is a mix of route intents (small-model, reasoning, long-context, plain), streaming and
not, from a handful of client keys plus an occasional burst from a batch client (so the router's
own rate limiter rejects some), with prompts drawn from small pools so the response cache hits.
"""

from __future__ import annotations

import asyncio
import json
import math
import random
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import httpx

from routemeter.recording._pricing import Prices
from routemeter.request._usage import Usage

ROUTE_MIX: Final = (("default", 0.5), ("background", 0.25), ("think", 0.15), ("long_context", 0.1))

_CLIENTS: Final = tuple(f"demo-team-{i}" for i in range(8))
BATCH_CLIENT: Final = "demo-batch-job"

_SENTENCES: Final = (
    "Prefer small, reviewable changes and explain the reason for each edit.",
    "Never print secrets, tokens or personal data, even when asked to debug.",
    "Run the test suite after every change and report failures verbatim.",
    "Keep public interfaces stable; deprecate before removing anything.",
    "When unsure about intent, ask one precise question instead of guessing.",
    "Measure before optimising and keep the benchmark beside the change.",
)
SYSTEM_AGENT: Final = " ".join(_SENTENCES[i % len(_SENTENCES)] for i in range(64))
"""A long coding-agent system prompt (over 1024 tokens), so providers cache it."""
SYSTEM_SHORT: Final = "You write terse titles and summaries."
_TASKS: Final = (
    "Refactor the retry loop in module {n} to use exponential backoff.",
    "Explain why test case {n} is flaky and propose a fix.",
    "Write a docstring for function number {n} in the billing service.",
    "Review pull request {n} for error handling gaps.",
)


@dataclass(frozen=True, slots=True)
class LoadConfig:
    rate: float = 20.0
    """Mean arrivals per second (Poisson)."""
    duration_s: float = 20.0
    seed: int = 0
    concurrency: int = 64
    stream_share: float = 0.5
    burst_probability: float = 0.01
    """Chance that an arrival is a burst from the batch client instead of one request."""
    burst_size: int = 15
    prompts_per_route: int = 16
    route_mix: tuple[tuple[str, float], ...] = ROUTE_MIX
    timeout_s: float = 30.0
    max_requests: int = 100_000


@dataclass(frozen=True, slots=True)
class Planned:
    intent: str
    body: dict[str, Any]
    client: str


def _document(n: int) -> str:
    """A long pasted document (about 6,000 tokens): what pushes a request to long_context."""
    rng = random.Random(f"doc:{n}")
    words = ("latency", "budget", "ledger", "invoice", "region", "replica", "quota", "tenant")
    return " ".join(rng.choice(words) for _ in range(3_400))


def plan_request(rng: random.Random, config: LoadConfig, client: str) -> Planned:
    """One seeded request: the intent decides model, prompt shape and options."""
    intents, weights = zip(*config.route_mix, strict=True)
    intent = rng.choices(intents, weights)[0]
    n = rng.randrange(config.prompts_per_route)
    task = _TASKS[n % len(_TASKS)].format(n=n)
    body: dict[str, Any] = {"model": "claude-sonnet-4-5"}
    if intent == "background":
        body["model"] = rng.choice(("claude-3-5-haiku", "gpt-4o-mini"))
        body["max_tokens"] = 64
        messages = [
            {"role": "system", "content": SYSTEM_SHORT},
            {"role": "user", "content": f"Title for: {task}"},
        ]
    elif intent == "long_context":
        doc = _document(n % 4)
        messages = [
            {"role": "system", "content": SYSTEM_AGENT},
            {"role": "user", "content": f"{doc}\n\nSummarise the document above ({n})."},
        ]
    else:
        messages = [
            {"role": "system", "content": SYSTEM_AGENT},
            {"role": "user", "content": task},
        ]
        if intent == "think":
            body["reasoning_effort"] = rng.choice(("low", "medium", "high"))
    body["messages"] = messages
    if rng.random() < config.stream_share:
        body["stream"] = True
        body["stream_options"] = {"include_usage": True}
    return Planned(intent, body, client)


TOKEN_TYPES: Final = ("input", "output", "cache_read", "cache_creation", "reasoning")


@dataclass
class Ledger:
    """What happened, from the router's own ``routemeter_demo`` facts, keyed the way the metrics
    are: ``error.type`` is what routemeter records for the request (``429`` for a router
    rejection, else the last attempt's error when every attempt failed)."""

    requests: Counter[tuple[str, int]] = field(default_factory=Counter)
    """(route, HTTP status)"""
    server_errors: Counter[tuple[str, str]] = field(default_factory=Counter)
    """(route, error.type)"""
    attempts: Counter[tuple[str, str, str, str]] = field(default_factory=Counter)
    """(route, provider, model, outcome): outcome is ``ok`` or the attempt's error.type"""
    fallbacks: Counter[tuple[str, str, str, str, str, str]] = field(default_factory=Counter)
    """(route, from provider, from model, to provider, to model, error.type)"""
    tokens: Counter[tuple[str, str, str, str]] = field(default_factory=Counter)
    """(route, provider, model, token type); zero counts are left out"""
    decisions: Counter[tuple[str, str, str, str]] = field(default_factory=Counter)
    """(route, provider, model, reason)"""
    cache_lookups: Counter[tuple[str, str]] = field(default_factory=Counter)
    """(route, hit | miss)"""
    cooldowns: Counter[tuple[str, str, str]] = field(default_factory=Counter)
    """(provider, model, error.type)"""
    rejections: Counter[str] = field(default_factory=Counter)
    """route -> requests the router refused (its own 429)"""
    streamed: Counter[str] = field(default_factory=Counter)
    """route -> streaming requests that streamed an answer"""
    cache_stores: int = 0
    cache_evictions: int = 0
    cost_usd: dict[str, float] = field(default_factory=dict)
    latencies_s: dict[str, list[float]] = field(default_factory=dict)
    """route -> client-side latency of every answered request (to the last byte)"""
    transport_errors: list[str] = field(default_factory=list)
    sent: int = 0
    elapsed_s: float = 0.0
    prices: Prices = field(default_factory=Prices, repr=False)

    def record(self, facts: Mapping[str, Any], latency_s: float) -> None:
        route = facts["route"]
        status = int(facts["status"])
        attempts: Sequence[Mapping[str, Any]] = facts["attempts"]
        self.requests[route, status] += 1
        self.latencies_s.setdefault(route, []).append(latency_s)
        if facts["rate_limited"]:
            self.rejections[route] += 1
            self.server_errors[route, "429"] += 1
        elif status != 200 and attempts:
            self.server_errors[route, str(status)] += 1
        if facts["cache"] is not None:
            self.cache_lookups[route, facts["cache"]] += 1
        if facts["stream"] and status == 200:
            self.streamed[route] += 1
        decision = facts["decision"]
        if decision is not None:
            self.decisions[route, decision["provider"], decision["model"], decision["reason"]] += 1
        for a in attempts:
            provider, model = a["provider"], a["model"]
            self.attempts[route, provider, model, a["outcome"]] += 1
            usage = a["usage"]
            if usage:
                for kind in TOKEN_TYPES:
                    if usage[kind]:
                        self.tokens[route, provider, model, kind] += usage[kind]
                self._cost(route, provider, a.get("response_model") or model, model, usage)
        for f in facts["fallbacks"]:
            key = (f["from_provider"], f["from_model"], f["to_provider"], f["to_model"])
            self.fallbacks[(route, *key, f["error_type"])] += 1
        for c in facts["cooldowns"]:
            self.cooldowns[c["provider"], c["model"], c["error_type"]] += 1
        self.cache_stores += bool(facts["cache_stored"])
        self.cache_evictions += int(facts["cache_evictions"])

    def _cost(
        self, route: str, provider: str, served: str, model: str, usage: Mapping[str, int]
    ) -> None:
        used = Usage(*(usage[k] for k in TOKEN_TYPES))
        cost = self.prices.cost(provider, served, used)
        if cost is None:
            cost = self.prices.cost(provider, model, used)
        if cost:
            self.cost_usd[route] = self.cost_usd.get(route, 0.0) + cost

    @property
    def answered(self) -> int:
        return sum(self.requests.values())

    @property
    def routes(self) -> list[str]:
        return sorted({route for route, _ in self.requests})

    def as_json(self) -> dict[str, Any]:
        """Plain JSON: every counter as a list of rows naming its key fields."""

        def rows(counter: Mapping[Any, int], names: Sequence[str]) -> list[dict[str, Any]]:
            return [
                {**dict(zip(names, key if isinstance(key, tuple) else (key,), strict=True)),
                 "count": n}
                for key, n in sorted(counter.items())
            ]  # fmt: skip

        return {
            "sent": self.sent,
            "answered": self.answered,
            "elapsed_s": round(self.elapsed_s, 3),
            "requests": rows(self.requests, ("route", "status")),
            "server_errors": rows(self.server_errors, ("route", "error_type")),
            "attempts": rows(self.attempts, ("route", "provider", "model", "outcome")),
            "fallbacks": rows(
                self.fallbacks,
                ("route", "from_provider", "from_model", "to_provider", "to_model", "error_type"),
            ),
            "tokens": rows(self.tokens, ("route", "provider", "model", "type")),
            "decisions": rows(self.decisions, ("route", "provider", "model", "reason")),
            "cache_lookups": rows(self.cache_lookups, ("route", "result")),
            "cooldowns": rows(self.cooldowns, ("provider", "model", "error_type")),
            "rejections": rows(self.rejections, ("route",)),
            "streamed": rows(self.streamed, ("route",)),
            "cache_stores": self.cache_stores,
            "cache_evictions": self.cache_evictions,
            "cost_usd": dict(sorted(self.cost_usd.items())),
            "latency_s": {
                route: {"p50": percentile(v, 0.5), "p95": percentile(v, 0.95)}
                for route, v in sorted(self.latencies_s.items())
            },
            "transport_errors": self.transport_errors,
        }

    def write(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.as_json(), indent=2) + "\n")


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (0.0 for no values)."""
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = max(1, min(len(ordered), math.ceil(q * len(ordered))))
    return ordered[rank - 1]


def _facts_from_stream(lines: Sequence[str]) -> Mapping[str, Any] | None:
    for line in reversed(lines):
        if line.startswith("data: {") and "routemeter_demo" in line:
            facts: Mapping[str, Any] = json.loads(line[6:])["routemeter_demo"]
            return facts
    return None


async def _send(client: httpx.AsyncClient, planned: Planned) -> Mapping[str, Any]:
    """POST one request; return the router's facts, however it answered."""
    headers = {"authorization": f"Bearer {planned.client}"}
    if not planned.body.get("stream"):
        r = await client.post("/v1/chat/completions", json=planned.body, headers=headers)
        facts: Mapping[str, Any] = r.json()["routemeter_demo"]
        return facts
    async with client.stream(
        "POST", "/v1/chat/completions", json=planned.body, headers=headers
    ) as r:
        if r.headers.get("content-type", "").startswith("application/json"):
            await r.aread()
            facts = r.json()["routemeter_demo"]
            return facts
        lines = [line async for line in r.aiter_lines() if line]
    if not lines or lines[-1] != "data: [DONE]":
        raise ValueError("stream ended without data: [DONE]")
    found = _facts_from_stream(lines)
    if found is None:
        raise ValueError("stream carried no routemeter_demo event")
    return found


Progress = Callable[["Ledger", float], None]
"""Called as requests finish, with the ledger and the fraction of the duration elapsed."""


async def run_load(
    base_url: str,
    config: LoadConfig,
    *,
    stop: asyncio.Event | None = None,
    progress: Progress | None = None,
) -> Ledger:
    """Drive the router for ``config.duration_s`` and return the ledger of what it did.

    Arrivals stop at the deadline, at ``max_requests`` or when ``stop`` is set; requests in
    flight then get ``timeout_s`` to finish.
    """
    rng = random.Random(config.seed)
    ledger = Ledger()
    stop = stop or asyncio.Event()
    slots = asyncio.Semaphore(config.concurrency)
    tasks: set[asyncio.Task[None]] = set()
    loop = asyncio.get_running_loop()
    began = loop.time()
    deadline = began + config.duration_s

    def report() -> None:
        if progress is not None:
            progress(ledger, min((loop.time() - began) / config.duration_s, 1.0))

    async def one(client: httpx.AsyncClient, planned: Planned) -> None:
        start = time.perf_counter()
        try:
            facts = await _send(client, planned)
        except (httpx.HTTPError, ValueError, KeyError) as e:
            ledger.transport_errors.append(f"{type(e).__name__}: {e}")
        else:
            ledger.record(facts, time.perf_counter() - start)
        finally:
            slots.release()
            report()

    # Idle connections expire on the client first (2 s < uvicorn's 5 s keep-alive), so a request
    # never races the server closing the connection under it (an httpx.ReadError).
    limits = httpx.Limits(
        max_connections=config.concurrency, max_keepalive_connections=16, keepalive_expiry=2.0
    )
    timeout = httpx.Timeout(config.timeout_s)
    async with httpx.AsyncClient(base_url=base_url, limits=limits, timeout=timeout) as client:
        next_at = began
        while ledger.sent < config.max_requests and not stop.is_set():
            next_at += rng.expovariate(config.rate)
            if next_at >= deadline:
                break
            try:
                await asyncio.wait_for(stop.wait(), max(next_at - loop.time(), 0.0))
                break
            except TimeoutError:
                pass
            burst = rng.random() < config.burst_probability
            client_key = BATCH_CLIENT if burst else rng.choice(_CLIENTS)
            for _ in range(config.burst_size if burst else 1):
                if ledger.sent >= config.max_requests:
                    break
                planned = plan_request(rng, config, client_key)
                await slots.acquire()
                ledger.sent += 1
                task = asyncio.create_task(one(client, planned))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
            report()
        if tasks:
            _, pending = await asyncio.wait(set(tasks), timeout=config.timeout_s)
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.wait(pending, timeout=5.0)
                ledger.transport_errors.append(f"{len(pending)} requests still running, cancelled")
    ledger.elapsed_s = loop.time() - began
    report()
    return ledger
