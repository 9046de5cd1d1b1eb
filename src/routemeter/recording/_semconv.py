"""Every metric and attribute name routemeter emits, in one place.

GenAI semantic conventions are still moving (``gen_ai.system`` became ``gen_ai.provider.name``
in semconv 1.37); keeping the names here means a rename touches one file.
"""

from __future__ import annotations

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

TOKEN_INPUT: Final = "input"
TOKEN_OUTPUT: Final = "output"
TOKEN_CACHE_READ: Final = "cache_read"
TOKEN_CACHE_CREATION: Final = "cache_creation"
TOKEN_REASONING: Final = "reasoning"
