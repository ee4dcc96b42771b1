"""coca_platform.rpc: a real grpc.aio server (port 0) serving MemoryService, and real channels to it."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from typing import Any

import grpc
import grpc.aio
import pytest
from coca.memory.v1 import memory_pb2, memory_pb2_grpc
from coca_platform import rpc
from coca_platform.errors import NotFound, QuotaExceeded, RateLimited, Unavailable
from coca_platform.testing import free_port
from grpc_health.v1 import health_pb2, health_pb2_grpc
from opentelemetry.instrumentation.grpc import GrpcAioInstrumentorClient, GrpcAioInstrumentorServer
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

MEMORY_SERVICE = "coca.memory.v1.MemoryService"
RETRIEVE = f"/{MEMORY_SERVICE}/Retrieve"


class Memory(memory_pb2_grpc.MemoryServiceServicer):  # type: ignore[misc]
    """A servicer whose behaviour is chosen by the query."""

    async def Retrieve(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        if request.query == "missing":
            raise NotFound(f"knowledge base {request.knowledge_base_ids[0]!r} not found")
        if request.query == "bug":
            raise RuntimeError("password=hunter2 in the internals")
        if request.query == "slow down":
            raise RateLimited("too many retrievals", retry_after=7)
        chunk = memory_pb2.Chunk(chunk_id="c-1", knowledge_base_id="kb-1", text=f"about {request.query}")
        return memory_pb2.RetrieveResponse(chunks=[chunk])


async def _count(request: bytes, context: grpc.aio.ServicerContext) -> AsyncIterator[bytes]:
    yield b"1"
    if request == b"missing":
        raise NotFound("counter 'missing' not found")
    yield b"2"


async def _count_by_writing(request: bytes, context: grpc.aio.ServicerContext) -> None:
    await context.write(b"1")
    if request == b"bug":
        raise RuntimeError("secret internals")
    await context.write(b"2")


def _register(server: grpc.aio.Server) -> None:
    memory_pb2_grpc.add_MemoryServiceServicer_to_server(Memory(), server)
    streams = {
        "Count": grpc.unary_stream_rpc_method_handler(_count),
        "CountByWriting": grpc.unary_stream_rpc_method_handler(_count_by_writing),
    }
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("coca.test.v1.Stream", streams),))


def _serve(**kwargs: Any) -> AbstractAsyncContextManager[int]:
    return rpc.serve_grpc(host="127.0.0.1", port=0, register=_register, **kwargs)


@pytest.fixture
async def channel() -> AsyncIterator[grpc.aio.Channel]:
    async with _serve(grace_s=0.5) as port, rpc.open_channel(f"127.0.0.1:{port}") as chan:
        yield chan


def _retrieve(channel: grpc.aio.Channel, query: str) -> Any:
    stub = memory_pb2_grpc.MemoryServiceStub(channel)
    return stub.Retrieve(memory_pb2.RetrieveRequest(query=query, knowledge_base_ids=["kb-1"]), timeout=5)


async def test_serve_grpc_binds_a_free_port_and_answers_calls(channel: grpc.aio.Channel) -> None:
    reply = await rpc.call(_retrieve(channel, "cats"))
    assert [(c.chunk_id, c.text) for c in reply.chunks] == [("c-1", "about cats")]


async def test_domain_error_becomes_its_grpc_status_and_maps_back_on_the_client(
    channel: grpc.aio.Channel,
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as raw:
        await _retrieve(channel, "missing")
    assert raw.value.code() == grpc.StatusCode.NOT_FOUND
    assert raw.value.details() == "knowledge base 'kb-1' not found"

    with pytest.raises(NotFound) as mapped:
        await rpc.call(_retrieve(channel, "missing"))
    assert mapped.value.message == "knowledge base 'kb-1' not found"
    assert mapped.value.code == "not_found"


async def test_rate_limit_keeps_its_code_and_retry_after_across_the_wire(channel: grpc.aio.Channel) -> None:
    with pytest.raises(QuotaExceeded) as mapped:
        await rpc.call(_retrieve(channel, "slow down"))
    assert mapped.value.code == "rate_limited"
    assert mapped.value.retry_after == 7
    assert mapped.value.message == "too many retrievals"


async def test_unhandled_error_is_internal_without_its_text_and_logged_once(
    channel: grpc.aio.Channel, caplog: pytest.LogCaptureFixture
) -> None:
    with (
        caplog.at_level(logging.ERROR, logger="coca_platform.rpc"),
        pytest.raises(grpc.aio.AioRpcError) as raw,
    ):
        await _retrieve(channel, "bug")
    assert raw.value.code() == grpc.StatusCode.INTERNAL
    assert raw.value.details() == "internal error"
    assert "hunter2" not in str(raw.value)

    records = [r for r in caplog.records if r.name == "coca_platform.rpc"]
    assert [r.getMessage() for r in records] == ["unhandled error"]
    assert records[0].data == {"method": RETRIEVE}  # type: ignore[attr-defined]
    assert records[0].exc_info is not None
    assert isinstance(records[0].exc_info[1], RuntimeError)


async def _read_stream(channel: grpc.aio.Channel, method: str, request: bytes) -> list[bytes]:
    received: list[bytes] = []
    async for response in channel.unary_stream(f"/coca.test.v1.Stream/{method}")(request, timeout=5):
        received.append(response)
    return received


@pytest.mark.parametrize("method", ["Count", "CountByWriting"])
async def test_streaming_handlers_of_either_style_stream_their_responses(
    channel: grpc.aio.Channel, method: str
) -> None:
    assert await _read_stream(channel, method, b"") == [b"1", b"2"]


async def test_streaming_handler_errors_end_the_stream_with_their_status(channel: grpc.aio.Channel) -> None:
    with pytest.raises(NotFound, match="counter 'missing' not found"):
        await rpc.call(_read_stream(channel, "Count", b"missing"))
    with pytest.raises(grpc.aio.AioRpcError) as raw:
        await _read_stream(channel, "CountByWriting", b"bug")
    assert (raw.value.code(), raw.value.details()) == (grpc.StatusCode.INTERNAL, "internal error")


async def test_health_reports_serving_overall_and_for_each_registered_service(
    channel: grpc.aio.Channel,
) -> None:
    await rpc.check_health(channel)
    await rpc.check_health(channel, MEMORY_SERVICE)
    await rpc.check_health(channel, "coca.test.v1.Stream")  # generic handlers are registered too
    stub = health_pb2_grpc.HealthStub(channel)
    for service in ("", MEMORY_SERVICE):
        reply = await stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
        assert reply.status == health_pb2.HealthCheckResponse.SERVING
    with pytest.raises(Unavailable, match=r"coca\.other\.v1\.OtherService"):
        await rpc.check_health(channel, "coca.other.v1.OtherService")


async def test_check_health_raises_unavailable_when_nothing_listens() -> None:
    async with rpc.open_channel(f"127.0.0.1:{free_port()}") as chan:
        with pytest.raises(Unavailable, match="UNAVAILABLE"):
            await rpc.check_health(chan, timeout=2)


async def test_health_turns_not_serving_when_shutdown_begins() -> None:
    stop = asyncio.Event()

    async def serve(ready: Callable[[int], None]) -> None:
        async with _serve(grace_s=2) as port:
            ready(port)
            await stop.wait()

    loop = asyncio.get_running_loop()
    bound: asyncio.Future[int] = loop.create_future()
    server = asyncio.create_task(serve(bound.set_result))
    async with rpc.open_channel(f"127.0.0.1:{await bound}") as chan:
        watch = health_pb2_grpc.HealthStub(chan).Watch(health_pb2.HealthCheckRequest(service=MEMORY_SERVICE))
        first = await watch.read()
        stop.set()
        second = await watch.read()
        watch.cancel()
    await server
    assert first.status == health_pb2.HealthCheckResponse.SERVING
    assert second.status == health_pb2.HealthCheckResponse.NOT_SERVING


async def test_oversized_request_is_refused_with_resource_exhausted() -> None:
    async with _serve(max_message_bytes=1024) as port, rpc.open_channel(f"127.0.0.1:{port}") as chan:
        with pytest.raises(grpc.aio.AioRpcError) as raw:
            await _retrieve(chan, "x" * 4096)
        assert raw.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        reply = await rpc.call(_retrieve(chan, "small"))  # the connection stays usable
        assert reply.chunks[0].text == "about small"


async def test_errors_compose_with_otel_instrumentation_and_trace_context_crosses_the_call() -> None:
    instrumentors = (GrpcAioInstrumentorServer(), GrpcAioInstrumentorClient())  # type: ignore[no-untyped-call]
    preinstalled = [i for i in instrumentors if i.is_instrumented_by_opentelemetry]
    for instrumentor in preinstalled:  # the test needs its own tracer provider; restored below
        instrumentor.uninstrument()
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    for instrumentor in instrumentors:
        instrumentor.instrument(tracer_provider=provider)
    try:
        async with _serve() as port, rpc.open_channel(f"127.0.0.1:{port}") as chan:
            with pytest.raises(NotFound):
                await rpc.call(_retrieve(chan, "missing"))
            assert await _read_stream(chan, "CountByWriting", b"") == [b"1", b"2"]
            watch = health_pb2_grpc.HealthStub(chan).Watch(health_pb2.HealthCheckRequest(), timeout=5)
            assert (await watch.read()).status == health_pb2.HealthCheckResponse.SERVING
            watch.cancel()
    finally:
        for instrumentor in instrumentors:
            instrumentor.uninstrument()
        for instrumentor in preinstalled:
            instrumentor.instrument()
        provider.shutdown()

    spans = [s for s in exporter.get_finished_spans() if s.name == RETRIEVE]
    kinds = {s.kind.name: s for s in spans}
    assert set(kinds) == {"CLIENT", "SERVER"}
    server_span, client_span = kinds["SERVER"], kinds["CLIENT"]
    assert server_span.context.trace_id == client_span.context.trace_id
    assert server_span.parent is not None
    assert server_span.parent.span_id == client_span.context.span_id
    assert server_span.attributes is not None
    assert server_span.attributes["rpc.grpc.status_code"] == grpc.StatusCode.NOT_FOUND.value[0]
