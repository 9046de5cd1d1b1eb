"""The instrument definitions: one spec per metric, the single source for code and docs.

Every histogram carries the semconv-advised bucket boundaries; the SDK's default buckets are a
millisecond scale and would put every LLM latency into the last two buckets. HTTP body sizes,
for which semconv advises none, keep the SDK's defaults.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, Literal

from routemeter.recording import _semconv as sc

Kind = Literal["counter", "histogram", "updowncounter", "gauge"]

DURATION_BUCKETS: Final = (
    0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92,
)  # fmt: skip
TOKEN_BUCKETS: Final = (
    1, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304, 16777216, 67108864,
)  # fmt: skip
TTFT_BUCKETS: Final = (
    0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
)  # fmt: skip
TPOT_BUCKETS: Final = (
    0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5,
)  # fmt: skip
DECISION_BUCKETS: Final = (
    0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005,
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
)  # fmt: skip
"""Routing logic should take microseconds; the buckets resolve 10 µs to 100 ms."""
BODY_SIZE_BUCKETS: Final = (
    0.0, 5.0, 10.0, 25.0, 50.0, 75.0, 100.0, 250.0, 500.0, 750.0, 1000.0, 2500.0, 5000.0, 7500.0,
    10000.0,
)  # fmt: skip
"""The SDK's default explicit buckets: semconv advises none for body sizes, so these are what
opentelemetry-instrumentation-asgi's body-size histograms export (pinned by
tests/integrations/test_http.py)."""


@dataclass(frozen=True, slots=True)
class InstrumentSpec:
    name: str
    kind: Kind
    unit: str
    description: str
    attributes: tuple[str, ...]
    buckets: tuple[float, ...] | None = None


_ROUTE = (sc.LLM_ROUTER_ROUTE, sc.GEN_AI_OPERATION_NAME)
_SERVER = (*_ROUTE, sc.GEN_AI_PROVIDER_NAME, sc.GEN_AI_REQUEST_MODEL, sc.GEN_AI_RESPONSE_MODEL)
_ATTEMPT = (*_SERVER, sc.SERVER_ADDRESS, sc.SERVER_PORT)

SERVER_REQUEST_DURATION: Final = InstrumentSpec(
    sc.GEN_AI_SERVER_REQUEST_DURATION,
    "histogram",
    "s",
    "End-to-end duration of a routed request, as the router's clients see it.",
    (*_SERVER, sc.ERROR_TYPE),
    DURATION_BUCKETS,
)
SERVER_TIME_TO_FIRST_TOKEN: Final = InstrumentSpec(
    sc.GEN_AI_SERVER_TIME_TO_FIRST_TOKEN,
    "histogram",
    "s",
    "Time from request start to the first chunk a streaming route yields to its client.",
    _SERVER,
    TTFT_BUCKETS,
)
SERVER_TIME_PER_OUTPUT_TOKEN: Final = InstrumentSpec(
    sc.GEN_AI_SERVER_TIME_PER_OUTPUT_TOKEN,
    "histogram",
    "s",
    "Time per output token after the first, for streaming routes whose output token count"
    " is known (from usage); not observed when it is not.",
    _SERVER,
    TPOT_BUCKETS,
)
CLIENT_OPERATION_DURATION: Final = InstrumentSpec(
    sc.GEN_AI_CLIENT_OPERATION_DURATION,
    "histogram",
    "s",
    "Duration of one upstream attempt, as the router sees its provider.",
    (*_ATTEMPT, sc.ERROR_TYPE),
    DURATION_BUCKETS,
)
CLIENT_TIME_TO_FIRST_CHUNK: Final = InstrumentSpec(
    sc.GEN_AI_CLIENT_OPERATION_TIME_TO_FIRST_CHUNK,
    "histogram",
    "s",
    "Time from attempt start to the first chunk received from the provider.",
    _ATTEMPT,
    DURATION_BUCKETS,
)
CLIENT_TIME_PER_OUTPUT_CHUNK: Final = InstrumentSpec(
    sc.GEN_AI_CLIENT_OPERATION_TIME_PER_OUTPUT_CHUNK,
    "histogram",
    "s",
    "Time between consecutive chunks received from the provider after the first.",
    _ATTEMPT,
    DURATION_BUCKETS,
)
CLIENT_TOKEN_USAGE: Final = InstrumentSpec(
    sc.GEN_AI_CLIENT_TOKEN_USAGE,
    "histogram",
    "{token}",
    "Input and output tokens per upstream attempt.",
    (*_ATTEMPT, sc.GEN_AI_TOKEN_TYPE),
    TOKEN_BUCKETS,
)
USAGE_TOKENS: Final = InstrumentSpec(
    sc.LLM_ROUTER_USAGE_TOKENS,
    "counter",
    "{token}",
    "Tokens used upstream by type: input, output, cache_read, cache_creation, reasoning.",
    (*_SERVER, sc.GEN_AI_TOKEN_TYPE),
)
COST: Final = InstrumentSpec(
    sc.LLM_ROUTER_COST,
    "counter",
    "{USD}",
    "List-price cost of upstream usage (genai-prices rates); unpriced models are not counted.",
    _SERVER,
)
DECISIONS: Final = InstrumentSpec(
    sc.LLM_ROUTER_DECISIONS,
    "counter",
    "{decision}",
    "Routing decisions by chosen target and reason.",
    (
        *_ROUTE,
        sc.GEN_AI_REQUEST_MODEL,
        sc.LLM_ROUTER_TARGET_PROVIDER,
        sc.LLM_ROUTER_TARGET_MODEL,
        sc.LLM_ROUTER_REASON,
    ),
)
DECISION_DURATION: Final = InstrumentSpec(
    sc.LLM_ROUTER_DECISION_DURATION,
    "histogram",
    "s",
    "Time spent in the routing logic itself.",
    _ROUTE,
    DECISION_BUCKETS,
)
FALLBACKS: Final = InstrumentSpec(
    sc.LLM_ROUTER_FALLBACKS,
    "counter",
    "{fallback}",
    "A failed attempt followed by another attempt in the same request: from -> to, and why.",
    (
        *_ROUTE,
        sc.GEN_AI_PROVIDER_NAME,
        sc.GEN_AI_REQUEST_MODEL,
        sc.LLM_ROUTER_FALLBACK_FROM_PROVIDER,
        sc.LLM_ROUTER_FALLBACK_FROM_MODEL,
        sc.ERROR_TYPE,
    ),
)
REQUESTS_ACTIVE: Final = InstrumentSpec(
    sc.LLM_ROUTER_REQUESTS_ACTIVE,
    "updowncounter",
    "{request}",
    "Routed requests in flight.",
    _ROUTE,
)
CACHE_LOOKUPS: Final = InstrumentSpec(
    sc.LLM_ROUTER_CACHE_LOOKUPS,
    "counter",
    "{lookup}",
    "Router cache lookups by cache and result (hit, miss).",
    (sc.LLM_ROUTER_ROUTE, sc.LLM_ROUTER_CACHE_NAME, sc.LLM_ROUTER_CACHE_RESULT),
)
CACHE_EVICTIONS: Final = InstrumentSpec(
    sc.LLM_ROUTER_CACHE_EVICTIONS,
    "counter",
    "{entry}",
    "Entries evicted from a router cache.",
    (sc.LLM_ROUTER_CACHE_NAME,),
)
CACHE_ENTRIES: Final = InstrumentSpec(
    sc.LLM_ROUTER_CACHE_ENTRIES,
    "updowncounter",
    "{entry}",
    "Entries currently held by a router cache.",
    (sc.LLM_ROUTER_CACHE_NAME,),
)
RATELIMIT_REMAINING_REQUESTS: Final = InstrumentSpec(
    sc.LLM_ROUTER_RATELIMIT_REMAINING_REQUESTS,
    "gauge",
    "{request}",
    "Requests left in the upstream rate limit, as a provider last reported it.",
    (sc.GEN_AI_PROVIDER_NAME, sc.GEN_AI_REQUEST_MODEL),
)
RATELIMIT_REMAINING_TOKENS: Final = InstrumentSpec(
    sc.LLM_ROUTER_RATELIMIT_REMAINING_TOKENS,
    "gauge",
    "{token}",
    "Tokens left in the upstream rate limit, as a provider last reported it.",
    (sc.GEN_AI_PROVIDER_NAME, sc.GEN_AI_REQUEST_MODEL),
)
RATELIMIT_REJECTIONS: Final = InstrumentSpec(
    sc.LLM_ROUTER_RATELIMIT_REJECTIONS,
    "counter",
    "{request}",
    "Requests the router itself refused for rate limiting.",
    (*_ROUTE, sc.GEN_AI_REQUEST_MODEL),
)
COOLDOWNS: Final = InstrumentSpec(
    sc.LLM_ROUTER_COOLDOWNS,
    "counter",
    "{cooldown}",
    "A provider/model taken out of rotation, and why.",
    (sc.GEN_AI_PROVIDER_NAME, sc.GEN_AI_REQUEST_MODEL, sc.ERROR_TYPE),
)

_HTTP_ACTIVE = (sc.HTTP_REQUEST_METHOD, sc.URL_SCHEME)
_HTTP = (
    *_HTTP_ACTIVE,
    sc.NETWORK_PROTOCOL_VERSION,
    sc.HTTP_RESPONSE_STATUS_CODE,
    sc.HTTP_ROUTE,
    sc.ERROR_TYPE,
)
"""What opentelemetry-instrumentation-asgi puts on its stable-semconv HTTP metrics, plus
``http.route`` (semconv: required when available; that instrumentation never sets it)."""

HTTP_SERVER_REQUEST_DURATION: Final = InstrumentSpec(
    sc.HTTP_SERVER_REQUEST_DURATION,
    "histogram",
    "s",
    "Duration of HTTP server requests.",
    _HTTP,
    DURATION_BUCKETS,
)
HTTP_SERVER_ACTIVE_REQUESTS: Final = InstrumentSpec(
    sc.HTTP_SERVER_ACTIVE_REQUESTS,
    "updowncounter",
    "{request}",
    "Number of active HTTP server requests.",
    _HTTP_ACTIVE,
)
HTTP_SERVER_REQUEST_BODY_SIZE: Final = InstrumentSpec(
    sc.HTTP_SERVER_REQUEST_BODY_SIZE,
    "histogram",
    "By",
    "Size of HTTP server request bodies.",
    _HTTP,
    BODY_SIZE_BUCKETS,
)
HTTP_SERVER_RESPONSE_BODY_SIZE: Final = InstrumentSpec(
    sc.HTTP_SERVER_RESPONSE_BODY_SIZE,
    "histogram",
    "By",
    "Size of HTTP server response bodies.",
    _HTTP,
    BODY_SIZE_BUCKETS,
)

ALL: Final[tuple[InstrumentSpec, ...]] = (
    SERVER_REQUEST_DURATION,
    SERVER_TIME_TO_FIRST_TOKEN,
    SERVER_TIME_PER_OUTPUT_TOKEN,
    CLIENT_OPERATION_DURATION,
    CLIENT_TIME_TO_FIRST_CHUNK,
    CLIENT_TIME_PER_OUTPUT_CHUNK,
    CLIENT_TOKEN_USAGE,
    USAGE_TOKENS,
    COST,
    DECISIONS,
    DECISION_DURATION,
    FALLBACKS,
    REQUESTS_ACTIVE,
    CACHE_LOOKUPS,
    CACHE_EVICTIONS,
    CACHE_ENTRIES,
    RATELIMIT_REMAINING_REQUESTS,
    RATELIMIT_REMAINING_TOKENS,
    RATELIMIT_REJECTIONS,
    COOLDOWNS,
    HTTP_SERVER_REQUEST_DURATION,
    HTTP_SERVER_ACTIVE_REQUESTS,
    HTTP_SERVER_REQUEST_BODY_SIZE,
    HTTP_SERVER_RESPONSE_BODY_SIZE,
)
"""Every instrument routemeter creates, in documentation order."""


def prometheus_name(spec: InstrumentSpec) -> str:
    """The family name the OTel Prometheus exporter gives ``spec`` (unit suffix, ``_total``)."""
    from routemeter.recording._otel_private import prometheus_mapping

    sanitize_full_name, _, map_unit = prometheus_mapping()
    name = sanitize_full_name(spec.name)
    unit = map_unit(spec.unit)
    if unit and not name.endswith(f"_{unit}"):
        name = f"{name}_{unit}"
    if spec.kind == "counter":
        name += "_total"
    return name
