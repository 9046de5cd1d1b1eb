"""``routemeter.stats()``: what each route, provider and model is doing, from routemeter's own
metrics, without Prometheus or Grafana.

One code path serves both the process itself and ``routemeter top`` against any endpoint: a
scrape (this process's Prometheus registry, or exposition text read over HTTP) is flattened to
:class:`Samples`, two scrapes give a window by difference (a decrease is a counter reset, as in
PromQL), and :func:`summarize` turns samples into a typed :class:`Stats`. Percentiles follow
PromQL's ``histogram_quantile`` exactly, so the numbers equal the usual queries over the same
data (see docs/stats.md for the query behind every field).
"""

from __future__ import annotations

import json
import math
import re
import threading
import time
import weakref
from bisect import bisect_left
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, field
from functools import cache
from typing import Any, Final, Literal

from routemeter.recording import _instruments as ins
from routemeter.recording import _semconv as sc

__all__ = [
    "CacheStats",
    "FallbackStats",
    "Latency",
    "RouteStats",
    "Samples",
    "Stats",
    "StatsUnavailable",
    "TenantStats",
    "UpstreamStats",
    "delta",
    "histogram_quantile",
    "parse",
    "stats",
    "summarize",
]

Since = Literal["start", "previous"]
LabelSet = tuple[tuple[str, str], ...]
"""A series' labels, sorted by name. Empty values are left out, as Prometheus does: the
exporter back-fills ``error_type=""`` onto every series once one has an error, and that must
not make them new series."""

TOTAL_ROUTE: Final = "*"
"""``Stats.total.route``: every route together."""


class StatsUnavailable(RuntimeError):
    """``stats()`` has no metrics to read: routemeter is not set up with a Prometheus reader."""


# --- the snapshot -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Latency:
    """A histogram's observations: how many, their mean, and p50/p95/p99 interpolated from the
    buckets as PromQL's ``histogram_quantile`` does (in the histogram's unit: seconds, or
    attempts for ``attempts_per_request``; ``None`` without observations)."""

    count: int
    mean: float | None
    p50: float | None
    p95: float | None
    p99: float | None


NO_LATENCY: Final = Latency(0, None, None, None, None)


@dataclass(frozen=True, slots=True)
class RouteStats:
    """One route label as its clients see it (``route == "*"``: every route together)."""

    route: str
    requests: int
    """Routed requests finished (``gen_ai.server.request.duration`` observations)."""
    errors: int
    """Of them, those that ended with an ``error.type`` (router 429s included)."""
    error_rate: float | None
    errors_by_type: Mapping[str, int]
    rate: float | None
    """Requests per second over the window; ``None`` for a snapshot since start."""
    duration: Latency
    """End-to-end request duration."""
    time_to_first_token: Latency
    """Streaming requests: time to the first chunk sent to the client."""
    attempts: int
    """Upstream attempts made for the route's requests."""
    fallbacks: int
    rate_limited: int
    """Requests the router itself refused (``llm.router.ratelimit.rejections``)."""
    in_flight: int
    """Requests in flight at the snapshot (a gauge: never windowed)."""
    tokens: Mapping[str, int]
    """Upstream tokens by ``gen_ai.token.type``."""
    cost_usd: float
    cache_lookups: int
    cache_hits: int
    cache_hit_ratio: float | None
    baseline_cost_usd: float
    """The answers' usage priced at the baseline model (``llm.router.baseline.cost.usd``)."""
    savings_usd: float | None
    """``baseline_cost_usd - cost_usd`` of the routes that report a baseline cost (the total:
    the sum over those routes); ``None`` when none does. Negative: routing cost more."""
    good: int
    """Requests that succeeded within every objective of their route's SLO."""
    goodput: float | None
    """``good / requests``; ``None`` without requests."""
    overhead: Latency
    """The router's own time per request (``llm.router.overhead.duration``)."""
    attempts_per_request: Latency
    """Upstream attempts per request (``llm.router.request.attempts``): ``mean`` and
    percentiles in attempts; 0 for a request answered without going upstream."""
    unpriced: int
    """Upstream attempts whose spend ``cost_usd`` leaves out (``llm.router.cost.unpriced``)."""


@dataclass(frozen=True, slots=True)
class UpstreamStats:
    """Upstream attempts, per route/provider/model (``targets``), per provider/model
    (``models``) or per provider (``providers``); the fields not grouped on are ``None``."""

    route: str | None
    provider: str
    model: str | None
    attempts: int
    errors: int
    error_rate: float | None
    success_rate: float | None
    errors_by_type: Mapping[str, int]
    rate: float | None
    """Attempts per second over the window; ``None`` for a snapshot since start."""
    duration: Latency
    """One attempt's duration (``gen_ai.client.operation.duration``)."""
    time_to_first_chunk: Latency
    tokens: Mapping[str, int]
    cost_usd: float
    unpriced: int
    """Attempts whose spend ``cost_usd`` leaves out (``llm.router.cost.unpriced``)."""
    available: float | None
    """``llm.router.upstream.available`` now: 1 in rotation, 0 cooled down (the lowest over
    instances, and over a provider's models); ``None`` when never reported. A gauge: never
    windowed."""


@dataclass(frozen=True, slots=True)
class TenantStats:
    """Requests for one ``llm.router.tenant`` the app named, over every route."""

    tenant: str
    requests: int
    errors: int
    error_rate: float | None
    good: int
    goodput: float | None
    tokens: Mapping[str, int]
    cost_usd: float
    baseline_cost_usd: float
    savings_usd: float | None
    """``baseline_cost_usd - cost_usd`` when the tenant has a baseline cost, else ``None``."""


@dataclass(frozen=True, slots=True)
class FallbackStats:
    """Fallbacks from one provider/model to another on a route, and why (``error.type``)."""

    route: str
    from_provider: str
    from_model: str
    to_provider: str
    to_model: str
    reason: str
    count: int
    rate: float | None


@dataclass(frozen=True, slots=True)
class CacheStats:
    """Lookups in one router cache on one route."""

    route: str
    name: str
    lookups: int
    hits: int
    hit_ratio: float | None


@dataclass(frozen=True, slots=True)
class Stats:
    """A snapshot of routemeter's metrics: cumulative since the process started
    (``since is None``) or the difference over a window from ``since`` to ``at``."""

    at: float
    """Unix time of the scrape the snapshot was computed from."""
    since: float | None
    """Unix time the window starts; ``None``: since the process started."""
    routes: tuple[RouteStats, ...]
    """Per route label, by name."""
    total: RouteStats
    """Every route together (``route == "*"``)."""
    targets: tuple[UpstreamStats, ...]
    """Upstream attempts per route, provider and model, by route then provider then model."""
    models: tuple[UpstreamStats, ...]
    """Per provider and model over every route, ranked like ``providers``."""
    providers: tuple[UpstreamStats, ...]
    """Provider comparison: ranked by success rate (highest first), then p95 attempt duration
    (lowest first); providers with no attempts in the window come last."""
    fallbacks: tuple[FallbackStats, ...]
    """From -> to per route and reason, most frequent first."""
    caches: tuple[CacheStats, ...]
    tenants: tuple[TenantStats, ...]
    """Per tenant the app named (``rec.tenant()``), by name; empty when it names none."""

    @property
    def window_s(self) -> float | None:
        """Length of the window in seconds; ``None`` for a snapshot since start."""
        return None if self.since is None else self.at - self.since

    def route(self, name: str) -> RouteStats | None:
        """The stats of route ``name``, if it was seen."""
        return next((r for r in self.routes if r.route == name), None)

    def as_dict(self) -> dict[str, Any]:
        """Plain JSON-ready data (what ``GET /metrics/stats`` serves); undefined values are
        ``null``."""
        data = _plain(asdict(self))
        assert isinstance(data, dict)
        data["window_s"] = self.window_s
        return data

    def to_json(self) -> str:
        return json.dumps(self.as_dict(), separators=(",", ":"), allow_nan=False)


def _plain(value: Any) -> Any:
    """Tuples as lists and non-finite floats as ``None``, recursively (valid JSON)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


# --- PromQL's histogram_quantile ------------------------------------------------------------


def _divide(a: float, b: float) -> float:
    """IEEE 754 division, as Go does it: x/0 is ±Inf, 0/0 is NaN."""
    if b == 0:
        return math.nan if a == 0 or math.isnan(a) else math.copysign(math.inf, a)
    return a / b


def histogram_quantile(q: float, buckets: Iterable[tuple[float, float]]) -> float:
    """The ``q``-quantile of cumulative ``(upper_bound, count)`` buckets, computed exactly as
    PromQL's ``histogram_quantile`` computes it for classic histograms.

    Linear interpolation inside the bucket the rank falls in, a lower bound of 0 for the first
    bucket (or its upper bound when that is <= 0), the upper bound of the highest finite bucket
    when the rank falls in ``+Inf``; NaN without observations, without a ``+Inf`` bucket or
    with fewer than two buckets; -Inf/+Inf for q < 0 / q > 1. Buckets with the same bound are
    merged and non-monotonic counts are evened out first, as Prometheus does.
    """
    if math.isnan(q):
        return math.nan
    if q < 0:
        return -math.inf
    if q > 1:
        return math.inf
    merged: list[list[float]] = []
    for bound, count in sorted(buckets, key=lambda b: b[0]):
        if merged and merged[-1][0] == bound:
            merged[-1][1] += count
        else:
            merged.append([bound, count])
    if not merged or merged[-1][0] != math.inf:
        return math.nan
    # correctPrecisionErrors (tolerance 1e-12), then ensureMonotonic
    prev = merged[0][1]
    for b in merged[1:]:
        current = b[1]
        diff = abs(current - prev)
        if diff == 0:
            continue
        if _divide(diff, current) <= 1e-12:
            b[1] = prev
        else:
            prev = current
    highest = merged[0][1]
    for b in merged[1:]:
        if b[1] > highest:
            highest = b[1]
        elif b[1] < highest:
            b[1] = highest
    if len(merged) < 2:
        return math.nan
    observations = merged[-1][1]
    if observations == 0:
        return math.nan
    rank = q * observations
    index = bisect_left([b[1] for b in merged], rank, 0, len(merged) - 1)
    if index == len(merged) - 1:
        return merged[-2][0]
    if index == 0 and merged[0][0] <= 0:
        return merged[0][0]
    start = 0.0
    end, count = merged[index]
    if index > 0:
        start = merged[index - 1][0]
        count -= merged[index - 1][1]
        rank -= merged[index - 1][1]
    return start + (end - start) * _divide(rank, count)


# --- the names routemeter's metrics have in Prometheus -----------------------------------------


@dataclass(frozen=True, slots=True)
class _Names:
    server: str
    attempt: str
    ttft: str
    ttfc: str
    tokens: str
    cost: str
    fallbacks: str
    lookups: str
    rejections: str
    active: str
    route: str
    provider: str
    model: str
    error: str
    token_type: str
    from_provider: str
    from_model: str
    cache_name: str
    cache_result: str
    baseline: str
    good: str
    unpriced: str
    overhead: str
    tries: str
    available: str
    tenant: str

    @property
    def histograms(self) -> tuple[str, ...]:
        return (self.server, self.attempt, self.ttft, self.ttfc, self.overhead, self.tries)

    @property
    def gauges(self) -> frozenset[str]:
        """What a window keeps as it is now instead of differencing."""
        return frozenset({self.active, self.available})

    @property
    def wanted(self) -> frozenset[str]:
        """Every sample name a snapshot reads."""
        parts = {
            f"{h}{suffix}" for h in self.histograms for suffix in ("_bucket", "_count", "_sum")
        }
        counters = (
            *(self.tokens, self.cost, self.fallbacks, self.lookups, self.rejections),
            *(self.baseline, self.good, self.unpriced),
        )
        return frozenset({*parts, *counters, *self.gauges})


@cache
def _names() -> _Names:
    """Sample and label names as the OTel Prometheus exporter renders the instrument specs."""
    from routemeter.recording._instruments import prometheus_name
    from routemeter.recording._otel_private import prometheus_mapping

    _, sanitize_attribute, _ = prometheus_mapping()

    def label(attribute: str) -> str:
        return str(sanitize_attribute(attribute))

    return _Names(
        server=prometheus_name(ins.SERVER_REQUEST_DURATION),
        attempt=prometheus_name(ins.CLIENT_OPERATION_DURATION),
        ttft=prometheus_name(ins.SERVER_TIME_TO_FIRST_TOKEN),
        ttfc=prometheus_name(ins.CLIENT_TIME_TO_FIRST_CHUNK),
        tokens=prometheus_name(ins.USAGE_TOKENS),
        cost=prometheus_name(ins.COST),
        fallbacks=prometheus_name(ins.FALLBACKS),
        lookups=prometheus_name(ins.CACHE_LOOKUPS),
        rejections=prometheus_name(ins.RATELIMIT_REJECTIONS),
        active=prometheus_name(ins.REQUESTS_ACTIVE),
        route=label(sc.LLM_ROUTER_ROUTE),
        provider=label(sc.GEN_AI_PROVIDER_NAME),
        model=label(sc.GEN_AI_REQUEST_MODEL),
        error=label(sc.ERROR_TYPE),
        token_type=label(sc.GEN_AI_TOKEN_TYPE),
        from_provider=label(sc.LLM_ROUTER_FALLBACK_FROM_PROVIDER),
        from_model=label(sc.LLM_ROUTER_FALLBACK_FROM_MODEL),
        cache_name=label(sc.LLM_ROUTER_CACHE_NAME),
        cache_result=label(sc.LLM_ROUTER_CACHE_RESULT),
        baseline=prometheus_name(ins.BASELINE_COST),
        good=prometheus_name(ins.REQUESTS_GOOD),
        unpriced=prometheus_name(ins.COST_UNPRICED),
        overhead=prometheus_name(ins.OVERHEAD_DURATION),
        tries=prometheus_name(ins.REQUEST_ATTEMPTS),
        available=prometheus_name(ins.UPSTREAM_AVAILABLE),
        tenant=label(sc.LLM_ROUTER_TENANT),
    )


# --- scrapes ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Samples:
    """One scrape of the metrics a snapshot reads: sample name -> label set -> value.

    ``since`` is ``None`` for a cumulative scrape, or the time of the earlier scrape when the
    values are differences (see :func:`delta`).
    """

    series: Mapping[str, Mapping[LabelSet, float]]
    at: float
    since: float | None = None


def from_families(families: Iterable[Any], at: float | None = None) -> Samples:
    """Samples from ``prometheus_client`` metric families (``registry.collect()`` or the text
    parser); a series listed twice keeps its last value; empty labels are dropped."""
    wanted = _names().wanted
    series: dict[str, dict[LabelSet, float]] = {}
    for family in families:
        for sample in family.samples:
            if sample.name in wanted:
                labels = tuple(sorted((k, v) for k, v in sample.labels.items() if v))
                series.setdefault(sample.name, {})[labels] = float(sample.value)
    return Samples(series, time.time() if at is None else at)


_LABEL: Final = re.compile(r'\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*=\s*"((?:[^"\\]|\\.)*)"\s*(,?)')
_NAME_END: Final = re.compile(r"[{\s]")
_UNESCAPE: Final = re.compile(r"\\(.)")


def _unescape(value: str) -> str:
    if "\\" not in value:
        return value
    return _UNESCAPE.sub(lambda m: "\n" if m.group(1) == "n" else m.group(1), value)


def parse(text: str | Iterable[str], at: float | None = None) -> Samples:
    """Samples from Prometheus exposition text (format 0.0.4, or OpenMetrics).

    Reads only the lines of the metrics a snapshot uses, so it stays fast on large endpoints;
    it agrees with ``prometheus_client.parser`` on every line it reads (a test pins this).
    """
    wanted = _names().wanted
    series: dict[str, dict[LabelSet, float]] = {}
    pieces = (text,) if isinstance(text, str) else text
    for line in (line for piece in pieces for line in piece.splitlines()):
        if not line or line[0] == "#":
            continue
        end = _NAME_END.search(line)
        if end is None:
            continue
        name = line[: end.start()]
        if name not in wanted:
            continue
        labels: list[tuple[str, str]] = []
        pos = end.start()
        if line[pos] == "{":
            pos += 1
            while True:
                match = _LABEL.match(line, pos)
                if match is None:
                    break
                if match.group(2):  # an empty label is no label, as in Prometheus
                    labels.append((match.group(1), _unescape(match.group(2))))
                pos = match.end()
                if not match.group(3):
                    break
            close = line.find("}", pos)
            if close < 0:
                raise ValueError(f"malformed exposition line: {line[:200]!r}")
            pos = close + 1
        fields = line[pos:].split()
        if not fields:
            raise ValueError(f"malformed exposition line: {line[:200]!r}")
        series.setdefault(name, {})[tuple(sorted(labels))] = float(fields[0])
    return Samples(series, time.time() if at is None else at)


def delta(now: Samples, before: Samples | None) -> Samples:
    """What happened between two cumulative scrapes: per series ``now - before``, where a
    decrease is a counter reset (the increase is then ``now``, as PromQL's ``increase`` reads
    it) and a series new since ``before`` counts from zero. Gauges keep their ``now`` value.
    ``before=None`` returns ``now`` (since start)."""
    if before is None:
        return now
    gauges = _names().gauges
    series: dict[str, dict[LabelSet, float]] = {}
    for name, values in now.series.items():
        if name in gauges:
            series[name] = dict(values)
            continue
        earlier = before.series.get(name, {})
        out: dict[LabelSet, float] = {}
        for labels, value in values.items():
            prev = earlier.get(labels)
            out[labels] = value if prev is None or value < prev else value - prev
        series[name] = out
    return Samples(series, now.at, before.at)


# --- samples -> stats ---------------------------------------------------------------------

Key = tuple[str, ...]


@dataclass(slots=True)
class _Hist:
    buckets: dict[float, float] = field(default_factory=dict)
    count: float = 0.0
    total: float = 0.0

    def latency(self) -> Latency:
        count = round(self.count)
        if count <= 0:
            return NO_LATENCY
        points = list(self.buckets.items())

        def at(q: float) -> float | None:
            value = histogram_quantile(q, points)
            return None if math.isnan(value) else value

        return Latency(count, self.total / self.count, at(0.5), at(0.95), at(0.99))


class _Reader:
    """Sums over the series of one scrape, grouped by label values (PromQL's ``sum by``)."""

    def __init__(self, samples: Samples) -> None:
        self.samples = samples
        self._dicts: dict[LabelSet, dict[str, str]] = {}

    def labels(self, labels: LabelSet) -> dict[str, str]:
        found = self._dicts.get(labels)
        if found is None:
            found = self._dicts[labels] = dict(labels)
        return found

    def sum_by(
        self,
        name: str,
        keys: tuple[str, ...],
        where: Callable[[dict[str, str]], bool] | None = None,
    ) -> dict[Key, float]:
        values: dict[Key, list[float]] = {}
        for labels, value in self.samples.series.get(name, {}).items():
            d = self.labels(labels)
            if where is not None and not where(d):
                continue
            values.setdefault(tuple(d.get(k, "") for k in keys), []).append(value)
        # fsum: the same figure whatever order the series come in (a scrape, a federation)
        return {key: math.fsum(v) for key, v in values.items()}

    def hist_by(self, base: str, keys: tuple[str, ...]) -> dict[Key, _Hist]:
        out: dict[Key, _Hist] = {}
        for labels, value in self.samples.series.get(f"{base}_bucket", {}).items():
            d = self.labels(labels)
            le = d.get("le")
            if le is None:
                continue
            try:
                bound = float(le)
            except ValueError:
                continue
            hist = out.setdefault(tuple(d.get(k, "") for k in keys), _Hist())
            hist.buckets[bound] = hist.buckets.get(bound, 0.0) + value
        for key, value in self.sum_by(f"{base}_count", keys).items():
            out.setdefault(key, _Hist()).count = value
        for key, value in self.sum_by(f"{base}_sum", keys).items():
            out.setdefault(key, _Hist()).total = value
        return out


def _int(value: float) -> int:
    return round(value)


def _ratio(part: float, whole: float) -> float | None:
    return part / whole if whole > 0 else None


def _nested(flat: Mapping[Key, float], depth: int) -> dict[Key, dict[str, int]]:
    """``{(a, b, c): n}`` -> ``{(a, b): {c: n}}`` for the first ``depth`` key parts."""
    out: dict[Key, dict[str, int]] = {}
    for key, value in flat.items():
        inner = out.setdefault(key[:depth], {})
        inner[key[depth]] = inner.get(key[depth], 0) + _int(value)
    return out


def _ranked(rows: Iterable[UpstreamStats]) -> tuple[UpstreamStats, ...]:
    def key(row: UpstreamStats) -> tuple[float, float, str, str]:
        success = row.success_rate if row.success_rate is not None else -1.0
        p95 = row.duration.p95 if row.duration.p95 is not None else math.inf
        return (-success, p95, row.provider, row.model or "")

    return tuple(sorted(rows, key=key))


def _first_is(route: str) -> Callable[[Key], bool]:
    return lambda key: key[0] == route


def summarize(samples: Samples) -> Stats:
    """The snapshot of one scrape (cumulative) or of a window (the :func:`delta` of two)."""
    n = _names()
    read = _Reader(samples)
    window = None if samples.since is None else samples.at - samples.since

    def per_second(count: float) -> float | None:
        return count / window if window is not None and window > 0 else None

    route_k = (n.route,)

    def failed(d: dict[str, str]) -> bool:
        return d.get(n.error, "") != ""  # error.type absent or empty: success

    requests = read.sum_by(f"{n.server}_count", route_k)
    errors = read.sum_by(f"{n.server}_count", (n.route, n.error), failed)
    durations = read.hist_by(n.server, route_k)
    ttfts = read.hist_by(n.ttft, route_k)
    attempts = read.sum_by(f"{n.attempt}_count", route_k)
    fallbacks = read.sum_by(n.fallbacks, route_k)
    rejected = read.sum_by(n.rejections, route_k)
    active = read.sum_by(n.active, route_k)
    tokens = _nested(read.sum_by(n.tokens, (n.route, n.token_type)), 1)
    cost = read.sum_by(n.cost, route_k)
    lookups = read.sum_by(n.lookups, (n.route, n.cache_name, n.cache_result))
    errors_by_route = _nested(errors, 1)
    baseline = read.sum_by(n.baseline, route_k)
    good = read.sum_by(n.good, route_k)
    unpriced = read.sum_by(n.unpriced, route_k)
    overheads = read.hist_by(n.overhead, route_k)
    tries = read.hist_by(n.tries, route_k)

    def route_row(route: str, pick: Callable[[Key], bool]) -> RouteStats:
        def total(flat: Mapping[Key, float]) -> float:
            return math.fsum(v for k, v in flat.items() if pick(k))

        def hist(hists: Mapping[Key, _Hist]) -> Latency:
            merged = _Hist()
            for key, h in hists.items():
                if pick(key):
                    for bound, count in h.buckets.items():
                        merged.buckets[bound] = merged.buckets.get(bound, 0.0) + count
                    merged.count += h.count
                    merged.total += h.total
            return merged.latency()

        by_type: dict[str, int] = {}
        for key, inner in errors_by_route.items():
            if pick(key):
                for kind, count in inner.items():
                    by_type[kind] = by_type.get(kind, 0) + count
        used: dict[str, int] = {}
        for key, inner in tokens.items():
            if pick(key):
                for kind, count in inner.items():
                    used[kind] = used.get(kind, 0) + count
        reqs = total(requests)
        errs = sum(by_type.values())
        looked = total(lookups)
        hits = sum(v for k, v in lookups.items() if pick(k) and k[2] == "hit")
        n_good = total(good)
        return RouteStats(
            route=route,
            requests=_int(reqs),
            errors=errs,
            error_rate=_ratio(errs, reqs),
            errors_by_type=dict(sorted(by_type.items())),
            rate=per_second(reqs),
            duration=hist(durations),
            time_to_first_token=hist(ttfts),
            attempts=_int(total(attempts)),
            fallbacks=_int(total(fallbacks)),
            rate_limited=_int(total(rejected)),
            in_flight=_int(total(active)),
            tokens=dict(sorted(used.items())),
            cost_usd=total(cost),
            cache_lookups=_int(looked),
            cache_hits=_int(hits),
            cache_hit_ratio=_ratio(hits, looked),
            baseline_cost_usd=total(baseline),
            savings_usd=_savings(baseline, cost, pick),
            good=_int(n_good),
            goodput=_ratio(n_good, reqs),
            overhead=hist(overheads),
            attempts_per_request=hist(tries),
            unpriced=_int(total(unpriced)),
        )

    seen: set[str] = {k[0] for k in durations} | {k[0] for k in tokens}
    for flat in (requests, attempts, fallbacks, rejected, active, cost, lookups):
        seen.update(k[0] for k in flat)
    routes = tuple(route_row(r, _first_is(r)) for r in sorted(seen))
    overall = route_row(TOTAL_ROUTE, lambda _: True)

    # upstream attempts: route, provider, model (model = what was sent upstream)
    up_k = (n.route, n.provider, n.model)
    att = read.sum_by(f"{n.attempt}_count", up_k)
    att_err = read.sum_by(f"{n.attempt}_count", (*up_k, n.error), failed)
    att_hist = read.hist_by(n.attempt, up_k)
    ttfc = read.hist_by(n.ttfc, up_k)
    up_tokens = read.sum_by(n.tokens, (*up_k, n.token_type))
    up_cost = read.sum_by(n.cost, up_k)
    up_unpriced = read.sum_by(n.unpriced, up_k)
    available: dict[Key, float] = {}  # (provider, model) -> lowest value over instances
    for labels, value in read.samples.series.get(n.available, {}).items():
        d = read.labels(labels)
        key = (d.get(n.provider, ""), d.get(n.model, ""))
        available[key] = min(value, available.get(key, value))

    def upstream(width: int) -> list[UpstreamStats]:
        """Rows grouped on the first ``width`` parts of (provider, model, route)."""

        def group(key: Key) -> Key:
            route, provider, model = key[0], key[1], key[2]
            return (provider, model, route)[:width]

        def add(into: dict[Key, float], flat: Mapping[Key, float]) -> dict[Key, float]:
            values: dict[Key, list[float]] = {}
            for key, value in flat.items():
                values.setdefault(group(key), []).append(value)
            for g, v in values.items():
                into[g] = math.fsum([into.get(g, 0.0), *v])
            return into

        def merge(hists: Mapping[Key, _Hist]) -> dict[Key, _Hist]:
            out: dict[Key, _Hist] = {}
            for key, h in hists.items():
                m = out.setdefault(group(key), _Hist())
                for bound, count in h.buckets.items():
                    m.buckets[bound] = m.buckets.get(bound, 0.0) + count
                m.count += h.count
                m.total += h.total
            return out

        counts = add({}, att)
        errs_by: dict[Key, dict[str, int]] = {}
        for key, value in att_err.items():
            inner = errs_by.setdefault(group(key[:3]), {})
            inner[key[3]] = inner.get(key[3], 0) + _int(value)
        toks: dict[Key, dict[str, int]] = {}
        for key, value in up_tokens.items():
            inner = toks.setdefault(group(key[:3]), {})
            inner[key[3]] = inner.get(key[3], 0) + _int(value)
        costs = add({}, up_cost)
        unpriced_by = add({}, up_unpriced)
        hists, chunks = merge(att_hist), merge(ttfc)
        up: dict[Key, float] = {}
        for (provider, model), value in available.items():
            key = (provider, model)[:width]
            up[key] = min(value, up.get(key, value))
        keys = set(counts) | set(toks) | set(costs) | set(unpriced_by)
        if width < 3:  # an upstream out of rotation shows even without attempts
            keys |= set(up)
        rows: list[UpstreamStats] = []
        for g in sorted(keys):
            count = counts.get(g, 0.0)
            by_type = dict(sorted(errs_by.get(g, {}).items()))
            errs = sum(by_type.values())
            error_rate = _ratio(errs, count)
            rows.append(
                UpstreamStats(
                    route=g[2] if width > 2 else None,
                    provider=g[0],
                    model=g[1] if width > 1 else None,
                    attempts=_int(count),
                    errors=errs,
                    error_rate=error_rate,
                    success_rate=None if error_rate is None else 1.0 - error_rate,
                    errors_by_type=by_type,
                    rate=per_second(count),
                    duration=hists[g].latency() if g in hists else NO_LATENCY,
                    time_to_first_chunk=chunks[g].latency() if g in chunks else NO_LATENCY,
                    tokens=dict(sorted(toks.get(g, {}).items())),
                    cost_usd=costs.get(g, 0.0),
                    unpriced=_int(unpriced_by.get(g, 0.0)),
                    available=up.get(g[:2]),
                )
            )
        return rows

    targets = tuple(sorted(upstream(3), key=lambda r: (r.route or "", r.provider, r.model or "")))

    fb = read.sum_by(
        n.fallbacks, (n.route, n.from_provider, n.from_model, n.provider, n.model, n.error)
    )
    fallback_rows = tuple(
        sorted(
            (
                FallbackStats(route, src_p, src_m, dst_p, dst_m, why, _int(v), per_second(v))
                for (route, src_p, src_m, dst_p, dst_m, why), v in fb.items()
            ),
            key=lambda f: (-f.count, f.route, f.from_provider, f.from_model, f.to_provider),
        )
    )
    caches: dict[Key, tuple[float, float]] = {}
    for (route, name, result), value in lookups.items():
        looked, hits = caches.get((route, name), (0.0, 0.0))
        caches[(route, name)] = (looked + value, hits + (value if result == "hit" else 0.0))
    cache_rows = tuple(
        CacheStats(route, name, _int(looked), _int(hits), _ratio(hits, looked))
        for (route, name), (looked, hits) in sorted(caches.items())
    )
    return Stats(
        at=samples.at,
        since=samples.since,
        routes=routes,
        total=overall,
        targets=targets,
        models=_ranked(upstream(2)),
        providers=_ranked(upstream(1)),
        fallbacks=fallback_rows,
        caches=cache_rows,
        tenants=_tenants(read, n),
    )


def _savings(
    baseline: Mapping[Key, float], cost: Mapping[Key, float], pick: Callable[[Key], bool]
) -> float | None:
    """Baseline minus actual cost over the keys that have a baseline cost, as the recording
    rule computes it: ``sum by (k) (baseline) - (sum by (k) (cost) or ... * 0)``, summed."""
    parts = [part for key, value in baseline.items() if pick(key)
             for part in (value, -cost.get(key, 0.0))]  # fmt: skip
    return math.fsum(parts) if parts else None


def _tenants(read: _Reader, n: _Names) -> tuple[TenantStats, ...]:
    """Per named tenant; the token and cost families are read only when one exists."""
    tenant_k = (n.tenant,)
    requests = read.sum_by(f"{n.server}_count", tenant_k)
    named = sorted(k[0] for k in requests if k[0])
    if not named:
        return ()
    errors = read.sum_by(f"{n.server}_count", tenant_k, lambda d: d.get(n.error, "") != "")
    good = read.sum_by(n.good, tenant_k)
    tokens = _nested(read.sum_by(n.tokens, (n.tenant, n.token_type)), 1)
    cost = read.sum_by(n.cost, tenant_k)
    baseline = read.sum_by(n.baseline, tenant_k)
    rows = []
    for name in named:
        key = (name,)
        reqs, n_good, errs = requests[key], good.get(key, 0.0), errors.get(key, 0.0)
        rows.append(
            TenantStats(
                tenant=name,
                requests=_int(reqs),
                errors=_int(errs),
                error_rate=_ratio(errs, reqs),
                good=_int(n_good),
                goodput=_ratio(n_good, reqs),
                tokens=dict(sorted(tokens.get(key, {}).items())),
                cost_usd=cost.get(key, 0.0),
                baseline_cost_usd=baseline.get(key, 0.0),
                savings_usd=_savings(baseline, cost, _first_is(name)),
            )
        )
    return tuple(rows)


# --- this process ---------------------------------------------------------------------------

_lock = threading.Lock()
_previous: tuple[weakref.ref[Any], Samples] | None = None


def _source() -> tuple[Any, Callable[[], Samples]]:
    """What a snapshot reads: the aggregate recorder's own exposition when there is one (no
    registry walk, no OTel points), else the Prometheus registry; and an identity for it."""
    from routemeter.export._setup import current_handle

    handle = current_handle()
    if handle is not None and handle.exposition is not None:
        series = handle.exposition.series
        return handle.exposition, lambda: Samples(series(_names().wanted), time.time())
    registry = _registry()
    return registry, lambda: collect(registry)


def read_samples() -> Samples:
    """One cumulative read of this process's routemeter metrics (what ``stats()`` reads)."""
    return _source()[1]()


def _registry() -> Any:
    from routemeter.export._setup import current_handle

    handle = current_handle()
    if handle is None:
        raise StatsUnavailable("routemeter.stats() needs routemeter.setup() first")
    if handle.prometheus is not None:
        return handle.prometheus.registry
    registry = getattr(handle, "stats_registry", None)
    if registry is None:
        raise StatsUnavailable(
            "routemeter.stats() reads the process's Prometheus registry, and this setup has"
            f" none (OTEL_METRICS_EXPORTER={','.join(handle.config.exporters)});"
            " add 'prometheus' to the exporters (ROUTEMETER_PROMETHEUS_SERVER=false keeps it"
            " off the network)"
        )
    return registry


def collect(registry: Any) -> Samples:
    """One scrape of a ``prometheus_client`` registry, without rendering text."""
    return from_families(registry.collect())


def stats(*, since: Since = "start") -> Stats:
    """A snapshot of this process's routemeter metrics.

    ``since="start"`` (the default) covers everything since the process started;
    ``since="previous"`` covers the time since the previous ``stats()`` call (or since start on
    the first call) and fills in the per-second ``rate`` fields. Raises :class:`StatsUnavailable`
    when routemeter is not set up with a Prometheus reader.
    """
    global _previous
    if since not in ("start", "previous"):
        raise ValueError(f"since={since!r}; allowed: 'start', 'previous'")
    source, read = _source()
    now = read()
    with _lock:
        before = None
        if _previous is not None and _previous[0]() is source:
            before = _previous[1]
        _previous = (weakref.ref(source), now)
    return summarize(delta(now, before) if since == "previous" else now)
