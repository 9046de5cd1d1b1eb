"""``routemeter demo``: a small but real LLM router (simulated providers in-process) under seeded
load, instrumented with routemeter, with /metrics on the router's own port.

Only argument parsing lives here, so ``routemeter demo --help`` works without the ``demo`` extra;
uvicorn, starlette, httpx and rich load when the demo runs.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

__all__ = ["cli", "parser"]


def _positive(raw: str) -> float:
    value = float(raw)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be greater than 0, got {raw}")
    return value


def _non_negative(raw: str) -> float:
    value = float(raw)
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {raw}")
    return value


def _port(raw: str) -> int:
    value = int(raw)
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"must be 0-65535, got {raw}")
    return value


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="routemeter demo",
        description="Run a demo LLM router (simulated OpenAI, Anthropic and Google upstreams)"
        " under seeded load, with routemeter metrics on its own /metrics and a live dashboard"
        " at /metrics/dashboard.",
        epilog="Metrics go where OTEL_METRICS_EXPORTER says (default: prometheus, mounted on the"
        " router's port); OTEL_METRICS_EXPORTER=otlp pushes to a Collector instead.",
    )
    p.add_argument(
        "--duration",
        type=_positive,
        default=None,
        metavar="SECONDS",
        help="send load this long, then print a summary and exit (default: until Ctrl-C)",
    )
    p.add_argument(
        "--rate",
        type=_positive,
        default=20.0,
        metavar="RPS",
        help="mean requests per second, Poisson arrivals (default: 20)",
    )
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default: 127.0.0.1)")
    p.add_argument(
        "--port",
        type=_port,
        default=8000,
        help="router port, also serving /metrics (default: 8000; 0 = a free port)",
    )
    p.add_argument("--seed", type=int, default=0, help="seed for load and upstreams (default: 0)")
    p.add_argument(
        "--ledger", metavar="PATH", help="write the ledger of what the router did as JSON"
    )
    p.add_argument(
        "--linger",
        type=_non_negative,
        default=0.0,
        metavar="SECONDS",
        help="keep serving this long after the load, for a final scrape",
    )
    p.add_argument("--serve", action="store_true", help="serve only, no load, until SIGINT/SIGTERM")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p  # fmt: skip


def cli(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``routemeter demo``; returns the exit status."""
    try:
        args = parser().parse_args(argv)
    except SystemExit as e:  # --help, or a bad argument (argparse printed why)
        return e.code if isinstance(e.code, int) else 2
    try:
        from routemeter.demo.run import main
    except ImportError as e:
        print(
            f"routemeter demo needs the 'demo' extra ({e.name} is missing):"
            " pip install 'routemeter[demo]'",
            file=sys.stderr,
        )
        return 2
    return main(args)
