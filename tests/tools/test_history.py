"""The history store: exact per-step deltas against a ledger, tiers, SQLite across restarts and
worker processes, and the memory one step costs."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import routemeter
from routemeter._config import ConfigError, retention_tiers
from routemeter.tools import _pages
from routemeter.tools._history import History, MemoryStore
from routemeter.tools._stats import Samples, read_samples

LEDGER = {"think": (7, 2), "background": (5, 0)}
"""route -> (requests, of them failed)"""


@routemeter.route("think")
def think(fail: bool) -> None:
    rec = routemeter.current()
    rec.requested("gpt-4o")
    with rec.attempt("openai", "gpt-4o-mini") as a:
        a.usage(input_tokens=100, output_tokens=20)
        if fail:
            a.error(503)
    if fail:
        with rec.attempt("anthropic", "claude-3-5-haiku-latest") as b:
            b.error(429)


@routemeter.route("background")
def background(fail: bool) -> None:
    with routemeter.current().attempt("openai", "gpt-4o-mini") as a:
        a.usage(input_tokens=10, output_tokens=3)


def _drive(ticks: History | None = None) -> None:
    for route, (count, failed) in LEDGER.items():
        handler = think if route == "think" else background
        for i in range(count):
            handler(i < failed)
            if ticks is not None and i % 2:
                ticks.tick()  # deltas spread over several steps


def _history(step_s: int = 1) -> History:
    tiers = ((step_s, 600), (step_s * 60, 86_400))
    return History(tiers, read_samples, "test", MemoryStore(tiers))


def _sums(document: dict, field: str) -> dict[str, float]:
    return {s["route"]: sum(v for v in s[field] if v is not None) for s in document["series"]}


def test_step_counts_are_exact_deltas_of_the_ledger():
    """Requests, errors and tokens summed over the steps equal what the handlers did."""
    routemeter.setup(exporters="prometheus", prometheus_server=False, set_global=False)
    _pages.stop()  # this test drives its own history, not the sampler's
    history = _history()
    history.tick()
    _drive(history)
    history.tick()
    doc = history.answer(900, "route")
    assert _sums(doc, "requests") == {"think": 7, "background": 5}
    assert _sums(doc, "errors") == {"think": 2, "background": 0}
    assert _sums(doc, "input_tokens") == {"think": 700, "background": 50}
    assert sum(doc["outcomes"]["ok"]) == 10
    assert sum(doc["outcomes"]["429"]) == 2
    providers = {p["provider"]: p for p in doc["providers"]}
    assert sum(providers["anthropic"]["rate_limited"]) == 2
    assert sum(providers["openai"]["errors"]) == 2
    assert doc["step_s"] == 60
    assert len(doc["timestamps"]) == 15
    assert all(len(s["requests"]) == 15 for s in doc["series"])


def test_a_query_counts_what_happened_since_the_last_tick():
    """Changes not yet ticked are in the answer: counts are exact at the moment of the query."""
    routemeter.setup(exporters="prometheus", prometheus_server=False, set_global=False)
    _pages.stop()
    history = _history()
    _drive()  # no tick at all
    assert _sums(history.answer(900, "route"), "requests") == {"think": 7, "background": 5}
    stats = history.window_stats(900)
    assert stats.route("think") is not None
    assert stats.route("think").errors == 2
    assert stats.total.requests == routemeter.stats().total.requests == 12


def test_the_window_stats_equal_the_since_start_stats():
    """A window covering the whole run gives /metrics/stats' numbers, row for row."""
    routemeter.setup(exporters="prometheus", prometheus_server=False, set_global=False)
    _pages.stop()
    history = _history()
    _drive(history)
    windowed = history.window_stats(3600).as_dict()
    since_start = routemeter.stats().as_dict()
    for key in ("routes", "targets", "models", "providers", "fallbacks"):
        for row in (*windowed[key], *since_start[key]):
            row.pop("rate", None)
        assert windowed[key] == since_start[key], key


def test_long_windows_are_answered_from_coarser_tiers_with_at_most_360_points():
    """24 h from a 1 s / 1 min tiering answers in 1-minute steps merged to 360 points or fewer."""
    routemeter.setup(exporters="prometheus", prometheus_server=False, set_global=False)
    _pages.stop()
    history = _history()
    _drive(history)
    doc = history.answer(86_400, "model")
    assert len(doc["timestamps"]) <= 360
    assert doc["step_s"] % 60 == 0
    served = {(s["provider"], s["model"]): sum(s["requests"]) for s in doc["series"]}
    assert served[("openai", "gpt-4o-mini")] == 12
    assert served[("anthropic", "claude-3-5-haiku-latest")] == 2


def test_a_step_costs_12_bytes_per_changed_sample(tmp_path):
    """One record packs each changed sample in 12 bytes (a 4-byte key id, an 8-byte value)."""
    routemeter.setup(exporters="prometheus", prometheus_server=False, set_global=False)
    _pages.stop()
    history = _history()
    background(False)
    history.tick()
    [(_, _, (ids, vals))] = history.store.get(1, 0, 2**40)
    assert ids.itemsize + vals.itemsize == 12
    assert 10 <= len(ids) <= 80  # one request: its histogram buckets, counts, sums, tokens


def test_retention_rejects_what_cannot_roll_up(monkeypatch):
    """Tiers whose steps do not divide each other fail setup, naming the variable."""
    assert retention_tiers("10s:1h,1m:48h,1h:30d") == ((10, 3600), (60, 172_800), (3600, 2_592_000))
    monkeypatch.setenv("ROUTEMETER_HISTORY_RETENTION", "10s:1h,15s:2h")
    with pytest.raises(ConfigError, match="ROUTEMETER_HISTORY_RETENTION='10s:1h,15s:2h'"):
        routemeter.setup(exporters="prometheus", prometheus_server=False)


def test_history_path_in_a_missing_directory_fails_setup(tmp_path, monkeypatch):
    """ROUTEMETER_HISTORY_PATH in a directory that does not exist fails fast at setup."""
    monkeypatch.setenv("ROUTEMETER_HISTORY_PATH", str(tmp_path / "missing" / "h.db"))
    with pytest.raises(ConfigError, match=r"ROUTEMETER_HISTORY_PATH=.*existing, writable"):
        routemeter.setup(exporters="prometheus", prometheus_server=False)


_WORKER = textwrap.dedent(
    """
    import sys
    import routemeter

    routemeter.setup(exporters="prometheus", prometheus_server=False, history_path=sys.argv[1])

    @routemeter.route(sys.argv[2])
    def handle():
        with routemeter.current().attempt("openai", "gpt-4o-mini") as a:
            a.usage(input_tokens=1, output_tokens=1)

    for _ in range(int(sys.argv[3])):
        handle()
    routemeter.shutdown()  # the last step is written before exit
    """
)


def _worker(db: Path, route: str, count: int) -> None:
    env = {**os.environ, "OTEL_SERVICE_NAME": "history-test"}
    done = subprocess.run(
        [sys.executable, "-c", _WORKER, str(db), route, str(count)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr


def test_sqlite_history_survives_restarts_and_holds_every_worker(tmp_path):
    """Two worker processes that ran and exited are both in the file, apart and summed."""
    db = tmp_path / "history.db"
    _worker(db, "think", 4)
    _worker(db, "think", 3)
    _worker(db, "background", 2)
    routemeter.setup(exporters="prometheus", prometheus_server=False, history_path=str(db))
    pages = _pages.current()
    assert pages is not None
    assert pages.history is not None
    doc = pages.history.answer(3600, "route")
    assert _sums(doc, "requests") == {"think": 7, "background": 2}
    assert len(doc["instances"]) == 4  # three workers that exited, and this process
    response = pages("history", {"window": "15m", "group_by": "route"})
    assert response is not None
    assert response.status == 200
    assert _sums(json.loads(response.body), "requests") == {"think": 7, "background": 2}


def test_views_kept_for_closed_steps_answer_like_a_fresh_summary():
    """Steps summarised once (when they close, or when first asked) give the same document as
    summarising every step anew; later refreshes reuse them."""
    routemeter.setup(exporters="prometheus", prometheus_server=False, set_global=False)
    _pages.stop()
    clock = [1_000_000.0]

    def read() -> Samples:
        return dataclasses.replace(read_samples(), at=clock[0])

    tiers = ((10, 600), (60, 3600))
    history = History(tiers, read, "test", MemoryStore(tiers), began=clock[0])
    for _ in range(30):  # 5 minutes of 10 s steps, each with traffic
        _drive()
        history.tick()
        clock[0] += 10
    fresh = History(tiers, read, "test", history.store)
    fresh._last = history._last
    for group_by in ("route", "provider", "model"):
        kept = history.answer(600, group_by)
        assert kept == fresh.answer(600, group_by)
        assert kept == fresh.answer(600, group_by)  # now from its own kept views
    assert len(history._views) >= 3 * 29
    assert _sums(history.answer(600, "route"), "requests") == {"think": 210, "background": 150}


def test_an_answer_keeps_the_busiest_series_and_says_how_many_there_were():
    """``limit`` keeps the busiest series over the window; ``series_total`` counts them all."""
    routemeter.setup(exporters="prometheus", prometheus_server=False, set_global=False)
    _pages.stop()
    history = _history()
    _drive(history)
    doc = history.answer(900, "route", limit=1)
    assert [s["route"] for s in doc["series"]] == ["think"]
    assert doc["series_total"] == 2
    assert sum(doc["total"]["requests"]) == 12


def test_a_tick_just_past_a_boundary_files_its_changes_under_the_step_that_ended():
    """Requests served between two ticks (or before the first) count in the step they
    happened in, not the next."""
    routemeter.setup(exporters="prometheus", prometheus_server=False, set_global=False)
    _pages.stop()
    clock = [1_000_000.05]

    def read() -> Samples:
        return dataclasses.replace(read_samples(), at=clock[0])

    tiers = ((10, 600),)
    history = History(tiers, read, "test", MemoryStore(tiers), began=999_993.0)
    _drive()  # served after set-up (999_993), before the first tick
    history.tick()  # just past 1_000_000: the step that ended, [999_990, 1_000_000)
    _drive()  # served during [1_000_000, 1_000_010)
    clock[0] = 1_000_010.05
    history.tick()
    clock[0] = 1_000_012.0
    doc = history.answer(600, "route")
    by_start = dict(zip(doc["timestamps"], doc["total"]["requests"], strict=True))
    assert by_start[999_990] == 12
    assert by_start[1_000_000] == 12
    assert by_start[1_000_010] == 0
    assert doc["at"] == 1_000_012.0  # the newest step holds what happened up to here
