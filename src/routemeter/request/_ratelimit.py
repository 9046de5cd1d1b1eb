"""Upstream rate-limit headroom read from the response headers providers send.

OpenAI (and the OpenAI-compatible APIs: Azure OpenAI, Groq, Together, Fireworks, OpenRouter,
vLLM, ...) send ``x-ratelimit-remaining-requests`` and ``x-ratelimit-remaining-tokens``.
Anthropic sends ``anthropic-ratelimit-requests-remaining`` and
``anthropic-ratelimit-tokens-remaining``, the latter being, in Anthropic's words, the value of
the most restrictive token limit in effect; it also sends the input- and output-token limits
separately (``anthropic-ratelimit-input-tokens-remaining``, ``..-output-tokens-remaining``). When
only those two are present, ``tokens`` is the smaller of them: the same "most restrictive"
meaning. LiteLLM forwards provider headers with an ``llm_provider-`` prefix; the prefixed names
are read too. Values that are not finite non-negative numbers are ignored.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any, Final, NamedTuple

from routemeter._report import report
from routemeter.request._events import ratelimit_remaining

_PREFIX: Final = "llm_provider-"

_REQUESTS: Final = "requests"
_TOKENS: Final = "tokens"
_INPUT: Final = "input"
_OUTPUT: Final = "output"

_NAMES: Final = {
    "x-ratelimit-remaining-requests": _REQUESTS,
    "x-ratelimit-remaining-tokens": _TOKENS,
    "anthropic-ratelimit-requests-remaining": _REQUESTS,
    "anthropic-ratelimit-tokens-remaining": _TOKENS,
    "anthropic-ratelimit-input-tokens-remaining": _INPUT,
    "anthropic-ratelimit-output-tokens-remaining": _OUTPUT,
}
"""Lower-case header name -> what it measures."""

MAX_HEADERS: Final = 1000
"""Headers scanned per response at most: a pathological response cannot make this slow."""


class Remaining(NamedTuple):
    """Headroom a provider reported; ``None`` where it reported nothing usable."""

    requests: float | None = None
    tokens: float | None = None


NOTHING: Final = Remaining()


def _number(value: Any) -> float | None:
    if isinstance(value, bytes):
        value = value.decode("latin-1")
    if isinstance(value, str):
        try:
            number = float(value.strip())
        except ValueError:
            return None
    elif type(value) in (int, float):
        number = float(value)
    else:
        return None
    return number if math.isfinite(number) and number >= 0 else None


def _items(headers: Any) -> Iterable[tuple[Any, Any]]:
    """(name, value) pairs from a mapping, an ``httpx.Headers``, a list of pairs, or an object
    carrying ``headers`` (an ``httpx.Response``, an SDK error or raw response)."""
    if headers is None:
        return ()
    if not isinstance(headers, (Mapping, list, tuple)) and not hasattr(headers, "items"):
        carried = getattr(headers, "headers", None)
        if carried is None:
            carried = getattr(getattr(headers, "response", None), "headers", None)
        headers = carried
        if headers is None:
            return ()
    items = getattr(headers, "items", None)
    if callable(items):
        return items()  # type: ignore[no-any-return]
    if isinstance(headers, (list, tuple)):
        return (pair for pair in headers if isinstance(pair, tuple) and len(pair) == 2)
    return ()


def parse(headers: Any) -> Remaining:
    """The requests and tokens remaining that ``headers`` report; never raises."""
    found: dict[str, float] = {}
    try:
        for n, (name, value) in enumerate(_items(headers)):
            if n >= MAX_HEADERS:
                break
            if isinstance(name, bytes):
                name = name.decode("latin-1")
            if not isinstance(name, str):
                continue
            key = name.lower()
            if key.startswith(_PREFIX):
                key = key[len(_PREFIX) :]
            kind = _NAMES.get(key)
            if kind is None or kind in found:
                continue
            number = _number(value)
            if number is not None:
                found[kind] = number
    except Exception as e:  # an exotic headers object whose iteration fails
        report("rate-limit headers", e)
        return NOTHING
    if not found:
        return NOTHING
    tokens = found.get(_TOKENS)
    if tokens is None:
        split = [found[k] for k in (_INPUT, _OUTPUT) if k in found]
        tokens = min(split) if split else None
    return Remaining(found.get(_REQUESTS), tokens)


def ratelimit_from_headers(provider: str, model: str, headers: Any) -> None:
    """Record the upstream headroom ``headers`` report for ``provider``/``model``
    (``llm.router.ratelimit.remaining.requests`` and ``llm.router.ratelimit.remaining.tokens``).

    ``headers``: a mapping (any key case), an ``httpx.Headers``, a list of (name, value) pairs,
    or an object with ``headers`` (``httpx.Response``, an OpenAI/Anthropic SDK error or raw
    response). Reads the OpenAI ``x-ratelimit-remaining-{requests,tokens}`` and Anthropic
    ``anthropic-ratelimit-*-remaining`` headers; headers that are missing or not numbers are
    skipped. Never raises.
    """
    remaining = parse(headers)
    if remaining is not NOTHING:
        ratelimit_remaining(provider, model, requests=remaining.requests, tokens=remaining.tokens)
