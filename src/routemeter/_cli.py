"""``routemeter`` command line: ``config`` shows the effective configuration, ``demo`` runs the
demo router under load, ``top`` watches any routemeter /metrics endpoint."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from routemeter._config import ConfigError, load


def _config(_: argparse.Namespace) -> int:
    try:
        config = load()
    except ConfigError as e:
        print(f"routemeter: {e}", file=sys.stderr)
        return 2
    rows = config.describe()
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    header = ("setting", "variable", "value", "source")
    print("  ".join(h.ljust(w) for h, w in zip(header, [*widths, 0], strict=False)).rstrip())
    for row in rows:
        print("  ".join(c.ljust(w) for c, w in zip(row, [*widths, 0], strict=False)).rstrip())
    if "otlp" in config.exporters:
        print(f"\nOTLP metrics endpoint: {config.metrics_endpoint} ({config.otlp_protocol})")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="routemeter", description="OpenTelemetry metrics for LLM routers."
    )
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser(
        "config", help="print the effective configuration and where each value came from"
    ).set_defaults(run=_config)
    commands.add_parser(
        "demo",
        help="run the demo LLM router under load (see `routemeter demo --help`)",
        add_help=False,
    )
    commands.add_parser(
        "top",
        help="a live table of a routemeter /metrics endpoint (see `routemeter top --help`)",
        add_help=False,
    )
    args, rest = parser.parse_known_args(argv)
    if args.command == "demo":
        from routemeter.demo import cli

        return int(cli(rest))
    if args.command == "top":
        try:
            from routemeter.tools._top import cli as top
        except ImportError as e:
            print(
                f"routemeter top needs rich ({e.name} is missing): pip install 'routemeter[top]'",
                file=sys.stderr,
            )
            return 2
        return int(top(rest))
    if rest:
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    return int(args.run(args))


if __name__ == "__main__":
    raise SystemExit(main())
