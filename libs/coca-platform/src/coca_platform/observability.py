"""JSON logs, OpenTelemetry tracing and trace-context propagation.

Every log record is one JSON line with exactly: ``timestamp, level, service, traceId, spanId,
message, data``. ``configure_logging`` and ``configure_telemetry`` are called once, from a
service's ``__main__`` (never at import time).
"""

from __future__ import annotations

import logging
import os
import re
import sys
import traceback
from collections.abc import Iterable, Mapping, MutableMapping
from datetime import UTC, datetime
from typing import Any

import orjson
from opentelemetry import propagate, trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor

from coca_platform.settings import PlatformSettings

# Credentials in URLs (uvicorn logs WebSocket paths with their query string): never in the logs.
_SECRET_IN_QUERY = re.compile(r"((?:^|[?&\s])(?:token|access_token|api_key|key)=)[^&\s\"']+")
_RESERVED = frozenset(logging.makeLogRecord({}).__dict__) | {"message", "asctime", "data"}


class JsonFormatter(logging.Formatter):
    """One JSON object per line, in the architecture doc's format."""

    def __init__(self, service: str) -> None:
        super().__init__()
        self._service = service

    def format(self, record: logging.LogRecord) -> str:
        ctx = trace.get_current_span().get_span_context()
        data: dict[str, Any] = dict(getattr(record, "data", None) or {})
        if record.exc_info:
            data["exception"] = "".join(traceback.format_exception(*record.exc_info))
        for key, value in record.__dict__.items():  # extras passed without `data` (third-party)
            if key not in _RESERVED and not key.startswith("_"):
                data.setdefault(key, value)
        entry = {
            "timestamp": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds")[:-6]
            + "Z",
            "level": record.levelname,
            "service": self._service,
            "traceId": format(ctx.trace_id, "032x") if ctx.is_valid else None,
            "spanId": format(ctx.span_id, "016x") if ctx.is_valid else None,
            "message": _redact(record.getMessage()),
            "data": data,
        }
        return orjson.dumps(entry, default=str).decode()


def _redact(message: str) -> str:
    return _SECRET_IN_QUERY.sub(r"\1[redacted]", message) if "=" in message else message


def configure_logging(settings: PlatformSettings, stream: Any = None) -> None:
    """Install the JSON formatter on the root logger, once; uvicorn/grpc/aio-pika records flow through it."""
    handler = logging.StreamHandler(stream or sys.stdout)
    handler.setFormatter(JsonFormatter(settings.service_name))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(settings.log_level)
    for noisy in ("uvicorn.access", "aiormq", "aio_pika"):  # access logs come from our own middleware
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
    for name in ("uvicorn", "uvicorn.error"):
        logging.getLogger(name).handlers[:] = []
        logging.getLogger(name).propagate = True


def configure_telemetry(settings: PlatformSettings) -> TracerProvider:
    """A tracer provider for the service; spans are exported over OTLP when ``OTEL_EXPORTER_OTLP_ENDPOINT``
    (or ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``) is set. Without an exporter, spans still get ids so
    logs carry ``traceId``/``spanId`` and context still propagates across services."""
    resource = Resource.create(
        {"service.name": f"coca-{settings.service_name}", "deployment.environment": settings.environment}
    )
    provider = TracerProvider(resource=resource)
    if os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT") or os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"):
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    trace.set_tracer_provider(provider)
    _instrument_libraries()
    return provider


def _instrument_libraries() -> None:
    from opentelemetry.instrumentation.aiohttp_client import AioHttpClientInstrumentor
    from opentelemetry.instrumentation.asyncpg import AsyncPGInstrumentor
    from opentelemetry.instrumentation.grpc import GrpcAioInstrumentorClient, GrpcAioInstrumentorServer
    from opentelemetry.instrumentation.redis import RedisInstrumentor

    for instrumentor in (
        AioHttpClientInstrumentor(),
        AsyncPGInstrumentor(),  # type: ignore[no-untyped-call]
        RedisInstrumentor(),
        GrpcAioInstrumentorClient(),  # type: ignore[no-untyped-call]
        GrpcAioInstrumentorServer(),  # type: ignore[no-untyped-call]
    ):
        if not instrumentor.is_instrumented_by_opentelemetry:
            instrumentor.instrument()


tracer = trace.get_tracer("coca")


# --- trace context in message headers (Kafka and RabbitMQ) ----------------------------------------


def inject_headers(headers: MutableMapping[str, str] | None = None) -> dict[str, str]:
    """W3C ``traceparent``/``tracestate`` of the current span, for a message's headers."""
    carrier: dict[str, str] = dict(headers or {})
    propagate.inject(carrier)
    return carrier


def extract_context(headers: Iterable[tuple[str, Any]] | Mapping[str, Any] | None) -> Any:
    """An OTel context from message headers (Kafka's list of tuples or AMQP's mapping)."""
    items = headers.items() if isinstance(headers, Mapping) else (headers or [])
    carrier = {k: (v.decode() if isinstance(v, bytes | bytearray) else str(v)) for k, v in items}
    return propagate.extract(carrier)
