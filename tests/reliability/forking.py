"""Run as ``python -m reliability.forking N1 N2 ...``: set up routemeter from the environment,
then fork one child per argument; child i serves Ni routed requests and shuts down (flushing).
The parent serves one request of its own and shuts down last. Only routemeter's own metrics
are recorded (no HTTP instrumentation), so nothing but routemeter names the Resource."""

from __future__ import annotations

import os
import sys

import routemeter


@routemeter.route("default")
def handle() -> None:
    with routemeter.current().attempt("openai", "gpt-4o-mini") as a:
        a.usage(input_tokens=1, output_tokens=1)


def main(counts: list[int]) -> None:
    routemeter.setup(set_global=False)
    children = []
    for n in counts:
        pid = os.fork()
        if pid == 0:
            status = 1
            try:
                for _ in range(n):
                    handle()
                routemeter.shutdown()
                status = 0
            finally:
                os._exit(status)
        children.append(pid)
    failed = [pid for pid in children if os.waitpid(pid, 0)[1] != 0]
    handle()
    routemeter.shutdown()
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main([int(a) for a in sys.argv[1:]])
