"""Hypothesis strategies for hostile input, and the invariants recorded data must keep."""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from typing import Any

from hypothesis import strategies as st
from opentelemetry.exporter.otlp.proto.common.metrics_encoder import encode_metrics
from opentelemetry.sdk.metrics.export import MetricsData

from routemeter.recording._semconv import OTHER
from routemeter.request._safe import acceptable

INT64_MAX = 2**63 - 1
HUGE_STRING = "x" * 1_000_000


def huge_string() -> str:
    """A one-megabyte string (built, so the strategy's repr stays small)."""
    return HUGE_STRING


class Boom(Exception):
    """What nasty objects raise from every dunder they define."""


class Nasty:
    """An object whose every protocol method raises: truthiness, hashing, equality, length,
    iteration, attribute access and conversion to str or number."""

    def __getattr__(self, name: str) -> Any:
        raise Boom(f"getattr {name}")

    def __bool__(self) -> bool:
        raise Boom("bool")

    def __hash__(self) -> int:
        raise Boom("hash")

    def __eq__(self, other: object) -> bool:
        raise Boom("eq")

    def __lt__(self, other: object) -> bool:
        raise Boom("lt")

    def __len__(self) -> int:
        raise Boom("len")

    def __iter__(self) -> Iterator[Any]:
        raise Boom("iter")

    def __str__(self) -> str:
        raise Boom("str")

    def __repr__(self) -> str:  # the one method that works, so failures can be reported
        return "Nasty()"

    def __int__(self) -> int:
        raise Boom("int")

    def __float__(self) -> float:
        raise Boom("float")

    def __index__(self) -> int:
        raise Boom("index")


class NastyMapping(Mapping[Any, Any]):
    """A Mapping whose lookups raise."""

    def __getitem__(self, key: Any) -> Any:
        raise Boom("getitem")

    def __iter__(self) -> Iterator[Any]:
        raise Boom("iter")

    def __len__(self) -> int:
        raise Boom("len")

    def get(self, key: Any, default: Any = None) -> Any:
        raise Boom("get")


class NastyStatus(Exception):
    """An upstream error whose ``status_code`` and ``response`` raise when read."""

    @property
    def status_code(self) -> Any:
        raise Boom("status_code")

    @property
    def response(self) -> Any:
        raise Boom("response")


class JunkStatus(Exception):
    """An upstream error carrying an arbitrary ``status_code``."""

    def __init__(self, status: Any) -> None:
        super().__init__("junk status")
        self.status_code = status


scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(min_value=2**53 - 2, max_value=2**70),
    st.integers(min_value=-(2**70), max_value=-1),
    st.sampled_from([0, 1, 429, 2**31, 2**53 - 1, 2**53, 2**63, 10**100, -(10**100)]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([math.nan, math.inf, -math.inf, 1e308, -0.0, 5e-324]),
    st.text(max_size=40),
    st.sampled_from(
        [
            "",
            " ",
            "gpt-4o",
            "openai",
            "_OTHER",
            "sk-proj-abcdefghijklmnopqrstuvwxyz0123",
            "a" * 129,
            "\x00\n\t",
            "é" * 10,
        ]
    ),
    st.builds(huge_string),
    st.binary(max_size=20),
    st.builds(Nasty),
    st.builds(NastyMapping),
    st.builds(object),
)


def _containers(children: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    hashable = st.one_of(st.integers(), st.text(max_size=5), st.none(), st.floats(), st.booleans())
    return st.one_of(
        st.lists(children, max_size=4),
        st.tuples(children, children),
        st.dictionaries(hashable, children, max_size=4),
        st.dictionaries(st.text(max_size=12), children, max_size=4),
        st.frozensets(hashable, max_size=3),
    )


junk = st.recursive(scalars, _containers, max_leaves=4)
"""Anything: None, NaN, infinities, negative and huge numbers, wrong types, nested junk,
dicts with non-string keys, enormous strings, and objects whose every method raises."""

_USAGE_KEYS = (
    "prompt_tokens",
    "completion_tokens",
    "total_tokens",
    "prompt_tokens_details",
    "completion_tokens_details",
    "cached_tokens",
    "reasoning_tokens",
    "input_tokens",
    "output_tokens",
    "cache_read_input_tokens",
    "cache_creation_input_tokens",
    "input_tokens_details",
    "output_tokens_details",
    "promptTokenCount",
    "candidatesTokenCount",
    "cachedContentTokenCount",
    "thoughtsTokenCount",
    "prompt_token_count",
    "candidates_token_count",
    "inputTokens",
    "outputTokens",
    "cacheReadInputTokens",
    "cacheWriteInputTokens",
)


def _usage_block(values: st.SearchStrategy[Any]) -> st.SearchStrategy[dict[str, Any]]:
    return st.dictionaries(st.sampled_from(_USAGE_KEYS), values, max_size=6)


usage_shaped = st.recursive(
    st.one_of(scalars, _usage_block(scalars)),
    lambda children: st.one_of(
        st.fixed_dictionaries(
            {"usage": st.one_of(children, _usage_block(children))},
            optional={"model": scalars, "message": children, "type": scalars},
        ),
        st.fixed_dictionaries({"message": st.fixed_dictionaries({"usage": children})}),
        st.fixed_dictionaries({"usageMetadata": children}, optional={"modelVersion": scalars}),
        st.fixed_dictionaries({"usage_metadata": children}),
        _usage_block(children),
        _containers(children),
    ),
    max_leaves=8,
)
"""Provider-response-shaped junk: the keys the extractors look for, with junk values."""


def check_exportable(data: MetricsData | None) -> None:
    """Every point is finite, fits OTLP's int64 and double, has bounded attribute values, and
    the whole collection encodes as an OTLP request (one bad value would drop every export)."""
    if data is None:
        return
    for rm in data.resource_metrics:
        for sm in rm.scope_metrics:
            for metric in sm.metrics:
                for dp in metric.data.data_points:
                    for key, value in (dp.attributes or {}).items():
                        if key == "otel.metric.overflow":
                            assert value is True
                        elif isinstance(value, str):
                            assert value == OTHER or acceptable(value), (metric.name, key, value)
                        else:
                            assert type(value) is int, (key, value)
                            assert 0 < value < 65536, (key, value)
                    value = getattr(dp, "value", None)
                    if type(value) is int:  # as_int: int64 on the wire
                        assert -INT64_MAX - 1 <= value <= INT64_MAX, (metric.name, value)
                    for name in ("value", "sum", "min", "max"):  # doubles on the wire
                        number = getattr(dp, name, None)
                        assert number is None or math.isfinite(number), (metric.name, number)
                    if hasattr(dp, "bucket_counts"):
                        assert sum(dp.bucket_counts) == dp.count, metric.name
    encode_metrics(data)
