"""Simulated upstream LLM providers, in-process: seeded latency, errors, 429s and streaming.

Each upstream answers in its provider's own shape (OpenAI chat completions, Anthropic messages)
so the router exercises routemeter's usage extraction on both, and fails the way the real SDKs
do: exceptions carrying ``status_code`` (and rate-limit headers), or a timeout class without one.
Every answer also carries the token counts the provider billed (``Billed``), independent of the
wire shape, so a test can check what routemeter extracted against the truth.
"""

from __future__ import annotations

import asyncio
import itertools
import math
import random
import time
from collections import deque
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Final, Literal

Shape = Literal["openai", "anthropic"]

WINDOW_S: Final = 10.0
"""Rate-limit window of the simulated providers (real ones use a minute; the demo is short)."""

_WORDS: Final = (
    "route", "model", "token", "cache", "stream", "latency", "budget", "provider", "fallback",
    "request", "answer", "context", "router", "quota", "metric", "label", "window", "retry",
)  # fmt: skip


class APIError(Exception):
    """Base of every simulated upstream failure, like ``openai.APIError``."""


class APIStatusError(APIError):
    """The provider answered an HTTP error; ``status_code`` becomes ``error.type``."""

    def __init__(
        self, status_code: int, body: Mapping[str, Any], headers: Mapping[str, str]
    ) -> None:
        super().__init__(f"upstream answered {status_code}")
        self.status_code = status_code
        self.body = dict(body)
        self.headers = dict(headers)


class RateLimitError(APIStatusError):
    """A 429 with the provider's rate-limit headers."""


class APITimeoutError(APIError):
    """No answer in time; carries no status, so ``error.type`` is the class name."""


@dataclass(frozen=True, slots=True)
class Billed:
    """Tokens the provider counted for one answer, in OpenAI's meaning (input includes cache)."""

    input: int
    output: int
    cache_read: int = 0
    cache_creation: int = 0
    reasoning: int = 0

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


@dataclass(frozen=True, slots=True)
class Incident:
    """A stretch of each cycle during which a provider mostly fails with ``status``."""

    start: float
    """Fraction of the cycle at which the incident starts."""
    end: float
    error_rate: float
    status: int


@dataclass(frozen=True, slots=True)
class Profile:
    """How one provider/model behaves; latencies are medians of lognormal draws, in seconds."""

    provider: str
    model: str
    served_as: str
    shape: Shape
    server_address: str
    ttft_s: float
    chunk_s: float
    error_rate: float = 0.02
    error_statuses: tuple[int, ...] = (500, 503)
    timeout_rate: float = 0.01
    timeout_s: float = 0.3
    ratelimit_rate: float = 0.02
    requests_per_window: int = 2_000
    tokens_per_window: int = 4_000_000
    reports_reasoning: bool = False
    incidents: tuple[Incident, ...] = ()


PROFILES: Final[tuple[Profile, ...]] = (
    Profile("openai", "gpt-4o-mini", "gpt-4o-mini-2024-07-18", "openai", "api.openai.com",
            ttft_s=0.05, chunk_s=0.002),
    Profile("openai", "gpt-4o", "gpt-4o-2024-08-06", "openai", "api.openai.com",
            ttft_s=0.09, chunk_s=0.003, requests_per_window=150),
    Profile("openai", "o4-mini", "o4-mini-2025-04-16", "openai", "api.openai.com",
            ttft_s=0.15, chunk_s=0.002, reports_reasoning=True),
    Profile("anthropic", "claude-3-5-haiku", "claude-3-5-haiku-20241022", "anthropic",
            "api.anthropic.com", ttft_s=0.06, chunk_s=0.002, error_statuses=(500, 529)),
    Profile("anthropic", "claude-sonnet-4-5", "claude-sonnet-4-5-20250929", "anthropic",
            "api.anthropic.com", ttft_s=0.12, chunk_s=0.003, error_statuses=(500, 529),
            ratelimit_rate=0.04, incidents=(Incident(0.6, 0.72, 0.7, 529),)),
    Profile("gcp.gemini", "gemini-2.5-flash", "gemini-2.5-flash", "openai",
            "generativelanguage.googleapis.com", ttft_s=0.07, chunk_s=0.002,
            incidents=(Incident(0.25, 0.4, 0.85, 503),)),
)  # fmt: skip
"""The demo's upstreams. Google is spoken to through its OpenAI-compatible endpoint."""


@dataclass(frozen=True, slots=True)
class UpstreamRequest:
    messages: Sequence[Mapping[str, Any]]
    max_tokens: int = 1024
    reasoning_effort: str | None = None
    cache_system: bool = True
    """Ask for the system prompt to be cached (Anthropic's ``cache_control``)."""


@dataclass(slots=True)
class Completion:
    """A non-streaming answer: the provider-shaped body, its headers, and what was billed."""

    body: dict[str, Any]
    headers: dict[str, str]
    billed: Billed
    text: str


@dataclass(slots=True)
class Stream:
    """An open stream: headers arrive first, then ``events`` (provider-shaped dicts)."""

    headers: dict[str, str]
    billed: Billed
    events: AsyncIterator[dict[str, Any]]


def count_tokens(messages: Sequence[Mapping[str, Any]]) -> int:
    """A tokenizer stand-in: about four characters a token plus a little per message."""
    return 3 + sum(4 + len(str(m.get("content", ""))) // 4 for m in messages)


def _system_tokens(messages: Sequence[Mapping[str, Any]]) -> tuple[str, int]:
    for m in messages:
        if m.get("role") == "system":
            content = str(m.get("content", ""))
            return content, 4 + len(content) // 4
    return "", 0


class Upstream:
    """One simulated provider/model. Methods are coroutines that sleep like the network would."""

    def __init__(self, profile: Profile, seed: int, cycle_s: float = 20.0) -> None:
        self.profile = profile
        self.cycle_s = cycle_s
        self._rng = random.Random(f"{seed}:{profile.provider}:{profile.model}")
        self._epoch = time.monotonic()
        self._window: deque[tuple[float, int]] = deque()
        self._window_tokens = 0
        self._cached_prefixes: dict[str, float] = {}
        self._ids = itertools.count(1)

    # --- behaviour -----------------------------------------------------------------------

    def _lognormal(self, median: float, sigma: float = 0.45) -> float:
        return median * math.exp(self._rng.gauss(0.0, sigma))

    def _incident(self, now: float) -> Incident | None:
        phase = ((now - self._epoch) % self.cycle_s) / self.cycle_s
        for incident in self.profile.incidents:
            if incident.start <= phase < incident.end:
                return incident
        return None

    def _headroom(self, now: float) -> tuple[int, int]:
        while self._window and self._window[0][0] <= now - WINDOW_S:
            self._window_tokens -= self._window.popleft()[1]
        p = self.profile
        return (
            max(p.requests_per_window - len(self._window), 0),
            max(p.tokens_per_window - self._window_tokens, 0),
        )

    def _headers(
        self, requests: int, tokens: int, retry_after: float | None = None
    ) -> dict[str, str]:
        if self.profile.shape == "anthropic":
            headers = {
                "anthropic-ratelimit-requests-remaining": str(requests),
                "anthropic-ratelimit-tokens-remaining": str(tokens),
            }
        else:
            headers = {
                "x-ratelimit-remaining-requests": str(requests),
                "x-ratelimit-remaining-tokens": str(tokens),
            }
        if retry_after is not None:
            headers["retry-after"] = f"{retry_after:.2f}"
        return headers

    def _error_body(self, status: int, kind: str) -> dict[str, Any]:
        if self.profile.shape == "anthropic":
            return {"type": "error", "error": {"type": kind, "message": f"simulated {status}"}}
        return {"error": {"type": kind, "message": f"simulated {status}", "code": status}}

    async def _admit(self, prompt_tokens: int) -> dict[str, str]:
        """Draw this call's fate: raise like the SDK would, or return the success headers."""
        p, rng = self.profile, self._rng
        now = time.monotonic()
        requests_left, tokens_left = self._headroom(now)
        incident = self._incident(now)
        draw = rng.random()
        if requests_left == 0 or tokens_left < prompt_tokens or draw < p.ratelimit_rate:
            await asyncio.sleep(self._lognormal(p.ttft_s / 3))
            retry = WINDOW_S * rng.random()
            raise RateLimitError(
                429,
                self._error_body(429, "rate_limit_error"),
                self._headers(requests_left, tokens_left, retry),
            )
        draw -= p.ratelimit_rate
        if incident is not None and rng.random() < incident.error_rate:
            await asyncio.sleep(self._lognormal(p.ttft_s / 2))
            raise APIStatusError(
                incident.status,
                self._error_body(incident.status, "overloaded_error"),
                self._headers(requests_left, tokens_left),
            )
        if draw < p.error_rate:
            await asyncio.sleep(self._lognormal(p.ttft_s / 2))
            status = rng.choice(p.error_statuses)
            raise APIStatusError(
                status,
                self._error_body(status, "api_error"),
                self._headers(requests_left, tokens_left),
            )
        draw -= p.error_rate
        if draw < p.timeout_rate:
            await asyncio.sleep(p.timeout_s)
            raise APITimeoutError("request timed out")
        self._window.append((now, prompt_tokens))
        self._window_tokens += prompt_tokens
        return self._headers(requests_left - 1, tokens_left - prompt_tokens)

    def _bill(self, request: UpstreamRequest) -> Billed:
        p = self.profile
        prompt = count_tokens(request.messages)
        system, system_tokens = _system_tokens(request.messages)
        seen = system and system in self._cached_prefixes
        if system:
            self._cached_prefixes[system] = time.monotonic()
        cache_read = cache_creation = 0
        if p.shape == "anthropic":
            if request.cache_system and system_tokens >= 1024:
                if seen:
                    cache_read = system_tokens
                else:
                    cache_creation = system_tokens
        elif seen and system_tokens >= 1024:  # OpenAI: automatic, in 128-token steps
            cache_read = system_tokens // 128 * 128
        thinking = request.reasoning_effort is not None
        output = min(request.max_tokens, max(1, int(self._lognormal(120 if thinking else 60, 0.6))))
        reasoning = 0
        if thinking and p.reports_reasoning:
            scale = {"low": 150, "medium": 400, "high": 900}.get(
                request.reasoning_effort or "", 400
            )
            reasoning = max(1, int(self._lognormal(scale, 0.5)))
            output += reasoning  # OpenAI counts reasoning inside completion_tokens
        return Billed(prompt, output, cache_read, cache_creation, reasoning)

    def _text(self, words: int) -> str:
        return " ".join(self._rng.choice(_WORDS) for _ in range(max(words, 1)))

    # --- wire shapes ----------------------------------------------------------------------

    def _openai_usage(self, b: Billed) -> dict[str, Any]:
        usage: dict[str, Any] = {
            "prompt_tokens": b.input,
            "completion_tokens": b.output,
            "total_tokens": b.input + b.output,
            "prompt_tokens_details": {"cached_tokens": b.cache_read},
        }
        if self.profile.reports_reasoning:
            usage["completion_tokens_details"] = {"reasoning_tokens": b.reasoning}
        return usage

    def _anthropic_usage(self, b: Billed, output: int) -> dict[str, Any]:
        return {
            "input_tokens": b.input - b.cache_read - b.cache_creation,
            "cache_creation_input_tokens": b.cache_creation,
            "cache_read_input_tokens": b.cache_read,
            "output_tokens": output,
        }

    def _body(self, b: Billed, text: str) -> dict[str, Any]:
        p, n = self.profile, next(self._ids)
        if p.shape == "anthropic":
            return {
                "id": f"msg_{n:08x}",
                "type": "message",
                "role": "assistant",
                "model": p.served_as,
                "content": [{"type": "text", "text": text}],
                "stop_reason": "end_turn",
                "usage": self._anthropic_usage(b, b.output),
            }
        return {
            "id": f"chatcmpl-{n:08x}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": p.served_as,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": text},
                    "finish_reason": "stop",
                }
            ],
            "usage": self._openai_usage(b),
        }

    def _chunk_plan(self, b: Billed) -> list[int]:
        """Output tokens per streamed chunk (reasoning tokens are not streamed as text)."""
        visible = max(b.output - b.reasoning, 1)
        per_chunk = max(3, math.ceil(visible / 40))
        return [min(per_chunk, visible - i) for i in range(0, visible, per_chunk)]

    async def _events(self, b: Billed) -> AsyncIterator[dict[str, Any]]:
        p, n = self.profile, next(self._ids)
        anthropic = p.shape == "anthropic"
        if anthropic:
            yield {
                "type": "message_start",
                "message": {
                    "id": f"msg_{n:08x}",
                    "type": "message",
                    "role": "assistant",
                    "model": p.served_as,
                    "content": [],
                    "stop_reason": None,
                    "usage": self._anthropic_usage(b, 1),
                },
            }
            yield {"type": "content_block_start", "index": 0, "content_block": {"type": "text"}}
        head: dict[str, Any] = {
            "id": f"chatcmpl-{n:08x}",
            "object": "chat.completion.chunk",
            "created": int(time.time()),
            "model": p.served_as,
        }
        if not anthropic:
            yield {**head, "choices": [{"index": 0, "delta": {"role": "assistant"}}], "usage": None}
        for tokens in self._chunk_plan(b):
            await asyncio.sleep(self._lognormal(p.chunk_s))
            text = self._text(tokens) + " "
            if anthropic:
                yield {
                    "type": "content_block_delta",
                    "index": 0,
                    "delta": {"type": "text_delta", "text": text},
                }
            else:
                delta = {"index": 0, "delta": {"content": text}, "finish_reason": None}
                yield {**head, "choices": [delta], "usage": None}
        if anthropic:
            yield {"type": "content_block_stop", "index": 0}
            yield {
                "type": "message_delta",
                "delta": {"stop_reason": "end_turn"},
                "usage": {"output_tokens": b.output},
            }
            yield {"type": "message_stop"}
        else:
            stop = {"index": 0, "delta": {}, "finish_reason": "stop"}
            yield {**head, "choices": [stop], "usage": None}
            yield {**head, "choices": [], "usage": self._openai_usage(b)}

    # --- the SDK-like surface -------------------------------------------------------------

    async def complete(self, request: UpstreamRequest) -> Completion:
        """One non-streaming call; raises ``APIError`` subclasses on failure."""
        headers = await self._admit(count_tokens(request.messages))
        billed = self._bill(request)
        text = self._text(min(billed.output - billed.reasoning, 200))
        delay = self._lognormal(self.profile.ttft_s)
        delay += len(self._chunk_plan(billed)) * self.profile.chunk_s
        await asyncio.sleep(delay)
        return Completion(self._body(billed, text), headers, billed, text)

    async def stream(self, request: UpstreamRequest) -> Stream:
        """Open a stream: failures raise here, before the first event, as with the real SDKs."""
        headers = await self._admit(count_tokens(request.messages))
        billed = self._bill(request)
        await asyncio.sleep(self._lognormal(self.profile.ttft_s))
        return Stream(headers, billed, self._events(billed))


@dataclass(slots=True)
class Upstreams:
    """Every simulated upstream, by (provider, model)."""

    by_target: dict[tuple[str, str], Upstream] = field(default_factory=dict)

    @classmethod
    def build(
        cls,
        seed: int,
        *,
        cycle_s: float = 20.0,
        profiles: Sequence[Profile] = PROFILES,
    ) -> Upstreams:
        """Seeded upstreams; incidents recur every ``cycle_s`` seconds."""
        return cls({(p.provider, p.model): Upstream(p, seed, cycle_s) for p in profiles})

    def __getitem__(self, target: tuple[str, str]) -> Upstream:
        return self.by_target[target]
