"""End to end over HTTP: what a router's requests per second feel, with and without routemeter.

A minimal Starlette router (POST /v1/chat/completions: requested model, a timed routing
decision, one attempt whose upstream is simulated in process with an OpenAI-shaped response
and its usage) served by uvicorn in four conditions:

- ``bare``: the same handler without the decorator, no routemeter set-up at all;
- ``routemeter``: ``setup()`` and ``@routemeter.route`` only, no HTTP middleware;
- ``full``: ``routemeter.instrument_app(app)`` too (HTTP server metrics, mounted /metrics);
- ``floor``: ``full`` with metric recording switched off (``benchmarks._floor``): what the
  decorator, the request API and the middleware cost before any metric is recorded, the part
  no recorder could take away.

Each server is a subprocess pinned to CPU 0; the load generator (``wrk`` when installed, else a
Python one on asyncio streams) is pinned to CPU 1. Every round runs bare, full, routemeter and
floor back to back against the same long-lived servers, so load changes on a shared machine hit
them alike; the figures to read are the medians over rounds of each round's ratio to bare:
requests/s, and the server's CPU time per request (from /proc), which a neighbour taking CPU 0
moves much less.

Run with ``python -m benchmarks.e2e`` (``--rounds``, ``--duration``, ``--loadgen``).
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import astuple, dataclass
from typing import Any

CONDITIONS = ("bare", "full", "routemeter", "floor")  # the order within each round
PATH = "/v1/chat/completions"
BODY = json.dumps(
    {"model": "auto", "messages": [{"role": "user", "content": "Say hello in one word."}]}
)
SERVER_CPU = 0
LOAD_CPU = 1


# --- the server side (a child process) -------------------------------------------------------


async def upstream(body: dict[str, Any]) -> dict[str, Any]:
    """The provider call, simulated in process: an OpenAI chat completion with its usage."""
    return {
        "id": "chatcmpl-bench",
        "object": "chat.completion",
        "created": 1767225600,
        "model": "gpt-4o-mini-2024-07-18",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "Hello!"},
                "finish_reason": "stop",
            }
        ],
        "usage": {
            "prompt_tokens": 12 + len(body.get("messages", ())),
            "completion_tokens": 2,
            "total_tokens": 15,
            "prompt_tokens_details": {"cached_tokens": 0},
            "completion_tokens_details": {"reasoning_tokens": 0},
        },
    }


def build_app(condition: str) -> Any:
    """The router app for one condition; ``routemeter`` is imported only where it is used."""
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    async def bare_completions(request: Request) -> JSONResponse:
        body = await request.json()
        _ = body.get("model")
        _ = ("openai", "gpt-4o-mini", "default")  # the routing decision
        resp = await upstream(body)
        _ = resp["usage"]
        return JSONResponse(resp)

    if condition == "bare":
        return Starlette(routes=[Route(PATH, bare_completions, methods=["POST"])])

    import routemeter

    routemeter.setup(exporters="prometheus", prometheus_server=False, service_name="bench-e2e")

    @routemeter.route("default")
    async def completions(request: Request) -> JSONResponse:
        body = await request.json()
        rec = routemeter.current()
        rec.requested(body.get("model"))
        with rec.decide() as d:
            d.choose("openai", "gpt-4o-mini", "default")
        with rec.attempt("openai", "gpt-4o-mini", server_address="api.openai.com") as a:
            resp = await upstream(body)
            a.usage(resp)
        return JSONResponse(resp)

    app = Starlette(routes=[Route(PATH, completions, methods=["POST"])])
    if condition == "routemeter":
        return app
    if condition == "floor":
        from benchmarks._floor import switch_off

        switch_off()  # for the server's whole life
    return routemeter.instrument_app(app)


def serve(condition: str) -> None:
    """Child: bind a free loopback port, print it, serve until SIGTERM."""
    import uvicorn

    app = build_app(condition)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(1024)
    sock.set_inheritable(True)
    config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="on")
    server = uvicorn.Server(config)
    config.load()  # resolves the HTTP implementation it will use
    loop = config.loop
    if loop == "auto":
        loop = "uvloop" if importlib.util.find_spec("uvloop") else "asyncio"
    http = config.http_protocol_class.__module__.rsplit(".", 1)[-1]
    # which HTTP server metrics instrument_app installed: the OTel instrumentation or its own
    middleware = "otel-asgi" if "opentelemetry.instrumentation.asgi" in sys.modules else "own"
    print(f"PORT {sock.getsockname()[1]} {loop} {http} {middleware}", flush=True)
    server.run(sockets=[sock])


# --- load generators --------------------------------------------------------------------------


def pinned(cmd: Sequence[str], cpu: int | None) -> list[str]:
    if cpu is None:
        return list(cmd)
    if shutil.which("taskset"):
        return ["taskset", "-c", str(cpu), *cmd]
    return list(cmd)  # the children pin themselves with os.sched_setaffinity


def pin_self(cpu: int | None) -> None:
    if cpu is not None and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {cpu})


@dataclass
class Run:
    """One or more load runs against one server, summed."""

    requests: int = 0
    seconds: float = 0.0  # as the load generator measured it
    errors: int = 0
    cpu: float = 0.0  # the server's CPU seconds (user + system) over the runs
    wall: float = 0.0  # wall seconds over which ``cpu`` was measured

    def __add__(self, other: Run) -> Run:
        return Run(*(a + b for a, b in zip(astuple(self), astuple(other), strict=True)))

    @property
    def rps(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0

    @property
    def cpu_us(self) -> float:
        """The server's CPU time per request."""
        return self.cpu / self.requests * 1e6 if self.requests else 0.0

    @property
    def busy(self) -> float:
        """The share of CPU 0 the server got: under 100% when neighbours took the rest."""
        return self.cpu / self.wall if self.wall else 0.0


def cpu_seconds(pid: int) -> float | None:
    """A process's user + system CPU time, from /proc (None where there is no /proc)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


WRK_SCRIPT = f"""wrk.method = "POST"
wrk.body = '{BODY}'
wrk.headers["Content-Type"] = "application/json"
"""


def run_wrk(url: str, seconds: int, connections: int, cpu: int | None, script: str) -> Run:
    cmd = ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--timeout", "5s", "-s", script]
    out = subprocess.run(
        pinned([*cmd, url], cpu),
        capture_output=True,
        text=True,
        timeout=seconds + 30,
        check=True,
    ).stdout
    total = re.search(r"(\d+) requests in ([\d.]+)(us|ms|s|m)\b", out)
    if total is None:
        raise RuntimeError(f"wrk printed no request count:\n{out}")
    scale = {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0}[total.group(3)]
    socket_errors = re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out
    )
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors = sum(map(int, socket_errors.groups())) if socket_errors else 0
    errors += int(non_2xx.group(1)) if non_2xx else 0
    return Run(int(total.group(1)), float(total.group(2)) * scale, errors)


def raw_request(path: str, netloc: str) -> bytes:
    """The benchmark's POST as keep-alive HTTP/1.1 bytes."""
    body = BODY.encode()
    return (
        f"POST {path} HTTP/1.1\r\nHost: {netloc}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode() + body


async def read_answer(reader: asyncio.StreamReader, timeout: float) -> bytes:
    """One whole answer off the stream; its head (ValueError when it has no content-length)."""
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout=timeout)
    length = re.search(rb"(?i)\r\ncontent-length: *(\d+)", head)
    if length is None:
        raise ValueError("no content-length")
    await reader.readexactly(int(length.group(1)))
    return head


async def _python_load(url: str, seconds: float, connections: int) -> dict[str, float]:
    """Keep-alive HTTP/1.1 POSTs on ``connections`` asyncio streams, one request in flight on
    each. Written on the streams rather than httpx: httpx's per-request overhead capped it at
    about 500 requests/s on one core here, below what the bare server answers."""
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    request = raw_request(parts.path, parts.netloc)
    done = errors = 0
    start = time.perf_counter()
    deadline = start + seconds

    async def worker() -> None:
        nonlocal done, errors
        while time.perf_counter() < deadline:  # reconnects after an error, until the deadline
            writer = None
            try:
                reader, writer = await asyncio.wait_for(
                    asyncio.open_connection(host, port), timeout=5.0
                )
                while time.perf_counter() < deadline:
                    writer.write(request)
                    head = await read_answer(reader, timeout=5.0)
                    done += 1
                    errors += not head.startswith(b"HTTP/1.1 200 ")
            except (OSError, ValueError, asyncio.IncompleteReadError, TimeoutError):
                errors += 1
                await asyncio.sleep(0.01)
            finally:
                if writer is not None:
                    writer.close()

    await asyncio.gather(*(worker() for _ in range(connections)))
    return {"requests": done, "errors": errors, "seconds": time.perf_counter() - start}


def run_python(url: str, seconds: int, connections: int, cpu: int | None) -> Run:
    """The fallback load generator, in its own process pinned like wrk would be."""
    cmd = [sys.executable, "-m", "benchmarks.e2e", "--load", url]
    cmd += ["--duration", str(seconds), "--connections", str(connections)]
    if cpu is not None:
        cmd += ["--cpu", str(cpu)]
    out = subprocess.run(
        pinned(cmd, cpu), capture_output=True, text=True, timeout=seconds + 60, check=True
    ).stdout
    result = json.loads(out.strip().splitlines()[-1])
    return Run(result["requests"], result["seconds"], result["errors"])


# --- the benchmark process --------------------------------------------------------------------


@dataclass
class Server:
    condition: str
    proc: subprocess.Popen[str]
    port: int = 0
    stack: str = ""
    middleware: str = ""

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}{PATH}"


def start_server(condition: str, cpu: int | None) -> Server:
    cmd = [sys.executable, "-m", "benchmarks.e2e", "--serve", condition]
    if cpu is not None:
        cmd += ["--cpu", str(cpu)]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    for var in ("OTEL_METRICS_EXPORTER", "OTEL_SDK_DISABLED", "ROUTEMETER_METRICS_TOKEN"):
        env.pop(var, None)
    proc = subprocess.Popen(pinned(cmd, cpu), stdout=subprocess.PIPE, text=True, env=env)
    return Server(condition, proc)


def wait_ready(server: Server, timeout_s: float = 30.0) -> None:
    import selectors

    import httpx

    assert server.proc.stdout is not None
    deadline = time.monotonic() + timeout_s
    with selectors.DefaultSelector() as sel:
        sel.register(server.proc.stdout, selectors.EVENT_READ)
        while not server.port:
            if time.monotonic() > deadline or server.proc.poll() is not None:
                raise RuntimeError(f"{server.condition} server did not start")
            if sel.select(timeout=0.2):
                line = server.proc.stdout.readline()
                if line.startswith("PORT "):
                    _, port, loop, http, server.middleware = line.split()
                    server.port, server.stack = int(port), f"uvicorn loop={loop} http={http}"
    while True:
        try:
            r = httpx.post(server.url, content=BODY, timeout=2.0)
            if r.status_code == 200 and "usage" in r.json():
                return
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline or server.proc.poll() is not None:
            raise RuntimeError(f"{server.condition} server did not answer {PATH}")
        time.sleep(0.1)


def stop(proc: subprocess.Popen[Any]) -> None:
    """Stop one child we started, by its pid: SIGTERM, then SIGKILL after 10 s."""
    if proc.poll() is not None:
        return
    os.kill(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)


def check_full(server: Server) -> str:
    """What a server's mounted /metrics counted: full's the routed and HTTP requests it served,
    the floor's none (its recording was off)."""
    import httpx

    text = httpx.get(f"http://127.0.0.1:{server.port}/metrics", timeout=30.0).text

    def total(name: str) -> str:
        found = re.findall(rf"^{name}_count\{{[^}}]*\}} ([\d.e+]+)$", text, re.M)
        return f"{sum(map(float, found)):,.0f}" if found else "none"

    http = "opentelemetry-instrumentation-asgi" if server.middleware == "otel-asgi" else "its own"
    return (
        f"{server.condition}'s /metrics: {total('gen_ai_server_request_duration_seconds')}"
        " routed requests,"
        f" {total('http_server_request_duration_seconds')} HTTP requests"
        f" (instrument_app's HTTP metrics: {http})"
    )


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.e2e")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=int, default=10, help="seconds per condition and round")
    parser.add_argument(
        "--slice",
        type=int,
        default=2,
        help="a round interleaves the conditions in slices of this many seconds",
    )
    parser.add_argument("--warmup", type=int, default=2, help="seconds per server, once")
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--loadgen", choices=("auto", "wrk", "python"), default="auto")
    parser.add_argument("--serve", choices=CONDITIONS, help=argparse.SUPPRESS)
    parser.add_argument("--load", metavar="URL", help=argparse.SUPPRESS)
    parser.add_argument("--cpu", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve or args.load:
        pin_self(args.cpu)
        if args.serve:
            serve(args.serve)
        else:
            result = asyncio.run(_python_load(args.load, args.duration, args.connections))
            print(json.dumps(result), flush=True)
        return

    loadgen = args.loadgen
    if loadgen == "auto":
        loadgen = "wrk" if shutil.which("wrk") else "python"
    if loadgen == "wrk" and not shutil.which("wrk"):
        sys.exit("wrk is not installed (make wrk, or apt-get install wrk)")
    cpus = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else set()
    pin = {SERVER_CPU, LOAD_CPU} <= cpus
    server_cpu, load_cpu = (SERVER_CPU, LOAD_CPU) if pin else (None, None)

    servers: list[Server] = []
    with tempfile.TemporaryDirectory() as tmp:
        script = os.path.join(tmp, "post.lua")
        with open(script, "w") as f:
            f.write(WRK_SCRIPT)

        def load(server: Server, seconds: int) -> Run:
            cpu0, wall0 = cpu_seconds(server.proc.pid), time.perf_counter()
            if loadgen == "wrk":
                run = run_wrk(server.url, seconds, args.connections, load_cpu, script)
            else:
                run = run_python(server.url, seconds, args.connections, load_cpu)
            cpu1, wall1 = cpu_seconds(server.proc.pid), time.perf_counter()
            if cpu0 is not None and cpu1 is not None:
                run.cpu, run.wall = cpu1 - cpu0, wall1 - wall0
            return run

        slices = [args.slice] * (args.duration // args.slice)
        if args.duration % args.slice:
            slices.append(args.duration % args.slice)

        try:
            servers = [start_server(c, server_cpu) for c in CONDITIONS]
            for server in servers:
                wait_ready(server)
            print(f"{loadgen} load generator, {args.connections} connections", end="")
            print(f", {args.rounds} rounds of {args.duration} s per condition", end="")
            print(f" in slices of {args.slice} s, after {args.warmup} s of warm-up each")
            print(servers[0].stack, end="; ")
            if pin:
                print(f"servers pinned to CPU {SERVER_CPU}, load generator to CPU {LOAD_CPU}")
            else:
                print("fewer than 2 CPUs available: nothing pinned, figures will be noisy")
            if loadgen == "python":
                print(
                    "note: wrk not used; the Python load generator (asyncio streams) may saturate"
                    " before the bare server does, which understates the differences"
                )
            for server in servers:
                if args.warmup > 0:
                    load(server, args.warmup)
            runs: dict[str, list[Run]] = {c: [] for c in CONDITIONS}
            width = len(CONDITIONS) * 11 - 1
            print(
                f"\n{'':5} {'requests/s':^{width}} {'server CPU µs per request':^{width}}"
                f" {'server CPU busy':^{width}}"
            )
            print(f"{'round':>5} " + " ".join(f"{c:>10}" for c in CONDITIONS * 3))
            for i in range(args.rounds):
                this = {c: Run() for c in CONDITIONS}
                for seconds in slices:
                    for server in servers:
                        this[server.condition] += load(server, seconds)
                for c in CONDITIONS:
                    runs[c].append(this[c])
                last = [runs[c][-1] for c in CONDITIONS]
                print(
                    f"{i + 1:>5} "
                    + " ".join(f"{r.rps:10,.0f}" for r in last)
                    + " "
                    + " ".join(f"{r.cpu_us:10.0f}" for r in last)
                    + " "
                    + " ".join(f"{r.busy:10.0%}" for r in last),
                    flush=True,
                )
            med = {c: statistics.median(r.rps for r in runs[c]) for c in CONDITIONS}
            med_cpu = {c: statistics.median(r.cpu_us for r in runs[c]) for c in CONDITIONS}
            print(
                f"{'med':>5} "
                + " ".join(f"{med[c]:10,.0f}" for c in CONDITIONS)
                + " "
                + " ".join(f"{med_cpu[c]:10.0f}" for c in CONDITIONS)
            )
            errors = {c: sum(r.errors for r in runs[c]) for c in CONDITIONS}
            if any(errors.values()):
                print(f"errors (non-2xx or socket): {errors}")
            print()
            for c in ("full", "routemeter", "floor"):
                pairs = list(zip(runs[c], runs["bare"], strict=True))
                ratios = [r.rps / b.rps for r, b in pairs]
                cpu_ratios = [r.cpu_us / b.cpu_us for r, b in pairs if b.cpu_us]
                each = ", ".join(f"{r:.3f}" for r in ratios)
                line = f"{c}/bare requests/s: median {statistics.median(ratios):.3f} ({each})"
                if cpu_ratios:
                    line += (
                        f"; server CPU per request: median {statistics.median(cpu_ratios):.3f}x"
                        f" ({med_cpu[c] - med_cpu['bare']:+.0f} µs)"
                    )
                print(line)
            print(
                "(floor: full with metric recording switched off, what the API and the middleware"
                " cost before any metric is recorded)"
            )
            print(
                "(a server CPU busy well under 100% means neighbours took CPU 0 or the load"
                " generator could not keep up: trust the CPU-per-request ratios more then)"
            )
            for server in servers:
                if server.condition in ("full", "floor"):
                    print(check_full(server))
        finally:
            for server in servers:
                stop(server.proc)


if __name__ == "__main__":
    main()
