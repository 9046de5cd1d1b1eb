"""Every metric and attribute name routemeter emits, in one place.

GenAI semantic conventions are still moving (``gen_ai.system`` became ``gen_ai.provider.name``
in semconv 1.37); keeping the names here means a rename touches one file.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Final

from opentelemetry.semconv._incubating.attributes.gen_ai_attributes import (
    GEN_AI_OPERATION_NAME,
    GEN_AI_PROVIDER_NAME,
    GEN_AI_REQUEST_MODEL,
    GEN_AI_RESPONSE_MODEL,
    GEN_AI_TOKEN_TYPE,
)
from opentelemetry.semconv._incubating.metrics.gen_ai_metrics import (
    GEN_AI_CLIENT_OPERATION_DURATION,
    GEN_AI_CLIENT_OPERATION_TIME_PER_OUTPUT_CHUNK,
    GEN_AI_CLIENT_OPERATION_TIME_TO_FIRST_CHUNK,
    GEN_AI_CLIENT_TOKEN_USAGE,
    GEN_AI_SERVER_REQUEST_DURATION,
    GEN_AI_SERVER_TIME_PER_OUTPUT_TOKEN,
    GEN_AI_SERVER_TIME_TO_FIRST_TOKEN,
)
from opentelemetry.semconv._incubating.metrics.http_metrics import (
    HTTP_SERVER_ACTIVE_REQUESTS,
    HTTP_SERVER_REQUEST_BODY_SIZE,
    HTTP_SERVER_RESPONSE_BODY_SIZE,
)
from opentelemetry.semconv.attributes.error_attributes import ERROR_TYPE
from opentelemetry.semconv.attributes.http_attributes import (
    HTTP_REQUEST_METHOD,
    HTTP_RESPONSE_STATUS_CODE,
    HTTP_ROUTE,
)
from opentelemetry.semconv.attributes.network_attributes import NETWORK_PROTOCOL_VERSION
from opentelemetry.semconv.attributes.server_attributes import SERVER_ADDRESS, SERVER_PORT
from opentelemetry.semconv.attributes.url_attributes import URL_SCHEME
from opentelemetry.semconv.metrics.http_metrics import HTTP_SERVER_REQUEST_DURATION

__all__ = [
    "ERROR_TYPE",
    "GEN_AI_CLIENT_OPERATION_DURATION",
    "GEN_AI_CLIENT_OPERATION_TIME_PER_OUTPUT_CHUNK",
    "GEN_AI_CLIENT_OPERATION_TIME_TO_FIRST_CHUNK",
    "GEN_AI_CLIENT_TOKEN_USAGE",
    "GEN_AI_OPERATION_NAME",
    "GEN_AI_PROVIDER_NAME",
    "GEN_AI_REQUEST_MODEL",
    "GEN_AI_RESPONSE_MODEL",
    "GEN_AI_SERVER_REQUEST_DURATION",
    "GEN_AI_SERVER_TIME_PER_OUTPUT_TOKEN",
    "GEN_AI_SERVER_TIME_TO_FIRST_TOKEN",
    "GEN_AI_TOKEN_TYPE",
    "HTTP_REQUEST_METHOD",
    "HTTP_RESPONSE_STATUS_CODE",
    "HTTP_ROUTE",
    "HTTP_SERVER_ACTIVE_REQUESTS",
    "HTTP_SERVER_REQUEST_BODY_SIZE",
    "HTTP_SERVER_REQUEST_DURATION",
    "HTTP_SERVER_RESPONSE_BODY_SIZE",
    "NETWORK_PROTOCOL_VERSION",
    "SERVER_ADDRESS",
    "SERVER_PORT",
    "URL_SCHEME",
]

OTHER: Final = "_OTHER"
"""Value that any attribute outside its allow-list folds into (the semconv convention)."""

# --- routemeter's own metrics (no semconv equivalent yet) ---------------------------------

LLM_ROUTER_USAGE_TOKENS: Final = "llm.router.usage.tokens"
"""Counter / {token}: tokens by type, including cache and reasoning tokens."""
LLM_ROUTER_COST: Final = "llm.router.cost.usd"
"""Counter / {USD}: cost of each attempt's usage at the model's list price."""
LLM_ROUTER_DECISIONS: Final = "llm.router.decisions"
"""Counter / {decision}: routing decisions by chosen target and reason."""
LLM_ROUTER_DECISION_DURATION: Final = "llm.router.decision.duration"
"""Histogram / s: time spent in the routing logic itself."""
LLM_ROUTER_FALLBACKS: Final = "llm.router.fallbacks"
"""Counter / {fallback}: a failed attempt followed by another attempt in the same request."""
LLM_ROUTER_REQUESTS_ACTIVE: Final = "llm.router.requests.active"
"""UpDownCounter / {request}: routed requests in flight."""
LLM_ROUTER_CACHE_LOOKUPS: Final = "llm.router.cache.lookups"
"""Counter / {lookup}: cache lookups by cache name and result."""
LLM_ROUTER_CACHE_EVICTIONS: Final = "llm.router.cache.evictions"
"""Counter / {entry}: entries evicted from a router cache."""
LLM_ROUTER_CACHE_ENTRIES: Final = "llm.router.cache.entries"
"""UpDownCounter / {entry}: entries currently held by a router cache."""
LLM_ROUTER_RATELIMIT_REMAINING_REQUESTS: Final = "llm.router.ratelimit.remaining.requests"
"""Gauge / {request}: upstream rate-limit headroom in requests, last reported."""
LLM_ROUTER_RATELIMIT_REMAINING_TOKENS: Final = "llm.router.ratelimit.remaining.tokens"
"""Gauge / {token}: upstream rate-limit headroom in tokens, last reported."""
LLM_ROUTER_RATELIMIT_REJECTIONS: Final = "llm.router.ratelimit.rejections"
"""Counter / {request}: requests the router itself refused for rate limiting."""
LLM_ROUTER_COOLDOWNS: Final = "llm.router.cooldowns"
"""Counter / {cooldown}: a provider/model taken out of rotation."""

LLM_ROUTER_BASELINE_COST: Final = "llm.router.baseline.cost.usd"
"""Counter / {USD}: the answering attempt's usage priced at the route's baseline model."""
LLM_ROUTER_OVERHEAD_DURATION: Final = "llm.router.overhead.duration"
"""Histogram / s: a request's duration minus the time spent inside its upstream attempts."""
LLM_ROUTER_REQUEST_ATTEMPTS: Final = "llm.router.request.attempts"
"""Histogram / {attempt}: upstream attempts per routed request."""
LLM_ROUTER_REQUESTS_GOOD: Final = "llm.router.requests.good"
"""Counter / {request}: requests that succeeded and met every objective of their route."""
LLM_ROUTER_COST_UNPRICED: Final = "llm.router.cost.unpriced"
"""Counter / {attempt}: attempts whose spend could not be priced, and why."""
LLM_ROUTER_PRICES_INFO: Final = "llm.router.prices.info"
"""Gauge / 1 point of value 1: the price table in use, as an attribute."""
LLM_ROUTER_UPSTREAM_AVAILABLE: Final = "llm.router.upstream.available"
"""Gauge / {upstream}: 1 while a provider/model is in rotation, 0 while cooled down."""
ROUTEMETER_ATTRIBUTE_REJECTED: Final = "routemeter.attribute.rejected"
"""Counter / {value}: distinct values an allow-list folded into ``_OTHER``, per attribute."""
ROUTEMETER_INTERNAL_ERRORS: Final = "routemeter.internal.errors"
"""Counter / {error}: routemeter's own failures (logged once per kind, then counted)."""

# --- routemeter's own attributes ----------------------------------------------------------

LLM_ROUTER_ROUTE: Final = "llm.router.route"
"""The route label the application declared with ``@route``."""
LLM_ROUTER_TARGET_PROVIDER: Final = "llm.router.target.provider"
LLM_ROUTER_TARGET_MODEL: Final = "llm.router.target.model"
LLM_ROUTER_REASON: Final = "llm.router.reason"
"""Why the router chose the target (an app-declared, bounded label)."""
LLM_ROUTER_FALLBACK_FROM_PROVIDER: Final = "llm.router.fallback.from.provider"
LLM_ROUTER_FALLBACK_FROM_MODEL: Final = "llm.router.fallback.from.model"
LLM_ROUTER_CACHE_NAME: Final = "llm.router.cache.name"
LLM_ROUTER_CACHE_RESULT: Final = "llm.router.cache.result"
LLM_ROUTER_TENANT: Final = "llm.router.tenant"
"""Who a request was for, as the application named it (``rec.tenant``); bounded."""
LLM_ROUTER_BASELINE_MODEL: Final = "llm.router.baseline.model"
"""The model a request's savings are measured against."""
LLM_ROUTER_UNPRICED_REASON: Final = "llm.router.unpriced.reason"
"""Why an attempt's spend was not priced: ``unknown_model`` or ``no_usage``."""
LLM_ROUTER_PRICES_TABLE: Final = "llm.router.prices.table"
"""The price table in use: ``genai-prices@<version>``, ``+<file name>`` with a prices file."""
ROUTEMETER_ATTRIBUTE: Final = "routemeter.attribute"
"""The attribute whose allow-list folded a value."""
ROUTEMETER_ERROR_KIND: Final = "routemeter.error.kind"
"""What failed inside routemeter (a fixed set of kinds, such as ``commit``)."""

UNPRICED_UNKNOWN_MODEL: Final = "unknown_model"
"""Usage was reported, but the model has no price."""
UNPRICED_NO_USAGE: Final = "no_usage"
"""The attempt answered without reporting usage."""

TOKEN_INPUT: Final = "input"
TOKEN_OUTPUT: Final = "output"
TOKEN_CACHE_READ: Final = "cache_read"
TOKEN_CACHE_CREATION: Final = "cache_creation"
TOKEN_CACHE_WRITE: Final = "cache_write"
"""The cache-creation token type's name in the latest GenAI conventions
(``gen_ai.client.inference.usage.cache_write.input_tokens``), used under
``OTEL_SEMCONV_STABILITY_OPT_IN=gen_ai_latest_experimental``."""

SEMCONV_OPT_IN: Final = "OTEL_SEMCONV_STABILITY_OPT_IN"
GEN_AI_LATEST_EXPERIMENTAL: Final = "gen_ai_latest_experimental"


def latest_experimental(env: Mapping[str, str] | None = None) -> bool:
    """Whether ``OTEL_SEMCONV_STABILITY_OPT_IN`` asks for the latest experimental GenAI names
    (read when a recorder is built, never per request)."""
    raw = (os.environ if env is None else env).get(SEMCONV_OPT_IN, "")
    return GEN_AI_LATEST_EXPERIMENTAL in (v.strip().lower() for v in raw.split(","))


def token_types(latest: bool) -> tuple[str, str, str, str, str]:
    """``gen_ai.token.type`` values of input, output, cache read, cache creation and
    reasoning tokens, in the names the conventions in use give them."""
    creation = TOKEN_CACHE_WRITE if latest else TOKEN_CACHE_CREATION
    return (TOKEN_INPUT, TOKEN_OUTPUT, TOKEN_CACHE_READ, creation, TOKEN_REASONING)


TOKEN_REASONING: Final = "reasoning"
