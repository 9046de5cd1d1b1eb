"""Usage read from pydantic models (the openai SDK's responses, LiteLLM's) takes shortcuts past
pydantic's attribute lookup; each is pinned here to what that lookup gives."""

from __future__ import annotations

from types import MappingProxyType
from typing import Any, ClassVar

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

pydantic = pytest.importorskip("pydantic")

from routemeter.request._record import Attempt  # noqa: E402
from routemeter.request._usage import (  # noqa: E402
    _READ_NAMES,
    _get,
    extract,
    fields_of,
    model_usage,
    response_model,
)

NAMES = sorted(_READ_NAMES | {"input_tokens", "output_tokens", "other"})


class Allowing(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="allow")
    prompt_tokens: Any = None
    completion_tokens: Any = None
    prompt_tokens_details: Any = None


class Ignoring(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="ignore")
    prompt_tokens: Any = None
    cached_tokens: Any = 0


class WithProperty(Allowing):
    @property
    def cache_creation_input_tokens(self) -> int:
        return 7


class WithClassAttribute(Allowing):
    reasoning_tokens: ClassVar[int] = 3


class WithPrivate(Allowing):
    _usage: int = pydantic.PrivateAttr(default=5)


class WithGetattr(Allowing):
    def __getattr__(self, name: str) -> Any:
        return 42


MODELS = (Allowing, Ignoring, WithProperty, WithClassAttribute, WithPrivate, WithGetattr)
_values = st.one_of(st.none(), st.integers(-3, 2**40), st.text(max_size=3))
_data = st.dictionaries(st.sampled_from(NAMES), _values, max_size=6)


@settings(max_examples=300, deadline=None, database=None)
@given(model=st.sampled_from(MODELS), data=_data)
def test_model_attributes_read_as_getattr_reads_them(model, data):
    """Every name usage is read by gives what ``getattr(obj, name, None)`` gives, fields, extras,
    properties, class attributes and an overridden ``__getattr__`` alike."""
    obj = model.model_validate(data)
    fields = fields_of(obj)
    for name in NAMES:
        assert _get(obj, name) == getattr(obj, name, None)
        if fields is not None and name in _READ_NAMES:
            assert fields.get(name) == getattr(obj, name, None)


def test_only_plain_models_take_the_dict_shortcut():
    """A model whose class has one of the names read, or its own ``__getattr__``, is read
    attribute by attribute; so is anything that is not a pydantic v2 model."""
    assert fields_of(Allowing()) is not None
    assert fields_of(Ignoring()) is not None
    assert fields_of(WithPrivate()) is not None
    assert fields_of(WithProperty()) is None
    assert fields_of(WithClassAttribute()) is None
    assert fields_of(WithGetattr()) is None
    assert fields_of({"usage": {}}) is None
    assert fields_of(object()) is None


_count = st.one_of(st.none(), st.integers(0, 2**40))
_details = st.one_of(
    st.none(),
    st.fixed_dictionaries(
        {},
        optional={
            "cached_tokens": _count,
            "audio_tokens": _count,
            "cache_creation_tokens": _count,
            "cache_write_tokens": _count,
        },
    ),
)
_usages = st.fixed_dictionaries(
    {
        "prompt_tokens": st.integers(0, 2**40),
        "completion_tokens": st.integers(0, 2**40),
        "total_tokens": st.integers(0, 2**41),
    },
    optional={
        "prompt_tokens_details": _details,
        "completion_tokens_details": st.one_of(
            st.none(),
            st.fixed_dictionaries({}, optional={"reasoning_tokens": _count}),
        ),
        "cache_creation_input_tokens": _count,
    },
)


@settings(max_examples=200, deadline=None, database=None)
@given(usage=st.one_of(st.none(), _usages), model=st.sampled_from(["gpt-4o-mini", "o3"]))
def test_openai_sdk_responses_read_like_their_json(usage, model):
    """An openai SDK ``ChatCompletion`` gives the usage and response model its JSON gives, from
    ``extract`` and from an attempt's first ``usage()``."""
    chat = pytest.importorskip("openai.types.chat")
    payload: dict[str, Any] = {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": 1767225600,
        "model": model,
        "choices": [],
    }
    if usage is not None:
        payload["usage"] = usage
    response = chat.ChatCompletion.model_validate(payload)
    assert extract(response) == extract(payload)
    assert response_model(response) == response_model(payload)
    if usage is not None:
        assert model_usage(fields_of(response)) == extract(payload)
    from_model, from_json = Attempt("openai", model), Attempt("openai", model)
    from_model.usage(response)
    from_json.usage(payload)
    assert (from_model.used, from_model.response_model) == (
        from_json.used,
        from_json.response_model,
    )


class Loose(pydantic.BaseModel):
    """Every key an extra, as LiteLLM's and the SDKs' models keep fields they do not declare."""

    model_config = pydantic.ConfigDict(extra="allow")


class Declared(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="allow")
    usage: Any = None
    model: Any = None
    prompt_tokens: Any = None
    input_tokens: Any = None
    cache_read_input_tokens: Any = None
    prompt_tokens_details: Any = None


def as_model(value: Any, declared: bool) -> Any:
    """The same payload as pydantic models, its keys as extras or as declared fields."""
    if isinstance(value, dict):
        return (Declared if declared else Loose)(
            **{k: as_model(v, declared) for k, v in value.items()}
        )
    return value


_token = st.one_of(st.none(), st.integers(-3, 2**54), st.floats(0, 10), st.text(max_size=2))
_anthropic_block = st.fixed_dictionaries(
    {"input_tokens": _token, "output_tokens": _token},
    optional={"cache_read_input_tokens": _token, "cache_creation_input_tokens": _token},
)
_openai_block = st.fixed_dictionaries(
    {"prompt_tokens": _token, "completion_tokens": _token},
    optional={
        "total_tokens": _token,
        "cache_creation_input_tokens": _token,
        "prompt_tokens_details": st.none()
        | st.dictionaries(
            st.sampled_from(["cached_tokens", "cache_creation_tokens", "cache_write_tokens"]),
            _token,
        ),
        "completion_tokens_details": st.none()
        | st.dictionaries(st.just("reasoning_tokens"), _token),
    },
)
_block = (
    _anthropic_block
    | _openai_block
    | st.dictionaries(
        st.sampled_from(
            [
                "prompt_tokens",
                "completion_tokens",
                "input_tokens",
                "output_tokens",
                "cache_read_input_tokens",
                "cache_creation_input_tokens",
            ]
        ),
        _token,
    )
)
_payloads = st.builds(
    lambda block, model, carrier: (
        {"model": model, "choices": []}
        if carrier is None
        else {"message": {"usage": block, "model": model}}
        if carrier == "message"
        else {carrier: {"usage": block}, "model": model}
        if carrier in ("response", "metadata")
        else {carrier: block, "model": model}
    ),
    _block,
    st.one_of(st.none(), st.text(max_size=4)),
    st.sampled_from(
        [None, "usage", "usage", "usage", "message", "usageMetadata", "response", "metadata"]
    ),
)


def as_proxy(value: Any) -> Any:
    """The same payload as read-only mappings: ``extract`` reads those by its general path."""
    if isinstance(value, dict):
        return MappingProxyType({k: as_proxy(v) for k, v in value.items()})
    return value


@settings(max_examples=400, deadline=None, database=None)
@given(payload=_payloads, declared=st.booleans())
def test_model_trees_read_as_the_general_path_reads(payload, declared):
    """A response made of pydantic models, keys as extras or declared fields, or of plain dicts
    gives the usage and response model the general path gives for the same payload, from
    ``extract`` and from an attempt's first ``usage()``."""
    response, general = as_model(payload, declared), as_proxy(payload)
    assert extract(response) == extract(general)
    assert extract(payload) == extract(general)
    assert response_model(response) == response_model(general)
    from_model, from_general = Attempt("anthropic", "m"), Attempt("anthropic", "m")
    from_model.usage(response)
    from_general.usage(general)
    assert (from_model.used, from_model.response_model) == (
        from_general.used,
        from_general.response_model,
    )
