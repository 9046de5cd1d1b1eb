"""A plain asyncio LLM router (no web framework) instrumented with routemeter.

    python examples/asyncio_router.py

The providers are simulated in-process, so this runs anywhere: a fallback chain, a response
cache, a per-client rate limiter, cooldowns after repeated failures and a streamed answer.
routemeter serves ``/metrics`` on a free loopback port; the example scrapes it once, prints
routemeter's families and exits.
"""

from __future__ import annotations

import asyncio
import sys
import urllib.request
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import routemeter

# ---- simulated providers -----------------------------------------------------------------


class ProviderError(Exception):
    def __init__(self, status_code: int) -> None:
        super().__init__(f"upstream answered {status_code}")
        self.status_code = status_code  # routemeter's error.type reads it


@dataclass
class Provider:
    name: str
    model: str
    down: bool = False
    remaining: int = 1000

    async def complete(self, prompt: str) -> tuple[dict[str, Any], dict[str, str]]:
        """An OpenAI-shaped response and the rate-limit headers a real provider sends."""
        await asyncio.sleep(0.005)
        if self.down:
            raise ProviderError(503)
        self.remaining -= 1
        usage = {"prompt_tokens": len(prompt.split()) + 8, "completion_tokens": 5}
        headers = {"x-ratelimit-remaining-requests": str(self.remaining)}
        return {"model": self.model, "usage": usage, "text": "hello"}, headers

    async def stream(self, prompt: str) -> AsyncIterator[dict[str, Any]]:
        for word in ("streamed", " hello", " there"):
            await asyncio.sleep(0.002)
            yield {"model": self.model, "choices": [{"delta": {"content": word}}]}
        yield {
            "model": self.model,
            "choices": [],
            "usage": {"prompt_tokens": 9, "completion_tokens": 3},
        }


# ---- the router --------------------------------------------------------------------------


@dataclass
class Router:
    chain: list[Provider]
    cooldown_after: int = 2
    per_client: int = 3
    failures: dict[str, int] = field(default_factory=dict)
    cooling: set[str] = field(default_factory=set)
    cache: dict[str, dict[str, Any]] = field(default_factory=dict)
    used: dict[str, int] = field(default_factory=dict)

    def _failed(self, provider: Provider, exc: ProviderError) -> None:
        self.failures[provider.name] = self.failures.get(provider.name, 0) + 1
        if (
            self.failures[provider.name] >= self.cooldown_after
            and provider.name not in self.cooling
        ):
            self.cooling.add(provider.name)
            routemeter.cooldown(provider.name, provider.model, str(exc.status_code))

    @routemeter.route("default")
    async def complete(self, client: str, prompt: str) -> dict[str, Any]:
        rec = routemeter.current()
        rec.requested("auto")
        self.used[client] = self.used.get(client, 0) + 1
        if self.used[client] > self.per_client:
            rec.rate_limited()  # refused by the router itself: 429, nothing sent upstream
            return {"error": "rate limited", "status": 429}
        cached = self.cache.get(prompt)
        rec.cache("responses", hit=cached is not None)
        if cached is not None:
            return cached
        with rec.decide() as d:
            live = [p for p in self.chain if p.name not in self.cooling] or self.chain
            d.choose(
                live[0].name,
                live[0].model,
                "cooldown" if live[0] is not self.chain[0] else "primary",
            )
        for provider in live:
            try:
                with rec.attempt(provider.name, provider.model) as a:
                    response, headers = await provider.complete(prompt)
                    a.usage(response)
                routemeter.ratelimit_from_headers(provider.name, provider.model, headers)
            except ProviderError as e:
                self._failed(provider, e)
                continue  # the next attempt makes this one a fallback
            self.cache[prompt] = response
            return response
        rec.error(502)
        return {"error": "all providers failed", "status": 502}

    @routemeter.route("default")
    async def stream(self, prompt: str) -> AsyncIterator[str]:
        rec = routemeter.current()
        provider = next(p for p in self.chain if p.name not in self.cooling)
        rec.choose(provider.name, provider.model, "stream")
        with rec.attempt(provider.name, provider.model) as a:
            async for event in provider.stream(prompt):
                a.chunk(event)  # time to first chunk; usage from the last event
                for choice in event["choices"]:
                    yield choice["delta"]["content"]


# ---- run it ------------------------------------------------------------------------------


async def main() -> int:
    handle = routemeter.setup(prometheus_host="127.0.0.1", prometheus_port=0)
    primary = Provider("openai", "gpt-4o-mini", down=True)
    router = Router([primary, Provider("anthropic", "claude-3-5-haiku-20241022")])
    answers = [
        await router.complete("alice", "hello world"),  # openai down: falls back
        await router.complete("alice", "hello world"),  # answered from the cache
        await router.complete("bob", "how are you"),  # falls back again: openai cools down
        await router.complete("bob", "what next"),  # cooling openai is skipped
    ]
    answers += [await router.complete("carol", f"question {i}") for i in range(4)]  # 4th: 429
    text = "".join([piece async for piece in router.stream("tell me more")])
    for answer in answers:
        print("answer", answer.get("model") or answer)
    print("streamed", repr(text))
    url = handle.metrics_url
    assert url is not None
    exposition = await asyncio.to_thread(_get, url)
    routemeter.shutdown()
    print("--- routemeter metrics ---")
    keep = ("gen_ai_", "llm_router_", "# HELP gen_ai_", "# TYPE gen_ai_")
    keep += ("# HELP llm_router_", "# TYPE llm_router_")
    print("\n".join(line for line in exposition.splitlines() if line.startswith(keep)))
    return 0


def _get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=10) as response:  # loopback only
        return str(response.read().decode())


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
