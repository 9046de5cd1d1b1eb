"""The demo router's parts on their own: classification, rate limiter, cache, cooldowns."""

from __future__ import annotations

import pytest

from routemeter.demo.load import percentile
from routemeter.demo.router import Cooldowns, ResponseCache, TokenBuckets, classify, translate

SMALL = [{"role": "user", "content": "hi"}]


@pytest.mark.parametrize(
    ("body", "label"),
    [
        ({"model": "claude-sonnet-4-5", "messages": SMALL}, "default"),
        ({"model": "claude-3-5-haiku", "messages": SMALL}, "background"),
        ({"model": "gpt-4o-mini", "messages": SMALL, "reasoning_effort": "low"}, "background"),
        ({"model": "claude-sonnet-4-5", "messages": SMALL, "reasoning_effort": "low"}, "think"),
        ({"model": "claude-3-5-haiku", "messages": [{"content": "x" * 40_000}]}, "long_context"),
    ],
)
def test_classify_in_claude_code_router_order(body, label):
    """Long context wins over a small model, which wins over reasoning; else default."""
    assert classify(body, 6_000) == label


def test_token_bucket_allows_burst_then_refills():
    """A client gets ``burst`` requests at once, then one more per 1/rate seconds."""
    buckets = TokenBuckets(rate=2.0, burst=3)
    assert [buckets.allow("a", 0.0) for _ in range(4)] == [True, True, True, False]
    assert buckets.allow("b", 0.0)
    assert not buckets.allow("a", 0.4)
    assert buckets.allow("a", 0.6)


def test_cache_evicts_least_recently_used():
    """Past capacity the least recently read entry goes; re-storing a key adds nothing."""
    cache = ResponseCache(2)
    assert cache.put("a", {"n": 1}) == (True, 0)
    assert cache.put("b", {"n": 2}) == (True, 0)
    assert cache.get("a") == {"n": 1}
    assert cache.put("c", {"n": 3}) == (True, 1)
    assert cache.get("b") is None
    assert cache.put("a", {"n": 4}) == (False, 0)
    assert len(cache) == 2


def test_cooldown_after_consecutive_failures_only():
    """A success resets the count; the Nth failure in a row starts one cooldown period."""
    cooldowns = Cooldowns(after=2, period_s=1.0)
    target = ("openai", "gpt-4o")
    assert not cooldowns.failed(target, 0.0)
    cooldowns.succeeded(target)
    assert not cooldowns.failed(target, 0.1)
    assert cooldowns.failed(target, 0.2)
    assert not cooldowns.available(target, 0.5)
    assert not cooldowns.failed(target, 0.6)
    assert cooldowns.available(target, 1.2)


def test_translate_anthropic_events_to_openai_chunks():
    """Anthropic stream events become OpenAI chunks; bookkeeping events send nothing."""
    model = "claude-sonnet-4-5-20250929"
    delta = {"type": "content_block_delta", "delta": {"type": "text_delta", "text": "hi"}}
    chunk = translate(delta, model)
    assert chunk is not None
    assert chunk["choices"][0]["delta"] == {"content": "hi"}
    assert translate({"type": "ping"}, model) is None
    assert translate({"choices": [], "usage": {"prompt_tokens": 1}}, model) is None


def test_percentile_nearest_rank():
    """p50 and p95 pick observed values by nearest rank."""
    values = [float(v) for v in range(1, 21)]
    assert percentile(values, 0.5) == 10.0
    assert percentile(values, 0.95) == 19.0
    assert percentile([], 0.5) == 0.0
