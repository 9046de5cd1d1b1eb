"""CPU instructions per routed request, counted by valgrind's callgrind: independent of the
machine's load, so the ratios here hold on a busy shared machine where wall-clock ones drift.

Each contender runs twice in a fresh interpreter (hash seed fixed), with ``--warm`` and with
``--warm + --count`` requests; the difference over ``--count`` is its cost per request.

Then the end-to-end benchmark's servers (``benchmarks.e2e``: bare, full, routemeter, floor) run
under callgrind with collection off; after five times ``--warm`` requests over HTTP, collection
is switched on for ``--e2e-count`` requests (16 keep-alive connections, as ``wrk`` sends
them): every instruction the server process spends on them, uvicorn and h11 included. Their
ratio to bare is the CPU a router's requests cost without the noise of a shared machine's wall
clock.
Run with ``python -m benchmarks.instructions`` (needs ``valgrind``; slow: about three minutes).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor

CONTENDERS = ("routemeter", "raw OTel SDK instruments", "prometheus_client labels")


def _run_requests(contender: str, n: int) -> None:
    """Child side: set up one contender and serve ``n`` requests."""
    from benchmarks.__main__ import prometheus_client_request, raw_sdk_request, routed

    if contender == "routemeter":
        import routemeter

        os.environ["OTEL_METRICS_EXPORTER"] = "none"
        routemeter.setup(service_name="instructions")
        fn = routed
    elif contender == "raw OTel SDK instruments":
        fn = raw_sdk_request()
    else:
        fn = prometheus_client_request()
    for _ in range(n):
        fn()


def _collected(contender: str, n: int) -> int:
    with tempfile.TemporaryDirectory() as tmp:
        out = subprocess.run(
            [
                "valgrind",
                "--tool=callgrind",
                f"--callgrind-out-file={tmp}/out",
                sys.executable,
                "-m",
                "benchmarks.instructions",
                "--child",
                contender,
                str(n),
            ],
            capture_output=True,
            text=True,
            env={**os.environ, "PYTHONHASHSEED": "0"},
            check=True,
        )
    match = re.search(r"Collected : (\d+)", out.stderr)
    if match is None:
        raise RuntimeError(f"callgrind printed no count:\n{out.stderr[-2000:]}")
    return int(match.group(1))


async def _load(port: int, total: int, connections: int = 16) -> None:
    """Exactly ``total`` keep-alive POSTs, spread over ``connections``, each answered in full."""
    from benchmarks.e2e import PATH, raw_request, read_answer

    request = raw_request(PATH, f"127.0.0.1:{port}")

    async def connection(n: int) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            for _ in range(n):
                writer.write(request)
                head = await read_answer(reader, timeout=120)
                if not head.startswith(b"HTTP/1.1 200 "):
                    raise RuntimeError(f"the server answered {head[:40]!r}")
        finally:
            writer.close()

    share, extra = divmod(total, connections)
    await asyncio.gather(*(connection(share + (i < extra)) for i in range(connections)))


def _e2e_collected(condition: str, warm: int, count: int) -> int:
    """Instructions the condition's server spends on ``count`` requests after ``warm``."""
    with tempfile.TemporaryDirectory() as tmp:
        out = f"{tmp}/out"
        cmd = ["valgrind", "--tool=callgrind", "--instr-atstart=no"]
        cmd += [f"--callgrind-out-file={out}", sys.executable, "-m", "benchmarks.e2e"]
        env = {**os.environ, "PYTHONHASHSEED": "0", "PYTHONUNBUFFERED": "1"}
        for var in ("OTEL_METRICS_EXPORTER", "OTEL_SDK_DISABLED", "ROUTEMETER_METRICS_TOKEN"):
            env.pop(var, None)
        proc = subprocess.Popen(
            [*cmd, "--serve", condition],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            env=env,
        )
        try:
            assert proc.stdout is not None
            line = proc.stdout.readline()  # valgrind starts slowly: the PORT line, or EOF
            if not line.startswith("PORT "):
                raise RuntimeError(f"the {condition} server did not start under valgrind")
            port = int(line.split()[1])
            asyncio.run(_load(port, warm))
            toggle = ["callgrind_control", "--instr"]
            subprocess.run([*toggle, "on", str(proc.pid)], capture_output=True, check=True)
            asyncio.run(_load(port, count))
            subprocess.run([*toggle, "off", str(proc.pid)], capture_output=True, check=True)
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=120)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        with open(out) as f:
            totals = re.search(r"^totals: (\d+)", f.read(), re.MULTILINE)
    if totals is None:
        raise RuntimeError(f"callgrind wrote no totals for the {condition} server")
    return int(totals.group(1))


def end_to_end(warm: int, count: int) -> dict[str, float]:
    """Instructions per request of each ``benchmarks.e2e`` server, all at once."""
    from benchmarks.e2e import CONDITIONS

    with ThreadPoolExecutor(len(CONDITIONS)) as pool:
        counts = pool.map(lambda c: _e2e_collected(c, warm, count), CONDITIONS)
        return {c: n / count for c, n in zip(CONDITIONS, counts, strict=True)}


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.instructions")
    parser.add_argument("--warm", type=int, default=200)
    parser.add_argument("--count", type=int, default=1000)
    parser.add_argument("--e2e-count", type=int, default=2000)
    parser.add_argument("--child", nargs=2, metavar=("CONTENDER", "N"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        _run_requests(args.child[0], int(args.child[1]))
        return
    if shutil.which("valgrind") is None:
        sys.exit("valgrind is not installed (apt-get install valgrind)")
    per_request = {}
    for contender in CONTENDERS:
        base = _collected(contender, args.warm)
        more = _collected(contender, args.warm + args.count)
        per_request[contender] = (more - base) / args.count
    ours = per_request["routemeter"]
    print(f"instructions per routed request (callgrind, {args.count} requests):")
    for contender, count in per_request.items():
        print(f"{contender:28} {count:12,.0f} {count / ours:8.2f}x")
    if shutil.which("callgrind_control") is None:
        print("callgrind_control missing: skipping the end-to-end instruction counts")
        return
    started = time.monotonic()
    servers = end_to_end(args.warm * 5, args.e2e_count)
    bare = servers["bare"]
    print(
        f"\ninstructions per HTTP request in the end-to-end servers (callgrind,"
        f" {args.e2e_count} requests over 16 connections, {time.monotonic() - started:.0f} s):"
    )
    for condition, count in servers.items():
        print(f"{condition:28} {count:12,.0f} {count / bare:8.3f}x {count - bare:+10,.0f}")


if __name__ == "__main__":
    main()
