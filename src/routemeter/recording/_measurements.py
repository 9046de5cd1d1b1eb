"""From a committed request record to measurements: the one place that knows which facts feed
which metric under which attributes.

A measurement is ``(cell, value)``. A ``Cell`` names one metric point: ``index`` into
``_instruments.ALL`` and ``key``, a tuple of attribute values aligned with that spec's
``attributes`` (``None`` = absent). Cells are built once per attribute set and cached with the
raw values that produce them, so a commit does no key building or lookups for the attribute
sets it has seen before; a recorder may keep its per-point state on the cell. Both recorders
consume the same measurements, so they cannot disagree on the schema.

An attempt's upstream chunk gaps arrive either as one observation per gap (its chunk marks) or,
when the recorder that began the request gave the request layer the histogram's bounds
(``Sink.chunk_bounds``), already folded (``ChunkGaps``): one ``(cell, gaps)`` measurement
whatever the stream's length, which ``folded_measurements()`` hands over as it is (the
aggregate recorder adds it into the point in O(buckets)) and ``measurements()`` as stand-in
observations (``gap_values``).
"""

from __future__ import annotations

from math import inf
from time import perf_counter
from typing import Any, Final

from routemeter.recording import _instruments as ins
from routemeter.recording import _semconv as sc
from routemeter.recording._bounds import Bounded, Bounds
from routemeter.recording._pricing import Prices, Rates
from routemeter.request._record import ChunkGaps, Request, iter_marks
from routemeter.request._usage import EMPTY


class Cell:
    """One metric point: its metric, its attribute key, and what a recorder keeps for it."""

    __slots__ = ("attrs", "index", "key", "state")

    def __init__(self, index: int, key: tuple[Any, ...]) -> None:
        self.index = index
        self.key = key
        self.state: list[Any] | None = None
        """The aggregate recorder's live cumulative state for this point."""
        self.attrs: dict[str, Any] | None = None
        """The SDK recorder's attribute dict for this point."""


Measurement = tuple[Cell, float]
Folded = tuple[Cell, ChunkGaps, int]
"""Many observations of one histogram point, already folded over that histogram's buckets, and
where they stand among the request's observations (the index their first one would have had):
a metric's first point ever fixes its place in the export order."""
Measurements = tuple[list[Measurement], list[Measurement]]
"""Histogram observations and sum increments (counters, up-down counters)."""
FoldedMeasurements = tuple[list[Measurement], list[Measurement], list[Folded] | None]
"""``Measurements`` and the folded observations (``None``: none)."""

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
REMAINING_REQUESTS: Final = _INDEX[sc.LLM_ROUTER_RATELIMIT_REMAINING_REQUESTS]
REMAINING_TOKENS: Final = _INDEX[sc.LLM_ROUTER_RATELIMIT_REMAINING_TOKENS]
REJECTIONS: Final = _INDEX[sc.LLM_ROUTER_RATELIMIT_REJECTIONS]
COOLDOWNS: Final = _INDEX[sc.LLM_ROUTER_COOLDOWNS]
BASELINE_COST: Final = _INDEX[sc.LLM_ROUTER_BASELINE_COST]
COST_UNPRICED: Final = _INDEX[sc.LLM_ROUTER_COST_UNPRICED]
OVERHEAD: Final = _INDEX[sc.LLM_ROUTER_OVERHEAD_DURATION]
ATTEMPTS: Final = _INDEX[sc.LLM_ROUTER_REQUEST_ATTEMPTS]
GOOD: Final = _INDEX[sc.LLM_ROUTER_REQUESTS_GOOD]
AVAILABLE: Final = _INDEX[sc.LLM_ROUTER_UPSTREAM_AVAILABLE]
PRICES_INFO: Final = _INDEX[sc.LLM_ROUTER_PRICES_INFO]
ATTRIBUTE_REJECTED: Final = _INDEX[sc.ROUTEMETER_ATTRIBUTE_REJECTED]
INTERNAL_ERRORS: Final = _INDEX[sc.ROUTEMETER_INTERNAL_ERRORS]

_HIT: Final = "hit"
_MISS: Final = "miss"


class RouteCells:
    """The points a route label owns whatever it routes to."""

    __slots__ = ("active", "attempts", "decision_duration", "good", "good_by", "overhead", "route")

    def __init__(self, route: tuple[str, str]) -> None:
        self.route = route
        self.active = Cell(ACTIVE, route)
        self.decision_duration = Cell(DECISION_DURATION, route)
        self.overhead = Cell(OVERHEAD, route)
        self.attempts = Cell(ATTEMPTS, route)
        self.good = Cell(GOOD, (*route, None))
        self.good_by: dict[str, Cell] = {}
        """``good`` per bounded tenant."""

    def good_for(self, tenant: str) -> Cell:
        cell = self.good_by.get(tenant)
        if cell is None:
            cell = Cell(GOOD, (*self.route, tenant))
            if len(self.good_by) < Keys.LIMIT:
                self.good_by[tenant] = cell
        return cell


class ServerCells:
    """The server-side points of a request answered by one provider for one requested model."""

    __slots__ = ("duration", "tpot", "ttft")

    def __init__(self, raw: tuple[Any, ...]) -> None:
        route, provider, requested, response_model, error, tenant = raw
        server = (*route, provider, requested, response_model)
        self.duration = Cell(SERVER_DURATION, (*server, error, tenant))
        self.ttft = Cell(TTFT, (*server, tenant))
        self.tpot = Cell(TPOT, (*server, tenant))


class Spend:
    """An attempt's token and cost points for one outcome (``error.type``) and tenant."""

    __slots__ = ("cost", "tokens")

    def __init__(
        self, base: tuple[Any, ...], types: tuple[str, ...], extra: tuple[Any, ...]
    ) -> None:
        self.tokens = tuple(Cell(TOKENS, (*base, t, *extra)) for t in types)
        self.cost = Cell(COST, (*base, *extra))


class AttemptKeys:
    """Every point an attempt with these raw names feeds, bounded and built once."""

    __slots__ = (
        "base",
        "duration_failed",
        "duration_ok",
        "flat",
        "ok",
        "rates",
        "servers",
        "spends",
        "token_types",
        "tpoc",
        "ttfc",
        "unpriced_no_usage",
        "unpriced_unknown",
        "usage_input",
        "usage_output",
        "with_attempt",
    )

    def __init__(
        self,
        b: Bounds,
        prices: Prices,
        route: tuple[str, str],
        raw: tuple[Any, ...],
        token_types: tuple[str, ...] = sc.token_types(False),
    ) -> None:
        _, provider_raw, model_raw, response_raw, address_raw, port_raw = raw
        provider = b.providers(provider_raw)
        model = b.models(model_raw)
        response_model = b.models(response_raw) if response_raw else None
        self.base = base = (*route, provider, model, response_model)
        address = b.servers(address_raw) if address_raw else None
        port = port_raw if type(port_raw) is int and 0 < port_raw < 65536 else None
        self.with_attempt = attempt = (*base, address, port)
        self.duration_ok = Cell(CLIENT_DURATION, (*attempt, None))
        self.duration_failed: dict[str, Cell] = {}
        self.ttfc = Cell(TTFC, attempt)
        self.tpoc = Cell(TPOC, attempt)
        self.usage_input = Cell(TOKEN_USAGE, (*attempt, sc.TOKEN_INPUT))
        self.usage_output = Cell(TOKEN_USAGE, (*attempt, sc.TOKEN_OUTPUT))
        self.token_types = token_types
        self.ok = Spend(base, token_types, (None, None))
        """Tokens and cost of a successful attempt for no named tenant (the common case)."""
        self.spends: dict[tuple[str | None, str | None], Spend] = {}
        """Tokens and cost by (``error.type``, tenant), both bounded."""
        self.unpriced_unknown = Cell(COST_UNPRICED, (*base, sc.UNPRICED_UNKNOWN_MODEL))
        self.unpriced_no_usage = Cell(COST_UNPRICED, (*base, sc.UNPRICED_NO_USAGE))
        self.servers: dict[Any, ServerCells] = {}
        """Server-side points of successful requests this attempt served, by requested model
        (and tenant, as a pair, when one is named)."""
        self.rates = None
        if provider != sc.OTHER:
            priced = response_model or model
            if priced != sc.OTHER:
                self.rates = prices.rates(provider, priced)
            if self.rates is None and priced != model and model != sc.OTHER:
                self.rates = prices.rates(provider, model)
        self.flat = None
        """(per request, per input token, per output token) when the rates are flat: the cost
        of usage without cache tokens, computed inline at commit exactly as ``Rates.cost``."""
        if self.rates is not None and self.rates.flat is not None:
            self.flat = (self.rates.per_request, self.rates.flat[0], self.rates.flat[1])

    def spend(self, error: str | None, tenant: str | None) -> Spend:
        """The token and cost points of an attempt that ended with ``error`` for ``tenant``."""
        key = (error, tenant)
        found = self.spends.get(key)
        if found is None:
            found = Spend(self.base, self.token_types, key)
            if len(self.spends) < Keys.LIMIT:
                self.spends[key] = found
        return found

    def duration(self, error: str) -> Cell:
        """The duration point of an attempt that failed with ``error`` (already bounded)."""
        cell = self.duration_failed.get(error)
        if cell is None:
            cell = Cell(CLIENT_DURATION, (*self.with_attempt, error))
            if len(self.duration_failed) < Keys.LIMIT:
                self.duration_failed[error] = cell
        return cell


class Keys:
    """Cells per raw attribute combination; a routed request repeats the same few combinations,
    so a commit is mostly dict lookups. Size-capped: past the cap cells are built per request,
    which is slower but still bounded (the recorder finds the point by its key)."""

    LIMIT: Final = 10_000

    def __init__(self, bounds: Bounds, prices: Prices) -> None:
        self.bounds = bounds
        self.prices = prices
        self.attempts: dict[tuple[Any, ...], AttemptKeys] = {}
        self.decisions: dict[tuple[Any, ...], Cell] = {}
        self.routes: dict[tuple[str, str], RouteCells] = {}
        self.servers: dict[tuple[Any, ...], ServerCells] = {}
        self.requested_seen = bounds.requested_models.seen
        self.tenants_seen = bounds.tenants.seen
        self.priced = False
        """Whether any model was priced yet: ``llm.router.prices.info`` reports from then on,
        beside the costs it explains."""
        self.token_types = sc.token_types(sc.latest_experimental())
        self.baselines = Bounded("llm.router.baseline.model", limit=0, known=self._priced)
        """Baseline models pass when priced; the rest fold (``routemeter.attribute.rejected``)
        and count no baseline cost."""
        self.baseline_seen = self.baselines.seen
        self.baseline: dict[tuple[Any, ...], tuple[Cell, Rates] | None] = {}
        """(route, bounded baseline model, bounded tenant) -> its point and rates, or None."""

    def _priced(self, model: str) -> bool:
        return self.prices.baseline_rates(model) is not None

    def baseline_for(self, raw: tuple[Any, ...]) -> tuple[Cell, Rates] | None:
        route, model, tenant = raw
        found = None
        if model != sc.OTHER:
            rates = self.prices.baseline_rates(model)
            if rates is not None:
                found = (Cell(BASELINE_COST, (*route, model, tenant)), rates)
                self.priced = True
        if len(self.baseline) < self.LIMIT:
            self.baseline[raw] = found
        return found

    def decision(self, raw: tuple[Any, ...]) -> Cell:
        route, requested, provider, model, reason = raw
        b = self.bounds
        chosen = b.reasons(reason) if reason else "none"
        cell = Cell(DECISIONS, (*route, requested, b.providers(provider), b.models(model), chosen))
        if len(self.decisions) < self.LIMIT:
            self.decisions[raw] = cell
        return cell

    def attempt(self, raw: tuple[Any, ...]) -> AttemptKeys:
        keys = AttemptKeys(self.bounds, self.prices, raw[0], raw, self.token_types)
        if keys.rates is not None:
            self.priced = True
        if len(self.attempts) < self.LIMIT:
            self.attempts[raw] = keys
        return keys

    def route(self, route: tuple[str, str]) -> RouteCells:
        cells = self.routes.get(route)
        if cells is None:
            cells = RouteCells(route)
            if len(self.routes) < self.LIMIT:
                self.routes[route] = cells
        return cells

    def server(self, key: tuple[Any, ...]) -> ServerCells:
        cells = ServerCells(key)
        if len(self.servers) < self.LIMIT:
            self.servers[key] = cells
        return cells


def _plain(raw: tuple[Any, ...]) -> tuple[Any, ...]:
    """``raw`` with every value that is not a str, an int or None replaced by ``_OTHER``, so a
    request whose handler passed unhashable or hostile objects is still counted (rarely taken:
    the lookups above fail only on such values)."""
    route, *values = raw
    return (route, *(v if v is None or type(v) in (str, int) else sc.OTHER for v in values))


def measurements(rec: Request, keys: Keys, active: bool = True) -> Measurements:
    """``folded_measurements()`` for a recorder that needs every value: folded chunk gaps
    become stand-in observations (``gap_values``) where their observations would have been."""
    observed, counted, folded = folded_measurements(rec, keys, active)
    if folded is not None:
        for cell, gaps, where in reversed(folded):
            observed[where:where] = [(cell, value) for value in gap_values(gaps)]
    return observed, counted


def folded_measurements(rec: Request, keys: Keys, active: bool = True) -> FoldedMeasurements:
    """Everything a finished request contributes, in one pass: histogram observations, then
    sum increments (``active=False`` leaves out the in-flight decrement, for a recorder that
    counts requests in flight itself), then folded observations (chunk gaps an attempt folded
    as they arrived, because its recorder gave ``Sink.chunk_bounds``)."""
    b = keys.bounds
    end = rec.end if rec.end is not None else perf_counter()
    route = rec.route_key
    raw_requested = rec.requested_model
    if raw_requested is None:
        requested = None
    else:
        requested = keys.requested_seen.get(raw_requested) or b.requested_models(raw_requested)
    raw_tenant = rec.tenant_name
    if raw_tenant is None:
        tenant = None
    else:
        tenant = keys.tenants_seen.get(raw_tenant) or b.tenants(raw_tenant)
    observed: list[Measurement] = []
    counted: list[Measurement] = []
    folded: list[Folded] | None = None
    observe = observed.append
    count = counted.append
    rc = keys.routes.get(route) or keys.route(route)
    if active:
        count((rc.active, -1))

    d = rec.decision
    if d is not None:
        if d.timed:
            elapsed = (d.end or end) - d.start
            observe((rc.decision_duration, elapsed if elapsed > 0.0 else 0.0))
        if d.provider is not None and d.model is not None:
            chosen = (route, requested, d.provider, d.model, d.reason)
            try:
                target = keys.decisions.get(chosen) or keys.decision(chosen)
            except Exception:  # a value that cannot be hashed or tested: it becomes _OTHER
                target = keys.decision(_plain(chosen))
            count((target, 1))

    served: AttemptKeys | None = None
    served_usage = EMPTY
    last: AttemptKeys | None = None
    last_error: str | None = None
    output_tokens: int | None = None
    upstream = 0.0  # time inside attempts: the union of their intervals (in start order)
    covered = -inf
    for a in rec.attempts:
        raw = (route, a.provider, a.model, a.response_model, a.server_address, a.server_port)
        try:
            k = keys.attempts.get(raw) or keys.attempt(raw)
        except Exception:  # a value that cannot be hashed or tested: it becomes _OTHER
            k = keys.attempt(_plain(raw))
        if a.error_type is None:
            error = None
            duration = k.duration_ok
        else:
            error = b.errors(a.error_type)
            duration = k.duration(error)
        if last_error is not None and last is not None:
            base, was = k.base, last.base
            count((Cell(FALLBACKS, (*route, base[2], base[3], was[2], was[3], last_error)), 1))

        a_start = a.start
        a_end = a.end if a.end is not None else end
        elapsed = a_end - a_start
        observe((duration, elapsed if elapsed > 0.0 else 0.0))
        if a_end > covered:
            upstream += a_end - (a_start if a_start > covered else covered)
            covered = a_end

        gaps = a.chunk_gaps
        if gaps is not None:
            observe((k.ttfc, max(gaps.first - a_start, 0.0)))
            if gaps.count:
                if folded is None:
                    folded = []
                folded.append((k.tpoc, gaps, len(observed)))
        else:
            marks = a.chunk_marks
            if marks:
                observe((k.ttfc, max(marks[0] - a_start, 0.0)))
                tpoc = k.tpoc
                for gap in iter_marks(marks):
                    observe((tpoc, gap))

        used = a.used
        if used is not EMPTY:
            spend = k.ok if error is None and tenant is None else k.spend(error, tenant)
            tokens = spend.tokens
            input_tokens, output, cache_read, cache_creation, reasoning = used
            if input_tokens is not None:
                observe((k.usage_input, input_tokens))
                if input_tokens:
                    count((tokens[0], input_tokens))
            if output is not None:
                observe((k.usage_output, output))
                if output:
                    count((tokens[1], output))
            if cache_read:
                count((tokens[2], cache_read))
            if cache_creation:
                count((tokens[3], cache_creation))
            if reasoning:
                count((tokens[4], reasoning))
            if input_tokens or output:  # explicit zeros cost nothing: priced, not unpriced
                if k.rates is not None:
                    flat = k.flat
                    if flat is not None and not cache_read and not cache_creation:
                        cost = flat[0] + (input_tokens or 0) * flat[1] + (output or 0) * flat[2]
                    else:
                        cost = k.rates.cost(used)
                    if cost:
                        count((spend.cost, cost))
                else:
                    count((k.unpriced_unknown, 1))
            elif error is None and input_tokens is None and output is None:
                count((k.unpriced_no_usage, 1))
        elif error is None:
            count((k.unpriced_no_usage, 1))

        last, last_error = k, error
        if error is None:
            served = k
            served_usage = used
            output_tokens = used.output

    error_type = rec.error_type
    if error_type is None and last_error is not None and served is None:
        error_type = last_error
    error_attr = b.errors(error_type) if error_type is not None else None
    who = served or last
    by = requested if tenant is None else (requested, tenant)
    server = served.servers.get(by) if served is not None and error_attr is None else None
    if server is None:
        server_key = (
            route,
            who.base[2] if who is not None else None,
            requested,
            served.base[4] if served is not None else None,
            error_attr,
            tenant,
        )
        server = keys.servers.get(server_key) or keys.server(server_key)
        if served is not None and error_attr is None and len(served.servers) < Keys.LIMIT:
            served.servers[by] = server
    elapsed = end - rec.start
    if elapsed < 0.0:
        elapsed = 0.0
    observe((server.duration, elapsed))
    overhead = elapsed - upstream
    observe((rc.overhead, overhead if overhead > 0.0 else 0.0))
    observe((rc.attempts, len(rec.attempts)))

    ttft: float | None = None
    if rec.first_token is not None:
        ttft = max(rec.first_token - rec.start, 0.0)
        observe((server.ttft, ttft))
        # only from a known output token count: yielded chunks are not tokens (the chunk
        # timing is gen_ai.client.operation.time_per_output_chunk)
        if error_type is None and output_tokens is not None and output_tokens > 1:
            observe((server.tpot, max(end - rec.first_token, 0.0) / (output_tokens - 1)))

    if error_attr is None:
        policy = rec.policy
        if policy is None or policy.met(elapsed, ttft):
            count((rc.good if tenant is None else rc.good_for(tenant), 1))
        if served is not None and (served_usage.input or served_usage.output):
            model = policy.baseline_model if policy is not None else None
            if model is not None:
                model = keys.baseline_seen.get(model) or keys.baselines(model)
            elif requested is not None:
                model = requested
            if model is not None:
                raw_baseline = (route, model, tenant)
                try:
                    priced = keys.baseline[raw_baseline]
                except KeyError:
                    priced = keys.baseline_for(raw_baseline)
                if priced is not None:
                    cost = priced[1].cost(served_usage)
                    if cost:
                        count((priced[0], cost))

    if rec.caches:
        r = route[0]
        for name, hit in rec.caches:
            count((Cell(CACHE_LOOKUPS, (r, b.caches(name), _HIT if hit else _MISS)), 1))
    if rec.rejected:
        count((Cell(REJECTIONS, (*route, requested)), 1))
    return observed, counted, folded


def gap_values(gaps: ChunkGaps) -> list[float]:
    """Stand-ins for folded gaps, for a store that needs each value (a fold reaching a recorder
    or reader that did not ask for folding: a request committed elsewhere than where it began,
    a reader attached while it ran). Each bucket holds its count of its latest gap, then the
    smallest and largest are the true min and max: counts, min and max exact, the sum not."""
    state = gaps.state
    values: list[float] = []
    for count, last in zip(state[3:], gaps.last_gaps, strict=True):
        if count and last is not None:
            values.extend([last] * count)
    if values:
        values[0] = state[1]
        values[-1] = state[2]
    return values


def cooldown(b: Bounds, provider: str, model: str, error_type: str | None) -> Measurement:
    error = b.errors(error_type) if error_type else None
    return (Cell(COOLDOWNS, (b.providers(provider), b.models(model), error)), 1)


def cache_evicted(b: Bounds, name: str, count: int) -> Measurement:
    return (Cell(CACHE_EVICTIONS, (b.caches(name),)), count)


def cache_entries(b: Bounds, name: str, delta: int) -> Measurement:
    return (Cell(CACHE_ENTRIES, (b.caches(name),)), delta)


_REMAINING: Final = {"requests": REMAINING_REQUESTS, "tokens": REMAINING_TOKENS}
"""The gauge each kind of headroom goes to: each in its own unit."""


def ratelimit_remaining(
    b: Bounds, provider: str, model: str, kind: str, value: float
) -> Measurement:
    """The new value of the ``kind`` (``requests`` or ``tokens``) headroom gauge."""
    return (Cell(_REMAINING[kind], (b.providers(provider), b.models(model))), value)
