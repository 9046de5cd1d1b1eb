"""The direct exposition renders routemeter's families exactly as the OTel exporter does."""

from __future__ import annotations

import gzip

from hypothesis import given, settings
from hypothesis import strategies as st
from opentelemetry.exporter.prometheus import PrometheusMetricReader
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.trace import TracerProvider
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.openmetrics import exposition as openmetrics
from prometheus_client.openmetrics.parser import text_string_to_metric_families

from recording.aggregate.test_recorder import PRICES, RESOURCE, SCOPE, Headroom, Rotation, work
from routemeter._config import load
from routemeter.export._exposition import Exposition, render
from routemeter.export._setup import _bounds
from routemeter.recording.aggregate._recorder import AggregateRecorder
from routemeter.request._record import Request

OPENMETRICS_ACCEPT = (
    "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;"
    "q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1"
)
"""What Prometheus asks for."""


class Pair:
    """One aggregate recorder feeding a merged exporter reader and a direct one."""

    def __init__(self, limit: int) -> None:
        config = load({}, max_models=100, max_providers=3)
        self.merged, self.direct = CollectorRegistry(), CollectorRegistry()
        merged_reader = PrometheusMetricReader(registry=self.merged)
        direct_reader = PrometheusMetricReader(registry=self.direct)
        self.provider = MeterProvider(
            metric_readers=[merged_reader, direct_reader], resource=RESOURCE
        )
        self.agg = AggregateRecorder(
            _bounds(config), PRICES, limit=limit, scope=SCOPE, resource=RESOURCE
        )
        self.agg.attach(merged_reader)
        self.agg.attach(direct_reader, merge=False)
        self.exposition = Exposition(self.agg)
        self.app_counter = self.provider.get_meter("app").create_counter("app.jobs")

    def record(self, item) -> None:
        if isinstance(item, Headroom):
            self.agg.ratelimit_remaining(item.provider, item.model, item.kind, item.value)
            return
        if isinstance(item, Rotation):
            if item.cooled:
                self.agg.cooldown(item.provider, item.model, "429", item.seconds)
            else:
                self.agg.recovered(item.provider, item.model)
            return
        rec = item if isinstance(item, Request) else item.build(self.agg)
        self.agg.begin(rec)
        self.agg.commit(rec)

    def texts(self) -> tuple[str, str]:
        expected = generate_latest(self.merged).decode()
        actual = generate_latest(self.direct).decode() + self.exposition.text()
        return expected, actual

    def openmetrics(self) -> tuple[str, str]:
        """prometheus_client's OpenMetrics writer over the exporter's families, and ours."""
        expected = openmetrics.generate_latest(self.merged).decode()
        chunks, headers = render(self.direct, self.exposition, "", OPENMETRICS_ACCEPT)
        assert (b"content-type", openmetrics.CONTENT_TYPE_LATEST.encode()) in headers
        return expected, b"".join(chunks).decode()


@settings(max_examples=60, deadline=None, database=None)
@given(
    batch=st.lists(work, max_size=12),
    limit=st.sampled_from([3, 2000]),
    app_jobs=st.integers(0, 2),
)
def test_direct_text_equals_the_exporter_text(batch, limit, app_jobs):
    """Byte for byte, with SDK families, overflow, back-filled labels and target_info."""
    pair = Pair(limit)
    try:
        for _ in range(app_jobs):
            pair.app_counter.add(1, {"kind": 'quoted "value"\\ and\nnewline'})
        for item in batch:
            pair.record(item)
        expected, actual = pair.texts()
        assert actual == expected
        for item in batch[:3]:  # a second scrape reuses the cached label text
            pair.record(item)
        expected, actual = pair.texts()
        assert actual == expected
        expected, actual = pair.openmetrics()
        assert actual == expected
    finally:
        pair.provider.shutdown()


def test_nothing_recorded_renders_what_the_exporter_renders():
    """Before any measurement both bodies are the same (empty) text."""
    pair = Pair(2000)
    try:
        expected, actual = pair.texts()
        assert actual == expected
    finally:
        pair.provider.shutdown()


def test_render_gzips_when_asked_and_keeps_the_text():
    """Accept-Encoding: gzip gives the same text, compressed, with its header."""
    pair = Pair(2000)
    try:
        rec = Request(("default", "chat"))
        with rec.attempt("openai", "gpt-4o-mini") as a:
            a.usage(input_tokens=12, output_tokens=3)
        rec.end = rec.start + 0.2
        pair.record(rec)
        plain, headers = render(pair.direct, pair.exposition, "")
        packed, gz_headers = render(pair.direct, pair.exposition, "gzip, deflate")
        assert (b"content-encoding", b"gzip") in gz_headers
        assert (b"content-encoding", b"gzip") not in headers
        assert gzip.decompress(b"".join(packed)) == b"".join(plain)
        assert b"".join(plain).decode() == generate_latest(pair.merged).decode()
    finally:
        pair.provider.shutdown()


@settings(max_examples=40, deadline=None, database=None)
@given(batch=st.lists(work, max_size=12), limit=st.sampled_from([3, 2000]))
def test_series_equal_parsing_the_text(batch, limit):
    """stats()' samples read straight from the state equal parsing the rendered text."""
    from routemeter.tools._stats import _names, parse

    pair = Pair(limit)
    try:
        for item in batch:
            pair.record(item)
        wanted = _names().wanted
        parsed = parse(pair.exposition.text()).series
        assert pair.exposition.series(wanted) == {k: v for k, v in parsed.items() if k in wanted}
    finally:
        pair.provider.shutdown()


class _Parsed:
    """A collector that returns families parsed from OpenMetrics text, to render them again."""

    def __init__(self, text: str) -> None:
        self.families = list(text_string_to_metric_families(text))

    def collect(self):
        return self.families


def test_openmetrics_carries_the_latest_exemplar_of_each_bucket():
    """Inside a sampled span each observed bucket and counter shows the span's exemplar; the text
    parses with prometheus_client's strict OpenMetrics parser and renders back byte for byte."""
    pair = Pair(2000)
    tracer = TracerProvider().get_tracer("test")
    try:
        with tracer.start_as_current_span("routed") as span:
            rec = Request(("default", "chat"))
            with rec.attempt("openai", "gpt-4o-mini") as a:
                a.usage(input_tokens=12, output_tokens=3)
            rec.end = rec.start + 0.2
            pair.record(rec)
        context = span.get_span_context()
        _, text = pair.openmetrics()
        registry = CollectorRegistry()
        registry.register(_Parsed(text))
        assert openmetrics.generate_latest(registry).decode() == text
        found = {
            (s.name, s.labels.get("le")): s.exemplar
            for family in text_string_to_metric_families(text)
            for s in family.samples
            if s.exemplar is not None
        }
        trace_id, span_id = f"{context.trace_id:032x}", f"{context.span_id:016x}"
        assert {e.labels["trace_id"] for e in found.values()} == {trace_id}
        assert {e.labels["span_id"] for e in found.values()} == {span_id}
        duration = found[("gen_ai_server_request_duration_seconds_bucket", "0.32")]
        assert abs(duration.value - 0.2) < 1e-9
        assert found[("llm_router_usage_tokens_total", None)].value in (12.0, 3.0)
        assert ("gen_ai_server_request_duration_seconds_bucket", "0.16") not in found
        # outside a span nothing new: the next request leaves the kept exemplars alone
        pair.record(rec)
        assert pair.openmetrics()[1].count(trace_id) == text.count(trace_id)
    finally:
        pair.provider.shutdown()
