"""Everything served under ``<metrics_path>/`` beside /metrics, on the mounted and the
standalone endpoint alike: ``stats``, ``history``, ``requests/recent``, ``requests/<id>``,
``dashboard`` and the seed's ``api/stats``. Each answer is computed on the caller's thread: the
mounted endpoint calls from a worker thread, the standalone server from its handler threads, so
none of it runs on an application's event loop.

``start(handle)`` (``routemeter.setup()`` calls it) starts the history sampler and keeps the last
finished requests; ``stop()`` (``routemeter.shutdown()``) writes the last step and stops it.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

from routemeter._config import retention_tiers
from routemeter._report import report
from routemeter.export._exposition import no_gc_pauses
from routemeter.recording import _otel_private
from routemeter.request import _recent
from routemeter.tools import _recent as recent_view
from routemeter.tools._history import (
    GROUPS,
    MAX_SERIES,
    WINDOWS,
    History,
    MemoryStore,
    Sampler,
    SqliteStore,
)
from routemeter.tools._stats import StatsUnavailable, read_samples, summarize

if TYPE_CHECKING:
    from routemeter.export._setup import Handle

JSON: Final = "application/json"
PERIODS: Final = ("1h", "6h", "24h", "7d", "30d")
API_GROUPS: Final = ("hour", "day", "model", "route", "provider", "tenant", "user")
"""The seed's ``user`` answers per tenant (``rec.tenant()``): routemeter never records who an
individual user is, only the team or plan an app names."""
MAX_LIMIT: Final = 1000


@dataclass(frozen=True, slots=True)
class Page:
    status: int
    content_type: str
    body: bytes


def _json(data: Any, status: int = 200) -> Page:
    # iterencode runs the pure-Python encoder: slower than dumps' C one, but it lets other
    # threads (an event loop's) in between pieces instead of holding the GIL for the whole
    encoder = json.JSONEncoder(separators=(",", ":"), allow_nan=False)
    return Page(status, JSON, "".join(encoder.iterencode(data)).encode())


def _error(status: int, message: str) -> Page:
    return _json({"error": message}, status)


def _choice(query: Mapping[str, str], name: str, allowed: tuple[str, ...], default: str) -> str:
    value = query.get(name, default)
    if value not in allowed:
        raise _BadQuery(f"{name}={value[:40]!r}; allowed: {', '.join(allowed)}")
    return value


class _BadQuery(ValueError):
    pass


def _number(query: Mapping[str, str], name: str, default: int, lo: int, hi: int) -> int:
    raw = query.get(name)
    if raw is None:
        return default
    if not raw.isdigit() or not lo <= int(raw) <= hi:
        raise _BadQuery(f"{name}={raw[:20]!r}; allowed: an integer from {lo} to {hi}")
    return int(raw)


class Pages:
    """The pages of one ``setup()``: its history and its recorder's allow-lists and prices."""

    def __init__(self, handle: Handle) -> None:
        self.handle = handle
        self.history: History | None = None
        self.sampler: Sampler | None = None
        self.shared: SqliteStore | None = None
        """The SQLite file the worker processes of a server share, when there is one: then
        the history-backed pages and the recent requests answer for the whole server."""
        self._flushed: object = None
        """The newest recent request written to ``shared`` (by identity)."""
        config = handle.config
        _recent.configure(config.recent_requests)
        try:
            read_samples()  # stats() can read this setup: history can too
        except StatsUnavailable:
            return
        instance = "unknown"
        if handle.meter_provider is not None:
            try:
                resource = _otel_private.provider_resource(handle.meter_provider)
                instance = str(resource.attributes.get("service.instance.id", instance))
            except _otel_private.SdkChanged:
                pass
        tiers = retention_tiers(config.history_retention)
        store: SqliteStore | MemoryStore
        if config.history_path:
            store = self.shared = SqliteStore(config.history_path)
        else:
            store = MemoryStore(tiers)
        self.history = History(tiers, read_samples, instance, store)
        self.sampler = Sampler(self.history, self._flush_recent if self.shared else None)
        self.sampler.start()

    def _flush_recent(self) -> None:
        """The sampler's thread: this process's requests finished since the last flush, into
        the shared file, where every worker reads them."""
        shared, history = self.shared, self.history
        recorder = self.handle.recorder
        if shared is None or history is None or recorder is None:
            return
        kept = _recent.latest(MAX_LIMIT)
        fresh = []
        for rec in kept:  # newest first
            if rec is self._flushed:
                break
            fresh.append(rec)
        if fresh:
            self._flushed = fresh[0]
            summaries = [recent_view.summary(r, recorder.bounds, recorder.prices) for r in fresh]
            shared.put_recent(history.instance, summaries, self.handle.config.recent_requests)

    def whole_server(self, subpath: str, query: Mapping[str, str]) -> bool:
        """Whether this page answers for every worker process of the server (from the shared
        file), so any worker may answer it when they share a port."""
        if self.shared is None:
            return False
        if subpath == "stats":
            return "window" in query
        return subpath in ("dashboard", "history", "api/stats") or subpath.startswith("requests/")

    def stop(self) -> None:
        if self.sampler is not None:
            self.sampler.stop()
            self.sampler = None

    def __call__(self, subpath: str, query: Mapping[str, str]) -> Page | None:
        """The page at ``<metrics_path>/<subpath>``, or ``None`` when there is none."""
        try:
            return self._answer(subpath, query)
        except _BadQuery as e:
            return _error(400, str(e))
        except StatsUnavailable as e:
            return _error(503, str(e))
        except Exception as e:  # a bug here must not take the route down with a traceback
            report("pages", e)
            return _error(500, "routemeter: this page failed; the log has the error")

    def _answer(self, subpath: str, query: Mapping[str, str]) -> Page | None:
        if subpath == "dashboard":
            from routemeter.tools._dashboard import page

            return Page(200, "text/html; charset=utf-8", page())
        if subpath == "stats":
            return self._stats(query)
        if subpath == "history":
            return self._history(query)
        if subpath == "requests/recent":
            return self._recent(query)
        if subpath.startswith("requests/"):
            return self._one(subpath.removeprefix("requests/"))
        if subpath == "api/stats":
            return self._api_stats(query)
        return None

    def _need_history(self) -> History:
        if self.history is None:
            raise StatsUnavailable("routemeter keeps no history for this setup (no stats reader)")
        return self.history

    def _stats(self, query: Mapping[str, str]) -> Page:
        if "window" not in query:
            with no_gc_pauses():
                return _json(summarize(read_samples()).as_dict())
        window = _choice(query, "window", tuple(WINDOWS), "1h")
        with no_gc_pauses():
            return _json(self._need_history().window_stats(WINDOWS[window]).as_dict())

    def _history(self, query: Mapping[str, str]) -> Page:
        window = _choice(query, "window", tuple(WINDOWS), "1h")
        group_by = _choice(query, "group_by", GROUPS, "route")
        limit = _number(query, "limit", MAX_SERIES, 1, MAX_LIMIT)
        with no_gc_pauses():
            document = self._need_history().answer(WINDOWS[window], group_by, limit)
        return _json({"window": window, **document})

    def _limits(self) -> tuple[Any, Any]:
        recorder = self.handle.recorder
        if recorder is None:
            raise StatsUnavailable("routemeter is shut down")
        return recorder.bounds, recorder.prices

    def _recent(self, query: Mapping[str, str]) -> Page:
        limit = _number(query, "limit", 50, 1, MAX_LIMIT)
        bounds, prices = self._limits()
        mine = recent_view.recent(limit, bounds, prices)
        if self.shared is not None:  # every worker's, and this one's not flushed yet
            seen = {r["id"] for r in mine}
            mine += [r for r in self.shared.recent(limit) if r["id"] not in seen]
            mine.sort(key=lambda r: -float(r["start"]))
        return _json({"requests": mine[:limit]})

    def _one(self, request_id: str) -> Page:
        bounds, prices = self._limits()
        found = recent_view.one(request_id, bounds, prices)
        if found is None and self.shared is not None:
            found = self.shared.one(request_id)
        if found is None:
            return _error(404, "not found: never kept, or evicted since")
        return _json(found)

    def _api_stats(self, query: Mapping[str, str]) -> Page:
        """The seed's ``/metrics/api/stats?period=&group_by=``, answered from the history."""
        period = _choice(query, "period", PERIODS, "24h")
        group_by = _choice(query, "group_by", API_GROUPS, "model")
        history = self._need_history()
        seconds = WINDOWS[period]
        with no_gc_pauses():
            if group_by in ("hour", "day"):
                rows = history.rollup(seconds, 3600 if group_by == "hour" else 86_400)
            else:
                rows = history.grouped(seconds, "tenant" if group_by == "user" else group_by)
        return _json({"period": period, "group_by": group_by, "rows": rows})


PAGES: Final = frozenset({"stats", "history", "dashboard", "requests/recent", "api/stats"})


def serves(subpath: str) -> bool:
    """Whether ``<metrics_path>/<subpath>`` is one of routemeter's pages (the app keeps the
    rest of the paths under its metrics path)."""
    if subpath in PAGES:
        return True
    rest = subpath.removeprefix("requests/")
    return rest != subpath and 0 < len(rest) <= 64 and "/" not in rest


_lock = threading.Lock()
_pages: Pages | None = None


def start(handle: Handle) -> Pages | None:
    """Serve the pages for ``handle`` (idempotent per handle); ``None`` when disabled."""
    global _pages
    with _lock:
        if _pages is not None and _pages.handle is handle:
            return _pages
        if _pages is not None:
            _pages.stop()
            _pages = None
        if handle.config.disabled or handle.recorder is None:
            return None
        _pages = Pages(handle)
        if handle.prometheus is not None:
            handle.prometheus.pages = _pages
        return _pages


def stop() -> None:
    """Write the history's last step and stop its sampler (``routemeter.shutdown()``)."""
    global _pages
    with _lock:
        pages, _pages = _pages, None
    if pages is not None:
        pages.stop()


def current() -> Pages | None:
    return _pages


def whole_server(subpath: str, query: Mapping[str, str]) -> bool:
    """``Pages.whole_server`` of the pages being served (``False`` when none are)."""
    pages = _pages
    return pages is not None and pages.whole_server(subpath, query)
