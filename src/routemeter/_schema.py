"""From a committed request record to measurements: the one place that knows which facts feed
which metric under which attributes.

A measurement is ``(metric, key, value)``: ``metric`` indexes ``_instruments.ALL`` and ``key`` is a
tuple of attribute values aligned with that spec's ``attributes`` (``None`` = absent). Both
recorders consume the same measurements, so they cannot disagree on the schema.
"""

from __future__ import annotations

from time import perf_counter
from typing import Any, Final

from routemeter import _instruments as ins
from routemeter import _semconv as sc
from routemeter._bounds import Bounds
from routemeter._pricing import Prices
from routemeter._record import Request, iter_marks
from routemeter._usage import EMPTY

Measurement = tuple[int, tuple[Any, ...], float]
Measurements = tuple[list[Measurement], list[Measurement]]
"""Histogram observations and sum increments (counters, up-down counters)."""

_INDEX: Final = {spec.name: i for i, spec in enumerate(ins.ALL)}
SERVER_DURATION: Final = _INDEX[sc.GEN_AI_SERVER_REQUEST_DURATION]
TTFT: Final = _INDEX[sc.GEN_AI_SERVER_TIME_TO_FIRST_TOKEN]
TPOT: Final = _INDEX[sc.GEN_AI_SERVER_TIME_PER_OUTPUT_TOKEN]
CLIENT_DURATION: Final = _INDEX[sc.GEN_AI_CLIENT_OPERATION_DURATION]
TTFC: Final = _INDEX[sc.GEN_AI_CLIENT_OPERATION_TIME_TO_FIRST_CHUNK]
TPOC: Final = _INDEX[sc.GEN_AI_CLIENT_OPERATION_TIME_PER_OUTPUT_CHUNK]
TOKEN_USAGE: Final = _INDEX[sc.GEN_AI_CLIENT_TOKEN_USAGE]
TOKENS: Final = _INDEX[sc.LLM_ROUTER_USAGE_TOKENS]
COST: Final = _INDEX[sc.LLM_ROUTER_COST]
DECISIONS: Final = _INDEX[sc.LLM_ROUTER_DECISIONS]
DECISION_DURATION: Final = _INDEX[sc.LLM_ROUTER_DECISION_DURATION]
FALLBACKS: Final = _INDEX[sc.LLM_ROUTER_FALLBACKS]
ACTIVE: Final = _INDEX[sc.LLM_ROUTER_REQUESTS_ACTIVE]
CACHE_LOOKUPS: Final = _INDEX[sc.LLM_ROUTER_CACHE_LOOKUPS]
CACHE_EVICTIONS: Final = _INDEX[sc.LLM_ROUTER_CACHE_EVICTIONS]
CACHE_ENTRIES: Final = _INDEX[sc.LLM_ROUTER_CACHE_ENTRIES]
RATELIMIT_REMAINING: Final = _INDEX[sc.LLM_ROUTER_RATELIMIT_REMAINING]
REJECTIONS: Final = _INDEX[sc.LLM_ROUTER_RATELIMIT_REJECTIONS]
COOLDOWNS: Final = _INDEX[sc.LLM_ROUTER_COOLDOWNS]

_HIT: Final = "hit"
_MISS: Final = "miss"


class AttemptKeys:
    """Every key an attempt with these raw names produces, bounded and built once."""

    __slots__ = ("base", "duration_ok", "rates", "token_usage", "tokens", "with_attempt")

    def __init__(
        self, b: Bounds, prices: Prices, route: tuple[str, str], raw: tuple[Any, ...]
    ) -> None:
        _, provider_raw, model_raw, response_raw, address_raw, port_raw = raw
        provider = b.providers(provider_raw)
        model = b.models(model_raw)
        response_model = b.models(response_raw) if response_raw else None
        self.base = base = (*route, provider, model, response_model)
        address = b.servers(address_raw) if address_raw else None
        port = port_raw if type(port_raw) is int and 0 < port_raw < 65536 else None
        self.with_attempt = attempt = (*base, address, port)
        self.duration_ok = (*attempt, None)
        self.token_usage = ((*attempt, sc.TOKEN_INPUT), (*attempt, sc.TOKEN_OUTPUT))
        self.tokens = tuple((*base, t) for t in _TOKEN_TYPES)
        self.rates = None
        if provider != sc.OTHER:
            priced = response_model or model
            if priced != sc.OTHER:
                self.rates = prices.rates(provider, priced)
            if self.rates is None and priced != model and model != sc.OTHER:
                self.rates = prices.rates(provider, model)


_TOKEN_TYPES: Final = (
    sc.TOKEN_INPUT,
    sc.TOKEN_OUTPUT,
    sc.TOKEN_CACHE_READ,
    sc.TOKEN_CACHE_CREATION,
    sc.TOKEN_REASONING,
)


class Keys:
    """Caches of bounded keys per raw attribute combination; a routed request repeats the same
    few combinations, so a commit is mostly dict lookups. Size-capped: past the cap keys are
    built per request, which is slower but still bounded."""

    LIMIT: Final = 10_000

    def __init__(self, bounds: Bounds, prices: Prices) -> None:
        self.bounds = bounds
        self.prices = prices
        self.attempts: dict[tuple[Any, ...], AttemptKeys] = {}
        self.decisions: dict[tuple[Any, ...], tuple[Any, ...]] = {}
        self.requested_seen = bounds.requested_models.seen

    def decision(self, raw: tuple[Any, ...]) -> tuple[Any, ...]:
        route, requested, provider, model, reason = raw
        b = self.bounds
        chosen = b.reasons(reason) if reason else "none"
        key = (*route, requested, b.providers(provider), b.models(model), chosen)
        if len(self.decisions) < self.LIMIT:
            self.decisions[raw] = key
        return key

    def attempt(self, raw: tuple[Any, ...]) -> AttemptKeys:
        keys = AttemptKeys(self.bounds, self.prices, raw[0], raw)
        if len(self.attempts) < self.LIMIT:
            self.attempts[raw] = keys
        return keys


def _plain(raw: tuple[Any, ...]) -> tuple[Any, ...]:
    """``raw`` with every value that is not a str, an int or None replaced by ``_OTHER``, so a
    request whose handler passed unhashable or hostile objects is still counted (rarely taken:
    the lookups above fail only on such values)."""
    route, *values = raw
    return (route, *(v if v is None or type(v) in (str, int) else sc.OTHER for v in values))


def measurements(rec: Request, keys: Keys, active: bool = True) -> Measurements:
    """Everything a finished request contributes, in one pass: histogram observations, then
    sum increments (``active=False`` leaves out the in-flight decrement, for a recorder that
    counts requests in flight itself)."""
    b = keys.bounds
    end = rec.end if rec.end is not None else perf_counter()
    route = rec.route_key
    r, op = route
    raw_requested = rec.requested_model
    if raw_requested is None:
        requested = None
    else:
        requested = keys.requested_seen.get(raw_requested) or b.requested_models(raw_requested)
    observed: list[Measurement] = []
    counted: list[Measurement] = [(ACTIVE, route, -1)] if active else []
    observe = observed.append
    count = counted.append

    d = rec.decision
    if d is not None:
        if d.timed:
            elapsed = (d.end or end) - d.start
            observe((DECISION_DURATION, route, elapsed if elapsed > 0.0 else 0.0))
        if d.provider is not None and d.model is not None:
            chosen = (route, requested, d.provider, d.model, d.reason)
            try:
                target = keys.decisions.get(chosen) or keys.decision(chosen)
            except Exception:  # a value that cannot be hashed or tested: it becomes _OTHER
                target = keys.decision(_plain(chosen))
            count((DECISIONS, target, 1))

    served: tuple[Any, ...] | None = None
    last: tuple[Any, ...] | None = None
    last_error: str | None = None
    output_tokens: int | None = None
    for a in rec.attempts:
        raw = (route, a.provider, a.model, a.response_model, a.server_address, a.server_port)
        try:
            k = keys.attempts.get(raw) or keys.attempt(raw)
        except Exception:  # a value that cannot be hashed or tested: it becomes _OTHER
            k = keys.attempt(_plain(raw))
        base = k.base
        error = b.errors(a.error_type) if a.error_type is not None else None
        if last_error is not None and last is not None:
            count((FALLBACKS, (r, op, base[2], base[3], last[2], last[3], last_error), 1))

        elapsed = (a.end if a.end is not None else end) - a.start
        duration_key = k.duration_ok if error is None else (*k.with_attempt, error)
        observe((CLIENT_DURATION, duration_key, elapsed if elapsed > 0.0 else 0.0))

        marks = a.chunk_marks
        if marks:
            observe((TTFC, k.with_attempt, max(marks[0] - a.start, 0.0)))
            for gap in iter_marks(marks):
                observe((TPOC, k.with_attempt, gap))

        used = a.used
        if used is not EMPTY:
            tokens = k.tokens
            if used.input is not None:
                observe((TOKEN_USAGE, k.token_usage[0], used.input))
                if used.input:
                    count((TOKENS, tokens[0], used.input))
            if used.output is not None:
                observe((TOKEN_USAGE, k.token_usage[1], used.output))
                if used.output:
                    count((TOKENS, tokens[1], used.output))
            if used.cache_read:
                count((TOKENS, tokens[2], used.cache_read))
            if used.cache_creation:
                count((TOKENS, tokens[3], used.cache_creation))
            if used.reasoning:
                count((TOKENS, tokens[4], used.reasoning))
            if k.rates is not None and (used.input or used.output):
                cost = k.rates.cost(used)
                if cost:
                    count((COST, base, cost))

        last, last_error = base, error
        if error is None:
            served = base
            output_tokens = used.output

    error_type = rec.error_type
    if error_type is None and last_error is not None and served is None:
        error_type = last_error
    who = served or last
    server = (
        r,
        op,
        who[2] if who is not None else None,
        requested,
        served[4] if served is not None else None,
    )
    error_attr = b.errors(error_type) if error_type is not None else None
    elapsed = end - rec.start
    observe((SERVER_DURATION, (*server, error_attr), elapsed if elapsed > 0.0 else 0.0))

    if rec.first_token is not None:
        observe((TTFT, server, max(rec.first_token - rec.start, 0.0)))
        if error_type is None:
            after_first = (output_tokens or rec.yielded) - 1
            if after_first > 0:
                observe((TPOT, server, max(end - rec.first_token, 0.0) / after_first))

    if rec.caches:
        for name, hit in rec.caches:
            count((CACHE_LOOKUPS, (r, b.caches(name), _HIT if hit else _MISS), 1))
    if rec.rejected:
        count((REJECTIONS, (r, op, requested), 1))
    return observed, counted


def cooldown(b: Bounds, provider: str, model: str, error_type: str | None) -> Measurement:
    error = b.errors(error_type) if error_type else None
    return (COOLDOWNS, (b.providers(provider), b.models(model), error), 1)


def cache_evicted(b: Bounds, name: str, count: int) -> Measurement:
    return (CACHE_EVICTIONS, (b.caches(name),), count)


def cache_entries(b: Bounds, name: str, delta: int) -> Measurement:
    return (CACHE_ENTRIES, (b.caches(name),), delta)


def ratelimit_remaining(
    b: Bounds, provider: str, model: str, kind: str, value: float
) -> Measurement:
    return (RATELIMIT_REMAINING, (b.providers(provider), b.models(model), kind), value)
