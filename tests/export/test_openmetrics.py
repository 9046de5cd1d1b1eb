"""OpenMetrics on the standalone /metrics: a real Prometheus with exemplar storage scrapes it,
counts exactly and finds the trace of the request behind a latency bucket."""

from __future__ import annotations

import time

import httpx
from opentelemetry.sdk.trace import TracerProvider

import routemeter
from support.prometheus import PrometheusServer, require_prometheus

REQUESTS = 5


@routemeter.route("default")
def handle() -> None:
    with routemeter.current().attempt("openai", "gpt-4o-mini") as a:
        a.usage(input_tokens=7, output_tokens=2)


def test_prometheus_scrapes_openmetrics_with_the_traces_behind_the_buckets():
    """Prometheus asks for OpenMetrics and gets it; counts are exact and the exemplar of the
    request-duration bucket names the sampled span the request ran in."""
    require_prometheus()
    handle_ = routemeter.setup(exporters="prometheus", prometheus_port=0, set_global=False)
    assert handle_.prometheus is not None
    assert handle_.prometheus.address is not None
    host, port = handle_.prometheus.address
    tracer = TracerProvider().get_tracer("test")
    began = time.time()
    with tracer.start_as_current_span("routed") as span:
        for _ in range(REQUESTS):
            handle()
    trace_id = f"{span.get_span_context().trace_id:032x}"
    answer = httpx.get(
        f"http://{host}:{port}/metrics",
        headers={"accept": "application/openmetrics-text;version=1.0.0"},
        timeout=10,
    )
    assert answer.headers["content-type"].startswith("application/openmetrics-text")
    assert answer.text.endswith("# EOF\n")
    with PrometheusServer([f"{host}:{port}"], flags=["--enable-feature=exemplar-storage"]) as prom:
        prom.wait_for_scrape(2)
        assert prom.scalar("sum(gen_ai_server_request_duration_seconds_count)") == REQUESTS
        assert prom.scalar("sum(llm_router_usage_tokens_total)") == REQUESTS * 9
        found = prom.exemplars(
            "gen_ai_server_request_duration_seconds_bucket", began - 60, time.time() + 60
        )
    traces = {e["labels"]["trace_id"] for series in found for e in series["exemplars"]}
    assert traces == {trace_id}
