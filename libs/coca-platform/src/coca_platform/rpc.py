"""The shared gRPC edge: error translation, a served ``grpc.aio`` server with standard health, channels.

Server::

    async with rpc.serve_grpc(host="0.0.0.0", port=settings.grpc_port, register=register) as port:
        ...  # ``register(server)`` adds the servicers; ``port`` is the bound one (0 picks a free one)

Handlers raise :mod:`coca_platform.errors`; :class:`ErrorInterceptor` aborts with the error's gRPC status
and message (plus ``coca-code`` / ``retry-after`` trailers). Any other exception is a bug: logged once with
its traceback, answered ``INTERNAL "internal error"``, its text never sent.

Client::

    async with rpc.open_channel(settings.memory_service_addr) as channel:
        stub = memory_pb2_grpc.MemoryServiceStub(channel)
        reply = await rpc.call(stub.Retrieve(request, timeout=2.0))   # raises NotFound, Unavailable, ...

Tracing: ``observability.configure_telemetry`` installs OTel's ``grpc.aio`` instrumentors, which wrap
``grpc.aio.server`` and ``grpc.aio.insecure_channel``. This module looks both up at call time, so their
interceptors run outermost and carry trace context; nothing here propagates it again.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from contextlib import asynccontextmanager
from typing import Any, NoReturn, TypeVar

import grpc
import grpc.aio
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from coca_platform.errors import CocaError, QuotaExceeded, Unavailable, from_grpc_status

__all__ = ["ErrorInterceptor", "call", "check_health", "map_rpc_error", "open_channel", "serve_grpc"]

log = logging.getLogger(__name__)

T = TypeVar("T")

DEFAULT_MAX_MESSAGE_BYTES = 4 * 1024 * 1024
CODE_TRAILER = "coca-code"
RETRY_AFTER_TRAILER = "retry-after"

# Keepalive: clients ping every 30 s (also when idle, so dead peers behind NAT/conntrack are noticed);
# the server accepts pings that often and pings its own clients every 60 s.
_CLIENT_OPTIONS = (
    ("grpc.keepalive_time_ms", 30_000),
    ("grpc.keepalive_timeout_ms", 10_000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.max_pings_without_data", 0),
)
_SERVER_OPTIONS = (
    ("grpc.keepalive_time_ms", 60_000),
    ("grpc.keepalive_timeout_ms", 20_000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.min_ping_interval_without_data_ms", 20_000),
    ("grpc.so_reuseport", 0),  # a port already in use is an error, never silently shared
)


# --- server ---------------------------------------------------------------------------------------


class ErrorInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[misc]  # grpc ships no type stubs
    """Re-wraps each handler so domain errors become their gRPC status and bugs become ``INTERNAL``."""

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler | None]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler | None:
        handler = await continuation(handler_call_details)
        if handler is None:
            return None
        method: str = handler_call_details.method
        if handler.request_streaming and handler.response_streaming:
            behavior, factory = handler.stream_stream, grpc.stream_stream_rpc_method_handler
        elif handler.request_streaming:
            behavior, factory = handler.stream_unary, grpc.stream_unary_rpc_method_handler
        elif handler.response_streaming:
            behavior, factory = handler.unary_stream, grpc.unary_stream_rpc_method_handler
        else:
            behavior, factory = handler.unary_unary, grpc.unary_unary_rpc_method_handler
        return factory(
            _wrap(behavior, method, streaming=handler.response_streaming),
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )


def _wrap(behavior: Callable[..., Any], method: str, *, streaming: bool) -> Callable[..., Any]:
    if streaming:  # always an async generator, whichever style the handler has

        async def stream(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
            if inspect.isasyncgenfunction(behavior):
                responses = behavior(request, context)
            else:
                responses = _written(behavior, request, context)
            try:
                async for response in responses:
                    yield response
            except grpc.aio.AbortError:
                raise
            except Exception as exc:  # the edge: every error is translated here, once
                await _abort(context, exc, method)

        return stream

    async def unary(request: Any, context: grpc.aio.ServicerContext) -> Any:
        try:
            result = behavior(request, context)
            return await result if inspect.isawaitable(result) else result
        except grpc.aio.AbortError:
            raise
        except Exception as exc:  # the edge: every error is translated here, once
            await _abort(context, exc, method)

    return unary


class _QueueWriter:
    """The servicer context, with ``write`` handing each response to the generator in ``_written``."""

    def __init__(self, context: grpc.aio.ServicerContext, queue: asyncio.Queue[Any]) -> None:
        self._context = context
        self._queue = queue

    async def write(self, message: Any) -> None:
        await self._queue.put(message)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._context, name)


async def _written(behavior: Callable[..., Any], request: Any, context: Any) -> AsyncIterator[Any]:
    """A write-style streaming handler (a coroutine calling ``context.write``, as the standard health
    ``Watch`` is) as an async generator: OTel's server interceptor can only iterate streaming handlers."""
    queue: asyncio.Queue[Any] = asyncio.Queue(maxsize=1)  # write() waits until its response is taken
    task = asyncio.ensure_future(behavior(request, _QueueWriter(context, queue)))
    get: asyncio.Future[Any] | None = None
    try:
        while True:
            get = asyncio.ensure_future(queue.get())
            await asyncio.wait((get, task), return_when=asyncio.FIRST_COMPLETED)
            if get.done():
                yield get.result()
                continue
            while not queue.empty():
                yield queue.get_nowait()
            task.result()  # the handler's own error, if any
            return
    finally:
        if get is not None:
            get.cancel()
        if task.done() and not task.cancelled():
            task.exception()  # retrieved: a stream the client closed early drops it
        task.cancel()


async def _abort(context: grpc.aio.ServicerContext, exc: Exception, method: str) -> NoReturn:
    if isinstance(exc, CocaError):
        trailers = [(CODE_TRAILER, exc.code)]
        if isinstance(exc, QuotaExceeded) and exc.retry_after is not None:
            trailers.append((RETRY_AFTER_TRAILER, str(exc.retry_after)))
        await context.abort(exc.grpc_status, exc.message, trailing_metadata=tuple(trailers))
    log.error("unhandled error", exc_info=exc, extra={"data": {"method": method}})
    await context.abort(grpc.StatusCode.INTERNAL, "internal error")
    raise AssertionError("context.abort returned")  # pragma: no cover  # abort always raises


class _Registrar:
    """What ``register`` receives: the server, recording the names of the services added to it."""

    def __init__(self, server: grpc.aio.Server) -> None:
        self._server = server
        self.service_names: list[str] = []

    def add_generic_rpc_handlers(self, handlers: Iterable[grpc.GenericRpcHandler]) -> None:
        handlers = tuple(handlers)
        for handler in handlers:
            name = getattr(handler, "service_name", None)
            if callable(name):
                self._record(name())
        self._server.add_generic_rpc_handlers(handlers)

    def add_registered_method_handlers(self, service_name: str, handlers: Any) -> None:
        self._record(service_name)
        self._server.add_registered_method_handlers(service_name, handlers)

    def _record(self, name: str | None) -> None:
        if name and name not in self.service_names:
            self.service_names.append(name)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._server, name)


@asynccontextmanager
async def serve_grpc(
    *,
    host: str,
    port: int,
    register: Callable[[grpc.aio.Server], None],
    grace_s: float = 5.0,
    max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
    interceptors: Iterable[grpc.aio.ServerInterceptor] = (),
) -> AsyncIterator[int]:
    """Serve the services ``register`` adds, plus ``grpc.health.v1.Health``; yields the bound port.

    Health reports SERVING for ``""`` and for each registered service while the block runs, and
    NOT_SERVING from the moment shutdown begins (in-flight calls then get ``grace_s`` to finish).
    Requests larger than ``max_message_bytes`` are refused with RESOURCE_EXHAUSTED.
    """
    server = grpc.aio.server(  # looked up now, so OTel's instrumented server is used when installed
        interceptors=[ErrorInterceptor(), *interceptors],
        options=[
            *_SERVER_OPTIONS,
            ("grpc.max_receive_message_length", max_message_bytes),
            ("grpc.max_send_message_length", max_message_bytes),
        ],
    )
    registrar = _Registrar(server)
    register(registrar)  # a proxy that delegates to the server
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    for name in registrar.service_names:
        await health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    bound: int = server.add_insecure_port(f"{host}:{port}")  # raises RuntimeError when the port is taken
    await server.start()
    log.info("grpc server started", extra={"data": {"port": bound, "services": registrar.service_names}})
    try:
        yield bound
    finally:
        await health_servicer.enter_graceful_shutdown()
        await server.stop(grace_s)
        log.info("grpc server stopped", extra={"data": {"port": bound}})


# --- client ---------------------------------------------------------------------------------------


@asynccontextmanager
async def open_channel(
    addr: str, *, max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES
) -> AsyncIterator[grpc.aio.Channel]:
    """An insecure channel to ``host:port`` inside the cluster (mTLS, if any, is the mesh's job)."""
    channel = grpc.aio.insecure_channel(  # looked up now, so OTel's client interceptors are used
        addr,
        options=[
            *_CLIENT_OPTIONS,
            ("grpc.max_receive_message_length", max_message_bytes),
            ("grpc.max_send_message_length", max_message_bytes),
        ],
    )
    try:
        yield channel
    finally:
        await channel.close()


def map_rpc_error(exc: grpc.aio.AioRpcError) -> CocaError:
    """The domain error a peer's status stands for (the same class its servicer raised)."""
    trailers = {key: value for key, value in (exc.trailing_metadata() or ()) if isinstance(value, str)}
    err = from_grpc_status(exc.code(), exc.details() or exc.code().name.lower())
    if code := trailers.get(CODE_TRAILER):
        err.code = code  # type: ignore[misc]  # the peer's more specific code, as CocaError allows
    if isinstance(err, QuotaExceeded) and (retry_after := trailers.get(RETRY_AFTER_TRAILER, "")).isdigit():
        err.retry_after = int(retry_after)
    return err


async def call(rpc: Awaitable[T]) -> T:
    """Await one RPC (``stub.Method(request, timeout=...)``), raising a domain error on failure."""
    try:
        return await rpc
    except grpc.aio.AioRpcError as exc:
        raise map_rpc_error(exc) from exc


async def check_health(channel: grpc.aio.Channel, service: str = "", *, timeout: float = 2.0) -> None:
    """Readiness of a peer: returns when it reports SERVING for ``service``, else raises Unavailable."""
    stub = health_pb2_grpc.HealthStub(channel)
    try:
        reply = await stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=timeout)
    except grpc.aio.AioRpcError as exc:
        raise Unavailable(f"health check of {service!r} failed: {exc.code().name}") from exc
    if reply.status != health_pb2.HealthCheckResponse.SERVING:
        status = health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
        raise Unavailable(f"service {service!r} is {status}")
