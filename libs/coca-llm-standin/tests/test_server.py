from __future__ import annotations

import asyncio
from collections.abc import AsyncIterable, AsyncIterator
from typing import Any

import aiohttp
import httpx
import orjson
import pytest
from coca_llm_standin import MODEL_ID, run_standin


@pytest.fixture(scope="module")
async def base_url() -> AsyncIterator[str]:
    async with run_standin(port=0) as url:
        yield url


async def _stream(base_url: str, content: str, **extra: object) -> list[bytes]:
    body = {"model": "any-model", "messages": [{"role": "user", "content": content}], "stream": True, **extra}
    async with (
        httpx.AsyncClient(timeout=5) as client,
        client.stream("POST", f"{base_url}/chat/completions", json=body) as response,
    ):
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        return [line.encode() async for line in response.aiter_lines() if line]


async def _read_lines(source: AsyncIterable[bytes] | AsyncIterable[str], into: list[bytes]) -> None:
    async for line in source:
        stripped = (line.encode() if isinstance(line, str) else line).strip()
        if stripped:
            into.append(stripped)


def _chunks(lines: list[bytes]) -> list[dict[str, Any]]:
    assert all(line.startswith(b"data: ") for line in lines)
    return [orjson.loads(line[6:]) for line in lines if line != b"data: [DONE]"]


async def test_models_lists_the_stand_in_and_says_it_is_not_a_model(base_url: str) -> None:
    async with httpx.AsyncClient() as client:
        body = (await client.get(f"{base_url}/models")).json()
    assert [m["id"] for m in body["data"]] == [MODEL_ID]
    assert "NOT A MODEL" in body["data"][0]["owned_by"]


async def test_streamed_reply_follows_the_openai_chunk_format(base_url: str) -> None:
    lines = await _stream(base_url, "hello world", stream_options={"include_usage": True})
    assert lines[-1] == b"data: [DONE]"
    chunks = _chunks(lines)
    assert all(c["object"] == "chat.completion.chunk" and c["model"] == "any-model" for c in chunks)
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"])
    assert text == "You said: hello world"
    assert chunks[-2]["choices"][0]["finish_reason"] == "stop"
    assert chunks[-1]["choices"] == []
    assert chunks[-1]["usage"] == {"prompt_tokens": 2, "completion_tokens": 4, "total_tokens": 6}


async def test_stream_without_include_usage_has_no_usage_chunk(base_url: str) -> None:
    chunks = _chunks(await _stream(base_url, "hi"))
    assert all("usage" not in c for c in chunks)
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"


async def test_tool_directive_streams_a_tool_call_delta(base_url: str) -> None:
    chunks = _chunks(await _stream(base_url, '[[tool:get_weather {"city": "Paris"}]]'))
    first = chunks[0]["choices"][0]["delta"]["tool_calls"][0]
    assert first["function"]["name"] == "get_weather"
    assert first["type"] == "function"
    assert first["id"] == "call_0_get_weather"
    arguments = "".join(
        c["choices"][0]["delta"]["tool_calls"][0]["function"]["arguments"]
        for c in chunks
        if c["choices"][0]["delta"].get("tool_calls")
    )
    assert orjson.loads(arguments) == {"city": "Paris"}
    assert chunks[-1]["choices"][0]["finish_reason"] == "tool_calls"


async def test_non_streamed_reply_is_a_chat_completion_with_usage(base_url: str) -> None:
    body = {"model": "m", "messages": [{"role": "user", "content": "[[tokens:3]]"}]}
    async with httpx.AsyncClient() as client:
        reply = (await client.post(f"{base_url}/chat/completions", json=body)).json()
    assert reply["object"] == "chat.completion"
    assert reply["choices"][0]["message"] == {"role": "assistant", "content": "tok0 tok1 tok2"}
    assert reply["usage"]["completion_tokens"] == 3


async def test_fail_after_drops_the_connection_mid_stream(base_url: str) -> None:
    body = {
        "model": "m",
        "messages": [{"role": "user", "content": "[[tokens:9]] [[fail_after:2]]"}],
        "stream": True,
    }
    lines: list[bytes] = []
    async with (
        aiohttp.ClientSession() as session,
        session.post(f"{base_url}/chat/completions", json=body) as resp,
    ):
        with pytest.raises(aiohttp.ClientPayloadError):
            await _read_lines(resp.content, lines)
    contents = [orjson.loads(line[6:])["choices"][0]["delta"].get("content") for line in lines]
    assert contents == ["", "tok0", " tok1"]


async def test_stall_after_sends_n_tokens_then_nothing(base_url: str) -> None:
    body = {
        "model": "m",
        "messages": [{"role": "user", "content": "[[tokens:9]] [[stall_after:2]]"}],
        "stream": True,
    }
    lines: list[bytes] = []
    async with (
        httpx.AsyncClient(timeout=5) as client,
        client.stream("POST", f"{base_url}/chat/completions", json=body) as response,
    ):
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(_read_lines(response.aiter_lines(), lines), 0.5)
    contents = [orjson.loads(line[6:])["choices"][0]["delta"].get("content") for line in lines]
    assert contents == ["", "tok0", " tok1"]


async def test_error_directive_answers_that_status_with_an_openai_error(base_url: str) -> None:
    body = {"model": "m", "messages": [{"role": "user", "content": "[[error:503]]"}], "stream": True}
    async with httpx.AsyncClient() as client:
        response = await client.post(f"{base_url}/chat/completions", json=body)
    assert response.status_code == 503
    assert response.json()["error"]["type"] == "server_error"


async def test_delay_directive_slows_each_token(base_url: str) -> None:
    loop = asyncio.get_running_loop()
    started = loop.time()
    await _stream(base_url, "[[tokens:5]] [[delay_ms:40]]")
    assert loop.time() - started >= 0.2


async def test_malformed_request_is_a_400(base_url: str) -> None:
    async with httpx.AsyncClient() as client:
        response = await client.post(f"{base_url}/chat/completions", content=b"{not json")
        missing = await client.post(f"{base_url}/chat/completions", json={"model": "m"})
    assert response.status_code == 400
    assert missing.status_code == 400
    assert missing.json()["error"]["type"] == "invalid_request_error"


async def test_stall_after_zero_sends_headers_but_no_chunk(base_url: str) -> None:
    body = {"model": "m", "messages": [{"role": "user", "content": "[[stall_after:0]]"}], "stream": True}
    lines: list[bytes] = []
    async with (
        httpx.AsyncClient(timeout=5) as client,
        client.stream("POST", f"{base_url}/chat/completions", json=body) as response,
    ):
        assert response.status_code == 200
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(_read_lines(response.aiter_lines(), lines), 0.3)
    assert lines == []
