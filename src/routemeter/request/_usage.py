"""Token usage from the response shapes routers actually see, objects or dicts alike.

Normalised to OpenAI's meaning (semconv's too): ``input`` counts every input token, cached ones
included, so Anthropic's ``input_tokens`` (which excludes cache reads and writes) is added up.

Streams that report usage once, in their last event, are read from that event: OpenAI chat's
final chunk (``stream_options.include_usage``), Anthropic's ``message_start``/``message_delta``,
OpenAI Responses' ``response.completed`` (``{"response": {"usage": ...}}``) and Bedrock
ConverseStream's ``metadata`` event (``{"metadata": {"usage": ...}}``).
"""

from __future__ import annotations

import math
import sys
from collections.abc import Callable, Mapping
from typing import Any, Final, NamedTuple

MAX_TOKENS: Final = 1 << 53


class Usage(NamedTuple):
    input: int | None = None
    output: int | None = None
    cache_read: int | None = None
    cache_creation: int | None = None
    reasoning: int | None = None


EMPTY: Final = Usage()


def _get(obj: Any, key: str) -> Any:
    """``obj.get(key)`` for a mapping, else ``getattr(obj, key, None)``, read the way ``obj``'s
    type reads fastest (``_reader``)."""
    if type(obj) is dict:
        return obj.get(key)
    if obj is None:
        return None
    read = _readers.get(type(obj))
    if read is None:
        read = _reader(type(obj))
    return read(obj, key)


def _mapping_get(obj: Any, key: str) -> Any:
    return obj.get(key)


def _attribute_get(obj: Any, key: str) -> Any:
    return getattr(obj, key, None)


def _pydantic_get(obj: Any, key: str) -> Any:
    """``getattr(obj, key, None)`` for a pydantic v2 model, without the exception a missing
    attribute costs there (about 2 µs, raised by its ``__getattr__``): what that lookup would
    find, in the order it looks. A name the class itself has (a property, a method, a private
    attribute) takes the real lookup."""
    if key in obj.__dict__:  # a field: the real lookup finds it cheaply
        return getattr(obj, key, None)
    cls = type(obj)
    on_class = _on_class.get((cls, key))
    if on_class is None:
        on_class = _class_has(cls, key)
    if on_class:
        return getattr(obj, key, None)
    extra = getattr(obj, "__pydantic_extra__", None)
    return extra.get(key) if extra else None


_MAX_TYPES: Final = 1_000
_readers: dict[type, Callable[[Any, str], Any]] = {}
"""How each type seen is read (``_reader``), up to ``_MAX_TYPES`` types."""
_on_class: dict[tuple[type, str], bool] = {}


def _reader(cls: type) -> Callable[[Any, str], Any]:
    """A mapping's ``get``; pydantic v2 models' fields and extras read directly (their type's
    attribute lookup is pydantic's own); any other object's attributes."""
    read: Callable[[Any, str], Any] = _attribute_get
    if issubclass(cls, Mapping):
        read = _mapping_get
    elif _pydantic_model(cls):
        read = _pydantic_get
    if len(_readers) < _MAX_TYPES:
        _readers[cls] = read
    return read


def _pydantic_model(cls: type) -> bool:
    """A pydantic v2 model whose attribute lookup is pydantic's, unchanged (pydantic is never
    imported here: a model's module has imported it)."""
    main = sys.modules.get("pydantic.main")
    base = getattr(main, "BaseModel", None)
    return (
        isinstance(base, type)
        and issubclass(cls, base)
        and getattr(cls, "__getattr__", None) is getattr(base, "__getattr__", None)
        and cls.__getattribute__ is object.__getattribute__
    )


def _class_has(cls: type, key: str) -> bool:
    try:
        found = hasattr(cls, key) or key in (getattr(cls, "__private_attributes__", None) or {})
    except Exception:  # a class whose lookup fails: always take the real lookup
        found = True
    if len(_on_class) < _MAX_TYPES:
        _on_class[(cls, key)] = found
    return found


def tokens(value: Any) -> int | None:
    """A token count, or None for anything that is not a sane non-negative number."""
    if type(value) is int:
        return value if 0 <= value < MAX_TOKENS else None
    if type(value) is float and math.isfinite(value) and 0 <= value < MAX_TOKENS:
        return int(value)
    return None


def _plus(*values: int | None) -> int | None:
    present = [v for v in values if v is not None]
    return sum(present) if present else None


_GEMINI_KEYS: Final = (
    (
        "promptTokenCount",
        "candidatesTokenCount",
        "cachedContentTokenCount",
        "thoughtsTokenCount",
        "toolUsePromptTokenCount",
    ),
    (
        "prompt_token_count",
        "candidates_token_count",
        "cached_content_token_count",
        "thoughts_token_count",
        "tool_use_prompt_token_count",
    ),
)


def _cache_writes(u: Any, details: Any) -> int | None:
    """Cache writes in an OpenAI-shaped block: LiteLLM's normalised usage carries them (its
    ``prompt_tokens`` already includes them) as ``prompt_tokens_details.cache_creation_tokens``
    or the top-level ``cache_creation_input_tokens``."""
    for value in (
        _get(details, "cache_creation_tokens"),
        _get(details, "cache_write_tokens"),
        _get(u, "cache_creation_input_tokens"),
    ):
        if value is not None:
            return tokens(value)
    return None


def from_usage_block(u: Any) -> Usage:
    """Read one provider ``usage`` block (OpenAI chat/responses, Anthropic, Gemini, Bedrock)."""
    if u is None:
        return EMPTY
    prompt = tokens(_get(u, "prompt_tokens"))
    if prompt is not None or _get(u, "completion_tokens") is not None:  # OpenAI chat
        details = _get(u, "prompt_tokens_details")
        return Usage(
            prompt,
            tokens(_get(u, "completion_tokens")),
            tokens(_get(details, "cached_tokens")),
            _cache_writes(u, details),
            tokens(_get(_get(u, "completion_tokens_details"), "reasoning_tokens")),
        )
    cache_read = tokens(_get(u, "cache_read_input_tokens"))
    cache_write = tokens(_get(u, "cache_creation_input_tokens"))
    if cache_read is not None or cache_write is not None:  # Anthropic: input excludes cache
        return Usage(
            tokens(_plus(tokens(_get(u, "input_tokens")), cache_read, cache_write)),
            tokens(_get(u, "output_tokens")),
            cache_read,
            cache_write,
            None,
        )
    if _get(u, "input_tokens") is not None or _get(u, "output_tokens") is not None:
        return Usage(  # OpenAI Responses API, or Anthropic without cache fields
            tokens(_get(u, "input_tokens")),
            tokens(_get(u, "output_tokens")),
            tokens(_get(_get(u, "input_tokens_details"), "cached_tokens")),
            None,
            tokens(_get(_get(u, "output_tokens_details"), "reasoning_tokens")),
        )
    for prompt_k, cand_k, cached_k, thoughts_k, tool_k in _GEMINI_KEYS:
        if _get(u, prompt_k) is not None or _get(u, cand_k) is not None:
            thoughts = tokens(_get(u, thoughts_k))
            # Gemini usageMetadata: candidates exclude thoughts, the prompt excludes tool use
            return Usage(
                tokens(_plus(tokens(_get(u, prompt_k)), tokens(_get(u, tool_k)))),
                tokens(_plus(tokens(_get(u, cand_k)), thoughts)),
                tokens(_get(u, cached_k)),
                None,
                thoughts,
            )
    if _get(u, "inputTokens") is not None or _get(u, "outputTokens") is not None:
        read, write = (
            tokens(_get(u, "cacheReadInputTokens")),
            tokens(_get(u, "cacheWriteInputTokens")),
        )
        return Usage(  # Bedrock Converse: inputTokens excludes cache reads and writes
            tokens(_plus(tokens(_get(u, "inputTokens")), read, write)),
            tokens(_get(u, "outputTokens")),
            read,
            write,
            None,
        )
    return EMPTY


_new_usage = tuple.__new__  # a Usage without the namedtuple's Python-level __new__


def openai_dict(u: dict[str, Any]) -> Usage | None:
    """``from_usage_block`` for the commonest block, an OpenAI chat ``usage`` dict whose details
    are dicts too, in plain dict lookups; ``None`` for any other shape (the general path then
    reads it; ``tests/request/test_usage.py`` holds both to the same answers)."""
    prompt = u.get("prompt_tokens")
    if type(prompt) is not int or not 0 <= prompt < MAX_TOKENS:  # tokens(), inlined
        prompt = tokens(prompt)
    completion = u.get("completion_tokens")
    if prompt is None and completion is None:  # from_usage_block's test, exactly
        return None
    if type(completion) is not int or not 0 <= completion < MAX_TOKENS:
        completion = tokens(completion)
    details = u.get("prompt_tokens_details")
    finished = u.get("completion_tokens_details")
    if details is None:
        cached = writes = None
    elif type(details) is dict:
        cached = details.get("cached_tokens")
        writes = details.get("cache_creation_tokens")
        if writes is None:
            writes = details.get("cache_write_tokens")
    else:
        return None
    if writes is None:
        writes = u.get("cache_creation_input_tokens")
    if finished is None:
        reasoning = None
    elif type(finished) is dict:
        reasoning = finished.get("reasoning_tokens")
    else:
        return None
    return _new_usage(
        Usage,
        (
            prompt,
            completion,
            cached if cached is None else tokens(cached),
            writes if writes is None else tokens(writes),
            reasoning if reasoning is None else tokens(reasoning),
        ),
    )


def anthropic_dict(u: dict[str, Any]) -> Usage | None:
    """``from_usage_block`` for an Anthropic message's ``usage`` dict with its cache fields, in
    plain dict lookups; ``None`` for any other shape (``tests/request/test_usage.py`` holds both
    to the same answers)."""
    if u.get("prompt_tokens") is not None or u.get("completion_tokens") is not None:
        return None
    read = tokens(u.get("cache_read_input_tokens"))
    write = tokens(u.get("cache_creation_input_tokens"))
    if read is None and write is None:
        return None
    total = tokens((tokens(u.get("input_tokens")) or 0) + (read or 0) + (write or 0))
    return _new_usage(Usage, (total, tokens(u.get("output_tokens")), read, write, None))


def dict_usage(u: dict[str, Any]) -> Usage | None:
    """A usage dict read by the shortcut its shape has (OpenAI chat, Anthropic message); ``None``
    when neither fits and the general path must read it."""
    return openai_dict(u) or anthropic_dict(u)


_CARRIERS: Final = ("usage", "message", "usageMetadata", "usage_metadata", "response", "metadata")
"""Where ``extract`` looks for a usage block in a response or streaming event."""
_READ_NAMES: Final = frozenset(
    {
        *_CARRIERS,
        "model",
        "input_tokens",
        "output_tokens",
        "cache_read_input_tokens",
        "prompt_tokens",
        "completion_tokens",
        "prompt_tokens_details",
        "completion_tokens_details",
        "cached_tokens",
        "cache_creation_tokens",
        "cache_write_tokens",
        "cache_creation_input_tokens",
        "reasoning_tokens",
    }
)
"""Every name ``extract``'s carriers, ``openai_dict``, ``anthropic_dict`` and ``response_model``
read."""
_plain: dict[type, bool] = {}


def fields_of(obj: Any) -> dict[str, Any] | None:
    """A pydantic v2 model's attributes as one dict (fields and extras) when reading it by the
    names in ``_READ_NAMES`` gives what reading its attributes gives (pydantic's own lookup,
    none of those names on its class); ``None`` for anything else."""
    cls = type(obj)
    plain = _plain.get(cls)
    if plain is None:
        plain = _pydantic_model(cls) and not any(_class_has(cls, n) for n in _READ_NAMES)
        if len(_plain) < _MAX_TYPES:
            _plain[cls] = plain
    if not plain:
        return None
    extra = getattr(obj, "__pydantic_extra__", None)
    return {**extra, **obj.__dict__} if extra else obj.__dict__


def _carries_nothing(fields: dict[str, Any]) -> bool:
    """No usage block where ``extract`` looks, ``usage`` aside (the caller found none there)."""
    get = fields.get
    return (
        get("message") is None
        and get("usageMetadata") is None
        and get("usage_metadata") is None
        and get("response") is None
        and get("metadata") is None
    )


def _as_dict(value: Any) -> dict[str, Any] | None:
    return value if type(value) is dict else fields_of(value)


def model_usage(fields: dict[str, Any]) -> Usage | None:
    """``openai_dict`` or ``anthropic_dict`` for a response that is a pydantic model (the openai
    and anthropic SDKs', LiteLLM's; ``fields``: ``fields_of(response)``), its usage block and
    details models or dicts; ``EMPTY`` when it carries no usage block anywhere ``extract`` looks
    (a streaming chunk's usual case); ``None`` for any other shape."""
    block = fields.get("usage")
    if block is None:
        return EMPTY if _carries_nothing(fields) else None
    u = _as_dict(block)
    if u is None:
        return None
    details = u.get("prompt_tokens_details")
    finished = u.get("completion_tokens_details")
    if details is not None and type(details) is not dict:
        details = fields_of(details)
        if details is None:
            return None
    if finished is not None and type(finished) is not dict:
        finished = fields_of(finished)
        if finished is None:
            return None
    block = {**u, "prompt_tokens_details": details, "completion_tokens_details": finished}
    return dict_usage(block)


def extract(response: Any) -> Usage:
    """Usage carried by a response or a streaming event; ``EMPTY`` when it carries none."""
    if type(response) is dict:
        block = response.get("usage")
        if type(block) is dict:
            found = dict_usage(block)
            if found is not None:
                return found
        elif block is None and _carries_nothing(response):
            return EMPTY  # a streaming chunk's usual case
    elif response is not None:
        fields = fields_of(response)
        if fields is not None:
            found = model_usage(fields)
            if found is not None:
                return found
    if response is None or isinstance(response, (str, bytes, int, float)):
        return EMPTY
    block = _get(response, "usage")
    if block is None:
        message = _get(response, "message")  # Anthropic message_start event
        block = _get(message, "usage") if message is not None else None
    if block is None:
        block = _get(response, "usageMetadata") or _get(response, "usage_metadata")
    if block is None:  # OpenAI Responses stream: response.completed carries the response
        inner = _get(response, "response")
        block = _get(inner, "usage") if inner is not None else None
    if block is None:  # Bedrock ConverseStream: the closing metadata event
        meta = _get(response, "metadata")
        block = _get(meta, "usage") if meta is not None else None
    return from_usage_block(block) if block is not None else EMPTY


def merge(old: Usage, new: Usage) -> Usage:
    """Later reports win field by field: streaming events carry running totals."""
    if new is EMPTY:
        return old
    return Usage(*(n if n is not None else o for o, n in zip(old, new, strict=True)))


def response_model(response: Any) -> str | None:
    """The model a response says served it (``model``, or Anthropic's ``message.model``)."""
    if type(response) is dict:
        found = response.get("model")
        if type(found) is str:
            return found
    if response is None or isinstance(response, (str, bytes, int, float)):
        return None
    model = _get(response, "model")
    if model is None:
        model = (
            _get(_get(response, "message"), "model")
            or _get(response, "modelVersion")
            or _get(response, "model_version")
            or _get(_get(response, "response"), "model")
        )
    return model if isinstance(model, str) else None
