"""The per-request record: filled during the request, committed once at its end.

Recording methods only store facts in slots. Bounding, costing and emitting happen in the
recorder at commit, so a handler pays for a few attribute stores, and nothing it calls here can
raise.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import AsyncIterator, Iterator
from contextvars import ContextVar
from math import inf
from time import perf_counter
from types import TracebackType
from typing import TYPE_CHECKING, Any, Final

from routemeter._report import report
from routemeter.request import _recent, _usage
from routemeter.request._usage import EMPTY, MAX_TOKENS, Usage

if TYPE_CHECKING:
    from routemeter.request._policy import Policy
    from routemeter.request._sink import Sink

MAX_CHUNK_MARKS: Final = 100_000
"""Chunk marks kept per attempt when its recorder needs every gap (``Sink.chunk_bounds`` is
``None``); folded gaps (``ChunkGaps``) have no such cap."""
_NONE_GIVEN: Final = (None, None, None, None, None)
_new_usage = tuple.__new__  # builds a Usage without the namedtuple's Python-level __new__


CLIENT_CLOSED: Final = "client_closed"
"""``error.type`` of a request (and of the attempt it was waiting on) whose client went away:
the task was cancelled, or the response stream was closed before its end."""


def error_type_of(exc: BaseException) -> str:
    """semconv ``error.type``: ``client_closed`` for a cancelled task or a stream closed early,
    the HTTP status a provider error carries, else the class name."""
    if isinstance(exc, GeneratorExit) or type(exc).__name__ == "CancelledError":
        return CLIENT_CLOSED  # asyncio's (by name: the request layer does not load asyncio)
    try:
        status = getattr(exc, "status_code", None)
        if status is None:
            status = getattr(getattr(exc, "response", None), "status_code", None)
        if type(status) is int and 100 <= status <= 599:
            return str(status)
    except Exception:  # an exception whose attributes raise: fall back to its class
        pass
    return type(exc).__name__


def error_value(error_type: object) -> str | None:
    """An ``error.type`` from what a caller gave: an exception, a status code or a string."""
    if isinstance(error_type, BaseException):
        return error_type_of(error_type)
    if type(error_type) is int:
        return str(error_type)
    if isinstance(error_type, str) and error_type:
        return error_type
    return None


class ChunkGaps:
    """An attempt's upstream chunk gaps, folded as they arrive: constant memory, exact counts.

    ``state`` is a histogram over ``bounds`` in the recorders' layout ``[sum, min, max,
    *bucket_counts]``; a gap goes to bucket ``bisect_left(bounds, gap)``, the explicit-bucket
    histogram's rule. ``last_gaps`` holds each bucket's latest gap (``None`` while empty): what
    an explicit-bucket exemplar reservoir keeps. ``first`` is the first chunk's mark (time to
    first chunk), ``mark`` the latest one. ``Attempt.chunk()`` folds each chunk in: the gap
    since ``mark``, never negative, as ``iter_marks`` computes it from marks.
    """

    __slots__ = ("bounds", "first", "last_gaps", "mark", "state")

    def __init__(self, bounds: tuple[float, ...], first: float) -> None:
        self.bounds = bounds
        self.first = first
        self.mark = first
        self.state: list[Any] = [0.0, inf, -inf, *[0] * (len(bounds) + 1)]
        self.last_gaps: list[float | None] = [None] * (len(bounds) + 1)

    @property
    def count(self) -> int:
        """Gaps folded: one per chunk after the first."""
        return sum(self.state[3:])


class Attempt:
    """One upstream call. Use as a context manager: an exception inside marks it failed."""

    __slots__ = (
        "chunk_bounds",
        "chunk_gaps",
        "chunk_marks",
        "end",
        "error_type",
        "model",
        "provider",
        "response_model",
        "server_address",
        "server_port",
        "start",
        "used",
    )

    def __init__(
        self,
        provider: str,
        model: str,
        server_address: str | None = None,
        server_port: int | None = None,
        chunk_bounds: tuple[float, ...] | None = None,
    ) -> None:
        self.provider = provider
        self.model = model
        self.server_address = server_address
        self.server_port = server_port
        self.start = perf_counter()
        self.end: float | None = None
        self.error_type: str | None = None
        self.response_model: str | None = None
        self.used: Usage = EMPTY
        self.chunk_marks: list[float] | None = None
        """Every chunk's mark (up to ``MAX_CHUNK_MARKS``), when ``chunk_bounds`` is ``None``."""
        self.chunk_bounds = chunk_bounds
        """The recorder's ``Sink.chunk_bounds``: with bounds, chunks fold into ``chunk_gaps``."""
        self.chunk_gaps: ChunkGaps | None = None

    def __enter__(self) -> Attempt:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.end = perf_counter()
        if exc is not None and self.error_type is None:
            self.error_type = error_type_of(exc)

    def usage(
        self,
        response: Any = None,
        /,
        *,
        input_tokens: int | None = None,
        output_tokens: int | None = None,
        cache_read_tokens: int | None = None,
        cache_creation_tokens: int | None = None,
        reasoning_tokens: int | None = None,
    ) -> None:
        """Token usage from a response or streaming event, or given explicitly.

        Values are the attempt's running totals: a later report replaces an earlier one field by
        field, the way streaming events report them.
        """
        try:
            if (
                response is None
                and type(input_tokens) is int
                and type(output_tokens) is int
                and cache_read_tokens is None
                and cache_creation_tokens is None
                and reasoning_tokens is None
                and self.used is EMPTY
                and 0 <= input_tokens < MAX_TOKENS
                and 0 <= output_tokens < MAX_TOKENS
            ):  # the common case, checked inline: one report of two ints
                self.used = _new_usage(Usage, (input_tokens, output_tokens, None, None, None))
                return
            if (
                type(response) is dict
                and self.used is EMPTY
                and input_tokens is None
                and output_tokens is None
                and cache_read_tokens is None
                and cache_creation_tokens is None
                and reasoning_tokens is None
            ):
                block = response.get("usage")  # an OpenAI or Anthropic answer, read inline
                found = _usage.dict_usage(block) if type(block) is dict else None
                if found is not None:
                    self.used = found
                    if self.response_model is None:
                        model = response.get("model")
                        self.response_model = (
                            model if type(model) is str else _usage.response_model(response)
                        )
                    return
            self._merge_usage(
                response,
                (
                    input_tokens,
                    output_tokens,
                    cache_read_tokens,
                    cache_creation_tokens,
                    reasoning_tokens,
                ),
            )
        except Exception as e:
            report("usage extraction", e)

    def _merge_usage(self, response: Any, given: tuple[int | None, ...]) -> None:
        """The general path of ``usage()``: a response's usage, then explicit counts over it."""
        if response is not None and self.used is EMPTY and given == _NONE_GIVEN:
            self.used = _usage.extract(response)  # a first report of a response alone
            if self.response_model is None:
                self.response_model = _usage.response_model(response)
            return
        if response is not None:
            self.used = _usage.merge(self.used, _usage.extract(response))
            if self.response_model is None:
                self.response_model = _usage.response_model(response)
        u = self.used
        self.used = Usage(
            *(o if n is None else _usage.tokens(n) for o, n in zip(u, given, strict=True))
        )

    def error(self, error_type: str | int | BaseException) -> None:
        """Mark a failure that did not raise (an error response, a 429 handled inline)."""
        self.error_type = error_value(error_type) or "_OTHER"

    def chunk(self, chunk: Any = None) -> None:
        """Mark a streaming chunk received from upstream; a chunk carrying usage is read too."""
        now = perf_counter()
        gaps = self.chunk_gaps
        if gaps is not None:  # ChunkGaps' fold, inlined: this runs for every chunk
            gap = now - gaps.mark
            if gap < 0.0:
                gap = 0.0
            gaps.mark = now
            state = gaps.state
            state[0] += gap
            if gap < state[1]:
                state[1] = gap
            if gap > state[2]:
                state[2] = gap
            i = bisect_left(gaps.bounds, gap)
            state[3 + i] += 1
            gaps.last_gaps[i] = gap
        else:
            marks = self.chunk_marks
            if marks is not None:
                if len(marks) < MAX_CHUNK_MARKS:
                    marks.append(now)
            elif self.chunk_bounds is not None:
                self.chunk_gaps = ChunkGaps(self.chunk_bounds, now)
            else:
                self.chunk_marks = [now]
        if chunk is not None:
            self.usage(chunk)

    def served_by(self, model: str) -> None:
        """The model the provider says answered (``gen_ai.response.model``)."""
        if isinstance(model, str):
            self.response_model = model


class Decision:
    """The routing decision; as a context manager it also times the routing logic."""

    __slots__ = ("end", "model", "provider", "reason", "start", "timed")

    def __init__(self, timed: bool = True) -> None:
        self.timed = timed
        self.start = perf_counter()
        self.end: float | None = None
        self.provider: str | None = None
        self.model: str | None = None
        self.reason: str | None = None

    def __enter__(self) -> Decision:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.end = perf_counter()

    def choose(self, provider: str, model: str, reason: str | None = None) -> None:
        """The target the routing logic picked, and why (``llm.router.reason``, e.g. the rule
        that matched); one decision per request, the last call wins."""
        self.provider = provider
        self.model = model
        self.reason = reason


class Request:
    """The in-flight routed request: what the client asked, how it was routed, what happened."""

    __slots__ = (
        "attempts",
        "caches",
        "decision",
        "end",
        "error_type",
        "first_token",
        "id",
        "policy",
        "rejected",
        "requested_model",
        "route_key",
        "sink",
        "start",
        "streamed",
        "tenant_name",
        "yielded",
    )

    def __init__(self, route_key: tuple[str, str], sink: Sink | None = None) -> None:
        self.route_key = route_key
        """(route label, gen_ai.operation.name)"""
        self.sink = sink
        """The recorder that began this request: it is the one that commits it."""
        self.start = perf_counter()
        self.end: float | None = None
        self.requested_model: str | None = None
        self.decision: Decision | None = None
        self.attempts: list[Attempt] = []
        self.caches: list[tuple[str, bool]] | None = None
        self.error_type: str | None = None
        self.first_token: float | None = None
        self.id: str | None = None
        """The request id (``x-request-id``) when the recent-requests view keeps it."""
        self.yielded = 0
        self.rejected = False
        self.streamed = False
        self.policy: Policy | None = None
        """What the route declared (baseline model, SLO); set by ``@route``."""
        self.tenant_name: str | None = None

    def requested(self, model: str | None = None) -> None:
        """What the client asked for (``gen_ai.request.model`` on the server-side metrics)."""
        if isinstance(model, str):
            self.requested_model = model

    def tenant(self, name: str) -> None:
        """Who this request is for (``llm.router.tenant`` on the server-side request metrics,
        tokens and cost): an app-chosen name such as a team or plan, never an API key or its
        hash (key- and email-shaped names, and those past the allow-list, become ``_OTHER``)."""
        self.tenant_name = name if type(name) is str else "_OTHER"

    def decide(self) -> Decision:
        """Time the routing logic: ``with rec.decide() as d: d.choose(...)`` records the
        decision and observes ``llm.router.decision.duration`` for the block."""
        self.decision = d = Decision()
        return d

    def choose(self, provider: str, model: str, reason: str | None = None) -> None:
        """Record the routing decision without timing the logic that made it (no
        ``llm.router.decision.duration`` observation: a zero would drag its percentiles)."""
        d = self.decision
        if d is None:
            self.decision = d = Decision(timed=False)
        d.choose(provider, model, reason)

    def attempt(
        self,
        provider: str,
        model: str,
        *,
        server_address: str | None = None,
        server_port: int | None = None,
    ) -> Attempt:
        """Open one upstream call; use it as a context manager (an exception marks it failed).

        A failed attempt followed by another is a fallback. ``model`` is what was sent upstream
        (``gen_ai.request.model`` on the client-side metrics); ``server_address``/``server_port``
        name the upstream endpoint, never the client."""
        sink = self.sink
        a = Attempt(
            provider,
            model,
            server_address,
            server_port,
            None if sink is None else sink.chunk_bounds,
        )
        self.attempts.append(a)
        return a

    def cache(self, name: str, hit: bool) -> None:
        """One lookup in a router cache (a response cache, a semantic cache, ...)."""
        caches = self.caches
        if caches is None:
            self.caches = caches = []
        try:
            hit = bool(hit)
        except Exception:  # a value with no truth (its __bool__ raises): a miss
            hit = False
        caches.append((name, hit))

    def error(self, error_type: str | int | BaseException) -> None:
        """Mark the request failed when the handler answers an error without raising."""
        self.error_type = error_value(error_type) or "_OTHER"

    def rate_limited(self) -> None:
        """The router itself refused this request for rate limiting (and answered 429)."""
        self.rejected = True
        if self.error_type is None:
            self.error_type = "429"

    def first_chunk(self) -> None:
        """Mark the first token sent to the client, when the handler streams without yielding."""
        if self.first_token is None:
            self.first_token = perf_counter()

    def stream(self, chunks: AsyncIterator[Any]) -> AsyncIterator[Any]:
        """Wrap a response body iterator: the request commits when the stream ends, not when
        the handler returns (for handlers that return a ``StreamingResponse``)."""
        self.streamed = True
        return stream_under(self, chunks)

    def _yield_mark(self) -> None:
        if self.first_token is None:
            self.first_token = perf_counter()
        self.yielded += 1


class _NoopAttempt(Attempt):
    __slots__ = ()

    def usage(self, response: Any = None, /, **_: int | None) -> None:
        pass

    def error(self, error_type: str | int | BaseException) -> None:
        pass

    def chunk(self, chunk: Any = None) -> None:
        pass

    def served_by(self, model: str) -> None:
        pass


class _NoopRequest(Request):
    """Returned by ``current()`` outside a routed request: every call is accepted and dropped."""

    __slots__ = ()

    def decide(self) -> Decision:
        return Decision()

    def choose(self, provider: str, model: str, reason: str | None = None) -> None:
        pass

    def attempt(
        self,
        provider: str,
        model: str,
        *,
        server_address: str | None = None,
        server_port: int | None = None,
    ) -> Attempt:
        return _NoopAttempt(provider, model)

    def requested(self, model: str | None = None) -> None:
        pass

    def tenant(self, name: str) -> None:
        pass

    def cache(self, name: str, hit: bool) -> None:
        pass

    def error(self, error_type: str | int | BaseException) -> None:
        pass

    def rate_limited(self) -> None:
        pass

    def first_chunk(self) -> None:
        pass

    def stream(self, chunks: AsyncIterator[Any]) -> AsyncIterator[Any]:
        return chunks


NOOP: Final = _NoopRequest(("", ""))

current_var: ContextVar[Request] = ContextVar("routemeter_request", default=NOOP)

_get = current_var.get


def current() -> Request:
    """The routed request in flight in this context, or a no-op record outside one.

    Inside a handler decorated with ``@routemeter.route``, this is the record to fill:
    ``requested()``, ``decide()``/``choose()``, ``attempt()``, ``cache()``, ``error()``. Outside
    one (or before ``setup()``), every call on the returned record is accepted and dropped.
    """
    return _get()


def iter_marks(marks: list[float]) -> Iterator[float]:
    """Gaps between consecutive chunk marks (semconv: one per chunk after the first)."""
    prev = marks[0]
    for m in marks[1:]:
        yield max(m - prev, 0.0)
        prev = m


def finish(rec: Request, exc: BaseException | None = None) -> None:
    """End ``rec`` and commit it to the recorder that began it, once; never raises."""
    if rec.end is not None:  # already committed (a stream outlived its handler's error)
        return
    rec.end = perf_counter()
    try:
        if exc is not None and rec.error_type is None:
            rec.error_type = error_type_of(exc)
        sink = rec.sink
        if sink is not None:
            sink.commit(rec)
        kept = _recent.ring
        if kept is not None:
            if rec.id is None:
                rec.id = _recent.new_id()
            for a in rec.attempts:  # committed: a summary needs the first chunk's mark only
                marks = a.chunk_marks
                if marks is not None and len(marks) > 1:
                    a.chunk_marks = marks[:1]
            kept.append(rec)
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
        finish(rec, failure)


def iter_under(rec: Request, chunks: Iterator[Any]) -> Iterator[Any]:
    """The synchronous ``stream_under``, for generator handlers."""
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
        finish(rec, failure)
