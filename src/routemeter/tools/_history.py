"""History: routemeter's own cumulative series, differenced into steps and kept in tiers.

A sampler thread reads the same samples ``stats()`` reads (no scrape, no text) at every boundary
of the finest step and keeps what changed since the previous read: exact deltas, never rates.
Each tier (``ROUTEMETER_HISTORY_RETENTION``, ``10s:1h,1m:48h,1h:30d`` by default) holds one
record per step and process: the changed samples as two packed arrays, 12 bytes a sample
(docs/dashboard.md has the measured bound per series). The step in progress is written on every
tick, so readers are never more than one fine step behind; a query adds this process's changes
since the last tick, so its counts are exact up to the moment it runs.

With ``ROUTEMETER_HISTORY_PATH`` the records go to a SQLite file (WAL) instead of memory: it
survives restarts, and the worker processes of one server share it, each under its own
``service.instance.id``; a query sums them all. Every query answers through ``summarize()``, so
a window's numbers are the numbers ``/metrics/stats`` gives for the same samples.
"""

from __future__ import annotations

import json
import logging
import math
import sqlite3
import threading
import time
from array import array
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final, TypeAlias

from routemeter._report import report
from routemeter.export._exposition import no_gc_pauses
from routemeter.tools._stats import (
    LabelSet,
    Latency,
    RouteStats,
    Samples,
    Stats,
    UpstreamStats,
    delta,
    summarize,
)

_log = logging.getLogger("routemeter")

WINDOWS: Final = {
    "15m": 900,
    "1h": 3600,
    "6h": 21_600,
    "24h": 86_400,
    "7d": 604_800,
    "30d": 2_592_000,
}
GROUPS: Final = ("route", "provider", "model")
MAX_POINTS: Final = 360
MAX_KEPT_POINTS: Final = 100_000
"""Summarised points kept for closed steps (a tuple of 11 values, about 0.3 KB: 30 MB at
most); past it the oldest are summarised again when asked."""
MAX_SERIES: Final = 20
"""Series in one ``/history`` answer by default: the busiest over the window (``limit``)."""
"""Steps in one answer at most: finer steps are summed into multiples of the tier's step."""
RATE_LIMITED: Final = ("429", "RateLimitError")
_CUMULATIVE: Final = ("_total", "_bucket", "_count", "_sum")
"""What a step keeps: counters and histograms. Gauges (requests in flight) have no deltas."""

SampleKey = tuple[str, LabelSet]
Record: TypeAlias = "tuple[array[int], array[float]]"
"""The samples that changed in one step: key ids and their increases, side by side."""


# --- where records live ---------------------------------------------------------------------


class MemoryStore:
    """Records in memory, per tier a dict of step start -> instance -> record."""

    def __init__(self, tiers: Iterable[tuple[int, int]]) -> None:
        self._keys: dict[SampleKey, int] = {}
        self._names: list[SampleKey] = []
        self._steps: dict[int, dict[int, dict[str, Record]]] = {step: {} for step, _ in tiers}
        self._lock = threading.Lock()

    def key_ids(self, keys: Iterable[SampleKey]) -> list[int]:
        with self._lock:
            out = []
            for key in keys:
                found = self._keys.get(key)
                if found is None:
                    found = self._keys[key] = len(self._names)
                    self._names.append(key)
                out.append(found)
            return out

    def keys(self, ids: Iterable[int]) -> dict[int, SampleKey]:
        names = self._names
        return {i: names[i] for i in ids}

    def put(self, step: int, start: int, instance: str, record: Record, oldest: int) -> None:
        with self._lock:
            tier = self._steps[step]
            tier.setdefault(start, {})[instance] = record
            while tier and (first := next(iter(tier))) < oldest:  # starts only grow
                del tier[first]

    def get(self, step: int, first: int, last: int) -> list[tuple[int, str, Record]]:
        with self._lock:
            tier = self._steps.get(step, {})
            return [
                (start, instance, record)
                for start, records in tier.items()
                if first <= start <= last
                for instance, record in records.items()
            ]

    def close(self) -> None:
        pass


_SCHEMA: Final = (
    "CREATE TABLE IF NOT EXISTS sample_keys (id INTEGER PRIMARY KEY, name TEXT NOT NULL,"
    " labels TEXT NOT NULL, UNIQUE (name, labels))",
    "CREATE TABLE IF NOT EXISTS steps (step_s INTEGER NOT NULL, start INTEGER NOT NULL,"
    " instance TEXT NOT NULL, ids BLOB NOT NULL, vals BLOB NOT NULL,"
    " PRIMARY KEY (step_s, start, instance)) WITHOUT ROWID",
    "CREATE TABLE IF NOT EXISTS recent (id TEXT PRIMARY KEY, instance TEXT NOT NULL,"
    " start REAL NOT NULL, summary TEXT NOT NULL)",
    "CREATE INDEX IF NOT EXISTS recent_start ON recent (start)",
)


class SqliteStore:
    """Records in a SQLite file in WAL mode, shared by the processes of one server: sample keys
    get one id for all of them (``sample_keys``), each process writes its own rows."""

    def __init__(self, path: str) -> None:
        self._db = sqlite3.connect(path, timeout=5.0, check_same_thread=False)
        self._lock = threading.Lock()
        self._ids: dict[SampleKey, int] = {}
        self._names: dict[int, SampleKey] = {}
        with self._lock, self._db:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            for statement in _SCHEMA:
                self._db.execute(statement)

    def key_ids(self, keys: Iterable[SampleKey]) -> list[int]:
        out = []
        with self._lock:
            for key in keys:
                found = self._ids.get(key)
                if found is None:
                    name, labels = key[0], json.dumps(key[1], separators=(",", ":"))
                    with self._db:
                        self._db.execute(
                            "INSERT OR IGNORE INTO sample_keys (name, labels) VALUES (?, ?)",
                            (name, labels),
                        )
                        row = self._db.execute(
                            "SELECT id FROM sample_keys WHERE name = ? AND labels = ?",
                            (name, labels),
                        ).fetchone()
                    found = self._ids[key] = int(row[0])
                    self._names[found] = key
                out.append(found)
        return out

    def keys(self, ids: Iterable[int]) -> dict[int, SampleKey]:
        with self._lock:
            missing = [i for i in set(ids) if i not in self._names]
            for start in range(0, len(missing), 500):
                chunk = missing[start : start + 500]
                rows = self._db.execute(
                    "SELECT id, name, labels FROM sample_keys WHERE id IN"
                    f" ({','.join('?' * len(chunk))})",
                    chunk,
                ).fetchall()
                for i, name, labels in rows:
                    key = (str(name), tuple((str(k), str(v)) for k, v in json.loads(labels)))
                    self._names[int(i)] = key
                    self._ids[key] = int(i)
            return {i: self._names[i] for i in ids if i in self._names}

    def put(self, step: int, start: int, instance: str, record: Record, oldest: int) -> None:
        ids, vals = record
        with self._lock, self._db:
            self._db.execute(
                "INSERT OR REPLACE INTO steps VALUES (?, ?, ?, ?, ?)",
                (step, start, instance, ids.tobytes(), vals.tobytes()),
            )
            self._db.execute("DELETE FROM steps WHERE step_s = ? AND start < ?", (step, oldest))

    def get(self, step: int, first: int, last: int) -> list[tuple[int, str, Record]]:
        with self._lock:
            rows = self._db.execute(
                "SELECT start, instance, ids, vals FROM steps"
                " WHERE step_s = ? AND start BETWEEN ? AND ?",
                (step, first, last),
            ).fetchall()
        out = []
        for start, instance, raw_ids, raw_vals in rows:
            ids: array[int] = array("I")
            ids.frombytes(raw_ids)
            vals: array[float] = array("d")
            vals.frombytes(raw_vals)
            out.append((int(start), str(instance), (ids, vals)))
        return out

    def put_recent(self, instance: str, summaries: list[dict[str, Any]], keep: int) -> None:
        """Add finished requests' summaries; keep the ``keep`` newest of every process's."""
        rows = [
            (str(x["id"]), instance, float(x["start"]), json.dumps(x, separators=(",", ":")))
            for x in summaries
        ]
        with self._lock, self._db:
            self._db.executemany("INSERT OR REPLACE INTO recent VALUES (?, ?, ?, ?)", rows)
            self._db.execute(
                "DELETE FROM recent WHERE start < (SELECT min(start) FROM"
                " (SELECT start FROM recent ORDER BY start DESC LIMIT ?))",
                (keep,),
            )

    def recent(self, limit: int) -> list[dict[str, Any]]:
        """The newest kept summaries of every process, newest first."""
        with self._lock:
            rows = self._db.execute(
                "SELECT summary FROM recent ORDER BY start DESC LIMIT ?", (limit,)
            ).fetchall()
        return [json.loads(row[0]) for row in rows]

    def one(self, request_id: str) -> dict[str, Any] | None:
        with self._lock:
            row = self._db.execute(
                "SELECT summary FROM recent WHERE id = ?", (request_id,)
            ).fetchone()
        return None if row is None else dict(json.loads(row[0]))

    def close(self) -> None:
        with self._lock:
            self._db.close()


Store = MemoryStore | SqliteStore


# --- the sampler ----------------------------------------------------------------------------


def _changes(step: Samples) -> dict[SampleKey, float]:
    return {
        (name, labels): value
        for name, values in step.series.items()
        for labels, value in values.items()
        if value
    }


@dataclass(slots=True)
class _Pending:
    start: int
    sums: dict[SampleKey, float]


class History:
    """The tiers of one process, fed by ``tick()`` (the sampler thread calls it at every fine
    step boundary), read by ``answer()`` and ``window_stats()``."""

    def __init__(
        self,
        tiers: tuple[tuple[int, int], ...],
        read: Callable[[], Samples],
        instance: str,
        store: Store,
        began: float | None = None,
    ) -> None:
        self.tiers = tiers
        self.read = read
        self.instance = instance
        self.store = store
        self._last: Samples | None = None
        self.began = time.time() if began is None else began
        """When this history started (``read()``'s clock): the first tick's changes happened
        since then."""
        self._pending: dict[int, _Pending] = {}
        self._views: dict[tuple[int, int, str], _View] = {}
        """Views of steps that can no longer change, oldest first."""
        self._views_lock = threading.Lock()
        self._kept = 0
        """Points (groups, plus one per view for its totals) in the kept views."""
        self._lock = threading.Lock()

    def _since_last(self, now: Samples) -> dict[SampleKey, float]:
        moved = delta(now, self._last)
        return {k: v for k, v in _changes(moved).items() if k[0].endswith(_CUMULATIVE)}

    def tick(self) -> None:
        """Take this process's changes since the previous tick into every tier's step."""
        with self._lock:
            now = self.read()
            changes = self._since_last(now)
            last, self._last = self._last, now
            if not changes:
                return
            # the changes happened between the two reads (the first: since the history began):
            # they go to the step holding the middle of that span, so a tick just past a
            # boundary files them under the step that just ended
            at = int(((self.began if last is None else last.at) + now.at) / 2)
            for step, kept in self.tiers:
                start = at - at % step
                pending = self._pending.get(step)
                if pending is None or pending.start != start:
                    if pending is not None and isinstance(self.store, MemoryStore):
                        self._settle(step, pending)
                    pending = self._pending[step] = _Pending(start, {})
                sums = pending.sums
                for key, value in changes.items():
                    sums[key] = sums.get(key, 0.0) + value
                self._put(step, start, sums, start - kept)

    def _settle(self, step: int, closed: _Pending) -> None:
        """Summarise a step that just closed, for every grouping, while it is at hand: with the
        history in memory nothing else can change it, and a query then reads views only."""
        start = closed.start
        snapshot = summarize(_samples(closed.sums, start + step, start))
        for group_by in GROUPS:
            self._remember((step, start, group_by), _view(group_by, snapshot))

    def _remember(self, key: tuple[int, int, str], view: _View) -> None:
        """Keep ``view``, dropping the oldest kept ones past ``MAX_KEPT_POINTS`` in all."""
        with self._views_lock:
            old = self._views.pop(key, None)
            if old is not None:
                self._kept -= len(old.points) + 1
            self._views[key] = view
            self._kept += len(view.points) + 1
            while self._kept > MAX_KEPT_POINTS and len(self._views) > 1:
                dropped = self._views.pop(next(iter(self._views)))
                self._kept -= len(dropped.points) + 1

    def _put(self, step: int, start: int, sums: Mapping[SampleKey, float], oldest: int) -> None:
        keys = list(sums)
        ids = array("I", self.store.key_ids(keys))
        vals = array("d", [sums[k] for k in keys])
        self.store.put(step, start, self.instance, (ids, vals), oldest)

    # --- reading -----------------------------------------------------------------------------

    def tier_for(self, window_s: int) -> int:
        """The finest step whose tier keeps the whole window (else the longest-kept tier's)."""
        for step, kept in self.tiers:
            if kept >= window_s:
                return step
        return self.tiers[-1][0]

    def window(self, window_s: int) -> _Window:
        """The records over the window ending now, and this process's changes since its last
        tick (they belong to the current step)."""
        step = self.tier_for(window_s)
        with self._lock:
            now = self.read()
            live = self._since_last(now)
        at = int(now.at)
        current = at - at % step
        first = current - (window_s // step - 1) * step if window_s > step else current
        records: dict[int, list[Record]] = {}
        instances = {self.instance}
        for start, instance, record in self.store.get(step, first, current):
            instances.add(instance)
            records.setdefault(start, []).append(record)
        starts = list(range(first, current + 1, step))
        return _Window(self.store, step, starts, records, live, current, sorted(instances), now)

    def window_stats(self, window_s: int) -> Stats:
        """``/metrics/stats`` over the window: the same summary of the summed steps."""
        window = self.window(window_s)
        total = window.sums(window.starts)
        for name, values in window.now.series.items():  # gauges (in flight) as they are now
            if not name.endswith(_CUMULATIVE):
                for labels, value in values.items():
                    total[(name, labels)] = value
        return summarize(_samples(total, window.now.at, window.starts[0]))

    def answer(self, window_s: int, group_by: str, limit: int = MAX_SERIES) -> dict[str, Any]:
        """The ``/history`` document (docs/dashboard.md): the ``limit`` busiest series."""
        window = self.window(window_s)
        count = len(window.starts)
        if count > MAX_POINTS:
            window = window.coarser(window.step * math.ceil(count / (MAX_POINTS - 1)))
        step = window.step
        # a step no process writes any more (two fine steps past its end) never changes: its
        # view is computed once, so a dashboard refresh summarises only the newest steps
        settled = window.now.at - 2 * self.tiers[0][0]
        views = []
        for start in window.starts:
            if not window.has(start):
                views.append(_NO_VIEW)
                continue
            key = (step, start, group_by)
            view = self._views.get(key)
            if view is None:
                changes = window.sums([start])
                view = _view(group_by, summarize(_samples(changes, start + step, start)))
                if start + step <= settled:
                    self._remember(key, view)
            views.append(view)
        document = _document(group_by, step, window.starts, views, window.instances, limit)
        document["at"] = window.now.at  # the last step holds what happened up to this moment
        return document

    def rollup(self, window_s: int, bucket_s: int) -> list[dict[str, Any]]:
        """Every request over the window, per ``bucket_s`` (the seed's ``group_by=hour|day``)."""
        window = self.window(window_s)
        if bucket_s > window.step:
            window = window.coarser(bucket_s)
        rows = []
        for start in window.starts:
            changes = window.sums([start])
            total = summarize(_samples(changes, start + window.step, start)).total
            rows.append({"start": start, **_route_point(total)})
        return rows

    def grouped(self, window_s: int, group_by: str) -> list[dict[str, Any]]:
        """The window's totals per route, provider, model or tenant."""
        snapshot = self.window_stats(window_s)
        if group_by == "tenant":
            return [
                {
                    "tenant": t.tenant,
                    "requests": t.requests,
                    "errors": t.errors,
                    "input_tokens": t.tokens.get("input", 0),
                    "output_tokens": t.tokens.get("output", 0),
                    "cost_usd": t.cost_usd,
                    "good": t.good,
                    "savings_usd": t.savings_usd,
                }
                for t in snapshot.tenants
            ]
        names = _KEY_NAMES["model" if group_by == "model" else group_by]
        return [
            {**dict(zip(names, key, strict=True)), **point}
            for key, point in sorted(_points(group_by, snapshot).items())
        ]


@dataclass(slots=True)
class _Window:
    """A window's records per step start, read from the store but summed only on demand."""

    store: Store
    step: int
    starts: list[int]
    records: dict[int, list[Record]]
    live: dict[SampleKey, float]
    current: int
    instances: list[str]
    now: Samples

    def has(self, start: int) -> bool:
        return start in self.records or (start == self.current and bool(self.live))

    def coarser(self, step: int) -> _Window:
        """The same records in steps of ``step`` (a multiple of this one), aligned to it."""
        first = self.starts[0] - self.starts[0] % step
        records: dict[int, list[Record]] = {}
        for start, found in self.records.items():
            records.setdefault(start - (start - first) % step, []).extend(found)
        current = self.current - (self.current - first) % step
        starts = list(range(first, current + 1, step))
        return _Window(
            self.store, step, starts, records, self.live, current, self.instances, self.now
        )

    def sums(self, starts: Iterable[int]) -> dict[SampleKey, float]:
        """The samples that changed over these steps, summed."""
        chosen = list(starts)
        found = [r for start in chosen for r in self.records.get(start, ())]
        names = self.store.keys({i for ids, _ in found for i in ids})
        out: dict[SampleKey, float] = {}
        for ids, vals in found:
            for i, value in zip(ids, vals, strict=True):
                key = names.get(i)
                if key is not None:
                    out[key] = out.get(key, 0.0) + value
        if self.live and self.current in chosen:
            for key, value in self.live.items():
                out[key] = out.get(key, 0.0) + value
        return out


def _samples(sums: Mapping[SampleKey, float], at: float, since: float) -> Samples:
    series: dict[str, dict[LabelSet, float]] = {}
    for (name, labels), value in sums.items():
        series.setdefault(name, {})[labels] = value
    return Samples(series, at, since)


# --- the document ---------------------------------------------------------------------------


def _latency_fields(prefix: str, latency: Latency) -> dict[str, float | None]:
    return {
        f"{prefix}p50_s": latency.p50,
        f"{prefix}p95_s": latency.p95,
        f"{prefix}p99_s": latency.p99,
    }


def _point(
    requests: int,
    errors: int,
    tokens: Mapping[str, int],
    cost_usd: float,
    duration: Latency,
    first: Latency,
) -> dict[str, Any]:
    return {
        "requests": requests,
        "errors": errors,
        "input_tokens": tokens.get("input", 0),
        "output_tokens": tokens.get("output", 0),
        "cost_usd": cost_usd,
        **_latency_fields("", duration),
        **_latency_fields("ttft_", first),
    }


def _upstream_point(u: UpstreamStats) -> dict[str, Any]:
    """An upstream's attempts: what the provider saw and billed."""
    return _point(u.attempts, u.errors, u.tokens, u.cost_usd, u.duration, u.time_to_first_chunk)


_EMPTY_POINT: Final[dict[str, Any]] = {
    "requests": 0,
    "errors": 0,
    "input_tokens": 0,
    "output_tokens": 0,
    "cost_usd": 0.0,
    "p50_s": None,
    "p95_s": None,
    "p99_s": None,
    "ttft_p50_s": None,
    "ttft_p95_s": None,
    "ttft_p99_s": None,
}


def _route_point(r: RouteStats) -> dict[str, Any]:
    return _point(r.requests, r.errors, r.tokens, r.cost_usd, r.duration, r.time_to_first_token)


_KEY_NAMES: Final = {"route": ("route",), "provider": ("provider",), "model": ("provider", "model")}


def _points(group_by: str, snapshot: Stats) -> dict[tuple[str, ...], dict[str, Any]]:
    if group_by == "route":
        return {(r.route,): _route_point(r) for r in snapshot.routes}
    if group_by == "provider":
        return {(u.provider,): _upstream_point(u) for u in snapshot.providers}
    return {(u.provider, u.model or ""): _upstream_point(u) for u in snapshot.models}


@dataclass(frozen=True, slots=True)
class _View:
    """What one step contributes to the document: per group, all routes, by outcome, per
    provider (attempts, errors, of them rate limited)."""

    points: Mapping[tuple[str, ...], tuple[Any, ...]]
    """Per group, its fields in ``FIELDS`` order (a tuple: a third of a dict's memory)."""
    total: Mapping[str, Any]
    outcomes: Mapping[str, int]
    providers: Mapping[str, tuple[int, int, int]]


FIELDS: Final = tuple(_EMPTY_POINT)
"""A series' fields, ``requests`` first."""
_EMPTY_ROW: Final = tuple(_EMPTY_POINT.values())
_NO_VIEW: Final = _View({}, _EMPTY_POINT, {}, {})


def _view(group_by: str, snapshot: Stats) -> _View:
    total = snapshot.total
    return _View(
        {key: tuple(p[f] for f in FIELDS) for key, p in _points(group_by, snapshot).items()},
        _route_point(total),
        {"ok": total.requests - total.errors, **total.errors_by_type},
        {
            p.provider: (
                p.attempts,
                p.errors,
                sum(p.errors_by_type.get(k, 0) for k in RATE_LIMITED),
            )
            for p in snapshot.providers
        },
    )


def _document(
    group_by: str,
    step: int,
    starts: list[int],
    views: list[_View],
    instances: list[str],
    limit: int,
) -> dict[str, Any]:
    names = _KEY_NAMES[group_by]
    busy: dict[tuple[str, ...], int] = {}
    for view in views:
        for key, point in view.points.items():
            busy[key] = busy.get(key, 0) + point[0]
    keys = sorted(busy, key=lambda k: (-busy[k], k))[:limit]
    series = []
    for key in keys:
        row: dict[str, Any] = dict(zip(names, key, strict=True))
        for i, field in enumerate(FIELDS):
            row[field] = [view.points.get(key, _EMPTY_ROW)[i] for view in views]
        series.append(row)
    outcomes = {"ok": [view.outcomes.get("ok", 0) for view in views]}
    for kind in sorted({k for view in views for k in view.outcomes} - {"ok"}):
        outcomes[kind] = [view.outcomes.get(kind, 0) for view in views]
    providers = []
    for provider in sorted({p for view in views for p in view.providers}):
        rows = [view.providers.get(provider, (0, 0, 0)) for view in views]
        providers.append(
            {
                "provider": provider,
                "attempts": [r[0] for r in rows],
                "errors": [r[1] for r in rows],
                "rate_limited": [r[2] for r in rows],
            }
        )
    return {
        "group_by": group_by,
        "step_s": step,
        "timestamps": starts,
        "series": series,
        "series_total": len(busy),
        "total": {field: [view.total[field] for view in views] for field in _EMPTY_POINT},
        "outcomes": outcomes,
        "providers": providers,
        "instances": instances,
    }


# --- the sampler thread -----------------------------------------------------------------------


class Sampler:
    """Ticks ``history`` at every boundary of its finest step until stopped; a failed tick is
    reported once per kind and the next one tries again."""

    def __init__(self, history: History, also: Callable[[], None] | None = None) -> None:
        self.history = history
        self.also = also
        """Run after each tick in the same thread (the recent requests' flush to SQLite)."""
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="routemeter-history", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        step = self.history.tiers[0][0]
        while True:
            now = time.time()
            wait = step - now % step + 0.05  # just past the boundary: the step has closed
            if self._stop.wait(wait):
                return
            self._tick()

    def _tick(self) -> None:
        try:
            with no_gc_pauses():
                self.history.tick()
                if self.also is not None:
                    self.also()
        except Exception as e:
            report("history", e)

    def stop(self) -> None:
        """Stop ticking; a last tick keeps what changed since the previous one."""
        self._stop.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(2.0)
        self._tick()
        self.history.store.close()
