"""Upstream rate-limit headroom read from provider response headers."""

from __future__ import annotations

import urllib.request
from types import SimpleNamespace

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client.parser import text_string_to_metric_families

import routemeter
from routemeter.request._ratelimit import MAX_HEADERS, NOTHING, Remaining, parse

REQUESTS = "llm.router.ratelimit.remaining.requests"
TOKENS = "llm.router.ratelimit.remaining.tokens"

OPENAI = {  # as api.openai.com sends them (limits, remaining, resets)
    "x-ratelimit-limit-requests": "10000",
    "x-ratelimit-limit-tokens": "30000000",
    "x-ratelimit-remaining-requests": "9999",
    "x-ratelimit-remaining-tokens": "29999945",
    "x-ratelimit-reset-requests": "6ms",
    "x-ratelimit-reset-tokens": "0s",
}
ANTHROPIC = {  # as api.anthropic.com sends them
    "anthropic-ratelimit-requests-limit": "4000",
    "anthropic-ratelimit-requests-remaining": "3999",
    "anthropic-ratelimit-requests-reset": "2025-01-01T00:00:06Z",
    "anthropic-ratelimit-tokens-limit": "480000",
    "anthropic-ratelimit-tokens-remaining": "480000",
    "anthropic-ratelimit-input-tokens-limit": "400000",
    "anthropic-ratelimit-input-tokens-remaining": "400000",
    "anthropic-ratelimit-output-tokens-limit": "80000",
    "anthropic-ratelimit-output-tokens-remaining": "80000",
}


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        pytest.param(OPENAI, Remaining(9999.0, 29999945.0), id="openai"),
        pytest.param(ANTHROPIC, Remaining(3999.0, 480000.0), id="anthropic"),
        pytest.param(
            {k: v for k, v in ANTHROPIC.items() if "-tokens-" not in k or "put-" in k},
            Remaining(3999.0, 80000.0),
            id="anthropic-input-output-only",
        ),
        pytest.param(
            {"anthropic-ratelimit-input-tokens-remaining": "12000"},
            Remaining(None, 12000.0),
            id="anthropic-input-only",
        ),
        pytest.param(
            {"llm_provider-x-ratelimit-remaining-requests": "7"},
            Remaining(7.0, None),
            id="litellm-prefixed",
        ),
        pytest.param(
            {"X-RateLimit-Remaining-Requests": "5", "X-RATELIMIT-REMAINING-TOKENS": " 6 "},
            Remaining(5.0, 6.0),
            id="any-case-and-whitespace",
        ),
        pytest.param({"x-ratelimit-remaining-tokens": "0"}, Remaining(None, 0.0), id="zero"),
        pytest.param({"x-ratelimit-remaining-requests": "12.5"}, Remaining(12.5, None), id="float"),
        pytest.param({"content-type": "application/json"}, NOTHING, id="none-present"),
        pytest.param({}, NOTHING, id="empty"),
    ],
)
def test_parse_reads_openai_and_anthropic_names(headers, expected):
    """parse() reads the OpenAI and Anthropic remaining-requests/tokens headers, any case."""
    assert parse(headers) == expected


@pytest.mark.parametrize(
    "value",
    ["", "n/a", "-1", "nan", "inf", "-inf", "1e400", "10/min", "0x10", "12 ms", None, True, [3]],
    ids=repr,
)
def test_parse_ignores_unparsable_values(value):
    """A value that is not a finite non-negative number is skipped, not recorded."""
    assert parse({"x-ratelimit-remaining-requests": value}) == NOTHING


def test_parse_skips_a_bad_value_but_keeps_the_good_one():
    """One unparsable header does not discard the other kind."""
    headers = {"x-ratelimit-remaining-requests": "lots", "x-ratelimit-remaining-tokens": "10"}
    assert parse(headers) == Remaining(None, 10.0)


def test_parse_accepts_every_headers_container():
    """httpx.Headers, raw pairs and objects carrying headers or a response all parse."""
    raw = [(b"x-ratelimit-remaining-requests", b"3"), (b"x-ratelimit-remaining-tokens", b"4")]
    expected = Remaining(3.0, 4.0)
    assert parse(httpx.Headers(raw)) == expected
    assert parse(raw) == expected
    assert parse(tuple(raw)) == expected
    response = httpx.Response(200, headers=raw)
    assert parse(response) == expected
    assert parse(SimpleNamespace(response=response)) == expected  # openai.APIStatusError shape
    assert parse(SimpleNamespace(headers=dict(OPENAI))) == Remaining(9999.0, 29999945.0)


@pytest.mark.parametrize(
    "headers",
    [None, 42, "x-ratelimit-remaining-requests: 3", object(), [1, 2], [("a",)], {3: "4"}],
    ids=repr,
)
def test_parse_of_non_headers_is_nothing(headers):
    """Anything that is not a headers container parses to nothing, without raising."""
    assert parse(headers) == NOTHING


def test_parse_survives_headers_that_raise():
    """A headers object whose iteration raises parses to nothing."""

    class Exploding:
        def items(self):
            raise RuntimeError("boom")

    assert parse(Exploding()) == NOTHING


def test_parse_scans_a_bounded_number_of_headers():
    """Headers beyond MAX_HEADERS are not scanned: a pathological response stays cheap."""
    headers = [(f"x-junk-{i}", "1") for i in range(MAX_HEADERS)]
    headers.append(("x-ratelimit-remaining-requests", "1"))
    assert parse(headers) == NOTHING


@settings(max_examples=200, deadline=None, database=None)
@given(st.dictionaries(st.text(max_size=50), st.text(max_size=20) | st.binary(max_size=8)))
def test_parse_never_raises(headers):
    """parse() on arbitrary mappings returns finite non-negative values or None."""
    result = parse(headers)
    for value in result:
        assert value is None or (value >= 0 and value != float("inf"))


def headroom(metrics, name: str) -> dict[str, float]:
    """The gauge ``name``'s values by provider."""
    return {p["attributes"]["gen_ai.provider.name"]: p["value"] for p in metrics.points(name)}


def test_ratelimit_from_headers_records_the_gauges(metrics):
    """ratelimit_from_headers() records the requests and the tokens gauge for provider/model."""
    routemeter.ratelimit_from_headers("openai", "gpt-4o-mini", OPENAI)
    routemeter.ratelimit_from_headers("anthropic", "claude-sonnet-4-5", httpx.Headers(ANTHROPIC))
    assert headroom(metrics, REQUESTS) == {"openai": 9999.0, "anthropic": 3999.0}
    assert headroom(metrics, TOKENS) == {"openai": 29999945.0, "anthropic": 480000.0}
    for name in (REQUESTS, TOKENS):
        assert {p["attributes"]["gen_ai.request.model"] for p in metrics.points(name)} == {
            "gpt-4o-mini",
            "claude-sonnet-4-5",
        }


def test_headroom_gauges_carry_their_own_unit_and_no_kind(metrics):
    """Requests left are in {request}, tokens left in {token}, attributed by provider and
    model only: no attribute tells the two apart, the metric does."""
    routemeter.ratelimit_remaining("openai", "gpt-4o-mini", requests=7, tokens=8000)
    deployment = {"gen_ai.provider.name": "openai", "gen_ai.request.model": "gpt-4o-mini"}
    [requests] = metrics.points(REQUESTS)
    [tokens] = metrics.points(TOKENS)
    assert (requests["unit"], requests["attributes"], requests["value"]) == (
        "{request}",
        deployment,
        7,
    )
    assert (tokens["unit"], tokens["attributes"], tokens["value"]) == ("{token}", deployment, 8000)
    assert metrics.points("llm.router.ratelimit.remaining") == []


def test_one_kind_of_headroom_records_only_its_gauge(metrics):
    """A report of requests alone records no tokens point, and the other way round."""
    routemeter.ratelimit_remaining("openai", "gpt-4o", requests=5)
    routemeter.ratelimit_remaining("anthropic", "claude-sonnet-4-5", tokens=6)
    assert headroom(metrics, REQUESTS) == {"openai": 5}
    assert headroom(metrics, TOKENS) == {"anthropic": 6}


def test_ratelimit_from_headers_keeps_the_last_report(metrics):
    """Each gauge holds its last report; a kind missing from a report keeps its value."""
    routemeter.ratelimit_from_headers("openai", "gpt-4o", OPENAI)
    routemeter.ratelimit_from_headers("openai", "gpt-4o", {"x-ratelimit-remaining-requests": "3"})
    assert metrics.value(REQUESTS) == 3.0
    assert metrics.value(TOKENS) == 29999945.0


def test_ratelimit_from_headers_without_headroom_records_nothing(metrics):
    """Headers with no rate-limit information record no point at all."""
    routemeter.ratelimit_from_headers("openai", "gpt-4o", {"content-type": "text/plain"})
    routemeter.ratelimit_from_headers("openai", "gpt-4o", None)
    assert metrics.points(REQUESTS) == []
    assert metrics.points(TOKENS) == []


@pytest.mark.parametrize("recorder", ["aggregate", "sdk"])
def test_headroom_prometheus_families(recorder: str):
    """Through the Prometheus exporter the two gauges are the families
    llm_router_ratelimit_remaining_requests and llm_router_ratelimit_remaining_tokens."""
    handle = routemeter.setup(
        exporters="prometheus",
        prometheus_host="127.0.0.1",
        prometheus_port=0,
        set_global=False,
        recorder=recorder,
    )
    routemeter.ratelimit_from_headers("openai", "gpt-4o-mini", OPENAI)
    routemeter.ratelimit_from_headers(
        "openai", "gpt-4o-mini", {"x-ratelimit-remaining-tokens": "5"}
    )
    assert handle.metrics_url is not None
    with urllib.request.urlopen(handle.metrics_url, timeout=5) as response:
        text = response.read().decode()
    routemeter.shutdown()
    families = {
        f.name: f for f in text_string_to_metric_families(text) if "ratelimit_remaining" in f.name
    }
    assert families.keys() == {
        "llm_router_ratelimit_remaining_requests",
        "llm_router_ratelimit_remaining_tokens",
    }
    values = {}
    for name, family in families.items():
        assert family.type == "gauge"
        [sample] = family.samples
        assert sample.labels["gen_ai_provider_name"] == "openai"
        assert sample.labels["gen_ai_request_model"] == "gpt-4o-mini"
        assert not any("kind" in label for label in sample.labels)
        values[name] = sample.value
    assert values == {
        "llm_router_ratelimit_remaining_requests": 9999.0,
        "llm_router_ratelimit_remaining_tokens": 5.0,
    }


def test_ratelimit_from_headers_before_setup_is_a_no_op():
    """Without setup() the helper does nothing and does not raise."""
    routemeter.ratelimit_from_headers("openai", "gpt-4o", OPENAI)


def test_ratelimit_from_headers_is_public():
    """The helper is exported from the package."""
    assert "ratelimit_from_headers" in routemeter.__all__
