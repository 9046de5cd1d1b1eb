"""Run the demo: the router under uvicorn in this process and event loop, the load against it,
then where to look and a summary. Also the ``serving`` context the tests start the router with."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import os
import signal
import socket
import sys
from collections.abc import AsyncIterator, Generator
from typing import Final

import uvicorn
from rich import box
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

import routemeter
from routemeter._config import ConfigError
from routemeter.demo.load import Ledger, LoadConfig, percentile, run_load
from routemeter.demo.providers import Upstreams
from routemeter.demo.router import Router, RouterSettings, build_app
from routemeter.integrations._http import ASGIApp
from routemeter.tools._stats import StatsUnavailable
from routemeter.tools._top import render

_START_TIMEOUT_S: Final = 10.0
_CYCLE_S: Final = 120.0
"""Without ``--duration``: the upstreams' outages and recoveries repeat every two minutes."""
_ENDLESS_S: Final = 366 * 86_400.0
"""Without ``--duration`` the load runs until a signal stops it (a year is the backstop)."""
_STOP_TIMEOUT_S: Final = 10.0

EXAMPLE_QUERIES: Final = (
    (
        "requests per second by route and outcome",
        "sum by (llm_router_route, error_type) "
        "(rate(gen_ai_server_request_duration_seconds_count[1m]))",
    ),
    (
        "p95 latency by route",
        "histogram_quantile(0.95, sum by (le, llm_router_route) "
        "(rate(gen_ai_server_request_duration_seconds_bucket[5m])))",
    ),
    (
        "fallbacks by from -> to provider",
        "sum by (llm_router_fallback_from_provider, gen_ai_provider_name, error_type) "
        "(increase(llm_router_fallbacks_total[5m]))",
    ),
    (
        "cost per hour by model",
        "sum by (gen_ai_request_model) (rate(llm_router_cost_usd_total[5m])) * 3600",
    ),
)


class _Server(uvicorn.Server):
    """uvicorn without its own signal handling: the demo (or the test) decides when to stop."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


def bind(host: str, port: int) -> socket.socket:
    """Bind the listening socket up front: port 0 then has a real port before serving starts."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    sock.set_inheritable(True)
    return sock


def url_of(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


@contextlib.asynccontextmanager
async def serving(app: ASGIApp, sock: socket.socket) -> AsyncIterator[str]:
    """Serve ``app`` on ``sock`` in the running loop; yield its base URL; stop it on exit."""
    config = uvicorn.Config(
        app,
        lifespan="on",
        log_level="warning",
        access_log=False,
        ws="none",
        timeout_graceful_shutdown=5,
    )
    server = _Server(config)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    loop = asyncio.get_running_loop()
    deadline = loop.time() + _START_TIMEOUT_S
    try:
        while not server.started:
            if task.done() or loop.time() > deadline:
                raise RuntimeError(f"uvicorn did not start on {url_of(sock)}")
            await asyncio.sleep(0.01)
        yield url_of(sock)
    finally:
        server.should_exit = True
        try:
            await asyncio.wait_for(task, _STOP_TIMEOUT_S)
        except TimeoutError:
            server.force_exit = True
        sock.close()


def metrics_location(handle: routemeter.Handle, base_url: str) -> str:
    """Where this process's metrics can be read, as the configuration decided."""
    if handle.prometheus is not None:
        return handle.metrics_url or f"{base_url}{handle.config.metrics_path}"
    if "otlp" in handle.config.exporters:
        return f"pushed by OTLP to {handle.config.metrics_endpoint}"
    return f"exported by {', '.join(handle.config.exporters)}"


def _short(n: int) -> str:
    return f"{n / 1000:.1f}k" if n >= 10_000 else str(n)


def summary_table(ledger: Ledger) -> Table:
    """Per route, as the clients saw it: fits 80 columns."""
    table = Table(
        title="per route: requests, errors (of them router 429s), cache hits,"
        " client-side latency (ms), tokens in/out, cost (USD)",
        box=box.SIMPLE_HEAD,
    )
    table.add_column("route", no_wrap=True, min_width=12)
    for name in ("reqs", "err", "429", "hits", "p50", "p95", "tokens", "USD"):
        table.add_column(name, justify="right", no_wrap=True)
    for route in ledger.routes:
        statuses = [(s, n) for (r, s), n in ledger.requests.items() if r == route]
        tokens = [
            sum(n for (r, _, _, k), n in ledger.tokens.items() if r == route and k == kind)
            for kind in ("input", "output")
        ]
        latencies = ledger.latencies_s.get(route, [])
        cost = ledger.cost_usd.get(route)
        table.add_row(
            route,
            str(sum(n for _, n in statuses)),
            str(sum(n for s, n in statuses if s != 200)),
            str(ledger.rejections.get(route, 0)),
            str(ledger.cache_lookups.get((route, "hit"), 0)),
            f"{percentile(latencies, 0.5) * 1000:.0f}",
            f"{percentile(latencies, 0.95) * 1000:.0f}",
            f"{_short(tokens[0])}/{_short(tokens[1])}",
            "-" if cost is None else f"{cost:.3f}",
        )
    return table


@contextlib.contextmanager
def _signals(loop: asyncio.AbstractEventLoop, stop: asyncio.Event) -> Generator[None, None, None]:
    installed: list[signal.Signals] = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(sig, stop.set)
            installed.append(sig)
        except (NotImplementedError, RuntimeError, ValueError):  # not the main thread, or Windows
            pass
    try:
        yield
    finally:
        for sig in installed:
            loop.remove_signal_handler(sig)


async def demo(args: argparse.Namespace, out: Console, err: Console) -> int:
    """The whole demo run; returns the exit status."""
    env_chose = "ROUTEMETER_PROMETHEUS_SERVER" in os.environ
    try:
        # Nothing else in this process reads the global MeterProvider; leaving it alone keeps
        # the demo re-runnable in one process (the tests run it several times).
        handle = routemeter.setup(prometheus_server=None if env_chose else False, set_global=False)
    except ConfigError as e:
        err.print(f"routemeter demo: {e}", markup=False)
        return 2
    try:
        try:
            sock = bind(args.host, args.port)
        except OSError as e:
            err.print(
                f"routemeter demo: cannot listen on {args.host}:{args.port}: {e.strerror};"
                " pass --port 0 for a free port",
                markup=False,
            )
            return 1
        cycle_s = max(args.duration or _CYCLE_S, 5.0)
        router = Router(Upstreams.build(args.seed, cycle_s=cycle_s), RouterSettings())
        stop = asyncio.Event()
        with _signals(asyncio.get_running_loop(), stop):
            async with serving(build_app(router), sock) as url:
                where = metrics_location(handle, url)
                if where.startswith("http"):
                    out.print(f"dashboard: {where.rstrip('/')}/dashboard", markup=False)
                out.print(f"router:    {url}/v1/chat/completions (OpenAI-compatible)", markup=False)
                out.print(f"metrics:   {where}", markup=False)
                if args.serve:
                    out.print("serving until Ctrl-C (SIGINT) or SIGTERM")
                    await stop.wait()
                    return 0
                if args.duration is None:
                    out.print("load running until Ctrl-C (SIGINT) or SIGTERM; then a summary")
                ledger = await _drive(args, url, stop, err)
                if args.ledger:
                    ledger.write(args.ledger)
                _report(out, ledger, where, args.ledger)
                _print_stats(out, where)
                if args.linger > 0 and not stop.is_set():
                    out.print(f"serving {args.linger:g}s more so a scraper can read the totals")
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(stop.wait(), args.linger)
                return 1 if ledger.transport_errors else 0
    finally:
        routemeter.shutdown()


async def _drive(args: argparse.Namespace, url: str, stop: asyncio.Event, err: Console) -> Ledger:
    endless = args.duration is None
    duration_s = _ENDLESS_S if endless else args.duration
    config = LoadConfig(rate=args.rate, duration_s=duration_s, seed=args.seed)
    if endless:
        config = dataclasses.replace(config, max_requests=2**62)
    if endless or args.no_progress or not err.is_terminal:
        return await run_load(url, config, stop=stop)
    columns = (
        TextColumn("[bold]load[/]"),
        BarColumn(),
        TimeElapsedColumn(),
        TextColumn("{task.fields[stats]}"),
    )
    with Progress(*columns, console=err, transient=True) as bar:
        task = bar.add_task("load", total=1.0, stats="")

        def progress(ledger: Ledger, done: float) -> None:
            stats = f"sent {ledger.sent}  answered {ledger.answered}"
            bar.update(task, completed=done, stats=f"{stats}  fallbacks {ledger.fallbacks.total()}")

        return await run_load(url, config, stop=stop, progress=progress)


def _report(out: Console, ledger: Ledger, where: str, ledger_path: str | None) -> None:
    out.print(summary_table(ledger))
    out.print(
        f"{ledger.answered} answered of {ledger.sent} sent in {ledger.elapsed_s:.1f}s;"
        f" fallbacks {ledger.fallbacks.total()}, cooldowns {ledger.cooldowns.total()},"
        f" cache hits {sum(n for (_, r), n in ledger.cache_lookups.items() if r == 'hit')},"
        f" router 429s {ledger.rejections.total()}",
        markup=False,
    )
    for error in ledger.transport_errors[:5]:
        out.print(f"transport error: {error}", style="red", markup=False)
    out.print(f"\nmetrics: {where}", markup=False)
    out.print("try in Prometheus (scraping that endpoint):", markup=False)
    for title, query in EXAMPLE_QUERIES:
        out.print(f"  # {title}\n  {query}", markup=False, highlight=False)
    if ledger_path:
        out.print(f"ledger written to {ledger_path}", markup=False)


def _print_stats(out: Console, where: str) -> None:
    """routemeter's own summary of the run (``routemeter.stats()``, as ``routemeter top``
    shows it), when this setup has the Prometheus reader it reads."""
    try:
        stats = routemeter.stats()
    except StatsUnavailable:
        return
    if where.startswith("http"):
        out.print(f"\nlive: routemeter top --url {where}", markup=False)
    out.print()
    out.print(render(stats, source="routemeter.stats()"))


def main(args: argparse.Namespace) -> int:
    out = Console(file=sys.stdout, highlight=False, soft_wrap=True)
    err = Console(file=sys.stderr, highlight=False, soft_wrap=True)
    if not out.is_terminal:  # logs and pipes: no 80-column wrap of the table
        out.width = max(out.width, 120)
    try:
        return asyncio.run(demo(args, out, err))
    except KeyboardInterrupt:  # a second Ctrl-C while shutting down
        return 130
