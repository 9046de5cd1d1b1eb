"""Never raise into the host framework: the LiteLLM callback's every hook, and the rate-limit
header reader integrations share, take generated junk (LiteLLM-shaped or not) without raising,
without losing or corrupting anything routemeter recorded before or after."""

from __future__ import annotations

import asyncio
import importlib.util
import os
from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # no network at import
if importlib.util.find_spec("litellm") is None:  # a dev dependency: CI must never skip
    if os.environ.get("CI") == "true":
        pytest.fail("litellm is missing: pip install -e '.[dev]'", pytrace=False)
    pytest.skip("litellm is missing: pip install -e '.[dev]'", allow_module_level=True)

import routemeter
from routemeter import ratelimit_from_headers
from routemeter.integrations.litellm import RoutemeterCallback
from routemeter.testing import capture

from .junk import (
    JunkStatus,
    NastyStatus,
    check_exportable,
    junk,
    scalars,
    usage_shaped,
)

pytestmark = [
    pytest.mark.filterwarnings(
        "ignore:Items? .* on TypedDict class .* (is|are) using the `ReadOnly` qualifier:UserWarning"
    ),
    pytest.mark.filterwarnings(
        "ignore:Accessing the 'model_.*' attribute on the instance is deprecated:DeprecationWarning"
    ),
]

_KEYS = (
    "litellm_call_id", "litellm_trace_id", "model", "custom_llm_provider", "stream",
    "call_type", "response_cost", "messages", "optional_params", "exception", "cache_hit",
    "standard_logging_object", "api_base", "metadata", "litellm_metadata", "model_group",
    "original_model_group", "deployment", "user_api_key", "user_api_key_user_email",
)  # fmt: skip
_IDS = st.sampled_from(["call-1", "call-2", "trace-1", "trace-2"])


def _litellm_kwargs() -> st.SearchStrategy[Any]:
    ids = st.one_of(_IDS, scalars)
    metadata = st.dictionaries(st.sampled_from(_KEYS), st.one_of(_IDS, junk), max_size=4)
    params = st.fixed_dictionaries(
        {},
        optional={
            "metadata": st.one_of(metadata, junk),
            "litellm_metadata": metadata,
            "api_base": st.one_of(st.sampled_from(["http://127.0.0.1:1", "::bad::"]), scalars),
            "custom_llm_provider": st.one_of(st.sampled_from(["openai", "anthropic"]), scalars),
        },
    )
    shaped = st.fixed_dictionaries(
        {},
        optional={
            "litellm_call_id": ids,
            "litellm_trace_id": ids,
            "model": st.one_of(st.sampled_from(["gpt-4o-mini", "openai/gpt-4o"]), scalars),
            "custom_llm_provider": st.one_of(st.just("openai"), scalars),
            "litellm_params": st.one_of(params, junk),
            "metadata": metadata,
            "stream": scalars,
            "call_type": st.one_of(st.sampled_from(["acompletion", "embedding"]), scalars),
        },
    )
    return st.one_of(shaped, st.dictionaries(st.sampled_from(_KEYS), junk, max_size=4), junk)


times = st.one_of(
    scalars,
    st.datetimes(min_value=datetime(1970, 1, 2), max_value=datetime(2200, 1, 1)),
    st.just(datetime.now()),
    st.just(datetime.now() + timedelta(days=365 * 100)),
)
exceptions = st.one_of(st.builds(NastyStatus), st.builds(JunkStatus, junk), junk)
events = st.lists(
    st.one_of(
        st.tuples(st.just("pre"), junk, junk, _litellm_kwargs()),
        st.tuples(st.sampled_from(["success", "failure", "async_success", "async_failure"]),
                  _litellm_kwargs(), st.one_of(usage_shaped, exceptions), times, times),
        st.tuples(st.just("proxy_request"), junk, junk, _litellm_kwargs(), junk),
        st.tuples(st.just("proxy_failure"), _litellm_kwargs(), exceptions, junk),
        st.tuples(st.just("watch"), junk),
        st.tuples(st.just("headers"), junk, junk, st.one_of(
            st.dictionaries(st.sampled_from([
                "x-ratelimit-remaining-requests", "x-ratelimit-remaining-tokens",
                "anthropic-ratelimit-requests-remaining", "retry-after",
            ]), scalars, max_size=3), junk)),
    ),
    max_size=5,
)  # fmt: skip

_loop = asyncio.new_event_loop()


@pytest.fixture(scope="module", autouse=True)
def _close_loop() -> Iterator[None]:
    yield
    _loop.close()


def fire(callback: RoutemeterCallback, event: tuple[Any, ...]) -> None:
    name, *args = event
    if name == "pre":
        callback.log_pre_api_call(*args)
    elif name == "success":
        callback.log_success_event(*args)
    elif name == "failure":
        callback.log_failure_event(*args)
    elif name == "async_success":
        _loop.run_until_complete(callback.async_log_success_event(*args))
    elif name == "async_failure":
        _loop.run_until_complete(callback.async_log_failure_event(*args))
    elif name == "proxy_request":
        _loop.run_until_complete(callback.async_pre_call_hook(*args))
    elif name == "proxy_failure":
        _loop.run_until_complete(callback.async_post_call_failure_hook(*args))
    elif name == "watch":
        callback.watch(*args)
    else:
        ratelimit_from_headers(*args)


@routemeter.route("baseline")
def baseline() -> None:
    with routemeter.current().attempt("openai", "gpt-4o-mini") as a:
        a.usage(input_tokens=3, output_tokens=4)


@settings(
    max_examples=500,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(events=events)
def test_litellm_callback_hooks_never_raise(events):
    """LiteLLM callback hooks and header parsing take junk without raising or corrupting."""
    with capture() as metrics:
        callback = RoutemeterCallback(settle_s=0.01, idle_s=0.05)
        try:
            baseline()
            for event in events:
                fire(callback, event)
            callback.flush()
            baseline()
        finally:
            callback.close()
        base = {"llm.router.route": "baseline"}
        assert metrics.count("gen_ai.server.request.duration", base) == 2
        assert metrics.value("llm.router.usage.tokens", base) == 14
        check_exportable(metrics.reader.get_metrics_data())
