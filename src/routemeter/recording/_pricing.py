"""Per-token list prices, looked up once per (provider, model) and multiplied per request.

``genai_prices.calc_price`` costs about 115 µs a call; reading a model's rates once and
multiplying costs well under a microsecond, and gives the same figure (a test pins that).
"""

from __future__ import annotations

import functools
import json
import logging
import math
import os
import threading
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any, Final

from routemeter.request._safe import acceptable
from routemeter.request._usage import Usage

_log = logging.getLogger("routemeter")

Rate = tuple[tuple[int, float], ...]
"""(threshold, USD per token) pairs, highest threshold first, ending with (0, base)."""

_KEYS: Final = (
    "input_mtok",
    "output_mtok",
    "cache_read_mtok",
    "cache_write_mtok",
    "requests_kcount",
)


@dataclass(frozen=True, slots=True)
class Rates:
    input: Rate
    output: Rate
    cache_read: Rate
    cache_write: Rate
    per_request: float = 0.0
    flat: tuple[float, float, float, float] | None = field(default=None, compare=False)
    """Per-token (input, output, cache read, cache write) when no rate is tiered: the fast path."""

    def __post_init__(self) -> None:
        rates = (self.input, self.output, self.cache_read, self.cache_write)
        if all(len(r) == 1 for r in rates):
            object.__setattr__(self, "flat", tuple(r[0][1] for r in rates))

    def cost(self, usage: Usage) -> float:
        """USD for one attempt's usage; cache reads and writes are part of ``usage.input``."""
        total_in, output, cache_read, cache_write, _ = usage
        flat = self.flat
        if flat is not None and not cache_read and not cache_write:  # _measurements inlines this
            return self.per_request + (total_in or 0) * flat[0] + (output or 0) * flat[1]
        total_in = total_in or 0
        output = output or 0
        cache_read = cache_read or 0
        cache_write = cache_write or 0
        uncached = total_in - cache_read - cache_write
        if uncached < 0:
            uncached = 0
        if flat is not None:
            return (
                self.per_request
                + uncached * flat[0]
                + output * flat[1]
                + cache_read * flat[2]
                + cache_write * flat[3]
            )
        return (
            self.per_request
            + uncached * _at(self.input, total_in)
            + cache_read * _at(self.cache_read, total_in)
            + cache_write * _at(self.cache_write, total_in)
            + output * _at(self.output, total_in)
        )


def _at(rate: Rate, total_input: int) -> float:
    for start, per_token in rate:
        if total_input > start:
            return per_token
    return rate[-1][1]


def _per_unit(value: Any, per: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, Decimal, str)):
        raise ValueError(f"price must be a number, got {value!r}")
    try:
        price = float(Decimal(str(value))) / per
    except ArithmeticError:
        raise ValueError(f"price must be a number, got {value!r}") from None
    if not (price >= 0 and math.isfinite(price)):
        raise ValueError(f"price must be a finite non-negative number, got {value!r}")
    return price


def _rate(value: Any) -> Rate | None:
    """A genai-prices price (Decimal, TieredPrices) or a plain number, per million tokens."""
    if value is None:
        return None
    base = getattr(value, "base", None)
    tiers = getattr(value, "tiers", None)
    if base is not None and tiers is not None:
        steps = sorted(((int(t.start), _per_unit(t.price, 1e6)) for t in tiers), reverse=True)
        return (*steps, (0, _per_unit(base, 1e6)))
    return ((0, _per_unit(value, 1e6)),)


def rates_from_prices(prices: Mapping[str, Any]) -> Rates | None:
    """Rates from per-million prices; cache reads and writes default to the input rate."""
    input_rate = _rate(prices.get("input_mtok"))
    output_rate = _rate(prices.get("output_mtok"))
    per_request = prices.get("requests_kcount")
    if input_rate is None and output_rate is None and per_request is None:
        return None
    input_rate = input_rate or ((0, 0.0),)
    return Rates(
        input_rate,
        output_rate or ((0, 0.0),),
        _rate(prices.get("cache_read_mtok")) or input_rate,
        _rate(prices.get("cache_write_mtok")) or input_rate,
        _per_unit(per_request, 1e3) if per_request is not None else 0.0,
    )


class PriceTable(dict[tuple[str | None, str], Rates]):
    """A prices file's rates, and the file's name (``llm.router.prices.table``)."""

    source: str = ""


def load_prices_file(path: str) -> PriceTable:
    """Read a JSON or TOML prices file: a ``models`` list of ``{model, provider?, input_mtok,
    output_mtok, cache_read_mtok?, cache_write_mtok?}`` (USD per million tokens)."""
    raw = Path(path).read_bytes()
    data = tomllib.loads(raw.decode()) if path.endswith(".toml") else json.loads(raw)
    entries = data.get("models") if isinstance(data, dict) else None
    if not isinstance(entries, list):
        raise ValueError("expected a top-level 'models' list")
    table = PriceTable()
    table.source = os.path.basename(path)
    for i, entry in enumerate(entries):
        model = entry.get("model") if isinstance(entry, dict) else None
        if not isinstance(model, str) or not model:
            raise ValueError(f"models[{i}] needs a 'model' name")
        rates = rates_from_prices(entry)
        if rates is None:
            raise ValueError(
                f"models[{i}] ({model}) needs input_mtok, output_mtok or requests_kcount"
            )
        provider = entry.get("provider")
        table[(provider if isinstance(provider, str) else None, model.lower())] = rates
    return table


class Prices:
    """The process's price book: overrides first, then genai-prices; unknown models cost nothing."""

    def __init__(self, overrides: Mapping[tuple[str | None, str], Rates] | None = None) -> None:
        self._overrides = dict(overrides or {})
        self._cache: dict[tuple[str, str], Rates | None] = {}
        self._lock = threading.Lock()
        source = getattr(overrides, "source", "") if overrides else ""
        table = f"genai-prices@{_genai_prices_version()}"
        if overrides:
            table += f"+{source or 'overrides'}"
        self.table = table if acceptable(table) else f"genai-prices@{_genai_prices_version()}+file"
        """The price table in use (``llm.router.prices.table``): the genai-prices version,
        and the prices file's name when one overrides it (``genai-prices@0.2.3+prices.toml``;
        a name that could not be an attribute value reads ``file``)."""

    def baseline_rates(self, model: str) -> Rates | None:
        """Rates of ``model`` whoever serves it: a route's baseline has no provider. A prices
        file's entry for it wins (any provider's, when it names none), then genai-prices."""
        key = ("", model)
        try:
            return self._cache[key]
        except KeyError:
            pass
        lowered = model.lower()
        found = self._overrides.get((None, lowered)) or next(
            (r for (_, m), r in self._overrides.items() if m == lowered), None
        )
        if found is None:
            try:
                found = genai_prices_rates(None, model)
            except Exception:  # a malformed name must not break recording
                found = None
        with self._lock:
            if len(self._cache) < 10_000:
                self._cache[key] = found
        return found

    def rates(self, provider: str, model: str) -> Rates | None:
        key = (provider, model)
        try:
            return self._cache[key]
        except KeyError:
            pass
        found = self._lookup(provider, model)
        with self._lock:
            if len(self._cache) < 10_000:  # the model dimension is bounded; this is a backstop
                self._cache[key] = found
        return found

    def cost(self, provider: str, model: str, usage: Usage) -> float | None:
        rates = self.rates(provider, model)
        return None if rates is None else rates.cost(usage)

    def _lookup(self, provider: str, model: str) -> Rates | None:
        lowered = model.lower()
        hit = self._overrides.get((provider, lowered)) or self._overrides.get((None, lowered))
        if hit is not None:
            return hit
        return genai_prices_rates(provider, model)


def genai_prices_rates(provider: str | None, model: str) -> Rates | None:
    from genai_prices import data_snapshot

    snapshot = data_snapshot.get_snapshot()
    for provider_id in (provider, None) if provider else (None,):
        try:
            _, info = snapshot.find_provider_model(model, None, provider_id, None)
        except LookupError:
            continue
        except Exception:  # a malformed name must not break recording
            _log.debug("genai-prices lookup failed for %r/%r", provider, model, exc_info=True)
            return None
        prices = info.get_prices(datetime.now(UTC))
        return rates_from_prices({k: getattr(prices, k, None) for k in _KEYS})
    return None


@functools.cache
def _genai_prices_version() -> str:
    try:
        return version("genai-prices")
    except PackageNotFoundError:  # a vendored copy: still the table in use
        return "unknown"


@functools.cache
def known_model_ids() -> frozenset[str]:
    """Exact model ids genai-prices knows: a finite set that may pass the model allow-list.

    Loading genai-prices' data takes about 0.2 s: setup() pays it, not a first request."""
    from genai_prices import data_snapshot

    return frozenset(m.id for p in data_snapshot.get_snapshot().providers for m in p.models)
