"""The ``@route`` decorator: opens a request record, runs the handler, commits once.

It branches once, at decoration time, on sync function / coroutine / (async) generator, keeps
the signature, always re-raises the handler's exception and never raises its own.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import AsyncIterator, Callable, Iterator
from time import perf_counter
from typing import Any, Final, TypeVar, cast

from routemeter import _state
from routemeter._bounds import acceptable
from routemeter._errors import report
from routemeter._record import Request, current_var, error_type_of

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


def _begin(route_key: tuple[str, str]) -> Request | None:
    recorder = _state.recorder
    if recorder is None:
        return None
    try:
        rec = Request(route_key)
        recorder.begin(rec)
        return rec
    except Exception as e:
        report("request start", e)
        return None


def _finish(rec: Request, exc: BaseException | None = None) -> None:
    if rec.end is not None:  # already committed (a stream outlived its handler's error)
        return
    rec.end = perf_counter()
    try:
        if exc is not None and rec.error_type is None:
            rec.error_type = error_type_of(exc)
        recorder = _state.recorder
        if recorder is not None:
            recorder.commit(rec)
    except Exception as e:
        report("request commit", e)


async def stream_under(rec: Request, chunks: AsyncIterator[Any]) -> AsyncIterator[Any]:
    """Drive ``chunks`` with ``rec`` current, mark what is yielded, commit at the end.

    The context variable is set around each step rather than across yields, so the stream can be
    consumed from another task than the one that created it (as ASGI servers do).
    """
    failure: BaseException | None = None
    try:
        while True:
            token = current_var.set(rec)
            try:
                chunk = await anext(chunks)
            except StopAsyncIteration:
                break
            finally:
                current_var.reset(token)
            rec._yield_mark()
            yield chunk
    except BaseException as e:
        failure = e
        raise
    finally:
        aclose = getattr(chunks, "aclose", None)
        if failure is not None and aclose is not None:
            try:
                await aclose()
            except Exception as e:  # the handler's own cleanup failed: report, keep the cause
                report("stream close", e)
        _finish(rec, failure)


def _iter_under(rec: Request, chunks: Iterator[Any]) -> Iterator[Any]:
    failure: BaseException | None = None
    try:
        while True:
            token = current_var.set(rec)
            try:
                chunk = next(chunks)
            except StopIteration:
                break
            finally:
                current_var.reset(token)
            rec._yield_mark()
            yield chunk
    except BaseException as e:
        failure = e
        raise
    finally:
        close = getattr(chunks, "close", None)
        if failure is not None and close is not None:
            close()
        _finish(rec, failure)


def route(label: str, *, operation: str = "chat") -> Callable[[F], F]:
    """Meter every call of the decorated handler as one routed request under ``label``.

    Works on sync and async functions and on (async) generators, which are metered as streams.
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
    declared_routes.add(label)
    key = (label, operation)

    def decorate(fn: F) -> F:
        if inspect.isasyncgenfunction(fn):

            @functools.wraps(fn)
            def agen_wrapper(*args: Any, **kwargs: Any) -> AsyncIterator[Any]:
                rec = _begin(key)
                chunks = fn(*args, **kwargs)
                return chunks if rec is None else stream_under(rec, chunks)

            return cast(F, agen_wrapper)

        if inspect.isgeneratorfunction(fn):

            @functools.wraps(fn)
            def gen_wrapper(*args: Any, **kwargs: Any) -> Iterator[Any]:
                rec = _begin(key)
                chunks = fn(*args, **kwargs)
                return chunks if rec is None else _iter_under(rec, chunks)

            return cast(F, gen_wrapper)

        if inspect.iscoroutinefunction(fn):

            @functools.wraps(fn)
            async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
                recorder = _state.recorder
                if recorder is None:
                    return await fn(*args, **kwargs)
                rec = Request(key)
                try:
                    recorder.begin(rec)
                except Exception as e:
                    report("request start", e)
                    return await fn(*args, **kwargs)
                token = current_var.set(rec)
                try:
                    result = await fn(*args, **kwargs)
                except BaseException as e:
                    current_var.reset(token)
                    _finish(rec, e)
                    raise
                current_var.reset(token)
                if not rec.streamed:
                    rec.end = perf_counter()
                    recorder.commit(rec)  # commit() reports its own failures, never raises
                return result

            return cast(F, async_wrapper)

        @functools.wraps(fn)
        def sync_wrapper(*args: Any, **kwargs: Any) -> Any:
            recorder = _state.recorder
            if recorder is None:
                return fn(*args, **kwargs)
            rec = Request(key)
            try:
                recorder.begin(rec)
            except Exception as e:
                report("request start", e)
                return fn(*args, **kwargs)
            token = current_var.set(rec)
            try:
                result = fn(*args, **kwargs)
            except BaseException as e:
                current_var.reset(token)
                _finish(rec, e)
                raise
            current_var.reset(token)
            if not rec.streamed:
                rec.end = perf_counter()
                recorder.commit(rec)  # commit() reports its own failures, never raises
            return result

        return cast(F, sync_wrapper)

    return decorate
