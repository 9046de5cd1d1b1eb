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
OVERHEAD_BUCKETS: Final = (
    0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005,
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
)  # fmt: skip
"""The router's own time per request: microseconds of routing and post-processing, up to the
seconds a back-off between attempts can take."""
ATTEMPT_BUCKETS: Final = (1.0, 2.0, 3.0, 4.0, 5.0, 8.0)
"""Upstream attempts per request: one, the retries and fallbacks a chain takes, and more."""
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
_TENANT = sc.LLM_ROUTER_TENANT
"""Last on the server-side request metrics, tokens and cost: absent unless the app names one."""

SERVER_REQUEST_DURATION: Final = InstrumentSpec(
    sc.GEN_AI_SERVER_REQUEST_DURATION,
    "histogram",
    "s",
    "End-to-end duration of a routed request, as the router's clients see it.",
    (*_SERVER, sc.ERROR_TYPE, _TENANT),
    DURATION_BUCKETS,
)
SERVER_TIME_TO_FIRST_TOKEN: Final = InstrumentSpec(
    sc.GEN_AI_SERVER_TIME_TO_FIRST_TOKEN,
    "histogram",
    "s",
    "Time from request start to the first chunk a streaming route yields to its client.",
    (*_SERVER, _TENANT),
    TTFT_BUCKETS,
)
SERVER_TIME_PER_OUTPUT_TOKEN: Final = InstrumentSpec(
    sc.GEN_AI_SERVER_TIME_PER_OUTPUT_TOKEN,
    "histogram",
    "s",
    "Time per output token after the first, for streaming routes whose output token count"
    " is known (from usage); not observed when it is not.",
    (*_SERVER, _TENANT),
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
    "Tokens used upstream by type: input, output, cache_read, cache_creation (cache_write"
    " under gen_ai_latest_experimental), reasoning; error.type on failed attempts (waste).",
    (*_SERVER, sc.GEN_AI_TOKEN_TYPE, sc.ERROR_TYPE, _TENANT),
)
COST: Final = InstrumentSpec(
    sc.LLM_ROUTER_COST,
    "counter",
    "{USD}",
    "List-price cost of upstream usage (genai-prices rates); unpriced models are not counted"
    " (llm.router.cost.unpriced); error.type on failed attempts (waste).",
    (*_SERVER, sc.ERROR_TYPE, _TENANT),
)
BASELINE_COST: Final = InstrumentSpec(
    sc.LLM_ROUTER_BASELINE_COST,
    "counter",
    "{USD}",
    "The answering attempt's usage priced at the baseline model (the route's baseline_model,"
    " else the requested model when priced): savings = baseline - llm.router.cost.usd.",
    (*_ROUTE, sc.LLM_ROUTER_BASELINE_MODEL, _TENANT),
)
COST_UNPRICED: Final = InstrumentSpec(
    sc.LLM_ROUTER_COST_UNPRICED,
    "counter",
    "{attempt}",
    "Attempts whose spend is missing from llm.router.cost.usd: usage of a model without a"
    " price (unknown_model), or an answer without usage (no_usage).",
    (*_SERVER, sc.LLM_ROUTER_UNPRICED_REASON),
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
OVERHEAD_DURATION: Final = InstrumentSpec(
    sc.LLM_ROUTER_OVERHEAD_DURATION,
    "histogram",
    "s",
    "A request's duration minus the time spent inside its upstream attempts: the router's own"
    " time (routing, back-off, post-processing).",
    _ROUTE,
    OVERHEAD_BUCKETS,
)
REQUEST_ATTEMPTS: Final = InstrumentSpec(
    sc.LLM_ROUTER_REQUEST_ATTEMPTS,
    "histogram",
    "{attempt}",
    "Upstream attempts per routed request (0 for one answered without going upstream).",
    _ROUTE,
    ATTEMPT_BUCKETS,
)
REQUESTS_GOOD: Final = InstrumentSpec(
    sc.LLM_ROUTER_REQUESTS_GOOD,
    "counter",
    "{request}",
    "Requests that succeeded and met every objective of their route's SLO (every successful"
    " request of a route without one): goodput = good / all.",
    (*_ROUTE, _TENANT),
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
UPSTREAM_AVAILABLE: Final = InstrumentSpec(
    sc.LLM_ROUTER_UPSTREAM_AVAILABLE,
    "gauge",
    "{upstream}",
    "1 while a provider/model is in rotation, 0 while cooled down (routemeter.cooldown until"
    " its seconds pass or routemeter.recovered); only upstreams ever cooled down have a point.",
    (sc.GEN_AI_PROVIDER_NAME, sc.GEN_AI_REQUEST_MODEL),
)
PRICES_INFO: Final = InstrumentSpec(
    sc.LLM_ROUTER_PRICES_INFO,
    "gauge",
    "",
    "Always 1: the price table llm.router.cost.usd uses, as an attribute.",
    (sc.LLM_ROUTER_PRICES_TABLE,),
)
ATTRIBUTE_REJECTED: Final = InstrumentSpec(
    sc.ROUTEMETER_ATTRIBUTE_REJECTED,
    "counter",
    "{value}",
    "Distinct values an allow-list folded into _OTHER (malformed, secret-shaped, or past its"
    " limit), per attribute.",
    (sc.ROUTEMETER_ATTRIBUTE,),
)
INTERNAL_ERRORS: Final = InstrumentSpec(
    sc.ROUTEMETER_INTERNAL_ERRORS,
    "counter",
    "{error}",
    "routemeter's own failures by kind (the first of each kind is logged); recording goes on.",
    (sc.ROUTEMETER_ERROR_KIND,),
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
    BASELINE_COST,
    COST_UNPRICED,
    DECISIONS,
    DECISION_DURATION,
    FALLBACKS,
    OVERHEAD_DURATION,
    REQUEST_ATTEMPTS,
    REQUESTS_GOOD,
    REQUESTS_ACTIVE,
    CACHE_LOOKUPS,
    CACHE_EVICTIONS,
    CACHE_ENTRIES,
    RATELIMIT_REMAINING_REQUESTS,
    RATELIMIT_REMAINING_TOKENS,
    RATELIMIT_REJECTIONS,
    COOLDOWNS,
    UPSTREAM_AVAILABLE,
    PRICES_INFO,
    ATTRIBUTE_REJECTED,
    INTERNAL_ERRORS,
    HTTP_SERVER_REQUEST_DURATION,
    HTTP_SERVER_ACTIVE_REQUESTS,
    HTTP_SERVER_REQUEST_BODY_SIZE,
    HTTP_SERVER_RESPONSE_BODY_SIZE,
)
"""Every instrument routemeter creates, in documentation order."""

COMPUTED: Final = frozenset(
    i
    for i, spec in enumerate(ALL)
    if spec in (UPSTREAM_AVAILABLE, PRICES_INFO, ATTRIBUTE_REJECTED, INTERNAL_ERRORS)
)
"""Metrics read at collection from state routemeter keeps anyway (cooldown deadlines, the price
table, the allow-lists' fold counts, the failure counts), as observable instruments are: no
request or event pays for them."""


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
