"""``routemeter.stats()`` and ``/metrics/stats``: percentiles, rates and rankings equal values
computed independently from known inputs, and PromQL over the same scraped data."""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import math
import time
from contextlib import closing
from typing import Any

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, Counter, generate_latest
from prometheus_client.parser import text_string_to_metric_families
from starlette.applications import Starlette

import routemeter
from recording.test_savings import (
    BASELINE_R1,
    BASELINE_R3,
    COST_R1,
    RECORDERS,
    WASTE_R1,
    run_ledger,
)
from routemeter.demo.load import LoadConfig, run_load
from routemeter.demo.providers import Upstreams
from routemeter.demo.router import Router, RouterSettings, build_app
from routemeter.demo.run import bind, serving
from routemeter.tools._stats import (
    NO_LATENCY,
    Samples,
    StatsUnavailable,
    collect,
    delta,
    from_families,
    histogram_quantile,
    parse,
    summarize,
)
from support.prometheus import PrometheusServer, require_prometheus

INF = math.inf

# --- histogram_quantile -------------------------------------------------------------------

BUCKETS = [(0.1, 10.0), (0.2, 30.0), (0.4, 35.0), (INF, 40.0)]


def test_quantile_interpolates_inside_the_bucket():
    """The rank's bucket is interpolated linearly; the first bucket starts at 0."""
    assert histogram_quantile(0.5, BUCKETS) == pytest.approx(0.1 + 0.1 * (10 / 20))  # rank 20
    assert histogram_quantile(0.8, BUCKETS) == pytest.approx(0.2 + 0.2 * (2 / 5))  # rank 32
    assert histogram_quantile(0.1, BUCKETS) == pytest.approx(0.1 * (4 / 10))  # rank 4
    assert histogram_quantile(0.25, BUCKETS) == pytest.approx(0.1)  # rank 10: end of bucket 1


def test_quantile_in_the_inf_bucket_is_the_highest_finite_bound():
    """A rank beyond the last finite bucket returns that bucket's upper bound."""
    assert histogram_quantile(0.95, BUCKETS) == 0.4
    assert histogram_quantile(1.0, BUCKETS) == 0.4


def test_quantile_special_cases_follow_prometheus():
    """Empty, +Inf-less, one-bucket, out-of-range and unordered input act as in Prometheus."""
    assert math.isnan(histogram_quantile(0.5, [(0.1, 0.0), (INF, 0.0)]))
    assert math.isnan(histogram_quantile(0.5, [(0.1, 1.0), (0.2, 2.0)]))
    assert math.isnan(histogram_quantile(0.5, [(INF, 5.0)]))
    assert math.isnan(histogram_quantile(0.5, []))
    assert math.isnan(histogram_quantile(math.nan, BUCKETS))
    assert histogram_quantile(-0.1, BUCKETS) == -INF
    assert histogram_quantile(1.1, BUCKETS) == INF
    assert histogram_quantile(0.2, [(0.0, 5.0), (1.0, 10.0), (INF, 10.0)]) == 0.0
    assert histogram_quantile(0.5, list(reversed(BUCKETS))) == histogram_quantile(0.5, BUCKETS)
    assert histogram_quantile(0.5, [(1.0, 2.0), (1.0, 3.0), (INF, 10.0)]) == 1.0  # merged: 5
    assert histogram_quantile(0.5, [(1.0, 5.0), (2.0, 3.0), (INF, 10.0)]) == 1.0  # 3 -> 5


def reference_quantile(q: float, bounds: list[float], per_bucket: list[int]) -> float:
    """An independent histogram quantile: bisection on the piecewise-linear CDF through
    (0, 0) and (bound, cumulative count) for the smallest x whose CDF reaches q * total;
    ``per_bucket`` holds one non-cumulative count per bound, then the +Inf bucket's."""
    total = sum(per_bucket)
    if total == 0:
        return math.nan
    target = q * total
    points = [(0.0, 0.0)]
    for bound, n in zip(bounds, per_bucket, strict=False):
        points.append((bound, points[-1][1] + n))
    if points[-1][1] < target:  # the rank is in the +Inf bucket
        return bounds[-1]

    def cdf(x: float) -> float:
        for (x0, y0), (x1, y1) in itertools.pairwise(points):
            if x <= x1:
                return y0 + (y1 - y0) * (x - x0) / (x1 - x0)
        return points[-1][1]

    lo, hi = 0.0, bounds[-1]
    for _ in range(200):
        mid = (lo + hi) / 2
        if cdf(mid) >= target:
            hi = mid
        else:
            lo = mid
    return hi


@st.composite
def histograms(draw: Any) -> tuple[list[float], list[int]]:
    bounds = sorted(set(draw(st.lists(st.floats(1e-4, 1e4), min_size=1, max_size=12))))
    counts = draw(st.lists(st.integers(0, 1000), min_size=len(bounds) + 1,
                           max_size=len(bounds) + 1))  # fmt: skip
    return bounds, counts


@settings(max_examples=300, deadline=None)
@given(histogram=histograms(), q=st.floats(min_value=0.01, max_value=1.0))
def test_quantile_equals_an_independent_cdf_inversion(histogram, q):
    """For any buckets and counts the quantile equals a bisection of the piecewise-linear CDF."""
    bounds, per_bucket = histogram
    cumulative = [float(sum(per_bucket[: i + 1])) for i in range(len(per_bucket))]
    got = histogram_quantile(q, list(zip([*bounds, INF], cumulative, strict=True)))
    expected = reference_quantile(q, bounds, per_bucket)
    if math.isnan(expected):
        assert math.isnan(got)
    else:
        assert got == pytest.approx(expected, rel=1e-9, abs=1e-12)


# --- samples -> stats, from a hand-written exposition --------------------------------------

SERVER = "gen_ai_server_request_duration_seconds"
ATTEMPT = "gen_ai_client_operation_duration_seconds"
TTFT = "gen_ai_server_time_to_first_token_seconds"
OVERHEAD = "llm_router_overhead_duration_seconds"
TRIES = "llm_router_request_attempts"
LE = [0.1, 0.2, 0.4]


def labels(**kv: str) -> str:
    return ",".join(f'{k}="{v}"' for k, v in kv.items())


def histogram(
    name: str, cumulative: list[int], total: float, bounds: list[float] = LE, **kv: str
) -> list[str]:
    """One histogram series in exposition text: buckets (``bounds`` then +Inf), count, sum."""
    lines = [
        f"{name}_bucket{{{labels(**kv, le=str(le))}}} {n}"
        for le, n in zip([*bounds, "+Inf"], cumulative, strict=True)
    ]
    lines.append(f"{name}_count{{{labels(**kv)}}} {cumulative[-1]}")
    lines.append(f"{name}_sum{{{labels(**kv)}}} {total}")
    return lines


def counter(name: str, value: float, **kv: str) -> str:
    return f"{name}{{{labels(**kv)}}} {value}"


def known(scale: int = 1) -> str:
    """Route ``a``: 40 ok and 10 failed requests (35 good), attempts at three providers, tokens,
    cost and a baseline cost, overhead, attempts per request, one fallback edge, cache lookups,
    one in flight; route ``b``: 8 ok requests (all good), 2 refused, no baseline. openai's
    gpt-4o is out of rotation, anthropic's claude in it. ``scale`` multiplies every counter
    (a later scrape of the same process)."""
    k = scale
    a = {"llm_router_route": "a", "otel_scope_name": "routemeter"}
    openai = {**a, "gen_ai_provider_name": "openai", "gen_ai_request_model": "gpt-4o"}
    claude = {**a, "gen_ai_provider_name": "anthropic", "gen_ai_request_model": "claude"}
    gemini = {**a, "gen_ai_provider_name": "gcp.gemini", "gen_ai_request_model": "gemini"}
    lines = [
        "# TYPE gen_ai_server_request_duration_seconds histogram",
        *histogram(SERVER, [10 * k, 30 * k, 35 * k, 40 * k], 6.0 * k, **a, error_type=""),
        *histogram(SERVER, [0, 0, 5 * k, 10 * k], 5.0 * k, **a, error_type="500"),
        *histogram(SERVER, [0, 4 * k, 8 * k, 8 * k], 1.6 * k, llm_router_route="b", error_type=""),
        *histogram(TTFT, [2 * k, 4 * k, 4 * k, 4 * k], 0.4 * k, **a),
        "# TYPE gen_ai_client_operation_duration_seconds histogram",
        *histogram(ATTEMPT, [20 * k, 40 * k, 40 * k, 40 * k], 4.0 * k, **openai, error_type=""),
        *histogram(ATTEMPT, [5 * k, 5 * k, 5 * k, 5 * k], 0.25 * k, **openai, error_type="429"),
        *histogram(ATTEMPT, [0, 10 * k, 10 * k, 10 * k], 1.5 * k, **claude, error_type=""),
        *histogram(ATTEMPT, [0, 0, 10 * k, 10 * k], 3.0 * k, **gemini, error_type=""),
        "# TYPE llm_router_usage_tokens counter",
        counter("llm_router_usage_tokens_total", 1000 * k, **openai, gen_ai_token_type="input"),
        counter("llm_router_usage_tokens_total", 200 * k, **openai, gen_ai_token_type="output"),
        counter("llm_router_usage_tokens_total", 300 * k, **claude, gen_ai_token_type="input"),
        "# TYPE llm_router_cost_usd counter",
        counter("llm_router_cost_usd_total", 0.5 * k, **openai),
        counter("llm_router_cost_usd_total", 0.25 * k, **claude),
        counter(
            "llm_router_fallbacks_total",
            5 * k,
            **claude,
            llm_router_fallback_from_provider="openai",
            llm_router_fallback_from_model="gpt-4o",
            error_type="429",
        ),
        counter("llm_router_cache_lookups_total", 3 * k, **a, llm_router_cache_name="responses",
                llm_router_cache_result="hit"),
        counter("llm_router_cache_lookups_total", 9 * k, **a, llm_router_cache_name="responses",
                llm_router_cache_result="miss"),
        counter("llm_router_ratelimit_rejections_total", 2 * k, llm_router_route="b"),
        counter("llm_router_baseline_cost_usd_total", 1.0 * k, **a,
                llm_router_baseline_model="claude-sonnet-4-5"),
        counter("llm_router_requests_good_total", 35 * k, **a),
        counter("llm_router_requests_good_total", 8 * k, llm_router_route="b"),
        counter("llm_router_cost_unpriced_total", 2 * k, **openai,
                llm_router_unpriced_reason="no_usage"),
        *histogram(OVERHEAD, [40 * k, 50 * k, 50 * k, 50 * k], 2.0 * k, **a),
        *histogram(TRIES, [30 * k, 45 * k, 50 * k, 50 * k], 70.0 * k, [1.0, 2.0, 3.0], **a),
        "# TYPE llm_router_requests_active gauge",
        counter("llm_router_requests_active", 1, **a),
        counter("llm_router_upstream_available", 0,
                gen_ai_provider_name="openai", gen_ai_request_model="gpt-4o"),
        counter("llm_router_upstream_available", 1,
                gen_ai_provider_name="anthropic", gen_ai_request_model="claude"),
        counter("http_server_request_duration_seconds_count", 99, http_route="/"),  # not read
    ]  # fmt: skip
    return "\n".join(lines) + "\n"


def test_routes_from_known_buckets_and_counters():
    """Every per-route field equals the value computed by hand from known buckets and counters."""
    stats = summarize(parse(known(), at=1000.0))
    assert [r.route for r in stats.routes] == ["a", "b"]
    a, b = stats.route("a"), stats.route("b")
    assert a is not None
    assert b is not None
    # route a, cumulative: ok [10, 30, 35, 40] + failed [0, 0, 5, 10] = [10, 30, 40, 50]
    assert (a.requests, a.errors, a.error_rate) == (50, 10, 0.2)
    assert a.errors_by_type == {"500": 10}
    assert a.duration.count == 50
    assert a.duration.mean == pytest.approx(11.0 / 50)
    assert a.duration.p50 == pytest.approx(0.1 + 0.1 * (15 / 20))  # rank 25 in (0.1, 0.2]
    assert a.duration.p95 == 0.4  # rank 47.5: in +Inf
    assert a.duration.p99 == 0.4
    assert a.time_to_first_token.p50 == pytest.approx(0.1)  # rank 2 of [2, 4, 4, 4]
    assert a.time_to_first_token.p95 == pytest.approx(0.1 + 0.1 * (1.8 / 2))
    assert (a.attempts, a.fallbacks, a.rate_limited, a.in_flight) == (65, 5, 0, 1)
    assert a.tokens == {"input": 1300, "output": 200}
    assert a.cost_usd == pytest.approx(0.75)
    assert (a.cache_lookups, a.cache_hits, a.cache_hit_ratio) == (12, 3, 0.25)
    assert a.rate is None
    assert stats.window_s is None
    # route b: [0, 4, 8, 8]
    assert (b.requests, b.errors, b.error_rate, b.rate_limited) == (8, 0, 0.0, 2)
    assert b.duration.p50 == pytest.approx(0.1 + 0.1 * (4 / 4))
    assert b.duration.p95 == pytest.approx(0.2 + 0.2 * (3.6 / 4))
    assert b.duration.p99 == pytest.approx(0.2 + 0.2 * (3.92 / 4))
    assert b.cache_hit_ratio is None
    assert b.time_to_first_token.p50 is None
    # every route together: [10, 34, 48, 58]
    total = stats.total
    assert (total.route, total.requests, total.errors) == ("*", 58, 10)
    assert total.duration.p50 == pytest.approx(0.1 + 0.1 * (19 / 24))
    assert total.duration.p95 == 0.4


def test_savings_goodput_overhead_and_attempts_from_known_series():
    """Savings, goodput, overhead and attempts per request equal the values computed by hand;
    a route without a baseline cost has no savings."""
    stats = summarize(parse(known(), at=1000.0))
    a, b, total = stats.route("a"), stats.route("b"), stats.total
    assert a is not None
    assert b is not None
    assert (a.baseline_cost_usd, a.savings_usd) == (1.0, 1.0 - 0.75)
    assert (b.baseline_cost_usd, b.savings_usd) == (0.0, None)
    assert total.savings_usd == 1.0 - 0.75  # only routes with a baseline: not 1.0 - cost(a, b)
    assert (a.good, a.goodput, b.good, b.goodput) == (35, 35 / 50, 8, 1.0)
    assert (total.good, total.goodput) == (43, 43 / 58)
    assert a.overhead.count == 50
    assert a.overhead.mean == pytest.approx(2.0 / 50)
    assert a.overhead.p50 == pytest.approx(0.1 * (25 / 40))  # rank 25 in [0, 0.1]
    assert a.overhead.p95 == pytest.approx(0.1 + 0.1 * (7.5 / 10))  # rank 47.5 in (0.1, 0.2]
    assert b.overhead == NO_LATENCY
    tries = a.attempts_per_request
    assert (tries.count, tries.mean) == (50, 70 / 50)
    assert tries.p50 == pytest.approx(1 * (25 / 30))
    assert tries.p95 == pytest.approx(2 + 1 * (2.5 / 5))  # rank 47.5 in (2, 3]
    assert (a.unpriced, b.unpriced, total.unpriced) == (2, 0, 2)
    assert stats.tenants == ()  # no series names a tenant


def test_upstream_availability_is_the_gauge_now():
    """available is the gauge's lowest current value per provider/model, None where it was
    never reported; a window keeps it as it is now; unpriced attempts count per upstream."""
    before, now = parse(known(1), at=1000.0), parse(known(3), at=1004.0)
    for stats in (summarize(now), summarize(delta(now, before))):
        models = {(m.provider, m.model): m for m in stats.models}
        assert models["openai", "gpt-4o"].available == 0.0
        assert models["anthropic", "claude"].available == 1.0
        assert models["gcp.gemini", "gemini"].available is None
        providers = {p.provider: p for p in stats.providers}
        assert (providers["openai"].available, providers["gcp.gemini"].available) == (0.0, None)
        assert {t.model: t.available for t in stats.targets} == {
            "gpt-4o": 0.0, "claude": 1.0, "gemini": None}  # fmt: skip
    assert models["openai", "gpt-4o"].unpriced == 4  # the window: 6 - 2
    cooled = parse(
        'llm_router_upstream_available{gen_ai_provider_name="x",gen_ai_request_model="m",'
        'instance="1"} 1\n'
        'llm_router_upstream_available{gen_ai_provider_name="x",gen_ai_request_model="m",'
        'instance="2"} 0\n',
        at=1.0,
    )
    [only] = summarize(cooled).models  # out of rotation without attempts: still a row
    assert (only.provider, only.model, only.attempts, only.available) == ("x", "m", 0, 0.0)


def test_providers_ranked_by_success_rate_then_latency():
    """Providers and models rank by success rate, then p95 attempt duration."""
    stats = summarize(parse(known(), at=1000.0))
    ranked = [(p.provider, p.success_rate) for p in stats.providers]
    # anthropic and gemini succeed always; anthropic's p95 (0.195) beats gemini's (0.39)
    assert ranked == [("anthropic", 1.0), ("gcp.gemini", 1.0), ("openai", 40 / 45)]
    anthropic, gemini, openai = stats.providers
    assert anthropic.duration.p95 == pytest.approx(0.1 + 0.1 * (9.5 / 10))
    assert gemini.duration.p95 == pytest.approx(0.2 + 0.2 * (9.5 / 10))
    # openai: [25, 45, 45, 45] -> rank 42.75 in (0.1, 0.2]
    assert openai.duration.p95 == pytest.approx(0.1 + 0.1 * (17.75 / 20))
    assert (openai.attempts, openai.errors, openai.errors_by_type) == (45, 5, {"429": 5})
    assert openai.tokens == {"input": 1000, "output": 200}
    assert openai.cost_usd == pytest.approx(0.5)
    assert [(m.provider, m.model) for m in stats.models] == [
        ("anthropic", "claude"),
        ("gcp.gemini", "gemini"),
        ("openai", "gpt-4o"),
    ]
    assert [(t.route, t.provider, t.model) for t in stats.targets] == [
        ("a", "anthropic", "claude"),
        ("a", "gcp.gemini", "gemini"),
        ("a", "openai", "gpt-4o"),
    ]
    (fallback,) = stats.fallbacks
    assert (fallback.from_provider, fallback.from_model) == ("openai", "gpt-4o")
    assert (fallback.to_provider, fallback.to_model, fallback.reason) == (
        "anthropic",
        "claude",
        "429",
    )
    assert fallback.count == 5
    (cache,) = stats.caches
    assert (cache.route, cache.name, cache.lookups, cache.hits) == ("a", "responses", 12, 3)


def test_window_is_the_difference_and_rates_divide_by_its_length():
    """A window holds the differences of two scrapes; rates divide them by its length."""
    before, now = parse(known(1), at=1000.0), parse(known(3), at=1004.0)
    window = summarize(delta(now, before))
    assert window.since == 1000.0
    assert window.window_s == 4.0
    a = window.route("a")
    assert a is not None
    assert (a.requests, a.errors, a.attempts, a.fallbacks) == (100, 20, 130, 10)
    assert a.rate == 100 / 4
    assert a.in_flight == 1  # a gauge: the latest value, not a difference
    assert a.tokens == {"input": 2600, "output": 400}
    assert a.cost_usd == pytest.approx(1.5)
    assert a.duration.p50 == pytest.approx(0.1 + 0.1 * (15 / 20))
    assert window.total.rate == 116 / 4
    assert [p.rate for p in window.providers] == [20 / 4, 20 / 4, 90 / 4]
    assert window.fallbacks[0].rate == 10 / 4


def test_a_decrease_is_a_counter_reset():
    """A decrease is a counter reset (increase = new value); new series count whole."""
    key = (("llm_router_route", "a"),)
    name = "llm_router_fallbacks_total"
    before = Samples({name: {key: 10.0, (("llm_router_route", "gone"),): 4.0}}, at=0.0)
    now = Samples({name: {key: 3.0, (("llm_router_route", "new"),): 2.0}}, at=2.0)
    assert delta(now, before).series[name] == {key: 3.0, (("llm_router_route", "new"),): 2.0}
    later = Samples({name: {key: 7.0}}, at=4.0)
    assert delta(later, now).series[name] == {key: 4.0}
    assert delta(now, None) is now


def test_an_empty_label_is_no_label():
    """A back-filled error_type="" label names the same series; windows count only increases."""
    name = "gen_ai_server_request_duration_seconds_count"
    before = parse(f'{name}{{llm_router_route="a"}} 10\n', at=0.0)
    now = parse(
        f'{name}{{error_type="",llm_router_route="a"}} 12\n'
        f'{name}{{error_type="500",llm_router_route="a"}} 1\n',
        at=1.0,
    )
    a = summarize(delta(now, before)).route("a")
    assert a is not None
    assert (a.requests, a.errors, a.rate) == (3, 1, 3.0)


def test_parser_agrees_with_prometheus_client():
    """The fast exposition parser reads exactly the samples prometheus_client's parser reads."""
    text = known() + (
        'llm_router_fallbacks_total{llm_router_route="q\\"uote\\\\back\\nline",'
        'error_type="x",} 1.5e+03 1700000000000\n'
        'llm_router_cost_usd_total{llm_router_route="n"} NaN\n'
        'llm_router_cost_usd_total{llm_router_route="i"} +Inf\n'
        "llm_router_ratelimit_rejections_total 7\n"
    )
    ours = parse(text, at=1.0)
    theirs = from_families(text_string_to_metric_families(text), at=1.0)
    assert ours.series.keys() == theirs.series.keys()
    for name, series in theirs.series.items():
        assert ours.series[name].keys() == series.keys(), name
        for key, value in series.items():
            got = ours.series[name][key]
            assert got == value or (math.isnan(got) and math.isnan(value)), (name, key)
    quoted = next(k for k in ours.series["llm_router_fallbacks_total"] if ("error_type", "x") in k)
    assert ("llm_router_route", 'q"uote\\back\nline') in quoted


def test_malformed_exposition_is_a_value_error():
    """A sample line without a value, or with an unclosed label set, raises ValueError."""
    with pytest.raises(ValueError, match="malformed"):
        parse('llm_router_fallbacks_total{llm_router_route="a"}\n')
    with pytest.raises(ValueError, match="malformed"):
        parse('llm_router_fallbacks_total{llm_router_route="a" 1\n')


# --- this process: stats() and GET /metrics/stats ------------------------------------------


def _record(n_ok: int, n_failed: int = 0) -> None:
    """``n_ok`` requests on route ``chat`` served by openai after an anthropic 529 (one
    fallback each) with a cache miss, and ``n_failed`` that fail outright."""

    @routemeter.route("chat")
    def handle(fail: bool) -> None:
        rec = routemeter.current()
        rec.cache("responses", hit=False)
        with rec.attempt("anthropic", "claude-sonnet-4-5") as a:
            a.error(529)
        with rec.attempt("openai", "gpt-4o") as a:
            a.usage(input_tokens=100, output_tokens=10)
            if fail:
                a.error(500)
        if fail:
            rec.error(500)

    for _ in range(n_ok):
        handle(False)
    for _ in range(n_failed):
        handle(True)


def test_stats_reads_this_process_and_windows_since_the_previous_call():
    """stats() counts this process's requests; since="previous" only those after the last call."""
    routemeter.setup(exporters="prometheus", prometheus_server=False, set_global=False)
    _record(3, 1)
    first = routemeter.stats()
    chat = first.route("chat")
    assert chat is not None
    assert (chat.requests, chat.errors, chat.attempts, chat.fallbacks) == (4, 1, 8, 4)
    assert chat.tokens == {"input": 400, "output": 40}
    assert (chat.cache_lookups, chat.cache_hits, chat.cache_hit_ratio) == (4, 0, 0.0)
    assert [p.provider for p in first.providers] == ["openai", "anthropic"]  # 3/4 beats 0/4
    _record(2)
    window = routemeter.stats(since="previous")
    chat = window.route("chat")
    assert chat is not None
    assert window.window_s is not None
    assert (chat.requests, chat.errors, chat.attempts) == (2, 0, 4)
    assert chat.rate == pytest.approx(2 / window.window_s)
    assert routemeter.stats().route("chat").requests == 6  # type: ignore[union-attr]
    assert routemeter.stats(since="previous").route("chat").requests == 0  # type: ignore[union-attr]
    with pytest.raises(ValueError, match="since"):
        routemeter.stats(since="yesterday")  # type: ignore[arg-type]


@pytest.mark.parametrize("recorder", RECORDERS)
def test_stats_equal_the_savings_ledger(recorder: str):
    """Savings, goodput, overhead, attempts, unpriced attempts, availability and tenants equal
    the ledger of tests/recording/test_savings.py, on both recorders."""
    routemeter.setup(
        exporters="prometheus", prometheus_server=False, recorder=recorder, set_global=False
    )
    run_ledger()
    stats = routemeter.stats()
    think, plain, total = stats.route("think"), stats.route("plain"), stats.total
    assert think is not None
    assert plain is not None
    exact = {"rel": 1e-12, "abs": 0}
    # think: R1 answered by gpt-4o-mini after a 529 (waste), R2 without usage; baseline gpt-4o
    assert think.baseline_cost_usd == pytest.approx(BASELINE_R1, **exact)
    assert think.cost_usd == pytest.approx(COST_R1 + WASTE_R1, **exact)
    assert think.savings_usd == pytest.approx(BASELINE_R1 - COST_R1 - WASTE_R1, **exact)
    # plain: an unpriced model, so no cost at all; the client asked for gpt-4o
    assert (plain.cost_usd, plain.savings_usd) == (0.0, pytest.approx(BASELINE_R3, **exact))
    assert total.savings_usd == pytest.approx(
        BASELINE_R1 + BASELINE_R3 - COST_R1 - WASTE_R1, **exact
    )
    # R1 met its 1 s objective, R2 (2.5 s) did not; plain has no SLO
    assert (think.good, think.goodput, plain.good, plain.goodput) == (1, 0.5, 1, 1.0)
    assert (total.good, total.goodput) == (2, pytest.approx(2 / 3))
    # overhead: R1 1.0 - 0.5, R2 2.5 - 2.0 (both in (0.25, 0.5]), R3 0.5 - 0.25 (in (0.1, 0.25])
    assert (think.overhead.count, think.overhead.mean) == (2, 0.5)
    assert (plain.overhead.count, plain.overhead.mean) == (1, 0.25)
    assert total.overhead.p50 == pytest.approx(0.25 + 0.25 * (0.5 / 2))  # rank 1.5
    assert total.overhead.p95 == pytest.approx(0.25 + 0.25 * (1.85 / 2))  # rank 2.85
    assert (think.attempts_per_request.count, think.attempts_per_request.mean) == (2, 1.5)
    assert total.attempts_per_request.mean == pytest.approx(4 / 3)
    assert (think.unpriced, plain.unpriced, total.unpriced) == (1, 1, 2)
    models = {(m.provider, m.model): (m.attempts, m.unpriced, m.available) for m in stats.models}
    assert models == {
        ("openai", "gpt-4o-mini"): (2, 1, 0.0),  # cooled down until recovered
        ("anthropic", "claude-sonnet-4-5"): (1, 0, 1.0),  # its 0 s cooldown is over
        ("google", "gemini-2.5-pro"): (0, 0, 0.0),  # cooled down for an hour, never tried
        ("acme", "house-llm"): (1, 1, 1.0),  # recovered
    }
    tenants = {t.tenant: t for t in stats.tenants}
    assert set(tenants) == {"team-a", "_OTHER"}  # R3 names none; R2's key-shaped name folds
    team = tenants["team-a"]
    assert (team.requests, team.errors, team.good, team.goodput) == (1, 0, 1, 1.0)
    assert team.tokens == {"input": 1100, "output": 200}
    assert team.savings_usd == pytest.approx(BASELINE_R1 - COST_R1 - WASTE_R1, **exact)
    other = tenants["_OTHER"]
    assert (other.requests, other.good, other.cost_usd, other.savings_usd) == (1, 0, 0.0, None)
    body = stats.to_json()
    assert "sk-proj" not in body
    assert stats.as_dict()["total"]["overhead"]["count"] == 3


def test_stats_without_a_prometheus_reader_says_what_to_do():
    """Without setup, or with the SDK recorder and no Prometheus reader, stats() raises
    StatsUnavailable saying what to set."""
    with pytest.raises(StatsUnavailable, match=r"setup\(\) first"):
        routemeter.stats()
    routemeter.setup(exporters="none", recorder="sdk", set_global=False)
    with pytest.raises(StatsUnavailable, match="prometheus"):
        routemeter.stats()


def test_stats_work_with_only_push_exporters():
    """With the aggregate recorder and no Prometheus exporter, stats() still reads a private
    registry."""
    routemeter.setup(exporters="none", set_global=False)
    _record(3, 1)
    snapshot = routemeter.stats()
    assert snapshot.total.requests == 4


def test_registry_and_text_give_the_same_snapshot():
    """The registry read directly and its rendered text give the same samples and snapshot."""
    handle = routemeter.setup(exporters="prometheus", prometheus_server=False, set_global=False)
    _record(5, 2)
    registry = handle.prometheus.registry
    direct = collect(registry)
    rendered = parse(generate_latest(registry).decode(), at=direct.at)
    assert direct.series == rendered.series
    assert summarize(direct) == summarize(rendered)


def test_from_families_keeps_one_value_per_series():
    """A series listed twice (the exporter repeats families after a flush) counts once."""
    registry = CollectorRegistry()
    c = Counter("llm_router_fallbacks", "x", ["llm_router_route"], registry=registry)
    c.labels("a").inc(3)
    families = list(registry.collect())
    samples = from_families([*families, *families], at=0.0)
    assert samples.series["llm_router_fallbacks_total"] == {(("llm_router_route", "a"),): 3.0}


async def test_stats_endpoint_serves_the_snapshot_beside_metrics():
    """GET /metrics/stats serves the since-start snapshot as JSON in /metrics' branch."""
    routemeter.setup(exporters="prometheus", prometheus_server=False, set_global=False)
    app = routemeter.instrument_app(Starlette())
    _record(3, 1)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://router") as client:
        r = await client.get("/metrics/stats")
        head = await client.head("/metrics/stats")
        post = await client.post("/metrics/stats")
        metrics = await client.get("/metrics")
    assert r.status_code == 200
    assert r.headers["content-type"] == "application/json"
    body = r.json()
    expected = routemeter.stats().as_dict()
    assert body["since"] is None
    assert body["window_s"] is None
    assert body["routes"] == expected["routes"]
    assert body["providers"] == expected["providers"]
    assert body["routes"][0]["route"] == "chat"
    assert body["routes"][0]["requests"] == 4
    assert (head.status_code, head.content) == (200, b"")
    assert post.status_code == 404
    assert "gen_ai_server_request_duration_seconds_bucket" in metrics.text


# --- PromQL over the same data ---------------------------------------------------------------

LOAD = LoadConfig(rate=30, duration_s=1.5, seed=11, burst_probability=0.05)
SETTINGS = RouterSettings(cache_size=8, cooldown_after=2, cooldown_s=0.5, client_rate=8)
R, P, M = "llm_router_route", "gen_ai_provider_name", "gen_ai_request_model"


def vector(prom: PrometheusServer, promql: str, by: tuple[str, ...], at: float) -> dict:
    """An instant query at ``at`` as ``{label values: value}`` (NaN for undefined)."""
    return {
        tuple(s["metric"].get(k, "") for k in by): float(s["value"][1])
        for s in prom.query(promql, at)
    }


def same(ours: dict, promql: dict, rel: float = 1e-12) -> None:
    """Equal keys (at least one); equal values (None on our side is NaN on PromQL's)."""
    assert promql
    assert ours.keys() == promql.keys()
    for key, value in promql.items():
        mine = ours[key]
        if math.isnan(value):
            assert mine is None, key
        else:
            assert mine == pytest.approx(value, rel=rel, abs=0), key


def increase(name: str, by: str, offset_ms: int) -> str:
    """``sum by (by) (name)`` minus its value ``offset_ms`` earlier (0 where it was absent)."""
    now = f"sum by ({by}) ({name})"
    return f"{now} - (sum by ({by}) ({name} offset {offset_ms}ms) or {now} * 0)"


@pytest.mark.integration
async def test_numbers_equal_promql_over_the_scraped_demo_router():
    """Snapshot and window numbers equal PromQL over the same demo-router data in Prometheus."""
    require_prometheus()
    routemeter.setup(exporters="prometheus", prometheus_server=False, set_global=False)
    router = Router(Upstreams.build(LOAD.seed, cycle_s=LOAD.duration_s * 2), SETTINGS)
    sock = bind("127.0.0.1", 0)
    target = f"127.0.0.1:{sock.getsockname()[1]}"
    with closing(sock), PrometheusServer([target], scrape_interval="500ms") as prom:
        async with (
            serving(build_app(router), sock) as url,
            httpx.AsyncClient(base_url=url, timeout=10) as client,
        ):
            await run_load(url, LOAD)
            await asyncio.to_thread(prom.wait_for_scrape, 1, 30)
            quiet = time.time()  # Prometheus's latest scrape holds everything load A did
            first = parse((await client.get("/metrics")).text)
            await run_load(url, dataclasses.replace(LOAD, seed=LOAD.seed + 1))
            await asyncio.to_thread(prom.wait_for_scrape, 1, 30)
            second = parse((await client.get("/metrics")).text)
            snapshot = (await client.get("/metrics/stats")).json()
            async with httpx.AsyncClient(base_url=prom.url, timeout=10) as api:
                match = {"match[]": '{job="routemeter"}'}
                federated = await api.get("/federate", params=match)
            at = time.time()
        offset = int((at - quiet) * 1000)
        window = summarize(delta(second, first))
        assert summarize(second).as_dict()["routes"] == snapshot["routes"]  # text == registry
        assert summarize(parse(federated.text)).as_dict()["routes"] == snapshot["routes"]
        await asyncio.to_thread(compare_since_start, prom_results(prom, at), snapshot)
        # the window between the two quiet moments
        routes = {(r.route,): r for r in window.routes}
        count = "gen_ai_server_request_duration_seconds_count"
        got = vector(prom, increase(count, R, offset), (R,), at)
        same({k: r.requests for k, r in routes.items()}, got)
        same(
            {k: r.rate for k, r in routes.items()}, {k: v / window.window_s for k, v in got.items()}
        )
        bucket = "gen_ai_server_request_duration_seconds_bucket"
        p95 = f"histogram_quantile(0.95, {increase(bucket, f'le, {R}', offset)})"
        same({k: r.duration.p95 for k, r in routes.items()}, vector(prom, p95, (R,), at))
        assert sum(r.requests for r in window.routes) > 0


def prom_results(prom: PrometheusServer, at: float) -> dict[str, dict]:
    """Since-start PromQL answers at ``at``, by name."""
    server = "gen_ai_server_request_duration_seconds"
    attempt = "gen_ai_client_operation_duration_seconds"
    ttft = "gen_ai_server_time_to_first_token_seconds"
    lookups = "llm_router_cache_lookups_total"
    fallback = (R, "llm_router_fallback_from_provider", "llm_router_fallback_from_model", P, M,
                "error_type")  # fmt: skip

    def q(promql: str, *by: str) -> dict:
        return vector(prom, promql, by, at)

    def ratio(part: str, whole: str, by: str) -> str:
        return f"(sum by ({by}) ({part}) or sum by ({by}) ({whole}) * 0) / sum by ({by}) ({whole})"

    out = {
        "requests": q(f"sum by ({R}) ({server}_count)", R),
        "error_rate": q(ratio(f'{server}_count{{error_type!=""}}', f"{server}_count", R), R),
        "cost": q(f"sum by ({R}) (llm_router_cost_usd_total)", R),
        "hit_ratio": q(ratio(f'{lookups}{{llm_router_cache_result="hit"}}', lookups, R), R),
        "tokens": q("sum by (gen_ai_token_type) (llm_router_usage_tokens_total)",
                    "gen_ai_token_type"),
        "success": q(ratio(f'{attempt}_count{{error_type=""}}', f"{attempt}_count", P), P),
        "fallbacks": q(f"sum by ({', '.join(fallback)}) (llm_router_fallbacks_total)", *fallback),
    }  # fmt: skip
    for quantile in (0.5, 0.95, 0.99):
        out[f"route_p{quantile}"] = q(
            f"histogram_quantile({quantile}, sum by (le, {R}) ({server}_bucket))", R
        )
    out["ttft_p0.5"] = q(f"histogram_quantile(0.5, sum by (le, {R}) ({ttft}_bucket))", R)
    out["target_p0.95"] = q(
        f"histogram_quantile(0.95, sum by (le, {R}, {P}, {M}) ({attempt}_bucket))", R, P, M
    )
    out["provider_p0.95"] = q(f"histogram_quantile(0.95, sum by (le, {P}) ({attempt}_bucket))", P)
    baseline, cost = "llm_router_baseline_cost_usd_total", "llm_router_cost_usd_total"
    savings = (
        f"sum by ({R}) ({baseline}) - (sum by ({R}) ({cost}) or sum by ({R}) ({baseline}) * 0)"
    )
    out["savings"] = q(savings, R)
    out["total_savings"] = q(f"sum({savings})")
    out["goodput"] = q(ratio("llm_router_requests_good_total", f"{server}_count", R), R)
    overhead = "llm_router_overhead_duration_seconds"
    out["overhead_p0.95"] = q(f"histogram_quantile(0.95, sum by (le, {R}) ({overhead}_bucket))", R)
    tries = "llm_router_request_attempts"
    out["tries"] = q(f"sum by ({R}) ({tries}_sum) / sum by ({R}) ({tries}_count)", R)
    out["available"] = q(f"min by ({P}, {M}) (llm_router_upstream_available)", P, M)
    return out


def compare_since_start(promql: dict[str, dict], snapshot: dict[str, Any]) -> None:
    routes = {(r["route"],): r for r in snapshot["routes"]}
    same({k: r["requests"] for k, r in routes.items()}, promql["requests"])
    same({k: r["error_rate"] for k, r in routes.items()}, promql["error_rate"])
    same({k: r["cost_usd"] for k, r in routes.items() if r["cost_usd"]}, promql["cost"], 1e-9)
    hit = {k: r["cache_hit_ratio"] for k, r in routes.items() if r["cache_lookups"]}
    same(hit, promql["hit_ratio"])
    for quantile in ("0.5", "0.95", "0.99"):
        key = f"p{round(float(quantile) * 100)}"
        same({k: r["duration"][key] for k, r in routes.items()}, promql[f"route_p{quantile}"])
    ttft = {k: r["time_to_first_token"]["p50"] for k, r in routes.items()}
    same({k: v for k, v in ttft.items() if k in promql["ttft_p0.5"]}, promql["ttft_p0.5"])
    assert any(v is not None for v in ttft.values())
    same({(k,): v for k, v in snapshot["total"]["tokens"].items()}, promql["tokens"])
    providers = {(p["provider"],): p for p in snapshot["providers"]}
    same({k: p["success_rate"] for k, p in providers.items()}, promql["success"])
    same({k: p["duration"]["p95"] for k, p in providers.items()}, promql["provider_p0.95"])
    targets = {(t["route"], t["provider"], t["model"]): t for t in snapshot["targets"]}
    same({k: t["duration"]["p95"] for k, t in targets.items()}, promql["target_p0.95"])
    fallbacks = {
        (f["route"], f["from_provider"], f["from_model"], f["to_provider"], f["to_model"],
         f["reason"]): f["count"]
        for f in snapshot["fallbacks"]
    }  # fmt: skip
    same(fallbacks, promql["fallbacks"])
    assert fallbacks
    same({k: r["savings_usd"] for k, r in routes.items()}, promql["savings"], 1e-9)
    same({(): snapshot["total"]["savings_usd"]}, promql["total_savings"], 1e-9)
    same({k: r["goodput"] for k, r in routes.items()}, promql["goodput"])
    same({k: r["overhead"]["p95"] for k, r in routes.items()}, promql["overhead_p0.95"])
    same({k: r["attempts_per_request"]["mean"] for k, r in routes.items()}, promql["tries"])
    models = {(m["provider"], m["model"]): m["available"] for m in snapshot["models"]}
    available = {k: v for k, v in models.items() if v is not None}
    if promql["available"]:
        same(available, promql["available"])
    else:  # the seeded load cooled no upstream down this time (cooldowns depend on timing)
        assert available == {}
    success = [p["success_rate"] for p in snapshot["providers"]]
    assert success == sorted(success, reverse=True)  # ranked by success rate first
