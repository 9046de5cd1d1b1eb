"""Shared pieces: the demo router made fast and permissive (no simulated latency, errors or
rate limits) so hostile traffic is limited by routemeter and the server only, and helpers to read
real exports."""

from __future__ import annotations

import dataclasses
from collections import Counter
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from routemeter.demo.providers import PROFILES, Profile, Upstreams
from routemeter.demo.router import Router, RouterSettings


def instant(profile: Profile) -> Profile:
    """A provider that answers at once and never fails."""
    return dataclasses.replace(
        profile,
        ttft_s=0.0,
        chunk_s=0.0,
        error_rate=0.0,
        timeout_rate=0.0,
        ratelimit_rate=0.0,
        requests_per_window=10**9,
        tokens_per_window=10**12,
        incidents=(),
    )


def fast_router(seed: int = 1) -> Router:
    """The demo router over instant providers, without its own per-client rate limit."""
    upstreams = Upstreams.build(seed, profiles=[instant(p) for p in PROFILES])
    return Router(upstreams, RouterSettings(client_rate=1e9, client_burst=10**9, cache_size=8))


def chat(model: str, content: str = "hello") -> dict[str, Any]:
    return {"model": model, "messages": [{"role": "user", "content": content}]}


def exposition_series(text: str) -> dict[str, set[frozenset[tuple[str, str]]]]:
    """Distinct label sets (bucket bound ``le`` aside) per sample name in an exposition."""
    series: dict[str, set[frozenset[tuple[str, str]]]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = frozenset((k, v) for k, v in sample.labels.items() if k != "le")
            series.setdefault(sample.name, set()).add(labels)
    return series


def exposition_values(text: str, name: str) -> list[tuple[dict[str, str], float]]:
    return [
        (dict(s.labels), s.value)
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == name
    ]


def otlp_totals(points: list[dict[str, Any]], name: str) -> Counter[str]:
    """Histogram counts (or sum values) of ``name`` per ``service.instance.id``, from the latest
    export of each instance (cumulative: the latest is the total)."""
    latest: dict[str, int] = {}
    for p in points:
        if p["name"] == name:
            latest[p["resource"].get("service.instance.id", "")] = p["request_index"]
    totals: Counter[str] = Counter()
    for p in points:
        instance = p["resource"].get("service.instance.id", "")
        if p["name"] == name and p["request_index"] == latest[instance]:
            totals[instance] += p["count"] if "count" in p else p["value"]
    return totals
