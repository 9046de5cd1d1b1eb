"""Event-loop stalls while /metrics and the pages beside it are scraped, at 100 and 2,000 models.

A uvicorn app with ``routemeter.instrument_app`` runs in a subprocess pinned to CPU 0. Inside
it a lag probe sleeps 1 ms in a loop and keeps the worst lateness of its wake-ups; ``GET
/lag?reset=1`` returns that worst lag since the previous reset (and resets it). The benchmark
process (pinned to CPU 1) records ``--models`` distinct attempt models through
``POST /populate`` (a ``@routemeter.route`` handler, allow-list widened with ``max_models`` the
way ``python -m benchmarks`` does), then scrapes each endpoint ``--scrapes`` times with httpx,
reading the lag after each scrape: that is how long every other request on the loop waited.
The history sampler ticks every 10 s in the same process: an idle window of 11 s includes one.

Only the public API is used, so the same benchmark measures the endpoints on the event loop and
moved off it. Run with ``python -m benchmarks.stall``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from typing import Any

from benchmarks.e2e import stop

ENDPOINTS = (
    "/metrics",
    "/metrics/stats",
    "/metrics/stats?window=1h",
    "/metrics/history?window=1h&group_by=model",
    "/metrics/requests/recent",
    "/metrics/dashboard",
)
WIDTH = max(len(e) for e in ENDPOINTS)
IDLE = (("(idle, 100 ms windows)", 1.0), ("(idle 11 s: a history tick)", 11.0))
PROBE_S = 0.001
SERVER_CPU = 0
CLIENT_CPU = 1


# --- the server side (a child process) -------------------------------------------------------


class LagProbe:
    """Sleeps ``PROBE_S`` in a loop; keeps the worst lateness of a wake-up since the last read."""

    def __init__(self) -> None:
        self.worst = 0.0
        self.wakeups = 0

    async def run(self) -> None:
        while True:
            start = time.perf_counter()
            await asyncio.sleep(PROBE_S)
            late = time.perf_counter() - start - PROBE_S
            self.wakeups += 1
            if late > self.worst:
                self.worst = late

    def read(self, reset: bool) -> dict[str, float]:
        out = {"worst_ms": self.worst * 1e3, "wakeups": self.wakeups}
        if reset:
            self.worst, self.wakeups = 0.0, 0
        return out


def build_app(max_models: int) -> Any:
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    import routemeter

    routemeter.setup(
        exporters="prometheus",
        prometheus_server=False,
        max_models=max_models,
        service_name="bench-stall",
    )
    probe = LagProbe()
    seen = 0

    @routemeter.route("render")
    def one(model: str) -> None:
        with routemeter.current().attempt("openai", model) as a:
            a.usage(input_tokens=10, output_tokens=5)

    async def populate(request: Request) -> JSONResponse:
        """Record attempts until ``n`` distinct models have been seen."""
        nonlocal seen
        n = int(request.query_params["n"])
        while seen < n:
            one(f"model-{seen}")
            seen += 1
        return JSONResponse({"models": seen})

    async def lag(request: Request) -> JSONResponse:
        return JSONResponse(probe.read(request.query_params.get("reset") == "1"))

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        task = asyncio.create_task(probe.run())
        yield
        task.cancel()

    app = Starlette(
        routes=[Route("/populate", populate, methods=["POST"]), Route("/lag", lag)],
        lifespan=lifespan,
    )
    return routemeter.instrument_app(app)


def serve(max_models: int) -> None:
    """Child: bind a free loopback port, print it, serve until SIGTERM."""
    import uvicorn

    app = build_app(max_models)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)
    print(f"PORT {sock.getsockname()[1]}", flush=True)
    config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="on")
    uvicorn.Server(config).run(sockets=[sock])


# --- the benchmark process --------------------------------------------------------------------


def start_server(max_models: int, cpu: int | None, timeout_s: float = 30.0) -> tuple[Any, str]:
    import selectors

    cmd = [sys.executable, "-m", "benchmarks.stall", "--serve", str(max_models)]
    if cpu is not None:
        cmd += ["--cpu", str(cpu)]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    for var in ("OTEL_METRICS_EXPORTER", "OTEL_SDK_DISABLED", "ROUTEMETER_METRICS_TOKEN"):
        env.pop(var, None)
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, env=env)
    assert proc.stdout is not None
    deadline = time.monotonic() + timeout_s
    with selectors.DefaultSelector() as sel:
        sel.register(proc.stdout, selectors.EVENT_READ)
        while time.monotonic() < deadline and proc.poll() is None:
            if sel.select(timeout=0.2):
                line = proc.stdout.readline()
                if line.startswith("PORT "):
                    return proc, f"http://127.0.0.1:{int(line.split()[1])}"
    stop(proc)
    raise RuntimeError("the stall server did not start")


def wait_ready(client: Any, timeout_s: float = 30.0) -> None:
    import httpx

    deadline = time.monotonic() + timeout_s
    while True:
        try:
            if client.get("/lag").status_code == 200:
                return
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError("the stall server did not answer /lag")
        time.sleep(0.1)


def lag_ms(client: Any) -> float:
    """The worst wake-up lateness since the previous read; resets it."""
    return float(client.get("/lag", params={"reset": "1"}).json()["worst_ms"])


def scrape(client: Any, endpoint: str, scrapes: int) -> dict[str, Any]:
    client.get(endpoint).raise_for_status()  # first scrape: warms whatever is built lazily
    stalls, seconds = [], []
    size = lines = 0
    lag_ms(client)
    for _ in range(scrapes):
        start = time.perf_counter()
        r = client.get(endpoint)
        seconds.append(time.perf_counter() - start)
        r.raise_for_status()
        size = len(r.content)
        lines = r.content.count(b"\n")
        stalls.append(lag_ms(client))
    return {
        "size": size,
        "lines": lines,
        "scrape_ms": statistics.median(seconds) * 1e3,
        "median_ms": statistics.median(stalls),
        "worst_ms": max(stalls),
    }


def idle(client: Any, seconds: float) -> dict[str, Any]:
    """The probe's own noise: worst lateness per 100 ms window with nothing being scraped."""
    lag_ms(client)
    stalls = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        time.sleep(0.1)
        stalls.append(lag_ms(client))
    return {"median_ms": statistics.median(stalls), "worst_ms": max(stalls)}


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.stall")
    parser.add_argument("--models", type=int, nargs="+", default=[100, 2000])
    parser.add_argument("--scrapes", type=int, default=10, help="per endpoint and model count")
    parser.add_argument("--serve", type=int, metavar="MAX_MODELS", help=argparse.SUPPRESS)
    parser.add_argument("--cpu", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve is not None:
        if args.cpu is not None:
            os.sched_setaffinity(0, {args.cpu})
        serve(args.serve)
        return

    import httpx

    cpus = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else set()
    pin = {SERVER_CPU, CLIENT_CPU} <= cpus
    models = sorted(args.models)
    proc, url = start_server(max(models), SERVER_CPU if pin else None)
    try:
        if pin:
            os.sched_setaffinity(0, {CLIENT_CPU})
        with httpx.Client(base_url=url, timeout=120.0) as client:
            wait_ready(client)
            where = f"server on CPU {SERVER_CPU}, client on CPU {CLIENT_CPU}" if pin else "unpinned"
            print(
                f"lag probe: {PROBE_S * 1e3:.0f} ms sleeps; {args.scrapes} scrapes each, gzip"
                f" accepted as Prometheus does (bytes uncompressed); {where}"
            )
            print(
                f"\n{'models':>6} {'endpoint':<{WIDTH}} {'bytes':>10} {'lines':>7}"
                f" {'scrape ms':>10} {'stall median ms':>16} {'stall worst ms':>15}"
            )
            for n in models:
                client.post("/populate", params={"n": n}).raise_for_status()
                for label, seconds in (
                    ("(idle, 100 ms windows)", 1.0),
                    ("(idle 11 s: a tick)", 11.0),
                ):
                    quiet = idle(client, seconds)
                    print(
                        f"{n:>6} {label:<{WIDTH}} {'':>10} {'':>7} {'':>10}"
                        f" {quiet['median_ms']:16.1f} {quiet['worst_ms']:15.1f}"
                    )
                for endpoint in ENDPOINTS:
                    row = scrape(client, endpoint, args.scrapes)
                    lines = f"{row['lines']:,}" if row["lines"] else "-"
                    print(
                        f"{n:>6} {endpoint:<{WIDTH}} {row['size']:>10,} {lines:>7}"
                        f" {row['scrape_ms']:10.1f} {row['median_ms']:16.1f}"
                        f" {row['worst_ms']:15.1f}",
                        flush=True,
                    )
    finally:
        if pin:
            os.sched_setaffinity(0, cpus)
        stop(proc)


if __name__ == "__main__":
    main()
