"""The ``@route`` decorator: opens a request record, runs the handler, commits once.

It branches once, at decoration time, on sync function / coroutine / (async) generator, keeps
the signature, always re-raises the handler's exception and never raises its own.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any, Final, TypeVar, cast

from routemeter._report import report
from routemeter.request import _recent, _sink
from routemeter.request._policy import SLO, Policy, policy
from routemeter.request._record import Request, current_var, finish, iter_under, stream_under
from routemeter.request._safe import acceptable

F = TypeVar("F", bound=Callable[..., Any])

OPERATIONS: Final = frozenset(
    {
        "chat",
        "create_agent",
        "embeddings",
        "execute_tool",
        "generate_content",
        "invoke_agent",
        "text_completion",
    }
)
"""``gen_ai.operation.name`` well-known values; others are allowed if well-formed."""

declared_routes: set[str] = set()
declared_baselines: set[str] = set()
"""Every ``baseline_model`` declared: a recorder built later checks it has their prices."""


def begin(route_key: tuple[str, str], declared: Policy | None = None) -> Request | None:
    """A new request committed later to the active recorder, or ``None`` before ``setup()``;
    ``declared``: what the route's decorator declared (baseline model, SLO)."""
    sink = _sink.active
    if sink is None:
        return None
    try:
        rec = Request(route_key, sink)
        rec.id = _recent.request_id.get()
        rec.policy = declared
        sink.begin(rec)
        return rec
    except Exception as e:
        report("request start", e)
        return None


def route(
    label: str,
    *,
    operation: str = "chat",
    baseline_model: str | None = None,
    slo: SLO | None = None,
) -> Callable[[F], F]:
    """Meter every call of the decorated handler as one routed request under ``label``.

    Works on sync and async functions and on (async) generators, which are metered as streams.
    ``baseline_model``: the model the route's savings are measured against
    (``llm.router.baseline.cost.usd``; default: the model the client asked for, when priced).
    ``slo``: the objectives a successful request must meet to count as good
    (``llm.router.requests.good``). Bad values raise ``ValueError`` here, never at a request.
    """
    if not isinstance(label, str) or not acceptable(label):
        raise ValueError(
            f"route label {label!r} is not allowed: use 1-128 characters from"
            " letters, digits and ._:/@+- (route labels become metric attributes)"
        )
    if not isinstance(operation, str) or not acceptable(operation):
        raise ValueError(
            f"operation {operation!r} is not allowed: use a gen_ai.operation.name such as"
            f" {', '.join(sorted(OPERATIONS))}"
        )
    declared = policy(baseline_model, slo)
    if declared is not None and declared.baseline_model is not None:
        _check_priced(declared.baseline_model)
        declared_baselines.add(declared.baseline_model)
    declared_routes.add(label)
    key = (label, operation)

    def decorate(fn: F) -> F:
        if inspect.isasyncgenfunction(fn):

            @functools.wraps(fn)
            def agen_wrapper(*args: Any, **kwargs: Any) -> AsyncIterator[Any]:
                rec = begin(key, declared)
                chunks = fn(*args, **kwargs)
                return chunks if rec is None else stream_under(rec, chunks)

            return cast(F, agen_wrapper)

        if inspect.isgeneratorfunction(fn):

            @functools.wraps(fn)
            def gen_wrapper(*args: Any, **kwargs: Any) -> Iterator[Any]:
                rec = begin(key, declared)
                chunks = fn(*args, **kwargs)
                return chunks if rec is None else iter_under(rec, chunks)

            return cast(F, gen_wrapper)

        if inspect.iscoroutinefunction(fn):

            @functools.wraps(fn)
            async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
                rec = begin(key, declared)
                if rec is None:
                    return await fn(*args, **kwargs)
                token = current_var.set(rec)
                try:
                    result = await fn(*args, **kwargs)
                except BaseException as e:
                    current_var.reset(token)
                    finish(rec, e)
                    raise
                current_var.reset(token)
                if not rec.streamed:
                    finish(rec)
                return result

            return cast(F, async_wrapper)

        @functools.wraps(fn)
        def sync_wrapper(*args: Any, **kwargs: Any) -> Any:
            rec = begin(key, declared)
            if rec is None:
                return fn(*args, **kwargs)
            token = current_var.set(rec)
            try:
                result = fn(*args, **kwargs)
            except BaseException as e:
                current_var.reset(token)
                finish(rec, e)
                raise
            current_var.reset(token)
            if not rec.streamed:
                finish(rec)
            return result

        return cast(F, sync_wrapper)

    return decorate


def _check_priced(model: str) -> None:
    """Once a recorder is active, a baseline it cannot price is refused at decoration (before
    ``setup()`` the recorder refuses it at commit: ``routemeter.attribute.rejected``)."""
    sink = _sink.active
    try:
        priced = sink is None or sink.priced(model)
    except Exception as e:
        report("baseline price", e)
        return
    if not priced:
        raise ValueError(
            f"baseline_model {model!r} has no price in the price table in use: use a model id"
            " genai-prices knows (for example gpt-4o or claude-sonnet-4-5) or add it to"
            " ROUTEMETER_PRICES_FILE"
        )
