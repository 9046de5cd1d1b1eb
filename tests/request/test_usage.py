"""Token usage read from real provider response shapes, as dicts and as SDK-like objects."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import reduce
from types import MappingProxyType, SimpleNamespace
from typing import Any

import genai_prices
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from routemeter.request._record import Attempt
from routemeter.request._usage import (
    EMPTY,
    MAX_TOKENS,
    Usage,
    extract,
    from_usage_block,
    merge,
    response_model,
    tokens,
)

MAX = 2**53
SETTINGS = settings(max_examples=150, deadline=None, database=None)


def as_object(value: Any) -> Any:
    """The same payload as an SDK would hand it over: attributes instead of keys."""
    if isinstance(value, dict):
        return SimpleNamespace(**{k: as_object(v) for k, v in value.items()})
    if isinstance(value, list):
        return [as_object(v) for v in value]
    return value


BOTH = pytest.mark.parametrize("shape", [lambda p: p, as_object], ids=["dict", "object"])

OPENAI_CHAT = {
    "id": "chatcmpl-AB12",
    "object": "chat.completion",
    "created": 1727000000,
    "model": "gpt-4o-mini-2024-07-18",
    "choices": [
        {
            "index": 0,
            "message": {"role": "assistant", "content": "Hi."},
            "finish_reason": "stop",
        }
    ],
    "usage": {
        "prompt_tokens": 1200,
        "completion_tokens": 300,
        "total_tokens": 1500,
        "prompt_tokens_details": {"cached_tokens": 1024, "audio_tokens": 0},
        "completion_tokens_details": {
            "reasoning_tokens": 128,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        },
    },
    "system_fingerprint": "fp_0123",
}
OPENAI_CHAT_COMPATIBLE = {  # vLLM / older OpenAI-compatible servers: no details blocks
    "object": "chat.completion",
    "model": "meta-llama/Llama-3.1-8B-Instruct",
    "choices": [],
    "usage": {
        "prompt_tokens": 10,
        "completion_tokens": 5,
        "total_tokens": 15,
        "prompt_tokens_details": None,
    },
}
OPENAI_STREAM_FINAL = {
    "id": "chatcmpl-AB12",
    "object": "chat.completion.chunk",
    "model": "gpt-4o-2024-08-06",
    "choices": [],
    "usage": {
        "prompt_tokens": 50,
        "completion_tokens": 20,
        "total_tokens": 70,
        "prompt_tokens_details": {"cached_tokens": 0},
        "completion_tokens_details": {"reasoning_tokens": 0},
    },
}
OPENAI_STREAM_CHUNK = {
    "id": "chatcmpl-AB12",
    "object": "chat.completion.chunk",
    "model": "gpt-4o-2024-08-06",
    "choices": [{"index": 0, "delta": {"content": "Hel"}, "finish_reason": None}],
    "usage": None,
}
OPENAI_RESPONSES = {
    "id": "resp_67cc",
    "object": "response",
    "model": "o4-mini-2025-04-16",
    "status": "completed",
    "output": [{"type": "message", "role": "assistant", "content": []}],
    "usage": {
        "input_tokens": 2000,
        "input_tokens_details": {"cached_tokens": 1536},
        "output_tokens": 900,
        "output_tokens_details": {"reasoning_tokens": 640},
        "total_tokens": 2900,
    },
}
ANTHROPIC_MESSAGE = {
    "id": "msg_01XFDUDYJgAACzvnptvVoYEL",
    "type": "message",
    "role": "assistant",
    "model": "claude-sonnet-4-5-20250929",
    "content": [{"type": "text", "text": "Hello!"}],
    "stop_reason": "end_turn",
    "usage": {
        "input_tokens": 25,
        "cache_creation_input_tokens": 1200,
        "cache_read_input_tokens": 8000,
        "output_tokens": 410,
    },
}
ANTHROPIC_NO_CACHE_FIELDS = {
    "type": "message",
    "model": "claude-3-5-haiku-20241022",
    "usage": {"input_tokens": 12, "output_tokens": 7},
}
ANTHROPIC_ZERO_CACHE = {
    "type": "message",
    "model": "claude-opus-4-1-20250805",
    "usage": {
        "input_tokens": 300,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 0,
        "output_tokens": 40,
    },
}
ANTHROPIC_MESSAGE_START = {
    "type": "message_start",
    "message": {
        "id": "msg_1nZdL29xx5MUA1yADyHTEsnR8uuvGzszyY",
        "type": "message",
        "role": "assistant",
        "model": "claude-sonnet-4-5-20250929",
        "content": [],
        "stop_reason": None,
        "usage": {
            "input_tokens": 25,
            "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": 1000,
            "output_tokens": 1,
        },
    },
}
ANTHROPIC_MESSAGE_DELTA = {
    "type": "message_delta",
    "delta": {"stop_reason": "end_turn", "stop_sequence": None},
    "usage": {"output_tokens": 15},
}
GEMINI = {
    "candidates": [{"content": {"role": "model", "parts": [{"text": "Hi"}]}}],
    "usageMetadata": {
        "promptTokenCount": 1500,
        "candidatesTokenCount": 200,
        "totalTokenCount": 1700,
        "cachedContentTokenCount": 1024,
    },
    "modelVersion": "gemini-2.5-flash",
}
GEMINI_THINKING = {
    "candidates": [{"content": {"role": "model", "parts": [{"text": "42"}]}}],
    "usageMetadata": {
        "promptTokenCount": 1200,
        "candidatesTokenCount": 300,
        "thoughtsTokenCount": 500,
        "totalTokenCount": 2000,
        "cachedContentTokenCount": 1000,
    },
    "modelVersion": "gemini-2.5-pro",
}
BEDROCK = {
    "output": {"message": {"role": "assistant", "content": [{"text": "Hi"}]}},
    "stopReason": "end_turn",
    "usage": {"inputTokens": 30, "outputTokens": 12, "totalTokens": 42},
    "metrics": {"latencyMs": 512},
}
BEDROCK_CACHED = {  # AWS prompt-caching docs: totalTokens = input + output + cache read + write
    "output": {"message": {"role": "assistant", "content": [{"text": "Hi"}]}},
    "stopReason": "end_turn",
    "usage": {
        "inputTokens": 4,
        "outputTokens": 30,
        "totalTokens": 1590,
        "cacheReadInputTokens": 0,
        "cacheWriteInputTokens": 1556,
    },
    "metrics": {"latencyMs": 1800},
}

SHAPES = [
    pytest.param(OPENAI_CHAT, Usage(1200, 300, 1024, None, 128), id="openai-chat"),
    pytest.param(OPENAI_CHAT_COMPATIBLE, Usage(10, 5, None, None, None), id="openai-compatible"),
    pytest.param(OPENAI_STREAM_FINAL, Usage(50, 20, 0, None, 0), id="openai-stream-final-chunk"),
    pytest.param(OPENAI_STREAM_CHUNK, EMPTY, id="openai-stream-chunk-usage-none"),
    pytest.param(OPENAI_RESPONSES, Usage(2000, 900, 1536, None, 640), id="openai-responses"),
    pytest.param(ANTHROPIC_MESSAGE, Usage(9225, 410, 8000, 1200, None), id="anthropic-cached"),
    pytest.param(ANTHROPIC_NO_CACHE_FIELDS, Usage(12, 7, None, None, None), id="anthropic-plain"),
    pytest.param(ANTHROPIC_ZERO_CACHE, Usage(300, 40, 0, 0, None), id="anthropic-zero-cache"),
    pytest.param(ANTHROPIC_MESSAGE_START, Usage(1025, 1, 1000, 0, None), id="anthropic-start"),
    pytest.param(ANTHROPIC_MESSAGE_DELTA, Usage(None, 15, None, None, None), id="anthropic-delta"),
    pytest.param(GEMINI, Usage(1500, 200, 1024, None, None), id="gemini"),
    # Gemini's candidatesTokenCount excludes thoughts; OpenAI's output includes reasoning.
    pytest.param(GEMINI_THINKING, Usage(1200, 800, 1000, None, 500), id="gemini-thinking"),
    pytest.param(BEDROCK, Usage(30, 12, None, None, None), id="bedrock"),
    # Bedrock's inputTokens excludes cache reads and writes, like Anthropic's input_tokens.
    pytest.param(BEDROCK_CACHED, Usage(1560, 30, 0, 1556, None), id="bedrock-cached"),
]


@BOTH
@pytest.mark.parametrize(("payload", "expected"), SHAPES)
def test_extract_reads_each_provider_shape(shape, payload, expected):
    """extract() normalises every provider's usage block to OpenAI semantics."""
    assert extract(shape(payload)) == expected


@pytest.mark.parametrize(("payload", "expected"), SHAPES)
def test_usage_block_alone_reads_the_same(payload, expected):
    """from_usage_block() on the bare block gives what extract() gives on the response."""
    block = payload.get("usage") or payload.get("usageMetadata")
    if block is None:
        block = payload.get("message", {}).get("usage")
    assert from_usage_block(block) == expected


ORACLE = [
    pytest.param(OPENAI_CHAT, "openai", "chat", id="openai-chat"),
    pytest.param(OPENAI_RESPONSES, "openai", "responses", id="openai-responses"),
    pytest.param(ANTHROPIC_MESSAGE, "anthropic", "default", id="anthropic-cached"),
    pytest.param(ANTHROPIC_ZERO_CACHE, "anthropic", "default", id="anthropic-zero-cache"),
    pytest.param(GEMINI, "google", "default", id="gemini"),
    pytest.param(GEMINI_THINKING, "google", "default", id="gemini-thinking"),
    pytest.param({**BEDROCK, "model": "amazon.nova-pro-v1:0"}, "aws", "default", id="bedrock"),
    pytest.param(
        {**BEDROCK_CACHED, "model": "anthropic.claude-3-5-sonnet-20241022-v2:0"},
        "aws",
        "default",
        id="bedrock-cached",
    ),
]


@pytest.mark.parametrize(("payload", "provider", "flavor"), ORACLE)
def test_extract_agrees_with_genai_prices_extractors(payload, provider, flavor):
    """extract() counts input, output and cache tokens as genai-prices' own extractors do."""
    theirs = genai_prices.extract_usage(payload, provider_id=provider, api_flavor=flavor).usage
    ours = extract(payload)
    assert (ours.input, ours.output) == (theirs.input_tokens, theirs.output_tokens)
    assert (ours.cache_read or 0) == (theirs.cache_read_tokens or 0)
    assert (ours.cache_creation or 0) == (theirs.cache_write_tokens or 0)


@dataclass
class PromptTokensDetails:
    cached_tokens: int | None = None
    audio_tokens: int | None = None


@dataclass
class CompletionTokensDetails:
    reasoning_tokens: int | None = None
    audio_tokens: int | None = None


@dataclass
class CompletionUsage:
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    prompt_tokens_details: PromptTokensDetails | None = None
    completion_tokens_details: CompletionTokensDetails | None = None


@dataclass
class ChatCompletionChunk:
    model: str
    choices: list[Any] = field(default_factory=list)
    usage: CompletionUsage | None = None
    object: str = "chat.completion.chunk"


def test_openai_sdk_dataclasses_with_missing_details():
    """An SDK usage object whose detail blocks are None still yields input and output."""
    chunk = ChatCompletionChunk("gpt-4o", usage=CompletionUsage(7, 3, 10))
    assert extract(chunk) == Usage(7, 3, None, None, None)


def test_openai_stream_fold_ends_with_the_final_chunk_usage():
    """Folding a chat stream with merge() yields the usage of the final, choice-less chunk."""
    chunks = [ChatCompletionChunk("gpt-4o", choices=[SimpleNamespace(delta="x")]) for _ in range(5)]
    final = CompletionUsage(
        120, 33, 153, PromptTokensDetails(cached_tokens=64), CompletionTokensDetails(8)
    )
    chunks.append(ChatCompletionChunk("gpt-4o", choices=[], usage=final))
    assert [extract(c) for c in chunks[:-1]] == [EMPTY] * 5
    assert reduce(merge, map(extract, chunks), EMPTY) == Usage(120, 33, 64, None, 8)


ANTHROPIC_STREAM = [
    ANTHROPIC_MESSAGE_START,
    {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
    {"type": "ping"},
    {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Hi"}},
    {"type": "content_block_stop", "index": 0},
    ANTHROPIC_MESSAGE_DELTA,
    {"type": "message_stop"},
]


@BOTH
def test_anthropic_stream_merges_to_running_totals(shape):
    """message_start then message_delta merge to start's input and cache, delta's output."""
    events = [shape(e) for e in ANTHROPIC_STREAM]
    running = []
    total = EMPTY
    for event in events:
        total = merge(total, extract(event))
        running.append(total)
    assert running[0] == Usage(1025, 1, 1000, 0, None)
    assert running[4] == running[0]  # content events carry no usage
    assert running[-1] == Usage(1025, 15, 1000, 0, None)


def test_anthropic_delta_with_cumulative_cache_fields_keeps_normalised_input():
    """A message_delta that repeats cumulative input and cache counts keeps input normalised."""
    delta = {
        "type": "message_delta",
        "usage": {
            "input_tokens": 25,
            "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": 1000,
            "output_tokens": 90,
        },
    }
    total = merge(extract(ANTHROPIC_MESSAGE_START), extract(delta))
    assert total == Usage(1025, 90, 1000, 0, None)


@dataclass
class GenaiUsageMetadata:  # google-genai SDK: snake_case attributes
    prompt_token_count: int | None = None
    candidates_token_count: int | None = None
    cached_content_token_count: int | None = None
    thoughts_token_count: int | None = None
    total_token_count: int | None = None


@dataclass
class GenerateContentResponse:
    usage_metadata: GenaiUsageMetadata | None
    model_version: str | None = None
    candidates: list[Any] = field(default_factory=list)


def test_google_genai_sdk_response_object():
    """A google-genai GenerateContentResponse (snake_case usage_metadata) yields its usage."""
    response = GenerateContentResponse(
        GenaiUsageMetadata(
            prompt_token_count=1500, candidates_token_count=200, cached_content_token_count=1024
        ),
        model_version="gemini-2.5-flash",
    )
    assert extract(response) == Usage(1500, 200, 1024, None, None)


def test_google_genai_sdk_model_version():
    """response_model() reads the google-genai SDK's model_version attribute."""
    response = GenerateContentResponse(GenaiUsageMetadata(), model_version="gemini-2.5-flash")
    assert response_model(response) == "gemini-2.5-flash"


@pytest.mark.parametrize(
    "response",
    [
        None,
        "usage",
        b"{}",
        0,
        7,
        1.5,
        True,
        [],
        [OPENAI_CHAT],
        {},
        {"usage": None},
        {"usage": {}},
        {"usage": {"total_tokens": 9}},
        {"message": None},
        {"message": {"content": "no usage here"}},
        {"usageMetadata": {}},
        {"usageMetadata": {"totalTokenCount": 9}},
        {"type": "ping"},
        SimpleNamespace(),
        SimpleNamespace(usage=None, message=None),
    ],
    ids=repr,
)
def test_extract_without_usage_is_empty(response):
    """Anything that carries no recognisable usage block gives EMPTY."""
    assert extract(response) == EMPTY


def test_usage_metadata_snake_case_key_is_read():
    """A dict under usage_metadata (camelCase fields) is read like usageMetadata."""
    assert extract({"usage_metadata": GEMINI["usageMetadata"]}) == Usage(1500, 200, 1024, None)


@pytest.mark.parametrize(
    ("block", "expected"),
    [
        ({"prompt_tokens": True, "completion_tokens": 4}, Usage(None, 4)),
        ({"prompt_tokens": -5, "completion_tokens": 4.0}, Usage(None, 4)),
        ({"prompt_tokens": float("nan"), "completion_tokens": float("inf")}, Usage(None, None)),
        ({"prompt_tokens": "12", "completion_tokens": 3}, Usage(None, 3)),
        ({"input_tokens": 10, "output_tokens": 2**53}, Usage(10, None)),
        ({"input_tokens": 5, "cache_read_input_tokens": -1}, Usage(5, None)),
        ({"input_tokens": None, "cache_read_input_tokens": 8}, Usage(8, None, 8, None)),
        ({"promptTokenCount": False, "candidatesTokenCount": 6}, Usage(None, 6)),
    ],
    ids=repr,
)
def test_insane_counts_are_dropped_field_by_field(block, expected):
    """Bad counts become None without discarding the block's good fields."""
    assert from_usage_block(block) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (0, 0),
        (1, 1),
        (123_456, 123_456),
        (MAX - 1, MAX - 1),
        (12.0, 12),
        (0.0, 0),
    ],
)
def test_tokens_accepts_sane_counts(value, expected):
    """tokens() passes non-negative ints below 2**53 and finite non-negative floats."""
    result = tokens(value)
    assert result == expected
    assert type(result) is int


@pytest.mark.parametrize(
    "value",
    [
        True,
        False,
        float("nan"),
        float("inf"),
        float("-inf"),
        -1,
        -0.5,
        MAX,
        float(MAX),
        2**64,
        1e300,
        "12",
        b"12",
        None,
        [3],
        {"tokens": 3},
        object(),
        complex(3, 0),
    ],
    ids=repr,
)
def test_tokens_rejects_insane_values(value):
    """tokens() rejects bool, NaN, inf, negatives, >= 2**53 and non-numbers."""
    assert tokens(value) is None


@SETTINGS
@given(st.integers())
def test_tokens_on_any_int(value):
    """tokens() on an int is the int exactly when it lies in [0, 2**53)."""
    assert tokens(value) == (value if 0 <= value < MAX else None)


@SETTINGS
@given(st.floats(allow_nan=True, allow_infinity=True))
def test_tokens_on_any_float(value):
    """tokens() on a float is its truncation when finite and in [0, 2**53), else None."""
    ok = math.isfinite(value) and 0 <= value < MAX
    assert tokens(value) == (int(value) if ok else None)


@pytest.mark.parametrize(
    ("response", "expected"),
    [
        (OPENAI_CHAT, "gpt-4o-mini-2024-07-18"),
        (OPENAI_STREAM_CHUNK, "gpt-4o-2024-08-06"),
        (OPENAI_RESPONSES, "o4-mini-2025-04-16"),
        (ANTHROPIC_MESSAGE, "claude-sonnet-4-5-20250929"),
        (ANTHROPIC_MESSAGE_START, "claude-sonnet-4-5-20250929"),
        (GEMINI, "gemini-2.5-flash"),
        (ANTHROPIC_MESSAGE_DELTA, None),
        (BEDROCK, None),
        ({"model": 42}, None),
        ({"model": None, "modelVersion": ["x"]}, None),
        ({}, None),
    ],
    ids=repr,
)
@BOTH
def test_response_model(shape, response, expected):
    """response_model() reads model, Anthropic's message.model and Gemini's modelVersion."""
    assert response_model(shape(response)) == expected


@pytest.mark.parametrize("response", [None, "gpt-4o", b"gpt-4o", 3, 2.0, False], ids=repr)
def test_response_model_of_scalars_is_none(response):
    """Scalars never name a model."""
    assert response_model(response) is None


def test_merge_later_fields_win_and_none_keeps_old():
    """merge() takes each field from the newer report unless that field is None."""
    old = Usage(100, 5, 80, 20, None)
    new = Usage(None, 9, None, 0, 3)
    assert merge(old, new) == Usage(100, 9, 80, 0, 3)


def test_merge_with_empty_is_identity():
    """Merging EMPTY (either side) changes nothing."""
    u = Usage(1, 2, 3, 4, 5)
    assert merge(u, EMPTY) == u
    assert merge(EMPTY, u) == u
    assert merge(u, Usage()) == u


counts = st.none() | st.integers(0, MAX - 1)
usages = st.builds(Usage, counts, counts, counts, counts, counts)


@SETTINGS
@given(usages, usages)
def test_merge_property(old, new):
    """Every merged field is the new one when present, else the old one."""
    merged = merge(old, new)
    assert all(m == (n if n is not None else o) for m, o, n in zip(merged, old, new, strict=True))


# Junk: the shapes routers meet when a provider, proxy or mock misbehaves.
USAGE_KEYS = [
    "usage",
    "message",
    "usageMetadata",
    "usage_metadata",
    "model",
    "modelVersion",
    "prompt_tokens",
    "completion_tokens",
    "prompt_tokens_details",
    "completion_tokens_details",
    "cached_tokens",
    "reasoning_tokens",
    "input_tokens",
    "output_tokens",
    "input_tokens_details",
    "output_tokens_details",
    "cache_read_input_tokens",
    "cache_creation_input_tokens",
    "promptTokenCount",
    "candidatesTokenCount",
    "cachedContentTokenCount",
    "thoughtsTokenCount",
    "inputTokens",
    "outputTokens",
    "cacheReadInputTokens",
    "cacheWriteInputTokens",
    "response",
    "metadata",
    "toolUsePromptTokenCount",
    "tool_use_prompt_token_count",
    "cache_creation_tokens",
    "cache_write_tokens",
]
scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.sampled_from([MAX - 1, MAX, 2**63, -1])
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=4)
    | st.binary(max_size=3)
)
keys = st.sampled_from(USAGE_KEYS) | st.text(max_size=3)
junk = st.recursive(
    scalars,
    lambda children: (
        st.lists(children, max_size=3)
        | st.dictionaries(keys, children, max_size=6)
        | st.dictionaries(keys, children, max_size=6).map(lambda d: SimpleNamespace(**d))
    ),
    max_leaves=12,
)
block = st.dictionaries(st.sampled_from(USAGE_KEYS), junk, max_size=6)
responses = (
    junk
    | st.builds(lambda b: {"usage": b}, block)
    | st.builds(lambda b: SimpleNamespace(usage=SimpleNamespace(**b)), block)
    | st.builds(lambda b: {"type": "message_start", "message": {"usage": b}}, block)
    | st.builds(lambda b: {"usageMetadata": b}, block)
    | st.builds(lambda b: {"type": "response.completed", "response": {"usage": b}}, block)
    | st.builds(lambda b: {"metadata": {"usage": b}}, block)
)
HUGE = MAX - 1


@settings(max_examples=120, deadline=None, database=None)
@given(responses)
@example({"usage": {"input_tokens": HUGE, "cache_read_input_tokens": HUGE}})
@example({"usage": {"inputTokens": HUGE, "cacheReadInputTokens": HUGE}})
@example({"usageMetadata": {"candidatesTokenCount": HUGE, "thoughtsTokenCount": HUGE}})
def test_extract_never_raises_and_stays_in_range(response):
    """extract() on arbitrary junk returns a Usage of None or ints in [0, 2**53)."""
    usage = extract(response)
    assert type(usage) is Usage
    for value in usage:
        assert value is None or (type(value) is int and 0 <= value < MAX), usage
    model = response_model(response)
    assert model is None or type(model) is str


# Streams that carry usage only in their last event, and shapes added for LiteLLM and Gemini.
OPENAI_RESPONSES_STREAM = [
    {"type": "response.created", "response": {"id": "resp_1", "model": "gpt-5", "usage": None}},
    {"type": "response.output_text.delta", "delta": "Hi", "item_id": "msg_1"},
    {
        "type": "response.completed",
        "sequence_number": 9,
        "response": {
            "id": "resp_1",
            "object": "response",
            "model": "gpt-5-2025-08-07",
            "status": "completed",
            "usage": {
                "input_tokens": 1200,
                "input_tokens_details": {"cached_tokens": 1024},
                "output_tokens": 300,
                "output_tokens_details": {"reasoning_tokens": 256},
                "total_tokens": 1500,
            },
        },
    },
]
BEDROCK_CONVERSE_STREAM = [
    {"messageStart": {"role": "assistant"}},
    {"contentBlockDelta": {"delta": {"text": "Hi"}, "contentBlockIndex": 0}},
    {"contentBlockStop": {"contentBlockIndex": 0}},
    {"messageStop": {"stopReason": "end_turn"}},
    {
        "metadata": {
            "usage": {
                "inputTokens": 20,
                "outputTokens": 9,
                "totalTokens": 529,
                "cacheReadInputTokens": 500,
                "cacheWriteInputTokens": 0,
            },
            "metrics": {"latencyMs": 410},
        }
    },
]
GEMINI_TOOL_USE = {
    "candidates": [{"content": {"role": "model", "parts": [{"text": "Found it."}]}}],
    "usageMetadata": {
        "promptTokenCount": 100,
        "candidatesTokenCount": 40,
        "toolUsePromptTokenCount": 250,
        "thoughtsTokenCount": 60,
        "totalTokenCount": 450,
    },
    "modelVersion": "gemini-2.5-flash",
}
GEMINI_STREAM = [  # every chunk repeats the running usageMetadata; the last one is final
    {"candidates": [], "usageMetadata": {"promptTokenCount": 100, "candidatesTokenCount": 2}},
    {"candidates": [], "usageMetadata": {"promptTokenCount": 100, "candidatesTokenCount": 9}},
    {
        "candidates": [],
        "usageMetadata": {
            "promptTokenCount": 100,
            "candidatesTokenCount": 17,
            "totalTokenCount": 117,
        },
    },
]
LITELLM_ANTHROPIC = {  # litellm.ModelResponse for a cached Anthropic call, as a dict
    "model": "claude-sonnet-4-5-20250929",
    "usage": {
        "prompt_tokens": 9225,  # LiteLLM adds cache reads and writes in, like OpenAI
        "completion_tokens": 410,
        "total_tokens": 9635,
        "prompt_tokens_details": {"cached_tokens": 8000, "cache_creation_tokens": 1200},
        "cache_creation_input_tokens": 1200,
        "cache_read_input_tokens": 8000,
    },
}


@BOTH
def test_openai_responses_stream_reads_usage_from_response_completed(shape):
    """Responses API streams: only response.completed's nested response carries usage."""
    events = [shape(e) for e in OPENAI_RESPONSES_STREAM]
    assert [extract(e) for e in events[:-1]] == [EMPTY, EMPTY]
    assert reduce(merge, map(extract, events), EMPTY) == Usage(1200, 300, 1024, None, 256)
    assert response_model(events[-1]) == "gpt-5-2025-08-07"


@BOTH
def test_bedrock_converse_stream_reads_usage_from_the_metadata_event(shape):
    """Bedrock ConverseStream's closing metadata event carries the usage."""
    events = [shape(e) for e in BEDROCK_CONVERSE_STREAM]
    assert [extract(e) for e in events[:-1]] == [EMPTY] * 4
    assert reduce(merge, map(extract, events), EMPTY) == Usage(520, 9, 500, 0, None)


@BOTH
def test_gemini_tool_use_prompt_tokens_count_as_input(shape):
    """Gemini's toolUsePromptTokenCount is input outside promptTokenCount: it is added in."""
    assert extract(shape(GEMINI_TOOL_USE)) == Usage(350, 100, None, None, 60)


def test_gemini_snake_case_tool_use_prompt_tokens():
    """The google-genai SDK's tool_use_prompt_token_count is read like the camelCase one."""
    block = {
        "prompt_token_count": 10,
        "candidates_token_count": 2,
        "tool_use_prompt_token_count": 5,
    }
    assert from_usage_block(block) == Usage(15, 2, None, None, None)


def test_gemini_stream_running_totals_end_with_the_last_chunk():
    """Gemini streams repeat running totals in every chunk: the fold is the last chunk's."""
    assert reduce(merge, map(extract, GEMINI_STREAM), EMPTY) == Usage(100, 17, None, None, None)


@BOTH
def test_litellm_usage_keeps_cache_writes(shape):
    """LiteLLM's normalised usage yields cache reads and writes without double counting."""
    assert extract(shape(LITELLM_ANTHROPIC)) == Usage(9225, 410, 8000, 1200, None)
    only_top_level = {
        "usage": {"prompt_tokens": 50, "completion_tokens": 5, "cache_creation_input_tokens": 30}
    }
    assert extract(shape(only_top_level)) == Usage(50, 5, None, 30, None)


def test_responses_and_metadata_keys_without_usage_are_empty():
    """A nested response or metadata without a usage block gives EMPTY, never a guess."""
    for response in (
        {"response": None},
        {"response": {"id": "resp_1"}},
        {"metadata": {"user_id": "abc"}},
        {"metadata": "x"},
        SimpleNamespace(response=SimpleNamespace(status_code=200)),
    ):
        assert extract(response) == EMPTY


@pytest.mark.parametrize(
    ("payload", "provider", "flavor"),
    [
        pytest.param(GEMINI_TOOL_USE, "google", "default", id="gemini-tool-use"),
        pytest.param(
            OPENAI_RESPONSES_STREAM[-1]["response"], "openai", "responses", id="responses"
        ),
    ],
)
def test_new_shapes_agree_with_genai_prices_extractors(payload, provider, flavor):
    """The added shapes count input, output and cache reads as genai-prices' extractors do."""
    theirs = genai_prices.extract_usage(payload, provider_id=provider, api_flavor=flavor).usage
    ours = extract(payload)
    assert (ours.input, ours.output) == (theirs.input_tokens, theirs.output_tokens)
    assert (ours.cache_read or 0) == (theirs.cache_read_tokens or 0)


_COUNTS = st.one_of(
    st.integers(min_value=-5, max_value=2**64),
    st.booleans(),
    st.none(),
    st.floats(allow_nan=True),
    st.text(max_size=3),
)


@settings(max_examples=300, deadline=None, database=None)
@given(input_tokens=_COUNTS, output_tokens=_COUNTS)
@example(input_tokens=MAX_TOKENS - 1, output_tokens=0)
@example(input_tokens=MAX_TOKENS, output_tokens=0)
@example(input_tokens=0, output_tokens=-1)
@example(input_tokens=True, output_tokens=1)
def test_usage_fast_path_equals_the_general_path(input_tokens, output_tokens):
    """usage(input_tokens=, output_tokens=) on a fresh attempt records what the general path
    records for the same two values, whatever they are."""
    fast = Attempt("openai", "gpt-4o-mini")
    fast.usage(input_tokens=input_tokens, output_tokens=output_tokens)
    general = Attempt("openai", "gpt-4o-mini")
    try:
        general._merge_usage(None, (input_tokens, output_tokens, None, None, None))
    except Exception:
        general.used = EMPTY  # usage() reports a failure and keeps what it had
    assert fast.used == general.used
    assert type(fast.used) is type(general.used)


@settings(max_examples=200, deadline=None, database=None)
@given(responses)
def test_first_response_report_equals_the_merging_path(response):
    """usage(response) as an attempt's first report records what merging it into an empty
    usage (the path every later report takes) records, and the same response model."""
    fast = Attempt("openai", "gpt-4o-mini")
    fast.usage(response)
    merged = Attempt("openai", "gpt-4o-mini")
    merged.used = Usage(None, None, None, None, None)  # equal to EMPTY, not EMPTY itself
    merged.usage(response)
    assert fast.used == merged.used
    assert type(fast.used) is Usage
    assert fast.response_model == merged.response_model


_count = st.one_of(
    st.none(),
    st.integers(-5, 2**40),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=3),
)
_details = st.one_of(
    st.none(),
    st.dictionaries(
        st.sampled_from(
            ["cached_tokens", "cache_creation_tokens", "cache_write_tokens", "reasoning_tokens"]
        ),
        _count,
    ),
    st.integers(0, 9),
)
_blocks = st.dictionaries(
    st.sampled_from(
        [
            "prompt_tokens",
            "completion_tokens",
            "total_tokens",
            "cache_creation_input_tokens",
            "input_tokens",
            "output_tokens",
            "cache_read_input_tokens",
        ]
    ),
    _count,
) | st.builds(
    lambda b, p, c: {**b, "prompt_tokens_details": p, "completion_tokens_details": c},
    st.dictionaries(st.sampled_from(["prompt_tokens", "completion_tokens"]), _count),
    _details,
    _details,
)


@settings(max_examples=400, deadline=None, database=None)
@given(block=_blocks, model=st.one_of(st.none(), st.text(max_size=5), st.integers()))
def test_the_dict_fast_path_reads_what_the_general_path_reads(block, model):
    """A plain-dict response takes a shortcut (in ``extract`` and in an attempt's first
    ``usage()``); read through any other Mapping (the general path) it gives the same usage and
    response model, whatever the values."""
    response = {"usage": block, "model": model}
    general = MappingProxyType({**response, "usage": MappingProxyType(block)})
    assert extract(response) == extract(general)
    assert response_model(response) == response_model(general)
    fast, slow = Attempt("openai", "gpt-4o-mini"), Attempt("openai", "gpt-4o-mini")
    fast.usage(response)
    slow.usage(general)
    assert (fast.used, fast.response_model) == (slow.used, slow.response_model)
    assert type(fast.used) is Usage
