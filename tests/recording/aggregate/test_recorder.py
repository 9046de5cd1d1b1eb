"""The own-aggregation recorder exports exactly what the SDK-instrument recorder exports.

Both recorders consume the same committed records; hypothesis generates the requests (routes,
decisions, attempt chains with failures, usage, chunks, caches, rejections, hostile names,
tenants, baselines and SLOs), the rate-limit headroom reports and cooldowns between them
(gauges, one read at collection) and the collection points. In-memory data, OTLP protobuf and
Prometheus text must be identical, timestamps aside, for cumulative and delta readers and past
the cardinality limit.
"""

from __future__ import annotations

import copy
import difflib
import math
import threading
from dataclasses import dataclass, replace
from importlib.metadata import version
from typing import Any
from unittest import mock

import pytest
from google.protobuf.json_format import MessageToDict
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from opentelemetry.exporter.otlp.proto.common.metrics_encoder import encode_metrics
from opentelemetry.exporter.prometheus import PrometheusMetricReader
from opentelemetry.sdk.metrics import Counter, Histogram, MeterProvider
from opentelemetry.sdk.metrics.export import (
    AggregationTemporality,
    InMemoryMetricReader,
    MetricReader,
)
from opentelemetry.sdk.metrics.view import ExponentialBucketHistogramAggregation
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.sampling import ALWAYS_ON
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from prometheus_client import CollectorRegistry, generate_latest

from routemeter._config import load
from routemeter.export._setup import _bounds
from routemeter.recording._pricing import Prices
from routemeter.recording._recorder import Recorder, SdkRecorder
from routemeter.recording.aggregate._recorder import AggregateRecorder
from routemeter.request import _record
from routemeter.request._policy import SLO, Policy
from routemeter.request._record import Attempt, Decision, Request

RESOURCE = Resource.create({"service.name": "equivalence"})
SCOPE = InstrumentationScope("routemeter", version("routemeter"))
PRICES = Prices()
DELTA = {Counter: AggregationTemporality.DELTA, Histogram: AggregationTemporality.DELTA}
TRACER = TracerProvider(sampler=ALWAYS_ON).get_tracer("equivalence")

durations = st.sampled_from([0.0, 0.004, 0.01, 0.011, 0.3, 1.28, 7.0, 81.92, 120.0])
names = st.sampled_from(
    ["gpt-4o-mini", "gpt-4o", "claude-sonnet-4-5", "m1", "m2", "m3", "sk-proj-abcdefghijklmnop"]
)
providers = st.sampled_from(["openai", "anthropic", "google", "acme", "alice@example.com"])
errors = st.one_of(st.none(), st.sampled_from(["429", "529", "TimeoutError", "APIError"]))
token_counts = st.one_of(st.none(), st.integers(0, 300_000))
tenants = st.one_of(
    st.none(), st.sampled_from(["team-a", "team-b", "alice@example.com", "sk-proj-abcdefghijklm"])
)
policies = st.one_of(
    st.none(),
    st.builds(
        Policy,
        st.one_of(st.none(), st.sampled_from(["gpt-4o", "claude-sonnet-4-5", "house-model"])),
        st.one_of(
            st.none(),
            st.builds(
                SLO,
                st.one_of(st.none(), st.sampled_from([0.005, 0.5, 2.0])),
                st.one_of(st.none(), st.sampled_from([0.01, 1.0, 10.0])),
            ),
        ),
    ),
)


@st.composite
def attempts(draw: st.DrawFn) -> tuple[Attempt, tuple[float, ...]]:
    """An attempt's facts, and the times of the chunks it receives (marked per recorder)."""
    a = Attempt(
        draw(providers),
        draw(names),
        draw(st.one_of(st.none(), st.sampled_from(["api.openai.com", "10.0.0.7"]))),
        draw(st.one_of(st.none(), st.sampled_from([443, 8080, 0, 70000]))),
    )
    a.start = 0.0
    a.end = draw(durations)
    a.error_type = draw(errors)
    a.response_model = draw(st.one_of(st.none(), names))
    a.usage(
        input_tokens=draw(token_counts),
        output_tokens=draw(token_counts),
        cache_read_tokens=draw(st.one_of(st.none(), st.integers(0, 1000))),
        cache_creation_tokens=draw(st.one_of(st.none(), st.integers(0, 1000))),
        reasoning_tokens=draw(st.one_of(st.none(), st.integers(0, 1000))),
    )
    return a, tuple(sorted(draw(st.lists(durations, max_size=4))))


@dataclass(frozen=True)
class Drawn:
    """A request as drawn, built once per recorder: its attempts open through that recorder
    (``Request.attempt``) and mark their chunks through ``Attempt.chunk()``, so each recorder
    gets chunk gaps the way it asked for them (``chunk_bounds``): folded or one per gap."""

    template: Request
    attempts: tuple[tuple[Attempt, tuple[float, ...]], ...]

    def build(self, recorder: Recorder) -> Request:
        rec = copy.copy(self.template)
        rec.sink = recorder
        rec.attempts = []
        for template, chunks in self.attempts:
            a = rec.attempt(
                template.provider,
                template.model,
                server_address=template.server_address,
                server_port=template.server_port,
            )
            a.start, a.end, a.error_type = template.start, template.end, template.error_type
            a.response_model, a.used = template.response_model, template.used
            with mock.patch.object(_record, "perf_counter", iter(chunks).__next__):
                for _ in chunks:
                    a.chunk()
            folded = bool(chunks) and recorder.chunk_bounds is not None
            assert (a.chunk_gaps is not None) is folded
            assert (a.chunk_marks is not None) is (bool(chunks) and not folded)
        return rec


@st.composite
def requests(draw: st.DrawFn) -> Drawn:
    rec = Request((draw(st.sampled_from(["default", "background", "think"])), "chat"))
    rec.start = 0.0
    rec.end = draw(durations)
    rec.requested_model = draw(st.one_of(st.none(), names))
    if draw(st.booleans()):
        d = Decision()
        d.start, d.end = 0.0, draw(st.sampled_from([0.0, 0.00002, 0.003]))
        d.choose(draw(providers), draw(names), draw(st.one_of(st.none(), st.just("cheap"))))
        rec.decision = d
    drawn = tuple(draw(st.lists(attempts(), max_size=3)))
    rec.caches = draw(
        st.one_of(st.none(), st.lists(st.tuples(st.just("responses"), st.booleans())))
    )
    rec.error_type = draw(st.one_of(st.none(), st.just("502")))
    rec.rejected = draw(st.booleans())
    if draw(st.booleans()):
        rec.first_token = draw(durations)
        rec.yielded = draw(st.integers(0, 5))
    rec.tenant_name = draw(tenants)
    rec.policy = draw(policies)
    return Drawn(rec, drawn)


@dataclass(frozen=True)
class Headroom:
    """A rate-limit headroom report: ``kind`` is ``requests`` or ``tokens``."""

    provider: str
    model: str
    kind: str
    value: float


headroom = st.builds(
    Headroom,
    providers,
    names,
    st.sampled_from(["requests", "tokens"]),
    st.sampled_from([0.0, 1.0, 2.5, 99.0, 30_000_000.0]),
)
"""Reports that hit the same point again (a gauge keeps the last) and new points."""


@dataclass(frozen=True)
class Rotation:
    """A cooldown (until recovered, or for a long time) or a recovery of a provider/model."""

    provider: str
    model: str
    cooled: bool
    seconds: float | None


rotation = st.builds(
    Rotation, providers, names, st.booleans(), st.sampled_from([None, 3600.0, 0.0])
)
work = st.one_of(requests(), headroom, rotation)


@dataclass
class Pair:
    sdk: Recorder
    agg: Recorder
    sdk_reader: MetricReader
    agg_reader: MetricReader
    providers: tuple[MeterProvider, MeterProvider]

    def record(self, work: Drawn | Headroom | Rotation) -> None:
        for recorder in (self.sdk, self.agg):
            if isinstance(work, Headroom):
                recorder.ratelimit_remaining(work.provider, work.model, work.kind, work.value)
            elif isinstance(work, Rotation):
                if work.cooled:
                    recorder.cooldown(work.provider, work.model, "429", work.seconds)
                else:
                    recorder.recovered(work.provider, work.model)
            else:
                rec = work.build(recorder)
                recorder.begin(rec)
                recorder.commit(rec)

    def shutdown(self) -> None:
        for provider in self.providers:
            provider.shutdown()


def make_pair(reader_factory, limit: int, max_models: int = 100) -> Pair:
    config = load({}, max_models=max_models, max_providers=3)
    sdk_reader, agg_reader = reader_factory(limit), reader_factory(limit)
    sdk_provider = MeterProvider(metric_readers=[sdk_reader], resource=RESOURCE)
    agg_provider = MeterProvider(metric_readers=[agg_reader], resource=RESOURCE)
    sdk = SdkRecorder(sdk_provider.get_meter(SCOPE.name, SCOPE.version), _bounds(config), PRICES)
    agg = AggregateRecorder(_bounds(config), PRICES, limit=limit, scope=SCOPE, resource=RESOURCE)
    agg.attach(agg_reader)
    return Pair(sdk, agg, sdk_reader, agg_reader, (sdk_provider, agg_provider))


def in_memory(temporality: dict[type, Any] | None, exponential: int | None = None):
    """``exponential``: the max_size of base2 exponential histograms, else explicit buckets."""

    def factory(limit: int) -> InMemoryMetricReader:
        limits = {Counter: limit, Histogram: limit}
        from opentelemetry.sdk.metrics import UpDownCounter, _Gauge

        limits |= {UpDownCounter: limit, _Gauge: limit}
        aggregation = (
            None
            if exponential is None
            else {Histogram: ExponentialBucketHistogramAggregation(max_size=exponential)}
        )
        return InMemoryMetricReader(
            preferred_temporality=temporality,
            preferred_aggregation=aggregation,
            cardinality_limits=limits,
        )

    return factory


def otlp_without_times(reader: InMemoryMetricReader) -> Any:
    """The reader's collection as OTLP protobuf, with every timestamp zeroed; of a sum's or an
    exponential histogram's exemplars only their number is compared (their reservoirs sample
    at random), and the in-flight count has none (the aggregate recorder derives it at
    collection, from the records in flight)."""
    data = reader.get_metrics_data()
    if data is None:
        return None
    request = encode_metrics(data)
    for rm in request.resource_metrics:
        for sm in rm.scope_metrics:
            for metric in sm.metrics:
                kind = metric.WhichOneof("data")
                for point in getattr(metric, kind).data_points:
                    point.start_time_unix_nano = 0
                    point.time_unix_nano = 0
                    if metric.name == "llm.router.requests.active":
                        del point.exemplars[:]
                    for exemplar in point.exemplars:
                        exemplar.time_unix_nano = 0
                        if kind != "histogram":
                            for field in ("value", "trace_id", "span_id", "filtered_attributes"):
                                exemplar.ClearField(field)
    return request


def _close(a: Any, b: Any) -> bool:
    """Structural equality; floats to 1e-12 relative (the SDK folds each collection interval
    into its running sums, so the last bit of a float sum can differ with addition order)."""
    if isinstance(a, float) or isinstance(b, float):
        return (
            isinstance(a, (int, float))
            and isinstance(b, (int, float))
            and math.isclose(a, b, rel_tol=1e-12, abs_tol=1e-15)
        )
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_close(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_close(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b)


def _as_dict(message: Any) -> Any:
    return None if message is None else MessageToDict(message)


def assert_same(ours: Any, reference: Any) -> None:
    """Equal up to float rounding, or fail with a unified diff of the two payloads."""
    if not _close(_as_dict(ours), _as_dict(reference)):
        diff = difflib.unified_diff(
            str(reference).splitlines(), str(ours).splitlines(), "sdk", "aggregate", lineterm=""
        )
        pytest.fail("\n".join(list(diff)[:80]))


settings.register_profile(
    "equivalence",
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


@pytest.mark.parametrize(
    ("temporality", "limit", "exponential"),
    [
        (None, 2000, None),
        (DELTA, 2000, None),
        (None, 4, None),
        (DELTA, 4, None),
        (None, 2000, 160),
        (DELTA, 2000, 160),
        (None, 4, 160),  # not size 4: the SDK's cumulative merge fails on its own there
        (DELTA, 4, 4),
    ],
    ids=[
        "cumulative",
        "delta",
        "cumulative-overflow",
        "delta-overflow",
        "exponential-cumulative",
        "exponential-delta",
        "exponential-cumulative-overflow",
        "exponential-delta-overflow-size4",
    ],
)
@settings(settings.get_profile("equivalence"))
@given(
    batches=st.lists(st.lists(work, max_size=8), min_size=1, max_size=4),
    traced=st.booleans(),
)
def test_otlp_payloads_are_identical(temporality, limit, exponential, batches, traced):
    """Every collection encodes to the same OTLP protobuf from both recorders, exemplars from
    sampled spans included."""
    pair = make_pair(in_memory(temporality, exponential), limit)
    try:
        for batch in batches:
            for rec in batch:
                if traced:
                    with TRACER.start_as_current_span("request"):
                        pair.record(rec)
                else:
                    pair.record(rec)
            assert_same(otlp_without_times(pair.agg_reader), otlp_without_times(pair.sdk_reader))
    finally:
        pair.shutdown()


@settings(settings.get_profile("equivalence"))
@given(batch=st.lists(work, max_size=12))
def test_prometheus_text_is_identical(batch):
    """The Prometheus exposition from both recorders is the same text, byte for byte."""
    registries = (CollectorRegistry(), CollectorRegistry())
    readers = iter(registries)

    def factory(limit: int) -> PrometheusMetricReader:
        return PrometheusMetricReader(registry=next(readers))

    pair = make_pair(factory, 2000)
    try:
        for rec in batch:
            pair.record(rec)
        sdk_text, agg_text = (generate_latest(r).decode() for r in registries)
        assert _samples(agg_text).keys() == _samples(sdk_text).keys()
        assert _close(_samples(agg_text), _samples(sdk_text))
        assert _families(agg_text) == _families(sdk_text)
    finally:
        pair.shutdown()


def _samples(text: str) -> dict[str, float]:
    """Sample line -> value; the line's name and labels are compared exactly."""
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            series, _, value = line.rpartition(" ")
            out[series] = float(value)
    return out


def _families(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith("#")]


def test_overflow_keeps_totals_exact():
    """Past the limit, new attribute sets fold into one otel.metric.overflow point: no count
    is lost or doubled."""
    pair = make_pair(in_memory(None), limit=5, max_models=1000)
    try:
        for i in range(50):
            rec = Request(("default", "chat"))
            rec.requested_model = f"model-{i}"
            rec.start, rec.end = 0.0, 0.5
            pair.record(Drawn(rec, ()))
        data = pair.agg_reader.get_metrics_data()
        [metric] = [
            m
            for m in data.resource_metrics[0].scope_metrics[0].metrics
            if m.name == "gen_ai.server.request.duration"
        ]
        points = metric.data.data_points
        assert len(points) == 6
        assert sum(p.count for p in points) == 50
        [overflow] = [p for p in points if p.attributes.get("otel.metric.overflow")]
        assert overflow.count == 45
        assert otlp_without_times(pair.agg_reader) == otlp_without_times(pair.sdk_reader)
    finally:
        pair.shutdown()


def test_threads_lose_no_count():
    """Eight threads committing 2,000 requests each: totals are exact."""
    pair = make_pair(in_memory(None), 2000)
    template = Request(("default", "chat"))
    template.start, template.end = 0.0, 0.2

    def work() -> None:
        for _ in range(2000):
            rec = Request(("default", "chat"))
            rec.start, rec.end = 0.0, 0.2
            a = rec.attempt("openai", "gpt-4o-mini")
            a.start, a.end = 0.0, 0.1
            a.usage(input_tokens=3, output_tokens=1)
            pair.agg.begin(rec)
            pair.agg.commit(rec)

    threads = [threading.Thread(target=work) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    try:
        data = pair.agg_reader.get_metrics_data()
        by_name = {m.name: m for m in data.resource_metrics[0].scope_metrics[0].metrics}
        [server] = by_name["gen_ai.server.request.duration"].data.data_points
        assert server.count == 16_000
        tokens = {
            p.attributes["gen_ai.token.type"]: p.value
            for p in by_name["llm.router.usage.tokens"].data.data_points
        }
        assert tokens == {"input": 48_000, "output": 16_000}
        [active] = by_name["llm.router.requests.active"].data.data_points
        assert active.value == 0
    finally:
        pair.shutdown()


def test_fork_child_starts_empty():
    """A forked worker does not re-export what its parent recorded before the fork."""
    import os

    pair = make_pair(in_memory(None), 2000)
    rec = Request(("default", "chat"))
    rec.start, rec.end = 0.0, 0.2
    pair.agg.begin(rec)
    pair.agg.commit(rec)
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: report how many requests it would export, then exit at once
        data = pair.agg_reader.get_metrics_data()
        count = 0
        if data is not None:
            for sm in data.resource_metrics[0].scope_metrics:
                for m in sm.metrics:
                    if m.name == "gen_ai.server.request.duration":
                        count = sum(p.count for p in m.data.data_points)
        os.write(write, str(count).encode())
        os._exit(0)
    os.close(write)
    child = os.read(read, 64).decode()
    os.waitpid(pid, 0)
    os.close(read)
    try:
        assert child == "0"
        data = pair.agg_reader.get_metrics_data()
        metrics = data.resource_metrics[0].scope_metrics[0].metrics
        [server] = [m for m in metrics if m.name == "gen_ai.server.request.duration"]
        assert server.data.data_points[0].count == 1
    finally:
        pair.shutdown()


_ = replace  # dataclasses.replace kept for readers extending the strategies
