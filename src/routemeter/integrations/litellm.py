"""LiteLLM: record routemeter's schema from LiteLLM's own callback events.

::

    import litellm
    import routemeter
    from routemeter.integrations.litellm import RoutemeterCallback

    routemeter.setup()
    callback = RoutemeterCallback()
    litellm.callbacks = [callback]
    router = litellm.Router(model_list=..., fallbacks=...)
    callback.watch(router)  # cooldowns and the router's own refusals (automatic in the proxy)

LiteLLM reports each *deployment call* (one upstream attempt), not the routed request a client
made; a routed request with retries and fallbacks produces several. This callback groups them
back into one routemeter request record:

- The grouping key is the LiteLLM proxy's per-request ``litellm_call_id`` when the callback saw
  the request arrive (``async_pre_call_hook``: inside the proxy), else ``litellm_trace_id``,
  which ``Router`` mints once per routed call and keeps across its retries and fallbacks (a
  plain ``litellm.completion`` call gets its own).
- The route label is resolved once, when the request's first upstream call starts (inside the
  proxy: after every pre-call hook ran, whatever the order of the callbacks, so labels a
  router's hook writes into the metadata are seen), or when the proxy answers an error first.
- The model that answered is the response's ``model``, except where the proxy restamped it
  with the model the client asked for (OpenAI-format answers): then it is the deployment's.
- A success event ends the request: nothing is retried after a success. The request is
  committed at once with every attempt seen so far.
- A failure event may be followed by a retry or a fallback, and LiteLLM announces neither, nor
  the end of a failed routed call. Inside the proxy, ``async_post_call_failure_hook`` ends it.
  Elsewhere the request is committed as failed once ``settle_s`` pass with no new attempt
  starting (``log_pre_api_call``); its duration still ends with its last attempt, so the delay
  only postpones the export. ``flush()`` commits such requests at once.
- A request that hears nothing for ``idle_s`` (a cancelled call LiteLLM never reported on) is
  committed with ``error.type=incomplete``.

Everything is recorded through routemeter's request record, so the schema, the bounds and the
pricing are the same as for ``@routemeter.route`` handlers. The callback never raises into
LiteLLM: failures are logged once per kind through routemeter's error reporting.
"""

from __future__ import annotations

import atexit
import inspect
import math
import sys
import threading
import weakref
from collections.abc import Callable, Mapping
from datetime import datetime
from time import monotonic, perf_counter, time
from typing import Any, Final
from urllib.parse import urlsplit

from litellm.integrations.custom_logger import CustomLogger

from routemeter._report import report
from routemeter.recording._bounds import Bounded
from routemeter.recording._semconv import OTHER
from routemeter.request import _sink
from routemeter.request._events import cooldown
from routemeter.request._ratelimit import ratelimit_from_headers
from routemeter.request._record import Request, error_type_of
from routemeter.request._safe import acceptable
from routemeter.request._sink import Sink

__all__ = ["RouteOption", "RoutemeterCallback"]

RouteOption = str | Mapping[str, str] | Callable[[str | None, Mapping[str, Any]], str | None] | None
"""How a request gets its route label: ``None`` (the model group), one fixed label, a mapping
from model group to label, or ``fn(model_group, metadata) -> label | None``."""

INCOMPLETE: Final = "incomplete"
"""``error.type`` of a request LiteLLM never reported an outcome for within ``idle_s``."""

_OPERATIONS: Final = {
    "completion": "chat",
    "acompletion": "chat",
    "responses": "chat",
    "aresponses": "chat",
    "anthropic_messages": "chat",
    "text_completion": "text_completion",
    "atext_completion": "text_completion",
    "embedding": "embeddings",
    "aembedding": "embeddings",
    "generate_content": "generate_content",
    "agenerate_content": "generate_content",
    "image_generation": "generate_content",
    "aimage_generation": "generate_content",
}
"""LiteLLM call types -> ``gen_ai.operation.name``; other call types record ``_OTHER``."""

_REFUSALS: Final = frozenset({"RouterRateLimitError", "RouterRateLimitErrorBasic"})
"""The exceptions ``Router`` raises when it has no deployment to send a request to."""

_MARK: Final = "__routemeter_watch__"
_REMEMBERED: Final = 10_000


def _epoch(value: Any) -> float | None:
    """Seconds since the epoch from LiteLLM's ``datetime`` (or float) timestamps."""
    if isinstance(value, datetime):
        try:
            return value.timestamp()
        except (OverflowError, OSError, ValueError):
            return None
    if type(value) in (int, float) and math.isfinite(value):
        return float(value)
    return None


def _perf(value: Any, perf_now: float, wall_now: float) -> float | None:
    """A LiteLLM timestamp on the ``perf_counter`` clock the request record uses."""
    epoch = _epoch(value)
    return None if epoch is None else perf_now - (wall_now - epoch)


def _mapping(value: Any) -> Mapping[str, Any]:
    if type(value) is dict:  # LiteLLM's own shape, without the ABC check below
        return value
    return value if isinstance(value, Mapping) else {}


def _metadata(kwargs: Mapping[str, Any]) -> Mapping[str, Any]:
    """The router's metadata for a call: ``litellm_params.metadata`` (or ``litellm_metadata``
    for the call types that use it), else the request's own."""
    params = _mapping(kwargs.get("litellm_params"))
    found: Mapping[str, Any] = {}
    for source in (params, kwargs):
        for name in ("metadata", "litellm_metadata"):
            md = _mapping(source.get(name))
            if md:
                if "model_group" in md:
                    return md
                found = found or md
    return found


def _group(md: Mapping[str, Any]) -> str | None:
    """The model group the client asked for (the first one, across fallbacks)."""
    for name in ("original_model_group", "model_group"):
        value = md.get(name)
        if isinstance(value, str) and value:
            return value
    return None


def _server(api_base: Any) -> tuple[str | None, int | None]:
    if not isinstance(api_base, str) or not api_base:
        return None, None
    try:
        parts = urlsplit(api_base)
        return parts.hostname or None, parts.port
    except ValueError:
        return None, None


Target = tuple[str, str, str | None, int | None]
"""(provider, model, server address, server port) of the deployment a call went to."""

_TARGETS: dict[tuple[Any, Any, Any], Target] = {}
"""Targets by (provider, model, api_base) as LiteLLM passes them: a router has a handful of
deployments, so each is resolved (and its ``api_base`` parsed) once, not per call."""

_MAX_TARGETS: Final = 4096


def _target(kwargs: Mapping[str, Any]) -> Target | None:
    """(provider, model, server address, port) of the deployment a call went to; ``None`` when
    no provider was resolved (nothing was sent upstream)."""
    params = _mapping(kwargs.get("litellm_params"))
    provider = kwargs.get("custom_llm_provider") or params.get("custom_llm_provider")
    model = kwargs.get("model")
    api_base = params.get("api_base")
    key = (provider, model, api_base)
    try:
        found = _TARGETS.get(key)
    except TypeError:  # an unhashable api_base: not LiteLLM's
        return None
    if found is not None:
        return found
    if not isinstance(provider, str) or not provider or not isinstance(model, str) or not model:
        return None
    if model.startswith(provider + "/"):
        model = model[len(provider) + 1 :]
    address, port = _server(api_base)
    target = (provider, model, address, port)
    if len(_TARGETS) >= _MAX_TARGETS:
        _TARGETS.clear()
    _TARGETS[key] = target
    return target


_RATELIMIT_HEADERS: Final = tuple(
    prefix + name
    for name in (
        "x-ratelimit-remaining-requests",
        "x-ratelimit-remaining-tokens",
        "anthropic-ratelimit-requests-remaining",
        "anthropic-ratelimit-tokens-remaining",
        "anthropic-ratelimit-input-tokens-remaining",
        "anthropic-ratelimit-output-tokens-remaining",
    )
    for prefix in ("", "llm_provider-")
)
"""The rate-limit headers routemeter reads, as LiteLLM's ``additional_headers`` name them
(httpx's lower-case names, some also with LiteLLM's ``llm_provider-`` prefix)."""


def _response_headers(response: Any) -> Any:
    """The rate-limit headers of a response, from LiteLLM's ``additional_headers``: only the
    few names read, so a response's dozens of other headers are not scanned per call."""
    hidden = getattr(response, "_hidden_params", None)
    if type(hidden) is dict or isinstance(hidden, Mapping):
        headers = hidden.get("additional_headers")
        if type(headers) is dict:
            return {name: headers[name] for name in _RATELIMIT_HEADERS if name in headers}
        if isinstance(headers, Mapping):
            return headers
    return None


def _error_headers(exc: Any) -> Any:
    headers = getattr(exc, "litellm_response_headers", None)
    if headers is None:
        headers = getattr(getattr(exc, "response", None), "headers", None)
    return headers


def _refusal(exc: BaseException | None) -> bool:
    """The router refused the request itself: no deployment available, or a 429 it raised
    before any upstream call."""
    return exc is not None and (
        type(exc).__name__ in _REFUSALS or getattr(exc, "status_code", None) == 429
    )


class _Arrival:
    """A request the proxy received whose record is not opened yet: its route label waits
    for the first upstream call (or the proxy's failure hook), when every pre-call hook, in
    whatever order LiteLLM lists them, has written its metadata."""

    __slots__ = ("call_type", "recorder", "requested", "start", "touched")

    def __init__(self, start: float, recorder: Sink, call_type: Any, requested: str | None) -> None:
        self.start = start
        self.recorder = recorder
        self.call_type = call_type
        self.requested = requested
        self.touched = monotonic()


class _Open:
    """A routed request whose outcome is not known yet."""

    __slots__ = (
        "attempting",
        "error",
        "group",
        "key",
        "rec",
        "recorder",
        "refused",
        "settle_at",
        "touched",
    )

    def __init__(
        self, key: tuple[str, str], rec: Request, recorder: Sink, group: str | None
    ) -> None:
        self.key = key
        self.rec = rec
        self.recorder = recorder
        self.group = group
        """The model group the route label was resolved from (after a router's rewrite)."""
        self.attempting = False
        self.refused = False
        self.error: BaseException | None = None
        self.settle_at: float | None = None
        self.touched = monotonic()


class RoutemeterCallback(CustomLogger):
    """A LiteLLM ``CustomLogger`` that records routemeter's schema for ``litellm.completion``,
    ``litellm.Router`` and the LiteLLM proxy.

    - ``route``: the route label. ``None`` (default): the model group the client asked for (for
      a plain ``litellm.completion`` call, ``default_route``). A string: that label for every
      request. A mapping: model group -> label (unmapped groups keep the default). A callable
      ``fn(model_group, metadata)`` returning a label or ``None`` (the default), with
      ``metadata`` the router's request metadata (tags your own hooks set, for instance).
    - ``max_routes``: distinct labels admitted beyond the declared ones (mapping values,
      ``route``, ``default_route``); later ones become ``_OTHER``. While a watched router is
      known, model groups it does not serve become ``_OTHER`` at once, so clients asking for
      made-up models cannot mint labels.
    - ``settle_s``: how long a failed request waits for a retry or fallback before it is
      committed as failed (outside the proxy). LiteLLM's own retry back-off stays under 9 s
      unless a provider asks for longer with ``retry-after``.
    - ``idle_s``: a request with no event for this long is committed as ``incomplete``.
    - ``cache_name``: ``llm.router.cache.name`` of LiteLLM's response cache (hits and, while
      ``litellm.cache`` is configured, misses).
    """

    def __init__(
        self,
        *,
        route: RouteOption = None,
        default_route: str = "default",
        max_routes: int = 50,
        settle_s: float = 10.0,
        idle_s: float = 600.0,
        cache_name: str = "litellm",
        max_open: int = 10_000,
    ) -> None:
        super().__init__()
        declared = [default_route]
        if isinstance(route, str):
            declared.append(route)
        elif isinstance(route, Mapping):
            declared.extend(route.values())
        elif route is not None and not callable(route):
            raise TypeError(f"route must be a label, a mapping or a callable, not {route!r}")
        for label in declared:
            if not isinstance(label, str) or not acceptable(label):
                raise ValueError(
                    f"route label {label!r} is not allowed: use 1-128 characters from"
                    " letters, digits and ._:/@+- (route labels become metric attributes)"
                )
        if not (settle_s > 0 and idle_s > 0 and max_open > 0 and max_routes >= 0):
            raise ValueError("settle_s, idle_s and max_open must be positive, max_routes >= 0")
        self._route = route
        self._default_route = default_route
        self._labels = Bounded("llm.router.route", declared, max_routes)
        self._settle_s = float(settle_s)
        self._idle_s = float(idle_s)
        self._cache_name = cache_name
        self._max_open = max_open
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self._open: dict[tuple[str, str], _Open] = {}
        self._arrived: dict[str, _Arrival] = {}
        self._labels_by_group: dict[str | None, str] = {}
        self._done_calls: dict[str, None] = {}
        self._done_attempts: dict[tuple[Any, ...], None] = {}
        self._routers: weakref.WeakSet[Any] = weakref.WeakSet()
        self._proxy_router: Any = None
        self._sweeper: threading.Thread | None = None
        self._closed = False
        atexit.register(_flush_at_exit, weakref.ref(self))

    # ---- public ----------------------------------------------------------------------------

    @property
    def open_requests(self) -> int:
        """Requests seen but not committed yet (in flight, or waiting for ``settle_s``)."""
        with self._lock:
            return len(self._open) + len(self._arrived)

    def flush(self) -> None:
        """Commit now every request that only waits for ``settle_s`` (its last attempt failed
        and no other one started); for tests and shutdown."""
        with self._lock:
            due = [p for p in self._open.values() if not p.attempting and p.settle_at is not None]
            for p in due:
                self._forget_locked(p)
        for p in due:
            self._commit(p)

    def close(self) -> None:
        """``flush()``, stop the background thread that commits settled requests, and ignore
        events from now on (remove the callback from LiteLLM's callbacks too)."""
        self.flush()
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def watch(self, router: Any) -> None:
        """Record a ``litellm.Router``'s cooldowns (``llm.router.cooldowns``) and its own
        refusals (no deployment available: ``llm.router.ratelimit.rejections``).

        LiteLLM reports neither to callbacks, so this wraps, on this router instance only,
        the two methods that decide them; idempotent. Inside the LiteLLM proxy the proxy's
        router is watched automatically.
        """
        try:
            self._watch(router)
        except Exception as e:
            report("litellm router watch", e)

    # ---- LiteLLM events --------------------------------------------------------------------

    def log_pre_api_call(self, model: Any, messages: Any, kwargs: Any) -> None:
        try:
            self._started(kwargs)
        except Exception as e:
            report("litellm pre-call event", e)

    def log_success_event(
        self, kwargs: Any, response_obj: Any, start_time: Any, end_time: Any
    ) -> None:
        self._ended(kwargs, response_obj, start_time, end_time, False)

    def log_failure_event(
        self, kwargs: Any, response_obj: Any, start_time: Any, end_time: Any
    ) -> None:
        self._ended(kwargs, response_obj, start_time, end_time, True)

    async def async_log_success_event(
        self, kwargs: Any, response_obj: Any, start_time: Any, end_time: Any
    ) -> None:
        self._ended(kwargs, response_obj, start_time, end_time, False)

    async def async_log_failure_event(
        self, kwargs: Any, response_obj: Any, start_time: Any, end_time: Any
    ) -> None:
        self._ended(kwargs, response_obj, start_time, end_time, True)

    async def async_pre_call_hook(
        self, user_api_key_dict: Any, cache: Any, data: Any, call_type: Any
    ) -> None:
        """Proxy only: a client request arrived; its ``litellm_call_id`` keys its record."""
        try:
            self._proxy_request(data, call_type)
        except Exception as e:
            report("litellm proxy request", e)

    async def async_post_call_failure_hook(
        self,
        request_data: Any,
        original_exception: Any,
        user_api_key_dict: Any,
        traceback_str: str | None = None,
    ) -> None:
        """Proxy only: the proxy answered the client with an error: the request ends here."""
        try:
            self._proxy_failed(request_data, original_exception)
        except Exception as e:
            report("litellm proxy failure", e)

    # ---- grouping --------------------------------------------------------------------------

    def _key_locked(self, kwargs: Mapping[str, Any]) -> tuple[str, str] | None:
        call_id = kwargs.get("litellm_call_id")
        if isinstance(call_id, str) and call_id:
            if ("call", call_id) in self._open or call_id in self._arrived:
                return ("call", call_id)
            if call_id in self._done_calls:
                return None  # a late event for a proxy request already committed
        trace = kwargs.get("litellm_trace_id")
        if isinstance(trace, str) and trace:
            return ("trace", trace)
        if isinstance(call_id, str) and call_id:
            return ("call", call_id)
        return None

    def _route_for(self, group: str | None, md: Mapping[str, Any]) -> str:
        route = self._route
        label: Any = None
        if route is not None and not isinstance(route, (str, Mapping)):
            try:
                label = route(group, md)
            except Exception as e:
                report("litellm route function", e)
                return OTHER
            if label is not None:
                return self._labels(label)
        else:  # the label depends on the group alone: resolved once per group
            found = self._labels_by_group.get(group)
            if found is not None:
                return found
            if isinstance(route, str):
                label = route
            elif route is not None:
                label = route.get(group) if group is not None else None
        if label is None:
            if group is None:
                return self._default_route
            if not self._known_group(group):
                return OTHER  # not cached: the router may learn the group later
            label = group
        resolved = self._labels(label)
        if route is None or isinstance(route, (str, Mapping)):
            if len(self._labels_by_group) >= _REMEMBERED:
                self._labels_by_group.clear()
            self._labels_by_group[group] = resolved
        return resolved

    def _known_group(self, group: str) -> bool:
        routers = list(self._routers)
        if not routers:
            return True
        for router in routers:
            names = getattr(router, "model_names", None)
            aliases = getattr(router, "model_group_alias", None)
            try:
                if (names is not None and group in names) or (
                    isinstance(aliases, Mapping) and group in aliases
                ):
                    return True
            except TypeError:
                return True
        return False

    def _open_locked(
        self,
        key: tuple[str, str],
        kwargs: Mapping[str, Any],
        start: float,
        recorder: Sink,
        group: str | None = None,
    ) -> tuple[_Open, list[_Open]]:
        """The open record for ``key``, opened now if needed, and the records evicted for it.

        The route label is resolved here, once: from the metadata of the first event that
        carries the request's kwargs. Inside the proxy that is the first upstream call (or the
        failure hook), after every pre-call hook ran; ``group`` is the model group to use when
        the metadata names none."""
        p = self._open.get(key)
        if p is not None:
            return p, []
        evicted: list[_Open] = []
        while len(self._open) >= self._max_open:
            oldest = self._open[next(iter(self._open))]
            self._forget_locked(oldest)
            evicted.append(oldest)
        arrival = self._arrived.pop(key[1], None) if key[0] == "call" else None
        call_type = kwargs.get("call_type")
        requested: Any = None
        if arrival is not None:
            start, recorder, requested = arrival.start, arrival.recorder, arrival.requested
            if arrival.call_type is not None:
                call_type = arrival.call_type
        md = _metadata(kwargs)
        group = _group(md) or group or requested
        if call_type is None:
            operation = "chat"
        else:
            operation = _OPERATIONS.get(getattr(call_type, "value", call_type), OTHER)
        rec = Request((self._route_for(group, md), operation))
        rec.start = start
        if requested is None:
            requested = group if group is not None else kwargs.get("model")
        if isinstance(requested, str):
            rec.requested(requested)
        recorder.begin(rec)
        p = _Open(key, rec, recorder, group)
        self._open[key] = p
        self._ensure_sweeper_locked()
        return p, evicted

    def _forget_locked(self, p: _Open) -> None:
        self._open.pop(p.key, None)
        if p.key[0] == "call":
            _remember(self._done_calls, p.key[1])

    # ---- event handling --------------------------------------------------------------------

    def _started(self, kwargs: Any) -> None:
        recorder = _sink.active
        if recorder is None or self._closed or not isinstance(kwargs, Mapping):
            return
        self._watch_proxy()
        with self._lock:
            key = self._key_locked(kwargs)
            if key is None:
                return
            p, evicted = self._open_locked(key, kwargs, perf_counter(), recorder)
            p.attempting = True
            p.settle_at = None
            p.touched = monotonic()
        for old in evicted:
            self._commit(old, INCOMPLETE)

    def _ended(
        self, kwargs: Any, response: Any, start_time: Any, end_time: Any, failed: bool
    ) -> None:
        try:
            self._record_end(kwargs, response, start_time, end_time, failed)
        except Exception as e:
            report("litellm failure event" if failed else "litellm success event", e)

    def _record_end(
        self, kwargs: Any, response: Any, start_time: Any, end_time: Any, failed: bool
    ) -> None:
        recorder = _sink.active
        if recorder is None or self._closed or not isinstance(kwargs, Mapping):
            return
        self._watch_proxy()
        perf_now, wall_now = perf_counter(), time()
        end = _perf(end_time, perf_now, wall_now)
        end = perf_now if end is None or end > perf_now else end
        start = _perf(start_time, perf_now, wall_now)
        start = end if start is None or start > end else start
        target = _target(kwargs)
        exc = kwargs.get("exception") if failed else None
        exc = exc if isinstance(exc, BaseException) else None
        cache_hit = not failed and kwargs.get("cache_hit") is True
        started_at = _epoch(start_time)
        attempt_id = (kwargs.get("litellm_call_id"), started_at, failed) if started_at else None
        first_chunk = None
        if not failed and kwargs.get("stream") is True:
            first_chunk = _perf(kwargs.get("completion_start_time"), perf_now, wall_now)
        finished: _Open | None = None
        with self._lock:
            if attempt_id is not None:
                if attempt_id in self._done_attempts:  # reported twice (sync and async)
                    return
                _remember(self._done_attempts, attempt_id)
            key = self._key_locked(kwargs)
            if key is None:
                return
            p, evicted = self._open_locked(key, kwargs, start, recorder)
            rec = p.rec
            if start < rec.start:
                rec.start = start
            p.attempting = False
            p.touched = monotonic()
            if cache_hit:
                rec.cache(self._cache_name, True)
            elif target is not None:
                provider, model, address, port = target
                if rec.decision is None:
                    rec.choose(provider, model)
                a = rec.attempt(provider, model, server_address=address, server_port=port)
                a.start, a.end = start, end
                if failed:
                    a.error(exc if exc is not None else OTHER)
                else:
                    if _caching():
                        rec.cache(self._cache_name, False)
                    a.usage(response)
                    served = a.response_model
                    if served is not None and (served == rec.requested_model or served == p.group):
                        # the LiteLLM proxy restamps an OpenAI-format response with the model
                        # the client asked for before callbacks run: the deployment answered
                        a.response_model = model
                    if first_chunk is not None and start <= first_chunk <= end:
                        a.chunk_marks = [first_chunk]
                        if rec.first_token is None:
                            rec.first_token = first_chunk
            if rec.end is None or end > rec.end:
                rec.end = end
            if failed:
                p.error = exc
                p.settle_at = monotonic() + self._settle_s
                self._cond.notify()
            else:
                self._forget_locked(p)
                finished = p
        for old in evicted:
            self._commit(old, INCOMPLETE)
        if target is not None:
            headers = _error_headers(exc) if failed else _response_headers(response)
            if headers is not None:
                ratelimit_from_headers(target[0], target[1], headers)
        if finished is not None:
            self._commit(finished)

    def _proxy_request(self, data: Any, call_type: Any) -> None:
        recorder = _sink.active
        if recorder is None or self._closed or not isinstance(data, Mapping):
            return
        call_id = data.get("litellm_call_id")
        if not isinstance(call_id, str) or not call_id:
            return
        self._watch_proxy()
        evicted: list[_Open] = []
        with self._lock:
            if call_id in self._done_calls or call_id in self._arrived:
                return
            if ("call", call_id) in self._open:
                return
            while len(self._arrived) >= self._max_open:
                oldest = next(iter(self._arrived))
                p, more = self._open_locked(("call", oldest), {}, perf_counter(), recorder)
                self._forget_locked(p)
                evicted += [*more, p]
            self._arrived[call_id] = _Arrival(
                perf_counter(), recorder, call_type, _client_model(data)
            )
            self._ensure_sweeper_locked()
        for old in evicted:
            self._commit(old, INCOMPLETE)

    def _proxy_failed(self, data: Any, exc: Any) -> None:
        recorder = _sink.active
        if recorder is None or self._closed or not isinstance(data, Mapping):
            return
        call_id = data.get("litellm_call_id")
        if not isinstance(call_id, str) or not call_id:
            return
        exc = exc if isinstance(exc, BaseException) else None
        now = perf_counter()
        with self._lock:
            if call_id in self._done_calls:
                return
            p, evicted = self._open_locked(("call", call_id), data, now, recorder, _requested(data))
            self._forget_locked(p)
            rec = p.rec
            if not rec.attempts and (p.refused or _refusal(exc)):
                rec.rate_limited()
            elif exc is not None:
                rec.error(exc)
            p.attempting = False
            rec.end = now
        for old in evicted:
            self._commit(old, INCOMPLETE)
        self._commit(p)

    def _refused(self, request_kwargs: Any) -> None:
        """The watched router found no deployment for a request (it raises to the caller, or
        falls back to another model group)."""
        recorder = _sink.active
        if recorder is None or self._closed or not isinstance(request_kwargs, Mapping):
            return
        now = perf_counter()
        with self._lock:
            key = self._key_locked(request_kwargs)
            if key is None:
                return
            p, evicted = self._open_locked(key, request_kwargs, now, recorder)
            p.refused = True
            p.attempting = False
            p.touched = monotonic()
            if p.rec.end is None or now > p.rec.end:
                p.rec.end = now
            p.settle_at = monotonic() + self._settle_s
            self._cond.notify()
        for old in evicted:
            self._commit(old, INCOMPLETE)

    def _commit(self, p: _Open, error_type: str | None = None) -> None:
        """Decide the outcome of a request that will hear nothing more, and commit it."""
        try:
            rec = p.rec
            if error_type is not None:
                rec.error(error_type)
            elif not _served(rec) and rec.error_type is None:
                if rec.attempts:
                    pass  # the last failed attempt's error.type is the request's
                elif p.refused or _refusal(p.error):
                    rec.rate_limited()
                else:
                    rec.error(p.error if p.error is not None else OTHER)
            if rec.end is None:
                rec.end = perf_counter()
            p.recorder.commit(rec)
        except Exception as e:
            report("litellm request commit", e)

    # ---- settling --------------------------------------------------------------------------

    def _ensure_sweeper_locked(self) -> None:
        thread = self._sweeper
        if (thread is None or not thread.is_alive()) and not self._closed:
            self._sweeper = thread = threading.Thread(
                target=_sweep, args=(weakref.ref(self),), name="routemeter-litellm", daemon=True
            )
            thread.start()

    def _due_locked(self, now: float) -> tuple[list[tuple[_Open, str | None]], float | None]:
        """Requests to commit now (with an error to force, if any) and the next deadline."""
        due: list[tuple[_Open, str | None]] = []
        next_at: float | None = None
        for p in list(self._open.values()):
            idle_at = p.touched + self._idle_s
            if p.settle_at is not None and not p.attempting and p.settle_at <= now:
                due.append((p, None))
            elif idle_at <= now:
                due.append((p, INCOMPLETE))
            else:
                when = idle_at
                if p.settle_at is not None and not p.attempting:
                    when = min(when, p.settle_at)
                next_at = when if next_at is None else min(next_at, when)
        for p, _ in due:
            self._forget_locked(p)
        for call_id, arrival in list(self._arrived.items()):  # no upstream call ever started
            idle_at = arrival.touched + self._idle_s
            if idle_at <= now:
                p, more = self._open_locked(("call", call_id), {}, now, arrival.recorder)
                self._forget_locked(p)
                due += [(old, INCOMPLETE) for old in more]
                due.append((p, INCOMPLETE))
            else:
                next_at = idle_at if next_at is None else min(next_at, idle_at)
        return due, next_at

    # ---- router watching -------------------------------------------------------------------

    def _watch_proxy(self) -> None:
        module = sys.modules.get("litellm.proxy.proxy_server")
        if module is None:
            return
        router = getattr(module, "llm_router", None)
        if router is not None and router is not self._proxy_router:
            self._proxy_router = router
            self.watch(router)

    def _watch(self, router: Any) -> None:
        with self._lock:
            self._routers.add(router)
            self._labels_by_group.clear()  # groups it does not serve are no labels from now on
        callback_ref = weakref.ref(self)
        cache = getattr(router, "cooldown_cache", None)
        add = getattr(cache, "add_deployment_to_cooldown", None)
        if cache is not None and add is not None and not _watched(add):
            router_ref = weakref.ref(router)

            def add_deployment_to_cooldown(*args: Any, **kwargs: Any) -> Any:
                result = add(*args, **kwargs)
                callback = callback_ref()
                if callback is not None:
                    callback._cooled_down(router_ref(), args, kwargs)
                return result

            setattr(add_deployment_to_cooldown, _MARK, callback_ref)
            cache.add_deployment_to_cooldown = add_deployment_to_cooldown
        for name in ("async_get_available_deployment", "get_available_deployment"):
            pick = getattr(router, name, None)
            if pick is None or _watched(pick):
                continue
            watched = _watch_async if inspect.iscoroutinefunction(pick) else _watch_sync
            wrapper = watched(pick, callback_ref)
            setattr(wrapper, _MARK, callback_ref)
            setattr(router, name, wrapper)

    def _cooled_down(self, router: Any, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> None:
        if self._closed:
            return
        try:
            model_id = kwargs.get("model_id", args[0] if args else None)
            exc = kwargs.get("original_exception", args[1] if len(args) > 1 else None)
            status = kwargs.get("exception_status", args[2] if len(args) > 2 else None)
            deployment = router.get_deployment(model_id=model_id) if router is not None else None
            target = _deployment_target(_deployment_params(deployment))
            if target is None:
                return
            if type(status) is int and 100 <= status <= 599:
                why: str | None = str(status)
            elif isinstance(status, str) and status.isdigit():
                why = status
            elif isinstance(exc, BaseException):
                why = error_type_of(exc)
            else:
                why = None
            # LiteLLM's cooldowns expire by themselves: the gauge goes back to 1 with them
            seconds = kwargs.get("cooldown_time", args[3] if len(args) > 3 else None)
            if type(seconds) not in (int, float):
                cache = getattr(router, "cooldown_cache", None)
                seconds = getattr(cache, "default_cooldown_time", None)
            cooldown(
                target[0],
                target[1],
                why,
                seconds=seconds if type(seconds) in (int, float) else None,
            )
        except Exception as e:
            report("litellm cooldown", e)


def _watched(method: Any) -> bool:
    """Whether a live, open callback already wraps ``method`` (a closed or collected one's
    wrapper is wrapped again, and stays a no-op)."""
    ref = getattr(method, _MARK, None)
    callback = ref() if isinstance(ref, weakref.ref) else None
    return isinstance(callback, RoutemeterCallback) and not callback._closed


def _requested(data: Mapping[str, Any]) -> str | None:
    """The model (group) of a proxy request as it stands (after the pre-call hooks that ran)."""
    model = data.get("model")
    return model if isinstance(model, str) and model else None


def _client_model(data: Mapping[str, Any]) -> str | None:
    """The model the client asked the proxy for: the proxy's snapshot of the request body,
    taken before any pre-call hook could rewrite ``data["model"]``, else ``data["model"]``."""
    body = _mapping(_mapping(data.get("proxy_server_request")).get("body"))
    model = body.get("model")
    return model if isinstance(model, str) and model else _requested(data)


def _served(rec: Request) -> bool:
    if rec.caches and any(hit for _, hit in rec.caches):
        return True
    return any(a.error_type is None for a in rec.attempts)


def _caching() -> bool:
    """Whether LiteLLM's response cache is configured (a success that is no hit is a miss)."""
    litellm = sys.modules.get("litellm")
    return getattr(litellm, "cache", None) is not None


def _remember(seen: dict[Any, None], item: Any) -> None:
    seen[item] = None
    if len(seen) > _REMEMBERED:
        del seen[next(iter(seen))]


def _deployment_params(deployment: Any) -> Mapping[str, Any]:
    if deployment is None:
        return {}
    params = (
        deployment.get("litellm_params")
        if isinstance(deployment, Mapping)
        else getattr(deployment, "litellm_params", None)
    )
    if isinstance(params, Mapping):
        return params
    dump = getattr(params, "model_dump", None)
    if callable(dump):
        dumped = dump()
        return dumped if isinstance(dumped, Mapping) else {}
    return {}


def _deployment_target(params: Mapping[str, Any]) -> tuple[str, str] | None:
    """(provider, model) of a deployment, named as LiteLLM names them in its call events."""
    model = params.get("model")
    if not isinstance(model, str) or not model:
        return None
    custom = params.get("custom_llm_provider")
    try:
        import litellm

        bare, provider, _, _ = litellm.get_llm_provider(
            model=model, custom_llm_provider=custom if isinstance(custom, str) else None
        )
        if isinstance(bare, str) and bare and isinstance(provider, str) and provider:
            return provider, bare
    except Exception:  # a deployment LiteLLM cannot resolve: fall back to its "provider/model"
        pass
    provider, _, bare = model.partition("/")
    return (provider, bare) if bare else None


def _watch_async(
    pick: Callable[..., Any], callback_ref: weakref.ref[RoutemeterCallback]
) -> Callable[..., Any]:
    async def watched(*args: Any, **kwargs: Any) -> Any:
        try:
            return await pick(*args, **kwargs)
        except Exception as e:
            _note_refusal(e, kwargs, callback_ref)
            raise

    return watched


def _watch_sync(
    pick: Callable[..., Any], callback_ref: weakref.ref[RoutemeterCallback]
) -> Callable[..., Any]:
    def watched(*args: Any, **kwargs: Any) -> Any:
        try:
            return pick(*args, **kwargs)
        except Exception as e:
            _note_refusal(e, kwargs, callback_ref)
            raise

    return watched


def _note_refusal(
    exc: BaseException, kwargs: Mapping[str, Any], callback_ref: weakref.ref[RoutemeterCallback]
) -> None:
    if type(exc).__name__ not in _REFUSALS:
        return
    callback = callback_ref()
    if callback is None:
        return
    try:
        callback._refused(kwargs.get("request_kwargs"))
    except Exception as e:
        report("litellm router refusal", e)


def _sweep(callback_ref: weakref.ref[RoutemeterCallback]) -> None:
    """Commit requests whose settle delay or idle limit passed; one thread per callback."""
    while True:
        callback = callback_ref()
        if callback is None:
            return
        with callback._cond:
            if callback._closed:
                return
            due, next_at = callback._due_locked(monotonic())
            if not due:
                timeout = None if next_at is None else max(next_at - monotonic(), 0.0)
                # wake at least every minute so a dropped callback lets this thread end
                callback._cond.wait(60.0 if timeout is None else min(timeout, 60.0))
        for p, error_type in due:
            callback._commit(p, error_type)
        del callback


def _flush_at_exit(callback_ref: weakref.ref[RoutemeterCallback]) -> None:
    callback = callback_ref()
    if callback is not None:
        try:
            callback.flush()
        except Exception as e:
            report("litellm flush at exit", e)
