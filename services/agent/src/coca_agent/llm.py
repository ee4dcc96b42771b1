"""The OpenAI-compatible chat client (vLLM in production, the stand-in in tests), over aiohttp.

A completion is streamed: ``LlmStream.deltas()`` yields the text as it arrives; once exhausted, the
stream holds the tool calls the model asked for and the token usage. Failures are domain errors:
``LlmUnavailable`` (HTTP error, refused or dropped connection, malformed stream) and ``LlmTimeout``
(no first chunk within ``LLM_TIMEOUT_S``, or a gap longer than ``LLM_IDLE_TIMEOUT_S``).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator
from dataclasses import dataclass
from typing import Any

import aiohttp
import orjson
from coca_platform.errors import DeadlineExceeded, Unavailable

from coca_agent.models import ToolCall, Usage


class LlmUnavailable(Unavailable):
    code = "llm_unavailable"


class LlmTimeout(DeadlineExceeded):
    code = "llm_timeout"


@dataclass(frozen=True, slots=True)
class LlmConfig:
    base_url: str
    api_key: str | None
    first_token_timeout_s: float
    idle_timeout_s: float


def approximate_tokens(chars: int) -> int:
    """About four characters per token for English text: used only when the server sends no usage."""
    return (chars + 3) // 4


class LlmClient:
    def __init__(self, session: aiohttp.ClientSession, config: LlmConfig) -> None:
        self._session = session
        self._config = config
        self._url = config.base_url.rstrip("/") + "/chat/completions"
        self._headers = {"Content-Type": "application/json", "Accept": "text/event-stream"}
        if config.api_key:
            self._headers["Authorization"] = f"Bearer {config.api_key}"

    def stream(self, model: str, messages: list[dict[str, Any]], tools: list[dict[str, Any]]) -> LlmStream:
        body: dict[str, Any] = {
            "model": model,
            "messages": messages,
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        if tools:
            body["tools"] = tools
        return LlmStream(self._session, self._url, self._headers, orjson.dumps(body), self._config)

    async def ping(self) -> None:
        """Readiness: the server lists its models."""
        url = self._config.base_url.rstrip("/") + "/models"
        try:
            async with self._session.get(url, headers=self._headers) as response:
                if response.status != 200:
                    raise LlmUnavailable(f"the LLM server answered HTTP {response.status} to GET /models")
        except aiohttp.ClientError as exc:
            raise LlmUnavailable(f"the LLM server is unreachable: {exc}") from exc


class _Call:
    __slots__ = ("arguments", "id", "name")

    def __init__(self) -> None:
        self.id = ""
        self.name = ""
        self.arguments: list[str] = []


class LlmStream:
    """One streamed completion. Iterate ``deltas()`` (inside ``contextlib.aclosing``), then read
    ``tool_calls`` and ``usage``."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        url: str,
        headers: dict[str, str],
        body: bytes,
        config: LlmConfig,
    ) -> None:
        self._session, self._url, self._headers, self._body = session, url, headers, body
        self._config = config
        self._calls: dict[int, _Call] = {}
        self._text_chars = 0
        self.usage: Usage | None = None
        self.finish_reason: str | None = None

    @property
    def tool_calls(self) -> list[ToolCall]:
        return [
            ToolCall(c.id or f"call_{i}", c.name, "".join(c.arguments) or "{}")
            for i, c in sorted(self._calls.items())
        ]

    def usage_or_estimate(self) -> Usage:
        if self.usage is not None:
            return self.usage
        prompt = approximate_tokens(len(self._body))
        completion = approximate_tokens(self._text_chars) + sum(
            approximate_tokens(len(c.name) + sum(map(len, c.arguments))) for c in self._calls.values()
        )
        return Usage(prompt, completion)

    async def deltas(self) -> AsyncGenerator[str, None]:
        loop = asyncio.get_running_loop()
        first_deadline = loop.time() + self._config.first_token_timeout_s
        try:
            async with asyncio.timeout_at(first_deadline):
                response = await self._session.post(self._url, data=self._body, headers=self._headers)
        except TimeoutError as exc:
            raise LlmTimeout(
                f"no answer from the LLM within {self._config.first_token_timeout_s:g} s"
            ) from exc
        except (aiohttp.ClientError, OSError) as exc:
            raise LlmUnavailable(f"the LLM server is unreachable: {exc}") from exc
        finished = False
        try:
            if response.status != 200:
                raise LlmUnavailable(f"the LLM server answered HTTP {response.status}")
            started = False
            while True:
                line = await self._readline(response, None if started else first_deadline)
                if not line:
                    break
                payload = _data(line)
                if payload is None:
                    continue
                if payload == b"[DONE]":
                    finished = True
                    break
                started = True
                for text in self._apply(payload):
                    self._text_chars += len(text)
                    yield text
            if not finished and self.finish_reason is None:
                raise LlmUnavailable("the LLM stream ended before the completion finished")
            finished = True
        finally:
            if finished:
                response.release()
            else:
                response.close()  # drop the connection: the rest of this stream is not wanted

    async def _readline(self, response: aiohttp.ClientResponse, deadline: float | None) -> bytes:
        timeout = self._config.idle_timeout_s
        try:
            if deadline is None:
                async with asyncio.timeout(timeout):
                    return await response.content.readline()
            async with asyncio.timeout_at(deadline):
                return await response.content.readline()
        except TimeoutError as exc:
            what = "first chunk" if deadline is not None else "next chunk"
            limit = self._config.first_token_timeout_s if deadline is not None else timeout
            raise LlmTimeout(f"the LLM sent no {what} within {limit:g} s") from exc
        except (aiohttp.ClientError, OSError, ValueError) as exc:
            raise LlmUnavailable(f"the LLM stream broke: {exc}") from exc

    def _apply(self, payload: bytes) -> list[str]:
        try:
            return self._apply_chunk(orjson.loads(payload))
        except (ValueError, TypeError, AttributeError) as exc:  # orjson's JSONDecodeError is a ValueError
            raise LlmUnavailable("the LLM sent a malformed stream chunk") from exc

    def _apply_chunk(self, chunk: dict[str, Any]) -> list[str]:
        if chunk.get("error"):
            raise LlmUnavailable("the LLM reported an error mid-stream")
        usage = chunk.get("usage")
        if isinstance(usage, dict):
            self.usage = Usage(int(usage.get("prompt_tokens") or 0), int(usage.get("completion_tokens") or 0))
        texts = []
        for choice in chunk.get("choices") or ():
            delta = choice.get("delta") or {}
            if delta.get("content"):
                texts.append(delta["content"])
            for part in delta.get("tool_calls") or ():
                call = self._calls.setdefault(int(part.get("index", 0)), _Call())
                function = part.get("function") or {}
                call.id = part.get("id") or call.id
                call.name = function.get("name") or call.name
                if function.get("arguments"):
                    call.arguments.append(function["arguments"])
            if choice.get("finish_reason"):
                self.finish_reason = choice["finish_reason"]
        return texts


def _data(line: bytes) -> bytes | None:
    """The payload of an SSE ``data:`` line; None for blank lines, comments and other fields."""
    line = line.strip()
    if not line.startswith(b"data:"):
        return None
    return line[5:].strip()
