"""``routemeter top``: a live table of any routemeter /metrics endpoint, refreshed in place.

Each refresh scrapes the endpoint once. Totals and percentiles cover everything since the router
started (or the last ``--window`` seconds); the per-second columns are the difference between
the last two scrapes divided by the time between them. ``--once`` prints one plain snapshot
(no per-second figures: they need two scrapes) for scripts. The numbers come from
``routemeter.tools._stats``, the same code ``routemeter.stats()`` uses in-process.
"""

from __future__ import annotations

import argparse
import gzip
import sys
import time
import urllib.error
import urllib.request
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from datetime import datetime
from typing import Final

from rich import box
from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.table import Table
from rich.text import Text

from routemeter.tools._stats import (
    FallbackStats,
    RouteStats,
    Samples,
    Stats,
    delta,
    parse,
    summarize,
)

DEFAULT_INTERVAL_S: Final = 2.0
_TIMEOUT_S: Final = 10.0
_ACCEPT: Final = "text/plain;version=0.0.4;q=0.9,*/*;q=0.1"
_TOKEN_NAMES: Final = {
    "input": "in",
    "output": "out",
    "cache_read": "cache read",
    "cache_creation": "cache write",
    "reasoning": "reasoning",
}
"""``gen_ai.token.type`` values in display order, with their short names."""


class ScrapeError(RuntimeError):
    """The endpoint could not be read; the message says why in one line."""


def fetch(url: str, *, token: str | None = None, timeout_s: float = _TIMEOUT_S) -> str:
    """The exposition text at ``url`` (gzip accepted)."""
    headers = {"Accept": _ACCEPT, "Accept-Encoding": "gzip", "User-Agent": "routemeter-top"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    request = urllib.request.Request(url, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            body: bytes = response.read()
            if response.headers.get("Content-Encoding") == "gzip":
                body = gzip.decompress(body)
            charset = response.headers.get_content_charset() or "utf-8"
    except urllib.error.HTTPError as e:
        hint = " (pass --token)" if e.code in (401, 403) else ""
        e.close()
        raise ScrapeError(f"{url}: HTTP {e.code} {e.reason}{hint}") from None
    except (urllib.error.URLError, OSError) as e:
        reason = getattr(e, "reason", e)
        raise ScrapeError(f"{url}: {reason}") from None
    return body.decode(charset, errors="replace")


def scrape(url: str, *, token: str | None = None, at: float | None = None) -> Samples:
    """One scrape of ``url``, stamped ``at`` (default: now)."""
    try:
        return parse(fetch(url, token=token), at=at)
    except ValueError as e:
        raise ScrapeError(f"{url}: not a Prometheus exposition ({e})") from None


# --- formatting: every cell fits an 80-column terminal -------------------------------------


def count(n: int) -> str:
    """At most 5 characters: 9999, 12.3k, 123k, 1.2M, 123M, 12.3G."""
    if n < 10_000:
        return str(n)
    for scale, suffix in ((1e3, "k"), (1e6, "M"), (1e9, "G")):
        value = n / scale
        if round(value, 1) < 100:
            return f"{value:.1f}{suffix}"
        if round(value) < 1000:
            return f"{value:.0f}{suffix}"
    return f"{n / 1e12:.0f}T"


def seconds(value: float | None) -> str:
    if value is None:
        return "-"
    if value < 0.01:
        return f"{value * 1000:.1f}ms"
    if value < 1:
        return f"{value * 1000:.0f}ms"
    if value < 10:
        return f"{value:.2f}s"
    return f"{value:.1f}s" if value < 100 else f"{value:.0f}s"


def percent(ratio: float | None) -> str:
    return "-" if ratio is None else f"{ratio * 100:.1f}"


def per_second(rate: float | None) -> str:
    if rate is None:
        return "-"
    if round(rate, 1) < 100:
        return f"{rate:.1f}"
    return f"{rate:.0f}" if round(rate) < 1000 else count(round(rate))


def usd(value: float | None) -> str:
    """At most 6 characters (7 with a minus sign: savings can be negative)."""
    if value is None:
        return "-"
    if value < 0:
        return "-" + usd(-value)
    if value == 0:
        return "0"
    if round(value, 4) < 10:
        return f"{value:.4f}"
    if round(value, 2) < 1000:
        return f"{value:.2f}"
    return f"{value:.0f}" if round(value) < 100_000 else count(round(value))


def mean(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def available(value: float | None) -> str:
    """The rotation gauge: ``yes`` (1), ``no`` (0), ``-`` never reported."""
    if value is None:
        return "-"
    return "yes" if value >= 1 else "no"


def _route_rows(stats: Stats, table: Table) -> Iterator[tuple[str, RouteStats]]:
    """Each route's row, then (after a rule) every route together when there are several."""
    for r in stats.routes:
        yield r.route or "(none)", r
    if len(stats.routes) > 1:
        table.add_section()
        yield "all", stats.total


def _table() -> Table:
    return Table(
        box=box.SIMPLE_HEAD,
        show_edge=False,
        padding=(0, 1, 0, 0),
        pad_edge=False,
    )


def _titled(title: str, table: Table) -> RenderableType:
    """A heading line above the table (a table title would wrap to the table's width)."""
    return Group(Text(title, style="bold"), table)


def _numeric(table: Table, *names: str) -> None:
    for name in names:
        table.add_column(name, justify="right", no_wrap=True)


def _route_cells(r: RouteStats) -> list[str]:
    return [
        count(r.requests),
        percent(r.error_rate),
        seconds(r.duration.p50),
        seconds(r.duration.p95),
        seconds(r.duration.p99),
        seconds(r.time_to_first_token.p50),
        percent(r.cache_hit_ratio),
        usd(r.cost_usd),
    ]


def routes_table(stats: Stats, rates: Stats | None = None, *, live: bool = False) -> RenderableType:
    """Per route: requests (per second between the last two scrapes when ``live``), error
    rate, request latency p50/p95/p99, time to first token p50, cache hit ratio and cost."""
    title = "routes  p50/p95/p99: request latency, ttft: time to first token (p50)"
    table = _table()
    table.add_column("route", no_wrap=True, overflow="ellipsis", max_width=14)
    _numeric(table, *(["req/s"] if live else []), "reqs", "err%", "p50", "p95", "p99", "ttft")
    _numeric(table, "hit%", "USD")
    recent = {r.route: r.rate for r in (*rates.routes, rates.total)} if rates is not None else {}
    for label, r in _route_rows(stats, table):
        rate = [per_second(recent.get(r.route))] if live else []
        style = "bold" if r is stats.total else None
        table.add_row(label, *rate, *_route_cells(r), style=style)
    return _titled(title, table)


def _has_value_numbers(stats: Stats) -> bool:
    """Whether the endpoint reports savings, goodput or overhead (routers before them do not)."""
    t = stats.total
    return t.good > 0 or t.baseline_cost_usd > 0 or t.overhead.count > 0


def value_table(stats: Stats) -> RenderableType:
    """Per route: goodput, baseline cost and savings, the router's own overhead p50/p95 and
    attempts per request."""
    title = "value  good: met the SLO, saved: baseline - cost, ovh: router overhead"
    table = _table()
    table.add_column("route", no_wrap=True, overflow="ellipsis", max_width=14)
    _numeric(table, "good%", "baseline", "saved", "saved%", "ovh p50", "ovh p95", "tries")
    for label, r in _route_rows(stats, table):
        share = None
        if r.savings_usd is not None and r.baseline_cost_usd > 0:
            share = r.savings_usd / r.baseline_cost_usd
        table.add_row(
            label,
            percent(r.goodput),
            usd(r.baseline_cost_usd if r.savings_usd is not None else None),
            usd(r.savings_usd),
            percent(share),
            seconds(r.overhead.p50),
            seconds(r.overhead.p95),
            mean(r.attempts_per_request.mean),
            style="bold" if r is stats.total else None,
        )
    return _titled(title, table)


def upstreams_table(
    stats: Stats, rates: Stats | None = None, *, live: bool = False
) -> RenderableType:
    """Per provider and model, ranked by success rate then p95 attempt latency: attempts (per
    second when ``live``), success rate, attempt latency p50/p95, cost and whether it is in
    rotation now (``up``)."""
    title = "providers  ranked by success rate, then p95 attempt latency; up: in rotation"
    table = _table()
    table.add_column("provider", no_wrap=True, overflow="ellipsis", max_width=12)
    table.add_column("model", no_wrap=True, overflow="ellipsis", max_width=20)
    _numeric(table, *(["try/s"] if live else []), "tries", "ok%", "p50", "p95", "USD", "up")
    recent = {(m.provider, m.model): m.rate for m in rates.models} if rates is not None else {}
    for m in stats.models:
        rate = [per_second(recent.get((m.provider, m.model)))] if live else []
        table.add_row(
            m.provider,
            m.model or "",
            *rate,
            count(m.attempts),
            percent(m.success_rate),
            seconds(m.duration.p50),
            seconds(m.duration.p95),
            usd(m.cost_usd),
            available(m.available),
        )
    return _titled(title, table)


def fallbacks_table(
    stats: Stats, rates: Stats | None = None, *, live: bool = False, limit: int | None = None
) -> RenderableType:
    """Fallbacks from -> to (model names) per route and reason, most frequent first."""
    shown = stats.fallbacks if limit is None else stats.fallbacks[:limit]
    title = "fallbacks  from -> to (models), why"
    if len(shown) < len(stats.fallbacks):
        title += f"  top {len(shown)} of {len(stats.fallbacks)}"
    table = _table()
    table.add_column("route", no_wrap=True, overflow="ellipsis", max_width=12)
    table.add_column("from -> to", no_wrap=True, overflow="ellipsis", max_width=35)
    table.add_column("why", no_wrap=True, overflow="ellipsis", max_width=15)
    _numeric(table, "count", *(["/s"] if live else []))
    recent = {_fallback_key(f): f.rate for f in rates.fallbacks} if rates is not None else {}
    for f in shown:
        rate = [per_second(recent.get(_fallback_key(f)))] if live else []
        table.add_row(f.route, f"{f.from_model} -> {f.to_model}", f.reason, count(f.count), *rate)
    return _titled(title, table)


def _fallback_key(f: FallbackStats) -> tuple[str, ...]:
    return (f.route, f.from_provider, f.from_model, f.to_provider, f.to_model, f.reason)


def tokens_line(stats: Stats) -> Text:
    """Upstream tokens by type, every route together."""
    tokens = stats.total.tokens
    kinds = [k for k in _TOKEN_NAMES if k in tokens] + sorted(set(tokens) - set(_TOKEN_NAMES))
    parts = [f"{_TOKEN_NAMES.get(kind, kind)} {count(tokens[kind])}" for kind in kinds]
    return Text(f"tokens  {', '.join(parts) if parts else 'none'}")


def _window(stats: Stats) -> str:
    if stats.window_s is None:
        return "since start"
    return f"last {stats.window_s:.0f}s"


def render(
    stats: Stats,
    rates: Stats | None = None,
    *,
    live: bool = False,
    source: str | None = None,
    fallbacks: int | None = None,
) -> RenderableType:
    """The whole view: a heading, routes, their value (goodput, savings, overhead), providers,
    fallbacks (at most ``fallbacks`` rows) and the token totals. ``live`` adds per-second
    columns, filled from ``rates`` (the difference between the last two scrapes) once there
    is one."""
    stamp = datetime.fromtimestamp(stats.at).strftime("%H:%M:%S")
    head = f"routemeter  {source + '  ' if source else ''}{stamp}  {_window(stats)}"
    if stats.total.in_flight:
        head += f"  in flight {stats.total.in_flight}"
    parts: list[RenderableType] = [Text(head, style="bold")]
    if not stats.routes:
        parts.append(Text("no routed requests yet"))
        return Group(*parts)
    parts += ["", routes_table(stats, rates, live=live)]
    if _has_value_numbers(stats):
        parts += ["", value_table(stats)]
    if stats.models:
        parts += ["", upstreams_table(stats, rates, live=live)]
    if stats.fallbacks:
        parts += ["", fallbacks_table(stats, rates, live=live, limit=fallbacks)]
    parts += ["", tokens_line(stats)]
    return Group(*parts)


# --- the command -------------------------------------------------------------------------------


class Watcher:
    """Scrapes one endpoint and keeps what the view needs: the latest scrape, the one before
    (for per-second rates) and, with a window, the scrapes inside it."""

    def __init__(
        self,
        url: str,
        *,
        token: str | None = None,
        window_s: float | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.url = url
        self.token = token
        self.window_s = window_s
        self.clock = clock
        self.history: deque[Samples] = deque()

    def poll(self) -> tuple[Stats, Stats | None]:
        """Scrape once; the snapshot to show and the between-scrapes one for rates."""
        now = scrape(self.url, token=self.token, at=self.clock())
        previous = self.history[-1] if self.history else None
        self.history.append(now)
        keep = self.window_s if self.window_s is not None else 0.0
        while len(self.history) > 2 and self.history[1].at <= now.at - keep:
            self.history.popleft()
        rates = summarize(delta(now, previous)) if previous is not None else None
        if self.window_s is None or len(self.history) < 2:
            return summarize(now), rates
        return summarize(delta(now, self.history[0])), rates


def _positive(raw: str) -> float:
    value = float(raw)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be greater than 0, got {raw}")
    return value


def default_url() -> str:
    """The standalone /metrics server the configuration describes."""
    from routemeter._config import ConfigError, load

    try:
        config = load()
    except ConfigError:
        return "http://localhost:9464/metrics"
    host = config.prometheus_host
    if host in ("", "0.0.0.0", "::"):
        host = "localhost"
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{config.prometheus_port}{config.metrics_path}"


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="routemeter top",
        description="A live table of a routemeter /metrics endpoint: per route, provider and"
        " model, refreshed every --interval seconds (Ctrl-C quits).",
        epilog="Counts and percentiles are since the router started (or over --window); the"
        " per-second columns are the change between the last two scrapes.",
    )
    add_arguments(p, default_url())
    return p


def cli(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``routemeter top``; returns the exit status."""
    try:
        args = parser().parse_args(argv)
    except SystemExit as e:  # --help, or a bad argument (argparse printed why)
        return e.code if isinstance(e.code, int) else 2
    return run(args)


def add_arguments(parser: argparse.ArgumentParser, default_url: str) -> None:
    parser.add_argument(
        "--url",
        default=default_url,
        help=f"the /metrics endpoint to watch (default: {default_url}, from"
        " OTEL_EXPORTER_PROMETHEUS_HOST/PORT)",
    )
    parser.add_argument(
        "--interval",
        type=_positive,
        default=DEFAULT_INTERVAL_S,
        metavar="SECONDS",
        help=f"seconds between scrapes (default: {DEFAULT_INTERVAL_S:g})",
    )
    parser.add_argument(
        "--window",
        type=_positive,
        metavar="SECONDS",
        help="show counts and percentiles over the last SECONDS instead of since start",
    )
    parser.add_argument(
        "--once", action="store_true", help="print one plain snapshot and exit (for scripts)"
    )
    parser.add_argument("--token", help="bearer token, when /metrics requires one")


def run(args: argparse.Namespace, console: Console | None = None) -> int:
    """Run ``routemeter top``; returns the exit status."""
    out = console or Console(highlight=False)
    watcher = Watcher(args.url, token=args.token, window_s=None if args.once else args.window)
    if args.once:
        try:
            stats, _ = watcher.poll()
        except ScrapeError as e:
            print(f"routemeter top: {e}", file=sys.stderr)
            return 1
        out.print(render(stats, source=args.url))  # not a terminal: plain text, 80 columns
        return 0
    try:
        with Live(console=out, auto_refresh=False, screen=False) as live:
            while True:
                started = time.monotonic()
                try:
                    stats, rates = watcher.poll()
                    view: RenderableType = render(
                        stats, rates, live=True, source=args.url, fallbacks=5
                    )
                except ScrapeError as e:
                    view = Text(f"routemeter top: {e}; retrying every {args.interval:g}s")
                live.update(view, refresh=True)
                time.sleep(max(0.0, args.interval - (time.monotonic() - started)))
    except KeyboardInterrupt:
        return 0
