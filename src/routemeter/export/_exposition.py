"""routemeter's own families as Prometheus text, rendered straight from the aggregate state.

The OTel Prometheus exporter builds OTel points, then prometheus_client families and samples, and
escapes every label of every sample on every scrape: about a second at 2,000 models, with
hundreds of thousands of short-lived objects. Here each point's labels are escaped and joined once
(again only when its family's label set changes) and a scrape formats numbers only. The text is
the exporter's, sample for sample: family names with unit and ``_total``, sorted labels, the
scope labels, empty labels back-filled across a family, ``floatToGoString`` values (pinned by
``tests/export/test_exposition.py`` against the exporter itself). SDK families (HTTP metrics, the
application's own instruments, ``target_info``) still come from the exporter, in the same body.
"""

from __future__ import annotations

import gc
import threading
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from json import dumps
from typing import Any, Final

from prometheus_client.exposition import generate_latest
from prometheus_client.openmetrics import exposition as _openmetrics
from prometheus_client.utils import floatToGoString as _go_string

from routemeter.recording import _instruments as ins
from routemeter.recording._otel_private import prometheus_mapping
from routemeter.recording.aggregate._recorder import (
    OVERFLOW,
    AggregateRecorder,
    ExposedExemplar,
    saturate_int64,
)

TEXT_CONTENT_TYPE: Final = "text/plain; version=0.0.4; charset=utf-8"
OPENMETRICS: Final = "application/openmetrics-text"
"""In ``Accept``, what makes prometheus_client's ``choose_encoder`` answer OpenMetrics."""
OPENMETRICS_CONTENT_TYPE: Final[str] = _openmetrics.CONTENT_TYPE_LATEST
_EOF: Final = b"# EOF\n"
_OVERFLOW_LABELS: Final = {"otel_metric_overflow": "true"}
_go: Callable[[float], str] = _go_string  # untyped in prometheus_client
_SMALL: Final = [_go(i) for i in range(4096)]
_PIECE: Final = 256


LabelSet = tuple[tuple[str, str], ...]


def _escape(value: str) -> str:
    return value.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")


def _raw(value: Any) -> str:
    """The exporter's label value before escaping: strings as they are, the rest as JSON."""
    return value if isinstance(value, str) else dumps(value, default=str)


def _label_value(value: Any) -> str:
    return _escape(_raw(value))


def _number(value: Any) -> str:
    if type(value) is int and 0 <= value < 4096:
        return _SMALL[value]
    return _go(value)


class _Family:
    """One metric's fixed text: names, headers, label names; and its points' label strings."""

    __slots__ = (
        "_scope",
        "_scope_raw",
        "_sets",
        "bounds",
        "counter",
        "header",
        "histogram",
        "label_names",
        "labels",
        "om_header",
        "sample",
        "union",
    )

    def __init__(
        self, spec: ins.InstrumentSpec, scope: dict[str, str], scope_raw: list[tuple[str, str]]
    ) -> None:
        _, sanitize_attribute, map_unit = prometheus_mapping()
        name = ins.prometheus_name(spec)
        kind = {"counter": "counter", "histogram": "histogram"}.get(spec.kind, "gauge")
        help_text = spec.description.replace("\\", r"\\").replace("\n", r"\n")
        self.header = f"# HELP {name} {help_text}\n# TYPE {name} {kind}\n"
        # OpenMetrics names the family without _total, escapes quotes in HELP and states the unit
        base = name.removesuffix("_total") if kind == "counter" else name
        unit = map_unit(spec.unit)
        om_help = help_text.replace('"', r"\"")
        self.om_header = f"# HELP {base} {om_help}\n# TYPE {base} {kind}\n" + (
            f"# UNIT {base} {unit}\n" if unit else ""
        )
        self.sample = name
        self.counter = kind == "counter"
        self.histogram = spec.kind == "histogram"
        self.bounds = [f"{b}" for b in (spec.buckets or ())] + ["+Inf"]
        self.label_names = tuple(sanitize_attribute(a) for a in spec.attributes)
        self.union: frozenset[str] = frozenset()
        self.labels: dict[tuple[Any, ...], tuple[dict[str, str], Any]] = {}
        """Per point key: its escaped labels (scope included), and its rendered label text
        for the family's current label set."""
        self._scope = scope
        self._scope_raw = scope_raw
        self._sets: dict[tuple[Any, ...], tuple[LabelSet, list[LabelSet]]] = {}

    def label_sets(self, key: tuple[Any, ...]) -> tuple[LabelSet, list[LabelSet]]:
        """The point's label set as a parser of the text reads it (sorted, unescaped, empty
        labels dropped), and its buckets' (with ``le``): built once per point."""
        found = self._sets.get(key)
        if found is None:
            if key is OVERFLOW:
                pairs = list(_OVERFLOW_LABELS.items())
            else:
                pairs = [
                    (n, _raw(v))
                    for n, v in zip(self.label_names, key, strict=True)
                    if v is not None
                ]
            pairs = [(n, v) for n, v in [*pairs, *self._scope_raw] if v]
            plain = tuple(sorted(pairs))
            buckets = (
                [tuple(sorted([*pairs, ("le", b)])) for b in self.bounds] if self.histogram else []
            )
            found = self._sets[key] = (plain, buckets)
        return found

    def series(
        self, points: list[tuple[tuple[Any, ...], list[Any]]], out: dict[str, dict[LabelSet, float]]
    ) -> None:
        """Add the family's samples to ``out`` as ``parse`` would read them from its text."""
        sample = self.sample
        if not self.histogram:
            values = out.setdefault(sample, {})
            for key, state in points:
                values[self.label_sets(key)[0]] = float(saturate_int64(state[0]))
            return
        buckets = out.setdefault(f"{sample}_bucket", {})
        counts = out.setdefault(f"{sample}_count", {})
        sums = out.setdefault(f"{sample}_sum", {})
        for key, state in points:
            plain, sets = self.label_sets(key)
            total = 0
            for labels, count in zip(sets, state[3:], strict=True):
                total += count
                buckets[labels] = float(total)
            counts[plain] = float(total)
            sums[plain] = float(state[0])

    def point_labels(self, key: tuple[Any, ...]) -> dict[str, str]:
        found = self.labels.get(key)
        if found is not None:
            return found[0]
        if key is OVERFLOW:
            labels = dict(_OVERFLOW_LABELS)
        else:
            labels = {
                n: _label_value(v)
                for n, v in zip(self.label_names, key, strict=True)
                if v is not None
            }
        labels.update(self._scope)
        self.labels[key] = (labels, None)
        return labels

    def render(self, points: list[tuple[tuple[Any, ...], list[Any]]]) -> Iterator[str]:
        """The family's text in pieces of at most ``_PIECE`` points."""
        return self._render(points, self.header, None)

    def render_openmetrics(
        self,
        points: list[tuple[tuple[Any, ...], list[Any]]],
        exemplars: dict[tuple[Any, ...], dict[int, ExposedExemplar]],
    ) -> Iterator[str]:
        """``render()`` in OpenMetrics: its own header, and each bucket's (or counter's) latest
        exemplar after the value, as prometheus_client's OpenMetrics writer puts it."""
        return self._render(points, self.om_header, exemplars)

    def _render(
        self,
        points: list[tuple[tuple[Any, ...], list[Any]]],
        header: str,
        exemplars: dict[tuple[Any, ...], dict[int, ExposedExemplar]] | None,
    ) -> Iterator[str]:
        union = frozenset().union(*(self.point_labels(key) for key, _ in points))
        if union != self.union:
            self.union = union
            for key, (labels, _) in list(self.labels.items()):
                self.labels[key] = (labels, None)
        names = sorted(union)
        out = [header]
        append = out.append
        sample = self.sample
        for n, (key, state) in enumerate(points, 1):
            if n % _PIECE == 0:
                yield "".join(out)
                out.clear()
            labels, text = self.labels[key]
            if text is None:
                text = self._text(labels, names)
                self.labels[key] = (labels, text)
            found = exemplars.get(key) if exemplars else None
            if not self.histogram:
                mark = _exemplar(found[0]) if found and self.counter and 0 in found else ""
                append(f"{sample}{text} {_number(saturate_int64(state[0]))}{mark}\n")
                continue
            plain, before, after = text
            total = 0
            for slot, (bound, count) in enumerate(zip(self.bounds, state[3:], strict=True)):
                total += count
                mark = _exemplar(found[slot]) if found and slot in found else ""
                append(f'{sample}_bucket{{{before}le="{bound}"{after}}} {_number(total)}{mark}\n')
            append(f"{sample}_count{plain} {_number(total)}\n")
            append(f"{sample}_sum{plain} {_number(state[0])}\n")
        yield "".join(out)

    def _text(self, labels: dict[str, str], names: list[str]) -> Any:
        pairs = [f'{n}="{labels.get(n, "")}"' for n in names]
        plain = "{" + ",".join(pairs) + "}" if pairs else ""
        if not self.histogram:
            return plain
        cut = sum(1 for n in names if n < "le")
        before = "".join(f"{p}," for p in pairs[:cut])
        after = "".join(f",{p}" for p in pairs[cut:])
        return plain, before, after


def _exemplar(found: ExposedExemplar) -> str:
    """`` # {span_id=..,trace_id=..} value time``, the time as prometheus_client writes its
    ``Timestamp`` (seconds, then nanoseconds in nine digits)."""
    value, trace_id, span_id, at = found
    labels = f'span_id="{span_id:016x}",trace_id="{trace_id:032x}"'
    return f" # {{{labels}}} {_go(value)} {at // 1_000_000_000}.{at % 1_000_000_000:09d}"


class Exposition:
    """routemeter's families from one aggregate recorder, as the Prometheus exporter would."""

    def __init__(self, recorder: AggregateRecorder) -> None:
        self.recorder = recorder
        _, sanitize_attribute, _ = prometheus_mapping()
        scope = recorder.scope
        raw = {
            sanitize_attribute(f"otel_scope_{k}"): _raw(v)
            for k, v in (scope.attributes or {}).items()
        }
        raw.update(
            otel_scope_name=scope.name or "",
            otel_scope_version=scope.version or "",
            otel_scope_schema_url=scope.schema_url or "",
        )
        labels = {k: _escape(v) for k, v in raw.items()}
        self._families = [_Family(spec, labels, list(raw.items())) for spec in ins.ALL]
        self._lock = threading.Lock()
        recorder.expose_exemplars()

    def pieces(self, openmetrics: bool = False) -> Iterator[str]:
        """The text in pieces of a few hundred points, in the order the exporter renders the
        families (first measured first). Formatting runs outside the recorder's lock, on a copy
        of one metric's state at a time; no piece is large enough to hold the GIL for long.
        ``openmetrics``: the OpenMetrics text, exemplars included, without the ``# EOF``."""
        recorder = self.recorder
        with self._lock:  # the families' label caches are rebuilt in place
            for index, points in recorder.cumulative_points():
                if not points:
                    continue
                family = self._families[index]
                if openmetrics:
                    yield from family.render_openmetrics(points, recorder.exemplars_of(index))
                else:
                    yield from family.render(points)

    def text(self) -> str:
        return "".join(self.pieces())

    def series(self, wanted: frozenset[str]) -> dict[str, dict[LabelSet, float]]:
        """The samples of the families named in ``wanted`` (``stats()``'s), as parsing
        ``text()`` would give them, without the text: label sets are built once per point."""
        out: dict[str, dict[LabelSet, float]] = {}
        with self._lock:
            for index, points in self.recorder.cumulative_points():
                family = self._families[index]
                if points and (family.sample in wanted or f"{family.sample}_count" in wanted):
                    family.series(points, out)
        return out


_gc_lock = threading.Lock()
_gc_paused = 0


@contextmanager
def no_gc_pauses() -> Iterator[None]:
    """No cyclic collection while a scrape or a snapshot builds its transient objects.

    At 2,000 models they allocate tens of thousands of short-lived containers; the full
    collections those trigger scan the whole heap with the GIL held, stalling the event loop
    30-100 ms each, although all they would find is freed by reference counting the moment the
    work is done. Left as it was if the application turned collection off."""
    global _gc_paused
    with _gc_lock:
        if _gc_paused == 0 and not gc.isenabled():
            yield
            return
        _gc_paused += 1
        gc.disable()
    try:
        yield
    finally:
        with _gc_lock:
            _gc_paused -= 1
            if _gc_paused == 0:
                gc.enable()


def render(
    registry: Any, exposition: Exposition | None, accept_encoding: str, accept: str = ""
) -> tuple[list[bytes], list[tuple[bytes, bytes]]]:
    """The /metrics body in chunks (a few hundred KB each, so no single step holds the GIL
    long) and its headers: the registry's families through prometheus_client, then ours.
    OpenMetrics (with exemplars) when ``accept`` asks for it, as prometheus_client decides."""
    with no_gc_pauses():
        return _render(registry, exposition, accept_encoding, OPENMETRICS in accept)


def _render(
    registry: Any, exposition: Exposition | None, accept_encoding: str, openmetrics: bool
) -> tuple[list[bytes], list[tuple[bytes, bytes]]]:
    if openmetrics:
        written: bytes = _openmetrics.generate_latest(registry)  # type: ignore[no-untyped-call]
        chunks = [written.removesuffix(_EOF)]
    else:
        chunks = [generate_latest(registry)]
    if exposition is not None:
        pending: list[str] = []
        size = 0
        for family in exposition.pieces(openmetrics):
            pending.append(family)
            size += len(family)
            if size >= 256 * 1024:
                chunks.append("".join(pending).encode())
                pending, size = [], 0
        if pending:
            chunks.append("".join(pending).encode())
    if openmetrics:
        chunks.append(_EOF)
    content_type = OPENMETRICS_CONTENT_TYPE if openmetrics else TEXT_CONTENT_TYPE
    headers = [(b"content-type", content_type.encode())]
    if "gzip" in accept_encoding:
        gz = zlib.compressobj(6, zlib.DEFLATED, 31)  # 31: the gzip container
        chunks = [gz.compress(c) for c in chunks]
        chunks.append(gz.flush())
        headers.append((b"content-encoding", b"gzip"))
    return chunks, headers


def wsgi_app(registry: Any, ours: Callable[[], Exposition | None]) -> Callable[..., list[bytes]]:
    """The standalone server's /metrics: prometheus_client's WSGI app (any path, GET and
    OPTIONS, an empty favicon), with routemeter's families rendered directly."""

    def metrics_app(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
        method = environ["REQUEST_METHOD"]
        if method == "OPTIONS":
            start_response("200 OK", [("Allow", "OPTIONS,GET")])
            return [b""]
        if method != "GET":
            start_response("405 Method Not Allowed", [("Allow", "OPTIONS,GET")])
            return [f"# HTTP 405 Method Not Allowed: {method}; use OPTIONS or GET\n".encode()]
        if environ.get("PATH_INFO") == "/favicon.ico":
            start_response("200 OK", [])
            return [b""]
        chunks, headers = render(
            registry,
            ours(),
            environ.get("HTTP_ACCEPT_ENCODING", ""),
            environ.get("HTTP_ACCEPT", ""),
        )
        size = sum(len(c) for c in chunks)
        start_response(
            "200 OK",
            [(k.decode(), v.decode()) for k, v in headers] + [("Content-Length", str(size))],
        )
        return chunks

    return metrics_app
