"""The recorder: turns a committed request record into measurements on OTel instruments.

This is the one place that knows the schema's attribute sets. It records through the OTel
*API*, so it works on routemeter's own MeterProvider or on one the application installed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from time import perf_counter
from typing import Any

from opentelemetry.metrics import Meter

from routemeter import _instruments as ins
from routemeter import _semconv as sc
from routemeter._bounds import Bounded
from routemeter._errors import report
from routemeter._pricing import Prices
from routemeter._record import Request, iter_marks

_TOKEN_TYPES = (
    sc.TOKEN_INPUT,
    sc.TOKEN_OUTPUT,
    sc.TOKEN_CACHE_READ,
    sc.TOKEN_CACHE_CREATION,
    sc.TOKEN_REASONING,
)


@dataclass(slots=True)
class Bounds:
    """One allow-list per attribute dimension whose values come from outside the code."""

    providers: Bounded
    models: Bounded
    requested_models: Bounded
    servers: Bounded = field(default_factory=lambda: Bounded("server.address", limit=100))
    reasons: Bounded = field(default_factory=lambda: Bounded("llm.router.reason", limit=50))
    errors: Bounded = field(default_factory=lambda: Bounded("error.type", limit=100))
    caches: Bounded = field(default_factory=lambda: Bounded("llm.router.cache.name", limit=20))


def _create(meter: Meter, spec: ins.InstrumentSpec) -> Any:
    if spec.kind == "histogram":
        return meter.create_histogram(
            spec.name,
            unit=spec.unit,
            description=spec.description,
            explicit_bucket_boundaries_advisory=list(spec.buckets or ()),
        )
    factory = {
        "counter": meter.create_counter,
        "updowncounter": meter.create_up_down_counter,
        "gauge": meter.create_gauge,
    }[spec.kind]
    return factory(spec.name, unit=spec.unit, description=spec.description)


class Recorder:
    """Records committed requests through OTel API instruments (one call per measurement)."""

    def __init__(self, meter: Meter, bounds: Bounds, prices: Prices) -> None:
        self.bounds = bounds
        self.prices = prices
        i = {spec.name: _create(meter, spec) for spec in ins.ALL}
        self._server_duration = i[sc.GEN_AI_SERVER_REQUEST_DURATION]
        self._ttft = i[sc.GEN_AI_SERVER_TIME_TO_FIRST_TOKEN]
        self._tpot = i[sc.GEN_AI_SERVER_TIME_PER_OUTPUT_TOKEN]
        self._client_duration = i[sc.GEN_AI_CLIENT_OPERATION_DURATION]
        self._ttfc = i[sc.GEN_AI_CLIENT_OPERATION_TIME_TO_FIRST_CHUNK]
        self._tpoc = i[sc.GEN_AI_CLIENT_OPERATION_TIME_PER_OUTPUT_CHUNK]
        self._token_usage = i[sc.GEN_AI_CLIENT_TOKEN_USAGE]
        self._tokens = i[sc.LLM_ROUTER_USAGE_TOKENS]
        self._cost = i[sc.LLM_ROUTER_COST]
        self._decisions = i[sc.LLM_ROUTER_DECISIONS]
        self._decision_duration = i[sc.LLM_ROUTER_DECISION_DURATION]
        self._fallbacks = i[sc.LLM_ROUTER_FALLBACKS]
        self._active = i[sc.LLM_ROUTER_REQUESTS_ACTIVE]
        self._cache_lookups = i[sc.LLM_ROUTER_CACHE_LOOKUPS]
        self._cache_evictions = i[sc.LLM_ROUTER_CACHE_EVICTIONS]
        self._cache_entries = i[sc.LLM_ROUTER_CACHE_ENTRIES]
        self._ratelimit_remaining = i[sc.LLM_ROUTER_RATELIMIT_REMAINING]
        self._rejections = i[sc.LLM_ROUTER_RATELIMIT_REJECTIONS]
        self._cooldowns = i[sc.LLM_ROUTER_COOLDOWNS]

    def begin(self, rec: Request) -> None:
        self._active.add(1, rec.route_attrs)

    def commit(self, rec: Request) -> None:
        try:
            self._commit(rec)
        except Exception as e:
            report("commit", e)

    def _commit(self, rec: Request) -> None:
        end = rec.end if rec.end is not None else perf_counter()
        b = self.bounds
        route = rec.route_attrs
        self._active.add(-1, route)
        requested = b.requested_models(rec.requested_model) if rec.requested_model else None

        d = rec.decision
        if d is not None:
            self._decision_duration.record(max((d.end or end) - d.start, 0.0), route)
            if d.provider is not None and d.model is not None:
                attrs = {
                    **route,
                    sc.LLM_ROUTER_TARGET_PROVIDER: b.providers(d.provider),
                    sc.LLM_ROUTER_TARGET_MODEL: b.models(d.model),
                    sc.LLM_ROUTER_REASON: b.reasons(d.reason) if d.reason else "none",
                }
                if requested is not None:
                    attrs[sc.GEN_AI_REQUEST_MODEL] = requested
                self._decisions.add(1, attrs)

        served: dict[str, Any] | None = None
        last: dict[str, Any] | None = None
        last_error: str | None = None
        output_tokens: int | None = None
        for a in rec.attempts:
            provider = b.providers(a.provider)
            model = b.models(a.model)
            base: dict[str, Any] = {
                **route,
                sc.GEN_AI_PROVIDER_NAME: provider,
                sc.GEN_AI_REQUEST_MODEL: model,
            }
            response_model = b.models(a.response_model) if a.response_model else None
            if response_model is not None:
                base[sc.GEN_AI_RESPONSE_MODEL] = response_model
            attempt = dict(base)
            if a.server_address:
                attempt[sc.SERVER_ADDRESS] = b.servers(a.server_address)
            if type(a.server_port) is int and 0 < a.server_port < 65536:
                attempt[sc.SERVER_PORT] = a.server_port
            error = b.errors(a.error_type) if a.error_type is not None else None

            if last is not None and last_error is not None:
                self._fallbacks.add(
                    1,
                    {
                        **route,
                        sc.GEN_AI_PROVIDER_NAME: provider,
                        sc.GEN_AI_REQUEST_MODEL: model,
                        sc.LLM_ROUTER_FALLBACK_FROM_PROVIDER: last[sc.GEN_AI_PROVIDER_NAME],
                        sc.LLM_ROUTER_FALLBACK_FROM_MODEL: last[sc.GEN_AI_REQUEST_MODEL],
                        sc.ERROR_TYPE: last_error,
                    },
                )

            a_end = a.end if a.end is not None else end
            duration_attrs = attempt if error is None else {**attempt, sc.ERROR_TYPE: error}
            self._client_duration.record(max(a_end - a.start, 0.0), duration_attrs)

            marks = a.chunk_marks
            if marks:
                self._ttfc.record(max(marks[0] - a.start, 0.0), attempt)
                for gap in iter_marks(marks):
                    self._tpoc.record(gap, attempt)

            used = a.used
            if used.input is not None:
                self._token_usage.record(used.input, {**attempt, sc.GEN_AI_TOKEN_TYPE: "input"})
            if used.output is not None:
                self._token_usage.record(used.output, {**attempt, sc.GEN_AI_TOKEN_TYPE: "output"})
            for token_type, count in zip(_TOKEN_TYPES, used, strict=True):
                if count:
                    self._tokens.add(count, {**base, sc.GEN_AI_TOKEN_TYPE: token_type})
            if used.input or used.output:
                priced = response_model or model
                if priced != sc.OTHER and provider != sc.OTHER:
                    cost = self.prices.cost(provider, priced, used)
                    if cost is None and priced != model and model != sc.OTHER:
                        cost = self.prices.cost(provider, model, used)
                    if cost:
                        self._cost.add(cost, base)

            last, last_error = base, error
            if error is None:
                served = base
                output_tokens = used.output

        error_type = rec.error_type
        if error_type is None and last_error is not None and served is None:
            error_type = last_error
        server: dict[str, Any] = dict(route)
        who = served or last
        if who is not None:
            server[sc.GEN_AI_PROVIDER_NAME] = who[sc.GEN_AI_PROVIDER_NAME]
            if served is not None and sc.GEN_AI_RESPONSE_MODEL in served:
                server[sc.GEN_AI_RESPONSE_MODEL] = served[sc.GEN_AI_RESPONSE_MODEL]
        if requested is not None:
            server[sc.GEN_AI_REQUEST_MODEL] = requested
        if error_type is None:
            self._server_duration.record(max(end - rec.start, 0.0), server)
        else:
            error = b.errors(error_type)
            failed = {**server, sc.ERROR_TYPE: error}
            self._server_duration.record(max(end - rec.start, 0.0), failed)

        if rec.first_token is not None:
            self._ttft.record(max(rec.first_token - rec.start, 0.0), server)
            if error_type is None:
                after_first = (output_tokens or rec.yielded) - 1
                if after_first > 0:
                    self._tpot.record(max(end - rec.first_token, 0.0) / after_first, server)

        if rec.caches:
            for name, hit in rec.caches:
                self._cache_lookups.add(
                    1,
                    {
                        sc.LLM_ROUTER_ROUTE: rec.route,
                        sc.LLM_ROUTER_CACHE_NAME: b.caches(name),
                        sc.LLM_ROUTER_CACHE_RESULT: "hit" if hit else "miss",
                    },
                )
        if rec.rejected:
            attrs = dict(route)
            if requested is not None:
                attrs[sc.GEN_AI_REQUEST_MODEL] = requested
            self._rejections.add(1, attrs)

    # --- events outside a request ---------------------------------------------------------

    def cooldown(self, provider: str, model: str, error_type: str | None) -> None:
        b = self.bounds
        attrs = {
            sc.GEN_AI_PROVIDER_NAME: b.providers(provider),
            sc.GEN_AI_REQUEST_MODEL: b.models(model),
        }
        if error_type:
            attrs[sc.ERROR_TYPE] = b.errors(error_type)
        self._cooldowns.add(1, attrs)

    def cache_evicted(self, name: str, count: int) -> None:
        self._cache_evictions.add(count, {sc.LLM_ROUTER_CACHE_NAME: self.bounds.caches(name)})

    def cache_entries(self, name: str, delta: int) -> None:
        self._cache_entries.add(delta, {sc.LLM_ROUTER_CACHE_NAME: self.bounds.caches(name)})

    def ratelimit_remaining(self, provider: str, model: str, kind: str, value: float) -> None:
        b = self.bounds
        self._ratelimit_remaining.set(
            value,
            {
                sc.GEN_AI_PROVIDER_NAME: b.providers(provider),
                sc.GEN_AI_REQUEST_MODEL: b.models(model),
                sc.LLM_ROUTER_RATELIMIT_KIND: kind,
            },
        )
