"""The dashboard page served at ``<metrics_path>/dashboard``: one self-contained HTML document.

The page's source lives beside this module in ``dashboard/`` (HTML, CSS, plain JavaScript and a
vendored uPlot, no build step). :func:`page` inlines every stylesheet and script the HTML links
to, once, so the browser fetches nothing but the JSON endpoints beside the page: no CDN, no
fonts, nothing from another host. A Content-Security-Policy naming the hash of each inlined
block enforces that in the browser, and keeps any injected markup from running. The files are
read through ``importlib.resources`` so the page works from a wheel or a zip.
"""

from __future__ import annotations

import base64
import hashlib
import re
from functools import cache
from importlib.resources import files
from typing import Final

__all__ = ["MAX_PAGE_BYTES", "SOURCES", "page"]

MAX_PAGE_BYTES: Final = 300 * 1024
"""The page's size limit (issue 13); a test holds the built page under it."""

SOURCES: Final = (
    "index.html",
    "dashboard.css",
    "dashboard.js",
    "vendor/uPlot.min.css",
    "vendor/uPlot.iife.min.js",
    "vendor/uPlot.LICENSE",
)
"""Every file the page is built from, relative to ``routemeter/tools/dashboard/`` (the wheel
must carry them all; the licence travels with the vendored code)."""

_CSP_MARK: Final = "<!-- routemeter:csp -->"
_STYLESHEET: Final = re.compile(r'<link rel="stylesheet" href="([A-Za-z0-9_./-]+)">')
_SCRIPT: Final = re.compile(r'<script src="([A-Za-z0-9_./-]+)"></script>')
_CLOSERS: Final = {
    "script": re.compile(r"</script|<!--", re.I),
    "style": re.compile(r"</style", re.I),
}


def _read(name: str) -> str:
    return files("routemeter.tools").joinpath("dashboard", *name.split("/")).read_text("utf-8")


def _digest(text: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode()).digest()).decode() + "'"


@cache
def page() -> bytes:
    """The dashboard as one UTF-8 HTML document, built on first call and cached."""
    html = _read("index.html")
    hashes: dict[str, list[str]] = {"script": [], "style": []}

    def inline(tag: str, name: str) -> str:
        text = _read(name)
        if _CLOSERS[tag].search(text):  # it would end the element early: never inline it blind
            raise ValueError(f"dashboard/{name} cannot be inlined in a <{tag}> element")
        hashes[tag].append(_digest(text))
        return f"<{tag}>{text}</{tag}>"

    html = _STYLESHEET.sub(lambda m: inline("style", m.group(1)), html)
    html = _SCRIPT.sub(lambda m: inline("script", m.group(1)), html)
    csp = "; ".join(
        (
            "default-src 'none'",
            "script-src " + " ".join(hashes["script"]),
            "style-src " + " ".join(hashes["style"]),
            "connect-src 'self'",
            "img-src 'self' data:",
            "base-uri 'none'",
            "form-action 'none'",
        )
    )
    if html.count(_CSP_MARK) != 1:
        raise ValueError("dashboard/index.html lost its CSP marker")
    html = html.replace(_CSP_MARK, f'<meta http-equiv="Content-Security-Policy" content="{csp}">')
    body = html.encode("utf-8")
    if len(body) > MAX_PAGE_BYTES:
        raise ValueError(f"the dashboard page is {len(body)} bytes, over {MAX_PAGE_BYTES}")
    return body
