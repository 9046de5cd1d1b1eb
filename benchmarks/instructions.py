"""CPU instructions per routed request, counted by valgrind's callgrind: independent of the
machine's load, so the ratios here hold on a busy shared machine where wall-clock ones drift.

Each contender runs twice in a fresh interpreter (hash seed fixed), with ``--warm`` and with
``--warm + --count`` requests; the difference over ``--count`` is its cost per request.
Run with ``python -m benchmarks.instructions`` (needs ``valgrind``; slow: about a minute).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile

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


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.instructions")
    parser.add_argument("--warm", type=int, default=200)
    parser.add_argument("--count", type=int, default=1000)
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


if __name__ == "__main__":
    main()
