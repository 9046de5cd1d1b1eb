"""Per routed request: bare handler, routemeter, the same facts through the raw OTel SDK and
through prometheus_client with labels; /metrics render time at 100 and 2,000 series.

Medians of repeated runs, printed as microseconds and ratios; run with `make bench`.
Machines here are shared and noisy: read the ratios, not the absolute numbers.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time
from collections.abc import Callable
from typing import Any

import prometheus_client as pc
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

import routemeter
from routemeter.recording import _instruments as ins
from routemeter.testing import capture

ATTRS = {"llm.router.route": "default", "gen_ai.operation.name": "chat"}
USAGE = {"prompt_tokens": 1200, "completion_tokens": 300}


def median_us(fn: Callable[[], object], loops: int, repeats: int) -> float:
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(loops):
            fn()
        samples.append((time.perf_counter() - start) / loops * 1e6)
    return statistics.median(samples)


def bare() -> None:
    body = {"model": "auto"}
    _ = body["model"]


@routemeter.route("default")
def routed() -> None:
    rec = routemeter.current()
    rec.requested("auto")
    with rec.decide() as d:
        d.choose("openai", "gpt-4o-mini", "default")
    with rec.attempt("openai", "gpt-4o-mini", server_address="api.openai.com") as a:
        a.usage(input_tokens=1200, output_tokens=300)


def raw_instruments() -> tuple[dict[str, Any], dict[str, Any], Any]:
    """routemeter's histograms and counters as plain SDK instruments (by name), and the
    requests-in-flight up-down counter: what a router recording by hand would create."""
    meter = MeterProvider(metric_readers=[InMemoryMetricReader()]).get_meter("raw")
    h = {
        s.name: meter.create_histogram(
            s.name, unit=s.unit, explicit_bucket_boundaries_advisory=list(s.buckets or ())
        )
        for s in ins.ALL
        if s.kind == "histogram"
    }
    c = {s.name: meter.create_counter(s.name, unit=s.unit) for s in ins.ALL if s.kind == "counter"}
    return h, c, meter.create_up_down_counter("llm.router.requests.active")


def raw_sdk_request() -> Callable[[], None]:
    """The same facts recorded straight onto SDK instruments, one call per measurement."""
    h, c, active = raw_instruments()

    def request() -> None:
        t0 = time.perf_counter()
        active.add(1, ATTRS)
        attempt = {**ATTRS, "gen_ai.provider.name": "openai", "gen_ai.request.model": "gpt-4o-mini"}
        d0 = time.perf_counter()
        decision = {
            **ATTRS,
            "llm.router.target.provider": "openai",
            "llm.router.target.model": "gpt-4o-mini",
            "llm.router.reason": "default",
        }
        h["llm.router.decision.duration"].record(time.perf_counter() - d0, ATTRS)
        c["llm.router.decisions"].add(1, decision)
        a0 = time.perf_counter()
        h["gen_ai.client.operation.duration"].record(time.perf_counter() - a0, attempt)
        h["gen_ai.client.token.usage"].record(1200, {**attempt, "gen_ai.token.type": "input"})
        h["gen_ai.client.token.usage"].record(300, {**attempt, "gen_ai.token.type": "output"})
        c["llm.router.usage.tokens"].add(1200, {**attempt, "gen_ai.token.type": "input"})
        c["llm.router.usage.tokens"].add(300, {**attempt, "gen_ai.token.type": "output"})
        c["llm.router.cost.usd"].add(0.00036, attempt)
        h["gen_ai.server.request.duration"].record(time.perf_counter() - t0, attempt)
        active.add(-1, ATTRS)

    return request


def prometheus_client_request() -> Callable[[], None]:
    """The same facts through prometheus_client with labels, on a private registry."""
    reg = pc.CollectorRegistry()
    base = ["route", "operation"]
    target = [*base, "provider", "model"]
    server = pc.Histogram("server_s", "", target, buckets=ins.DURATION_BUCKETS, registry=reg)
    client = pc.Histogram("client_s", "", target, buckets=ins.DURATION_BUCKETS, registry=reg)
    usage = pc.Histogram("usage", "", [*target, "type"], buckets=ins.TOKEN_BUCKETS, registry=reg)
    tokens = pc.Counter("tokens", "", [*target, "type"], registry=reg)
    cost = pc.Counter("cost", "", target, registry=reg)
    decisions = pc.Counter("decisions", "", [*target, "reason"], registry=reg)
    decision_s = pc.Histogram("decision_s", "", base, buckets=ins.DECISION_BUCKETS, registry=reg)
    active = pc.Gauge("active", "", base, registry=reg)

    def request() -> None:
        t0 = time.perf_counter()
        active.labels("default", "chat").inc()
        d0 = time.perf_counter()
        decision_s.labels("default", "chat").observe(time.perf_counter() - d0)
        decisions.labels("default", "chat", "openai", "gpt-4o-mini", "default").inc()
        a0 = time.perf_counter()
        labels = ("default", "chat", "openai", "gpt-4o-mini")
        client.labels(*labels).observe(time.perf_counter() - a0)
        usage.labels(*labels, "input").observe(1200)
        usage.labels(*labels, "output").observe(300)
        tokens.labels(*labels, "input").inc(1200)
        tokens.labels(*labels, "output").inc(300)
        cost.labels(*labels).inc(0.00036)
        server.labels(*labels).observe(time.perf_counter() - t0)
        active.labels("default", "chat").dec()

    return request


def util_genai_attempt() -> Callable[[], None]:
    """opentelemetry-util-genai's inference invocation: the attempt's client metrics only
    (operation duration and token usage), with a no-op tracer."""
    from opentelemetry.util.genai.handler import TelemetryHandler

    provider = MeterProvider(metric_readers=[InMemoryMetricReader()])
    handler = TelemetryHandler(meter_provider=provider)

    def request() -> None:
        with handler.inference(
            "openai", request_model="gpt-4o-mini", server_address="api.openai.com"
        ) as inv:
            inv.input_tokens = 1200
            inv.output_tokens = 300

    return request


def _one_series_each(series: int, recorder: str) -> tuple[Any, Callable[[], None]]:
    """routemeter set up with a Prometheus reader and ``series`` distinct attempt models."""
    routemeter.shutdown()
    handle = routemeter.setup(
        exporters="prometheus",
        prometheus_server=False,
        max_models=series,
        recorder=recorder,
        set_global=False,
    )

    @routemeter.route("render")
    def one(model: str) -> None:
        with routemeter.current().attempt("openai", model) as a:
            a.usage(input_tokens=10, output_tokens=5)

    for i in range(series):
        one(f"model-{i}")
    assert handle.prometheus is not None
    return handle, routemeter.shutdown


def render_ms(series: int, repeats: int, recorder: str) -> tuple[float, int]:
    """Median /metrics render time and its line count with ``series`` distinct models: the
    body the endpoints serve (the aggregate recorder renders its own families directly)."""
    from routemeter.export._exposition import render

    handle, done = _one_series_each(series, recorder)
    samples = []
    lines = 0
    for _ in range(repeats):
        start = time.perf_counter()
        chunks, _ = render(handle.prometheus.registry, handle.exposition, "")
        lines = sum(c.count(b"\n") for c in chunks)
        samples.append((time.perf_counter() - start) * 1e3)
    done()
    return statistics.median(samples), lines


def memory_per_series(series: int, recorder: str) -> float:
    """Bytes held per distinct attempt model (all its metrics' points), by tracemalloc."""
    import gc
    import tracemalloc

    gc.collect()
    tracemalloc.start()
    before = tracemalloc.take_snapshot()
    _, done = _one_series_each(series, recorder)
    gc.collect()
    after = tracemalloc.take_snapshot()
    tracemalloc.stop()
    grown = sum(s.size_diff for s in after.compare_to(before, "filename"))
    done()
    return grown / series


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks")
    parser.add_argument("--loops", type=int, default=2000)
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    print(f"{platform.python_implementation()} {platform.python_version()}, {platform.machine()}")
    contenders: dict[str, Callable[[], object]] = {
        "bare handler": bare,
        "routemeter": routed,
        "raw OTel SDK instruments": raw_sdk_request(),
        "prometheus_client labels": prometheus_client_request(),
        "util-genai (attempt only)": util_genai_attempt(),
    }
    samples: dict[str, list[float]] = {name: [] for name in contenders}
    with capture():
        for _ in range(args.repeats):  # round-robin, so load changes hit every contender alike
            for name, fn in contenders.items():
                samples[name].append(median_us(fn, args.loops, 1))
    rows = {name: statistics.median(s) for name, s in samples.items()}
    ours = rows["routemeter"]
    print(f"\nper routed request (median of {args.repeats} x {args.loops}):")
    print(f"{'':28} {'µs':>9} {'vs routemeter':>14}")
    for name, us in rows.items():
        print(f"{name:28} {us:9.2f} {us / ours:13.2f}x")
    print("\n/metrics render through the OTel Prometheus exporter (median):")
    print(f"{'models':>6} {'lines':>7} {'aggregate ms':>13} {'sdk ms':>8}")
    for series in (100, 2000):
        ours, lines = render_ms(series, max(3, args.repeats // 3), "aggregate")
        sdk, _ = render_ms(series, max(3, args.repeats // 3), "sdk")
        print(f"{series:>6} {lines:>7} {ours:13.1f} {sdk:8.1f}")
    print("\nmemory per distinct attempt model (all of its points):")
    for recorder in ("aggregate", "sdk"):
        print(f"{recorder:>10} {memory_per_series(2000, recorder) / 1024:6.1f} KiB")


if __name__ == "__main__":
    main()
