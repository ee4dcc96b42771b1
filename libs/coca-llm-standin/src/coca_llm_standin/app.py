"""The stand-in's HTTP surface: a subset of the OpenAI API, answered from a script (NOT A MODEL).

- ``GET /v1/models`` lists ``coca-standin``; ``GET /health`` answers 200 (as vLLM does).
- ``POST /v1/chat/completions`` with ``stream: true`` streams ``chat.completion.chunk`` objects as
  ``data: {...}\\n\\n`` lines ending with ``data: [DONE]`` (a usage chunk first when
  ``stream_options.include_usage``); without it, one ``chat.completion`` object with ``usage``.

Any ``model`` name is accepted and echoed back, so a service configured for a real model runs
against it unchanged. See ``coca_llm_standin.script`` for the directives that script a reply.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from coca_llm_standin.script import Reply, ScriptError, plan_reply

MODEL_ID = "coca-standin"
NOT_A_MODEL = "coca-llm-standin: NOT A MODEL, a scripted test double"
_ARGUMENT_PIECE = 8


@dataclass(frozen=True, slots=True)
class StandinConfig:
    token_delay_ms: float = 0.0  # default wait before each streamed token; [[delay_ms:N]] overrides


class SimulatedCrash(Exception):
    """Raised mid-response to make the server drop the connection ([[fail_after:N]])."""


class _QuietCrashes(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        return not isinstance(exc, SimulatedCrash)


def quiet_simulated_crashes() -> None:
    """Keep uvicorn from logging a traceback for each scripted crash (idempotent)."""
    logger = logging.getLogger("uvicorn.error")
    if not any(isinstance(f, _QuietCrashes) for f in logger.filters):
        logger.addFilter(_QuietCrashes())


def create_app(config: StandinConfig | None = None) -> Starlette:
    cfg = config or StandinConfig()

    async def models(_: Request) -> Response:
        entry = {"id": MODEL_ID, "object": "model", "created": 0, "owned_by": NOT_A_MODEL}
        return _json({"object": "list", "data": [entry]})

    async def health(_: Request) -> Response:
        return Response(b"", 200)

    async def chat_completions(request: Request) -> Any:
        try:
            body = orjson.loads(await request.body())
        except orjson.JSONDecodeError:
            return _error(400, "request body is not valid JSON")
        if not isinstance(body, dict):
            return _error(400, "request body must be a JSON object")
        try:
            reply = plan_reply(body.get("messages"))  # type: ignore[arg-type]
        except ScriptError as exc:
            return _error(400, str(exc))
        if reply.error is not None:
            return _error(reply.error, f"scripted error {reply.error} from the LLM stand-in")
        model = str(body.get("model") or MODEL_ID)
        delay_s = (reply.delay_ms if reply.delay_ms is not None else cfg.token_delay_ms) / 1000
        if body.get("stream"):
            options = body.get("stream_options") or {}
            usage = bool(isinstance(options, dict) and options.get("include_usage"))
            return _EventStream(_chunks(reply, model, delay_s, usage))
        return _Completion(reply, model, delay_s)

    return Starlette(
        routes=[
            Route("/v1/models", models, methods=["GET"]),
            Route("/v1/chat/completions", chat_completions, methods=["POST"]),
            Route("/health", health, methods=["GET"]),
        ]
    )


def _json(body: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(body), status, media_type="application/json")


def _error(status: int, message: str) -> Response:
    kind = "invalid_request_error" if status < 500 else "server_error"
    return _json({"error": {"message": message, "type": kind, "param": None, "code": status}}, status)


def _usage(reply: Reply) -> dict[str, int]:
    completion = reply.completion_tokens
    return {
        "prompt_tokens": reply.prompt_tokens,
        "completion_tokens": completion,
        "total_tokens": reply.prompt_tokens + completion,
    }


async def _chunks(reply: Reply, model: str, delay_s: float, include_usage: bool) -> AsyncIterator[bytes]:
    """SSE lines of one streamed completion, with the scripted crash or stall."""
    base: dict[str, Any] = {
        "id": f"chatcmpl-{uuid.uuid4().hex}",
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": model,
    }

    def frame(delta: dict[str, Any], finish: str | None = None) -> bytes:
        body = {**base, "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]}
        if include_usage:
            body["usage"] = None
        return b"data: " + orjson.dumps(body) + b"\n\n"

    if reply.tool_call is not None:
        call = reply.tool_call
        yield frame(
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "index": 0,
                        "id": reply.tool_call_id,
                        "type": "function",
                        "function": {"name": call.name, "arguments": ""},
                    }
                ],
            }
        )
        for i in range(0, len(call.arguments), _ARGUMENT_PIECE):
            await asyncio.sleep(delay_s)
            piece = call.arguments[i : i + _ARGUMENT_PIECE]
            yield frame({"tool_calls": [{"index": 0, "function": {"arguments": piece}}]})
        finish = "tool_calls"
    else:
        await _scripted_break(reply, 0)  # N=0: not even the first (role) chunk goes out
        yield frame({"role": "assistant", "content": ""})
        for i, token in enumerate(reply.tokens):
            if i:
                await _scripted_break(reply, i)
            await asyncio.sleep(delay_s)
            yield frame({"content": token})
        await _scripted_break(reply, None)
        finish = "stop"
    yield frame({}, finish)
    if include_usage:
        yield b"data: " + orjson.dumps({**base, "choices": [], "usage": _usage(reply)}) + b"\n\n"
    yield b"data: [DONE]\n\n"


async def _scripted_break(reply: Reply, sent: int | None) -> None:
    """Crash or stall once ``sent`` tokens went out (``None``: all of them, and the script asks for it)."""
    for limit, crash in ((reply.fail_after, True), (reply.stall_after, False)):
        if limit is not None and (sent == limit or (sent is None and limit >= len(reply.tokens))):
            if crash:
                raise SimulatedCrash(f"scripted crash after {limit} tokens")
            await asyncio.Future()  # never resolves: the caller's timeout or disconnect ends it


class _EventStream:
    """``text/event-stream`` body that stops when the client disconnects (also while stalled)."""

    def __init__(self, frames: AsyncIterator[bytes]) -> None:
        self._frames = frames

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [
                    (b"content-type", b"text/event-stream; charset=utf-8"),
                    (b"cache-control", b"no-cache"),
                ],
            }
        )

        async def pump() -> None:
            async for frame in self._frames:
                await send({"type": "http.response.body", "body": frame, "more_body": True})
            await send({"type": "http.response.body", "body": b"", "more_body": False})

        await _until_disconnect(pump(), receive)


class _Completion:
    """A non-streamed ``chat.completion``; a scripted crash sends half the body, then drops."""

    def __init__(self, reply: Reply, model: str, delay_s: float) -> None:
        self._reply, self._model, self._delay_s = reply, model, delay_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await _until_disconnect(self._respond(send), receive)

    async def _respond(self, send: Send) -> None:
        reply = self._reply
        message: dict[str, Any] = {"role": "assistant", "content": reply.content}
        finish = "stop"
        if reply.tool_call is not None:
            message = {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": reply.tool_call_id,
                        "type": "function",
                        "function": {"name": reply.tool_call.name, "arguments": reply.tool_call.arguments},
                    }
                ],
            }
            finish = "tool_calls"
        body = orjson.dumps(
            {
                "id": f"chatcmpl-{uuid.uuid4().hex}",
                "object": "chat.completion",
                "created": int(time.time()),
                "model": self._model,
                "choices": [{"index": 0, "message": message, "logprobs": None, "finish_reason": finish}],
                "usage": _usage(reply),
            }
        )
        await asyncio.sleep(self._delay_s * reply.completion_tokens)
        if reply.stall_after is not None:
            await asyncio.Future()
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                ],
            }
        )
        if reply.fail_after is not None:
            await send({"type": "http.response.body", "body": body[: len(body) // 2], "more_body": True})
            raise SimulatedCrash("scripted crash mid-body")
        await send({"type": "http.response.body", "body": body})


async def _until_disconnect(work: Any, receive: Receive) -> None:
    """Run ``work`` until it finishes or the client goes away, whichever comes first."""

    async def disconnected() -> None:
        while (await receive())["type"] != "http.disconnect":
            pass

    job, watch = asyncio.ensure_future(work), asyncio.ensure_future(disconnected())
    try:
        await asyncio.wait({job, watch}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in (job, watch):
            task.cancel()
        await asyncio.gather(job, watch, return_exceptions=True)
    if job.done() and not job.cancelled():
        job.result()  # re-raise a SimulatedCrash so the server drops the connection
