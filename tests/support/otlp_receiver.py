"""An in-process OTLP metrics receiver (gRPC and HTTP) that records what real exporters send.

Tests assert on what actually went over the wire, decoded from protobuf, rather than on SDK
objects; the receiver can be stopped and restarted on the same ports to play a collector outage.
"""

from __future__ import annotations

import gzip
import http.server
import json
import threading
import time
import zlib
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Literal, Self

import grpc
from google.protobuf import json_format
from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2_grpc
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
    ExportMetricsServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.metrics.v1 import metrics_pb2

Transport = Literal["grpc", "http"]

_TEMPORALITY = {
    metrics_pb2.AGGREGATION_TEMPORALITY_UNSPECIFIED: "unspecified",
    metrics_pb2.AGGREGATION_TEMPORALITY_DELTA: "delta",
    metrics_pb2.AGGREGATION_TEMPORALITY_CUMULATIVE: "cumulative",
}
_BIND_RETRIES = 40
_BIND_RETRY_SLEEP_S = 0.05


@dataclass(frozen=True)
class ReceivedExport:
    """One decoded export call, as it arrived."""

    transport: Transport
    request: ExportMetricsServiceRequest
    headers: dict[str, str]
    received_at: float = field(default_factory=time.time)


def any_value(value: AnyValue) -> Any:
    """Decode an OTLP AnyValue into plain Python (str/bool/int/float/bytes/list/dict/None)."""
    kind = value.WhichOneof("value")
    if kind is None:
        return None
    if kind == "array_value":
        return [any_value(v) for v in value.array_value.values]
    if kind == "kvlist_value":
        return attributes(value.kvlist_value.values)
    return getattr(value, kind)


def attributes(kvs: Iterable[KeyValue]) -> dict[str, Any]:
    """Decode repeated KeyValue into a dict (later duplicates win, as in most backends)."""
    return {kv.key: any_value(kv.value) for kv in kvs}


def _exemplars(exemplars: Iterable[metrics_pb2.Exemplar]) -> list[dict[str, Any]]:
    out = []
    for ex in exemplars:
        kind = ex.WhichOneof("value")
        out.append(
            {
                "value": getattr(ex, kind) if kind else None,
                "attributes": attributes(ex.filtered_attributes),
                "time_unix_nano": ex.time_unix_nano,
                "trace_id": ex.trace_id.hex(),
                "span_id": ex.span_id.hex(),
            }
        )
    return out


def _min_max_sum(dp: Any, out: dict[str, Any]) -> None:
    for name in ("sum", "min", "max"):
        if dp.HasField(name):
            out[name] = getattr(dp, name)


def _metric_points(metric: metrics_pb2.Metric) -> Iterable[dict[str, Any]]:
    kind = metric.WhichOneof("data")
    if kind is None:
        return
    data = getattr(metric, kind)
    base: dict[str, Any] = {"kind": kind}
    if kind in ("sum", "histogram", "exponential_histogram"):
        base["temporality"] = _TEMPORALITY.get(data.aggregation_temporality, "unspecified")
    if kind == "sum":
        base["monotonic"] = data.is_monotonic
    for dp in data.data_points:
        point = dict(base)
        point["attributes"] = attributes(dp.attributes)
        point["start_time_unix_nano"] = dp.start_time_unix_nano
        point["time_unix_nano"] = dp.time_unix_nano
        point["flags"] = dp.flags
        if kind in ("sum", "gauge"):
            value_kind = dp.WhichOneof("value")
            point["value"] = getattr(dp, value_kind) if value_kind else None
            point["exemplars"] = _exemplars(dp.exemplars)
        elif kind == "histogram":
            point["count"] = dp.count
            _min_max_sum(dp, point)
            point["bucket_counts"] = list(dp.bucket_counts)
            point["explicit_bounds"] = list(dp.explicit_bounds)
            point["exemplars"] = _exemplars(dp.exemplars)
        elif kind == "exponential_histogram":
            point["count"] = dp.count
            _min_max_sum(dp, point)
            point["scale"] = dp.scale
            point["zero_count"] = dp.zero_count
            point["zero_threshold"] = dp.zero_threshold
            point["positive"] = {
                "offset": dp.positive.offset,
                "bucket_counts": list(dp.positive.bucket_counts),
            }
            point["negative"] = {
                "offset": dp.negative.offset,
                "bucket_counts": list(dp.negative.bucket_counts),
            }
            point["exemplars"] = _exemplars(dp.exemplars)
        elif kind == "summary":
            point["count"] = dp.count
            point["sum"] = dp.sum
            point["quantiles"] = {q.quantile: q.value for q in dp.quantile_values}
        yield point


def flatten(request: ExportMetricsServiceRequest) -> list[dict[str, Any]]:
    """One flat dict per data point in ``request``, in wire order."""
    points = []
    for rm in request.resource_metrics:
        resource = attributes(rm.resource.attributes)
        for sm in rm.scope_metrics:
            for metric in sm.metrics:
                for point in _metric_points(metric):
                    point.update(
                        name=metric.name,
                        unit=metric.unit,
                        description=metric.description,
                        resource=resource,
                        scope=sm.scope.name,
                        scope_version=sm.scope.version,
                    )
                    points.append(point)
    return points


def _merge_headers(pairs: Iterable[tuple[str, str]]) -> dict[str, str]:
    """Lower-case names; repeated headers are comma-joined as HTTP allows."""
    merged: dict[str, str] = {}
    for key, value in pairs:
        name = key.lower()
        merged[name] = f"{merged[name]},{value}" if name in merged else value
    return merged


class _MetricsServicer(metrics_service_pb2_grpc.MetricsServiceServicer):
    def __init__(self, record: Callable[[ReceivedExport], None]) -> None:
        self._record = record

    def Export(
        self, request: ExportMetricsServiceRequest, context: grpc.ServicerContext
    ) -> ExportMetricsServiceResponse:
        pairs = context.invocation_metadata() or ()
        headers = _merge_headers(
            (k, v.decode("latin-1") if isinstance(v, bytes) else v) for k, v in pairs
        )
        self._record(ReceivedExport("grpc", request, headers))
        return ExportMetricsServiceResponse()


class _HTTPServer(http.server.ThreadingHTTPServer):
    record: Callable[[ReceivedExport], None]


class _Handler(http.server.BaseHTTPRequestHandler):
    # HTTP/1.0 closes each connection, so no keep-alive handler thread outlives stop().
    protocol_version = "HTTP/1.0"
    timeout = 10
    server: _HTTPServer

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _reply(self, status: int, body: bytes, content_type: str = "text/plain") -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        self._reply(405, b"POST only\n")

    def do_POST(self) -> None:
        if self.path.split("?", 1)[0] != "/v1/metrics":
            self._reply(404, b"only /v1/metrics is served\n")
            return
        length = self.headers.get("Content-Length")
        if length is None:
            self._reply(411, b"Content-Length required\n")
            return
        body = self.rfile.read(int(length))
        encoding = (self.headers.get("Content-Encoding") or "identity").strip().lower()
        try:
            if encoding == "gzip":
                body = gzip.decompress(body)
            elif encoding == "deflate":
                try:
                    body = zlib.decompress(body)
                except zlib.error:
                    body = zlib.decompress(body, -zlib.MAX_WBITS)
            elif encoding != "identity":
                self._reply(415, f"unsupported Content-Encoding {encoding}\n".encode())
                return
        except (OSError, EOFError, zlib.error) as exc:
            self._reply(400, f"bad {encoding} body: {exc}\n".encode())
            return
        content_type = (self.headers.get("Content-Type") or "").split(";", 1)[0].strip().lower()
        request = ExportMetricsServiceRequest()
        try:
            if content_type == "application/x-protobuf":
                request.ParseFromString(body)
                reply = ExportMetricsServiceResponse().SerializeToString()
            elif content_type == "application/json":
                json_format.Parse(body, request)
                reply = json.dumps({}).encode()
            else:
                self._reply(415, f"unsupported Content-Type {content_type!r}\n".encode())
                return
        except (DecodeError, json_format.ParseError) as exc:
            self._reply(400, f"cannot decode ExportMetricsServiceRequest: {exc}\n".encode())
            return
        headers = _merge_headers(self.headers.items())
        self.server.record(ReceivedExport("http", request, headers))
        self._reply(200, reply, content_type)


class OTLPReceiver:
    """OTLP metrics receiver on 127.0.0.1 for gRPC and HTTP/protobuf (also OTLP/JSON).

    Ports are chosen on the first ``start()`` by binding port 0 and kept for the receiver's
    lifetime, so ``stop()`` then ``start()`` comes back on the same endpoints. Recorded exports
    survive a restart; use ``clear()`` to forget them.
    """

    def __init__(self, grpc_port: int = 0, http_port: int = 0) -> None:
        self._grpc_port = grpc_port
        self._http_port = http_port
        self._lock = threading.Lock()
        self._received: list[ReceivedExport] = []
        self._arrived = threading.Condition(self._lock)
        self._grpc_server: grpc.Server | None = None
        self._grpc_executor: ThreadPoolExecutor | None = None
        self._http_server: _HTTPServer | None = None
        self._http_thread: threading.Thread | None = None

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def running(self) -> bool:
        return self._grpc_server is not None

    def start(self) -> None:
        """Bind both listeners (on the remembered ports after the first start) and serve."""
        if self.running:
            return
        try:
            self._start_grpc()
            self._start_http()
        except BaseException:
            self.stop()
            raise

    def _start_grpc(self) -> None:
        executor = ThreadPoolExecutor(max_workers=4, thread_name_prefix="otlp-grpc")
        # so_reuseport=0: never silently share a port with some other listener.
        server = grpc.server(executor, options=[("grpc.so_reuseport", 0)])
        metrics_service_pb2_grpc.add_MetricsServiceServicer_to_server(  # type: ignore[no-untyped-call]
            _MetricsServicer(self._record), server
        )
        self._grpc_executor = executor
        self._grpc_server = server
        port = _retry_bind(
            lambda: server.add_insecure_port(f"127.0.0.1:{self._grpc_port}"),
            what=f"gRPC 127.0.0.1:{self._grpc_port}",
            retry=self._grpc_port != 0,
        )
        self._grpc_port = port
        server.start()

    def _start_http(self) -> None:
        def bind() -> int:
            server = _HTTPServer(("127.0.0.1", self._http_port), _Handler)
            server.record = self._record
            self._http_server = server
            port: int = server.server_address[1]
            return port

        self._http_port = _retry_bind(
            bind, what=f"HTTP 127.0.0.1:{self._http_port}", retry=self._http_port != 0
        )
        assert self._http_server is not None
        self._http_thread = threading.Thread(
            target=self._http_server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name="otlp-http",
            daemon=True,
        )
        self._http_thread.start()

    def stop(self) -> None:
        """Close both listeners and wait for in-flight requests; idempotent."""
        if self._http_server is not None:
            if self._http_thread is not None:
                self._http_server.shutdown()
                self._http_thread.join(timeout=10)
            self._http_server.server_close()
        self._http_server = None
        self._http_thread = None
        if self._grpc_server is not None:
            self._grpc_server.stop(grace=None).wait(timeout=10)
        if self._grpc_executor is not None:
            self._grpc_executor.shutdown(wait=True)
        self._grpc_server = None
        self._grpc_executor = None

    def _record(self, export: ReceivedExport) -> None:
        with self._arrived:
            self._received.append(export)
            self._arrived.notify_all()

    @property
    def grpc_port(self) -> int:
        return self._require_port(self._grpc_port)

    @property
    def http_port(self) -> int:
        return self._require_port(self._http_port)

    @staticmethod
    def _require_port(port: int) -> int:
        if port == 0:
            raise RuntimeError("OTLPReceiver has not been started yet; no port chosen")
        return port

    @property
    def grpc_endpoint(self) -> str:
        return f"http://127.0.0.1:{self.grpc_port}"

    @property
    def http_endpoint(self) -> str:
        """Base URL, as for OTEL_EXPORTER_OTLP_ENDPOINT (the SDK appends /v1/metrics)."""
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def http_metrics_url(self) -> str:
        """Full signal URL, as the http OTLPMetricExporter(endpoint=...) argument wants it."""
        return f"{self.http_endpoint}/v1/metrics"

    @property
    def received(self) -> list[ReceivedExport]:
        with self._lock:
            return list(self._received)

    @property
    def requests(self) -> list[ExportMetricsServiceRequest]:
        return [r.request for r in self.received]

    @property
    def headers(self) -> list[dict[str, str]]:
        return [dict(r.headers) for r in self.received]

    @property
    def transports(self) -> list[Transport]:
        return [r.transport for r in self.received]

    def clear(self) -> None:
        with self._lock:
            self._received.clear()

    def points(self, name: str | None = None) -> list[dict[str, Any]]:
        """Every data point received so far (optionally of one metric), in arrival order.

        Each dict also carries ``request_index`` (position in ``requests``) and ``transport``.
        """
        out = []
        for index, export in enumerate(self.received):
            for point in flatten(export.request):
                if name is None or point["name"] == name:
                    point["request_index"] = index
                    point["transport"] = export.transport
                    out.append(point)
        return out

    def metric_names(self) -> set[str]:
        return {p["name"] for p in self.points()}

    def latest(self, name: str) -> list[dict[str, Any]]:
        """Points of ``name`` from the most recent request that contained it.

        For cumulative data this is the final state per attribute set; empty if never seen.
        """
        points = self.points(name)
        if not points:
            return []
        last = points[-1]["request_index"]
        return [p for p in points if p["request_index"] == last]

    def latest_point(self, name: str, attrs: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """The single latest point of ``name`` whose attributes include ``attrs``."""
        wanted = dict(attrs or {})
        candidates = self.latest(name)
        matches = [
            p for p in candidates if all(p["attributes"].get(k) == v for k, v in wanted.items())
        ]
        if len(matches) != 1:
            seen = [p["attributes"] for p in candidates]
            raise AssertionError(
                f"expected exactly one latest point of {name!r} with attributes {wanted}, "
                f"found {len(matches)}; latest attribute sets: {seen}"
            )
        return matches[0]

    def wait_for(
        self,
        predicate: Callable[[OTLPReceiver], bool],
        timeout_s: float = 10.0,
        what: str = "condition",
    ) -> None:
        """Block until ``predicate(self)`` is true; raise TimeoutError after ``timeout_s``."""
        deadline = time.monotonic() + timeout_s
        while not predicate(self):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(
                    f"OTLPReceiver: {what} not met within {timeout_s}s; "
                    f"{len(self.received)} exports received, metrics {sorted(self.metric_names())}"
                )
            with self._arrived:
                self._arrived.wait(timeout=min(remaining, 0.1))

    def wait_for_metric(self, name: str, timeout_s: float = 10.0) -> list[dict[str, Any]]:
        """Wait until some export contained ``name`` and return ``latest(name)``."""
        self.wait_for(lambda r: bool(r.latest(name)), timeout_s, what=f"metric {name!r}")
        return self.latest(name)


def _retry_bind(bind: Callable[[], int], what: str, retry: bool) -> int:
    """Bind, retrying briefly for a fixed port that the previous incarnation is still releasing."""
    attempts = _BIND_RETRIES if retry else 1
    last: Exception | None = None
    for _ in range(attempts):
        try:
            port = bind()
        except (OSError, RuntimeError) as exc:
            last = exc
        else:
            if port:
                return port
            last = OSError("bind returned port 0")
        time.sleep(_BIND_RETRY_SLEEP_S)
    raise OSError(f"cannot bind {what}: {last}") from last
