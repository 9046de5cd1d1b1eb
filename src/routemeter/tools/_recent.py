"""Summaries of the requests ``request/_recent`` keeps: built when someone asks, from the record
itself, with the recorder's own allow-lists and prices, so a summary names nothing a metric
could not (unknown or secret-shaped models are ``_OTHER``) and costs what the metric counted.

A summary never holds prompt or completion text, keys, client addresses or user agents: the
record has none of them."""

from __future__ import annotations

from time import perf_counter, time
from typing import Any

from routemeter.recording._bounds import Bounds
from routemeter.recording._pricing import Prices
from routemeter.recording._semconv import OTHER
from routemeter.request import _recent
from routemeter.request._record import Attempt, Request


def _since(mark: float | None, start: float) -> float | None:
    return None if mark is None else max(mark - start, 0.0)


def _ttfc(a: Attempt) -> float | None:
    if a.chunk_gaps is not None:
        return _since(a.chunk_gaps.first, a.start)
    return _since(a.chunk_marks[0], a.start) if a.chunk_marks else None


def _attempt(a: Attempt, end: float, bounds: Bounds, prices: Prices) -> dict[str, Any]:
    provider = bounds.providers(a.provider)
    model = bounds.models(a.model)
    served = bounds.models(a.response_model) if a.response_model else None
    cost = None
    if provider != OTHER and (a.used.input or a.used.output):
        priced = served or model
        rates = prices.rates(provider, priced) if priced != OTHER else None
        if rates is None and priced != model and model != OTHER:
            rates = prices.rates(provider, model)
        cost = None if rates is None else rates.cost(a.used)
    return {
        "provider": provider,
        "model": served or model,
        "outcome": "ok" if a.error_type is None else bounds.errors(a.error_type),
        "duration_s": max((a.end if a.end is not None else end) - a.start, 0.0),
        "ttft_s": _ttfc(a),
        "input_tokens": a.used.input or 0,
        "output_tokens": a.used.output or 0,
        "cost_usd": cost,
    }


def summary(rec: Request, bounds: Bounds, prices: Prices) -> dict[str, Any]:
    """One finished request as the recent-requests view shows it."""
    end = rec.end if rec.end is not None else perf_counter()
    attempts = [_attempt(a, end, bounds, prices) for a in rec.attempts]
    served = next((a for a in reversed(attempts) if a["outcome"] == "ok"), None)
    error = rec.error_type
    if error is None and served is None and attempts:
        error = attempts[-1]["outcome"]
    error_type = None if error is None else bounds.errors(error)
    costs = [a["cost_usd"] for a in attempts if a["cost_usd"] is not None]
    route, operation = rec.route_key
    return {
        "id": rec.id,
        "start": time() - (perf_counter() - rec.start),
        "route": route,
        "operation": operation,
        "requested_model": (
            None if rec.requested_model is None else bounds.requested_models(rec.requested_model)
        ),
        "provider": None if served is None else served["provider"],
        "model": None if served is None else served["model"],
        "stream": rec.streamed or rec.first_token is not None,
        "duration_s": max(end - rec.start, 0.0),
        "ttft_s": _since(rec.first_token, rec.start),
        "outcome": "ok" if error_type is None else error_type,
        "error_type": error_type,
        "input_tokens": sum(a["input_tokens"] for a in attempts),
        "output_tokens": sum(a["output_tokens"] for a in attempts),
        "cost_usd": sum(costs) if costs else None,
        "attempts": attempts,
    }


def recent(limit: int, bounds: Bounds, prices: Prices) -> list[dict[str, Any]]:
    """The last ``limit`` finished requests, newest first."""
    return [summary(rec, bounds, prices) for rec in _recent.latest(limit)]


def one(request_id: str, bounds: Bounds, prices: Prices) -> dict[str, Any] | None:
    """The kept request with this id, or ``None`` once it has been evicted."""
    rec = _recent.find(request_id)
    return None if rec is None else summary(rec, bounds, prices)
