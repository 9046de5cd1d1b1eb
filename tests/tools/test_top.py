"""``routemeter top``: an 80-column view of any routemeter /metrics endpoint, rates between
scrapes, a live refresh loop, and ``--once`` against the live demo router."""

from __future__ import annotations

import argparse
import asyncio
import io
import re
import socket
import sys

import pytest
from rich.console import Console

import routemeter
from routemeter._cli import main
from routemeter.demo.load import LoadConfig, run_load
from routemeter.demo.providers import Upstreams
from routemeter.demo.router import Router, RouterSettings, build_app
from routemeter.demo.run import bind, serving
from routemeter.tools import _top
from routemeter.tools._stats import delta, parse, summarize

from .test_stats import known

ANSI = re.compile(r"\x1b\[")


def rendered(renderable, width: int = 80) -> str:
    console = Console(file=io.StringIO(), width=width, color_system=None, highlight=False)
    console.print(renderable)
    return console.file.getvalue()  # type: ignore[attr-defined]


def test_view_fits_80_columns_and_shows_the_numbers():
    """The view fits 80 columns and shows the snapshot's numbers in their cells."""
    before, now = parse(known(1), at=1000.0), parse(known(3), at=1004.0)
    text = rendered(
        _top.render(summarize(now), summarize(delta(now, before)), live=True, source="x")
    )
    lines = text.splitlines()
    assert max(len(line) for line in lines) <= 80
    row = next(line.split() for line in lines if line.startswith("a "))
    # route a, scrape 3: 150 requests, 20% errors, p50 175ms, p95/p99 400ms, 100 req/s... /4
    assert row == ["a", "25.0", "150", "20.0", "175ms", "400ms", "400ms", "100ms", "25.0", "2.2500"]
    providers = [line.split()[0] for line in lines if line.split()[:1] in (
        ["anthropic"], ["gcp.gemini"], ["openai"])]  # fmt: skip
    assert providers == ["anthropic", "gcp.gemini", "openai"]
    assert "gpt-4o -> claude" in text
    assert "tokens  in 3900, out 600" in text
    value = lines.index(next(line for line in lines if line.startswith("value ")))
    rows = [line.split() for line in lines[value:] if line.startswith(("a ", "b ", "all "))]
    # route a, scrape 3: 105 of 150 good, baseline 3.0 - cost 2.25, overhead of 150 requests
    # in [40, 50, 50, 50] x 3 buckets (p50 rank 75 in [0, 0.1], p95 rank 142.5 in (0.1, 0.2])
    assert rows[0] == ["a", "70.0", "3.0000", "0.7500", "25.0", "62ms", "175ms", "1.40"]
    assert rows[1] == ["b", "100.0", "-", "-", "-", "-", "-", "-"]  # no baseline, no overhead
    assert rows[2][:4] == ["all", f"{105 / 174 * 100 + 24 / 174 * 100:.1f}", "3.0000", "0.7500"]
    up = {line.split()[0]: line.split()[-1] for line in lines
          if line.split()[:1] in (["anthropic"], ["gcp.gemini"], ["openai"])}  # fmt: skip
    assert up == {"anthropic": "yes", "gcp.gemini": "-", "openai": "no"}
    once = rendered(_top.render(summarize(now)))  # no rates: no per-second columns
    assert "req/s" not in once
    assert "try/s" not in once
    old = "\n".join(line for line in known().splitlines()
                    if not line.startswith(("llm_router_overhead", "llm_router_requests_good",
                                            "llm_router_baseline")))  # fmt: skip
    assert "value " not in rendered(_top.render(summarize(parse(old + "\n"))))  # older routers


def test_worst_case_cells_still_fit_80_columns():
    """Long names and huge numbers still fit 80 columns; names are cut, numbers never."""
    big = (
        known(10**7)
        .replace('"a"', '"a_route_label_longer_than_the_column"')
        .replace('"gcp.gemini"', '"a-provider-with-a-long-name"')
        .replace('"claude"', '"claude-sonnet-4-5-20250929-with-suffix"')
    )
    before, now = parse(known(1), at=1000.0), parse(big, at=1000.001)
    text = rendered(_top.render(summarize(now), summarize(delta(now, before)), live=True))
    assert max(len(line) for line in text.splitlines()) <= 80
    assert "a_route_lab…" in text  # names are cut, numbers never are
    assert not [word for word in text.split() if "…" in word and word[0].isdigit()]


@pytest.mark.parametrize(
    ("value", "cell"),
    [
        (_top.count(9999), "9999"),
        (_top.count(12_345), "12.3k"),
        (_top.count(1_234_567), "1.2M"),
        (_top.seconds(None), "-"),
        (_top.seconds(0.0042), "4.2ms"),
        (_top.seconds(0.32), "320ms"),
        (_top.seconds(1.28), "1.28s"),
        (_top.seconds(81.92), "81.9s"),
        (_top.percent(0.0123), "1.2"),
        (_top.usd(0.0019), "0.0019"),
        (_top.usd(123.456), "123.46"),
        (_top.per_second(None), "-"),
        (_top.per_second(99.94), "99.9"),
        (_top.per_second(123_456.0), "123k"),
        (_top.usd(1234.5), "1234"),
        (_top.usd(12_345_678.0), "12.3M"),
        (_top.usd(None), "-"),
        (_top.mean(1.4), "1.40"),
        (_top.available(0.0), "no"),
        (_top.available(1.0), "yes"),
        (_top.available(None), "-"),
    ],
)
def test_cells_are_short(value, cell):
    """Counts, durations, percentages and dollars format into at most 6 characters."""
    assert value == cell
    assert len(cell) <= 6


def test_negative_savings_keep_their_sign():
    """Savings below zero (routing cost more than the baseline) show with a minus sign."""
    assert _top.usd(-0.00015) == "-0.0001"
    assert _top.usd(-1234.5) == "-1234"


@pytest.fixture
def scripted(monkeypatch) -> list[str]:
    """``fetch`` answers the queued exposition texts in order."""
    texts: list[str] = []
    monkeypatch.setattr(_top, "fetch", lambda url, **_: texts.pop(0))
    return texts


def test_rates_are_differences_between_the_last_two_scrapes(scripted):
    """Per-second rates are the difference of the last two scrapes over the time between them."""
    scripted += [known(1), known(3), known(4)]
    times = iter([100.0, 104.0, 106.0])
    watcher = _top.Watcher("http://router/metrics", clock=lambda: next(times))
    stats, rates = watcher.poll()
    assert rates is None
    assert stats.route("a").requests == 50  # type: ignore[union-attr]
    stats, rates = watcher.poll()
    assert rates is not None
    assert rates.route("a").rate == 100 / 4  # type: ignore[union-attr]
    stats, rates = watcher.poll()
    assert rates.route("a").rate == 50 / 2  # type: ignore[union-attr]
    assert rates.providers[-1].rate == 45 / 2  # openai: 45 attempts per scale step
    assert stats.route("a").requests == 200  # type: ignore[union-attr]


def test_window_covers_at_least_the_last_seconds_asked(scripted):
    """With --window 5, counts and percentiles cover the oldest scrape still 5 s back."""
    scripted += [known(1), known(3), known(4), known(6)]
    times = iter([100.0, 104.0, 106.0, 112.0])
    watcher = _top.Watcher("http://router/metrics", window_s=5.0, clock=lambda: next(times))
    watcher.poll()
    watcher.poll()
    stats, _ = watcher.poll()  # 106: 104 is only 2 s back, so the window starts at 100
    assert (stats.since, stats.route("a").requests) == (100.0, 150)  # type: ignore[union-attr]
    stats, _ = watcher.poll()  # 112: 106 is 6 s back
    assert (stats.since, stats.route("a").requests) == (106.0, 100)  # type: ignore[union-attr]


def test_live_view_refreshes_until_ctrl_c(scripted, monkeypatch):
    """The live view redraws each interval, survives a failed scrape and exits 0 on Ctrl-C."""
    scripted += [known(1), known(3)]

    def fail_then_text(url, **_):
        if len(scripted) == 1 and not getattr(fail_then_text, "failed", False):
            fail_then_text.failed = True  # type: ignore[attr-defined]
            raise _top.ScrapeError("http://router/metrics: connection refused")
        return scripted.pop(0)

    monkeypatch.setattr(_top, "fetch", fail_then_text)
    naps: list[float] = []

    def sleep(seconds: float) -> None:
        naps.append(seconds)
        if len(naps) == 3:
            raise KeyboardInterrupt

    monkeypatch.setattr(_top.time, "sleep", sleep)
    out = io.StringIO()
    console = Console(file=out, force_terminal=True, width=80, color_system=None)
    args = argparse.Namespace(
        url="http://router/metrics", interval=0.5, window=None, once=False, token=None
    )
    assert _top.run(args, console) == 0
    text = out.getvalue()
    assert "connection refused; retrying every 0.5s" in text
    assert "req/s" in text
    assert len(naps) == 3
    assert all(0 <= n <= 0.5 for n in naps)


def test_cli_help_bad_flags_and_unreachable_endpoint(capsys):
    """top --help lists flags; a bad flag exits 2; an unreachable --once URL exits 1 saying why."""
    assert main(["top", "--help"]) == 0
    out = capsys.readouterr().out
    for flag in ("--url", "--interval", "--window", "--once", "--token"):
        assert flag in out
    assert main(["top", "--interval", "0"]) == 2
    assert "--interval" in capsys.readouterr().err
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    assert main(["top", "--once", "--url", f"http://127.0.0.1:{port}/metrics"]) == 1
    err = capsys.readouterr().err
    assert f"routemeter top: http://127.0.0.1:{port}/metrics:" in err


async def test_once_against_the_live_demo_router_prints_its_routes():
    """top --once against the live demo router prints each served route and its request count."""
    routemeter.setup(exporters="prometheus", prometheus_server=False, set_global=False)
    load = LoadConfig(rate=30, duration_s=1.5, seed=4, burst_probability=0.05)
    settings = RouterSettings(cache_size=8, cooldown_after=2, cooldown_s=0.5, client_rate=8)
    router = Router(Upstreams.build(load.seed, cycle_s=load.duration_s), settings)
    async with serving(build_app(router), bind("127.0.0.1", 0)) as url:
        ledger = await run_load(url, load)
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "routemeter", "top", "--once", "--url", f"{url}/metrics",
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        stdout, stderr = await asyncio.wait_for(proc.communicate(), 30)
    out = stdout.decode()
    assert proc.returncode == 0, stderr.decode()
    assert not ANSI.search(out)
    assert max(len(line) for line in out.splitlines()) <= 80
    served = {route: 0 for route, _ in ledger.requests}
    for (route, _), n in ledger.requests.items():
        served[route] += n
    assert len(served) == 4
    lines = out.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("route "))
    body = lines[header + 2 : lines.index("", header)]  # below the rule, up to the blank line
    rows = {line.split()[0]: line.split() for line in body if line.strip()}
    for route, n in served.items():
        assert route in rows, out
        assert rows[route][1] == str(n), rows[route]  # reqs: the first column after the name
