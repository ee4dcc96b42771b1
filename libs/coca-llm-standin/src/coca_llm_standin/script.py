"""What the stand-in answers, decided from the request alone (no I/O, no randomness).

Directives in the **last user message** script the reply, so end-to-end tests can drive it through
the public API of the service under test:

==========================  =====================================================================
``[[tool:NAME {json}]]``     answer with a tool call (``tool_calls``) to NAME with those arguments;
                             several directives are called one after another, one per request;
                             once every call has a ``role=tool`` result, reply
                             ``Tool NAME returned: <content>``
``[[fail_after:N]]``         stream N content tokens, then drop the connection (a crash); with
                             N=0 not even the first chunk is sent
``[[stall_after:N]]``        stream N content tokens, then send nothing more (a hang); with N=0
                             nothing after the response headers
``[[error:503]]``            answer HTTP 503 (any 4xx/5xx) with an OpenAI error body
``[[delay_ms:N]]``           wait N ms before each token
``[[tokens:N]]``             reply exactly N tokens: ``tok0 tok1 ... tok{N-1}``
==========================  =====================================================================

Otherwise the reply is ``You said: <last user message>`` (directives removed), one token per word.
When the system message lists numbered sources (lines ``[n] <name> (part p)``, as an agent with
knowledge bases sends them), the reply cites the first: ``... (source: [1] <name>)``.
Token counts are an approximation: words (whitespace-separated) of every message's content.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

_DIRECTIVE = re.compile(r"\[\[([a-z_]+)(?::(.*?))?\]\]", re.DOTALL)
_INT_DIRECTIVES = ("fail_after", "stall_after", "error", "delay_ms", "tokens")


class ScriptError(ValueError):
    """A malformed directive or request; answered with 400."""


@dataclass(frozen=True, slots=True)
class ToolCall:
    name: str
    arguments: str  # a JSON document, passed through as written


@dataclass(frozen=True, slots=True)
class Script:
    text: str = ""
    tools: tuple[ToolCall, ...] = ()
    fail_after: int | None = None
    stall_after: int | None = None
    error: int | None = None
    delay_ms: int | None = None
    tokens: int | None = None


@dataclass(frozen=True, slots=True)
class Reply:
    """One completion: either content tokens or one tool call, plus what happens while streaming."""

    tokens: tuple[str, ...] = ()
    tool_call: ToolCall | None = None
    tool_call_id: str = ""
    prompt_tokens: int = 0
    fail_after: int | None = None
    stall_after: int | None = None
    error: int | None = None
    delay_ms: int | None = None

    @property
    def completion_tokens(self) -> int:
        if self.tool_call is not None:
            return 1 + len(self.tool_call.arguments.split())
        return len(self.tokens)

    @property
    def content(self) -> str:
        return "".join(self.tokens)


def parse_script(message: str) -> Script:
    values: dict[str, int] = {}
    tools: list[ToolCall] = []
    for match in _DIRECTIVE.finditer(message):
        name, arg = match.group(1), (match.group(2) or "").strip()
        if name == "tool":
            tool_name, _, arguments = arg.partition(" ")
            if not tool_name:
                raise ScriptError("[[tool:NAME {json}]] needs a tool name")
            tools.append(ToolCall(tool_name, arguments.strip() or "{}"))
        elif name in _INT_DIRECTIVES:
            if not arg.isdigit():
                raise ScriptError(f"[[{name}:N]] needs a non-negative integer, got {arg!r}")
            values[name] = int(arg)
        else:
            raise ScriptError(f"unknown directive [[{name}]]")
    error = values.get("error")
    if error is not None and not 400 <= error <= 599:
        raise ScriptError("[[error:N]] needs an HTTP error status (400-599)")
    text = " ".join(_DIRECTIVE.sub(" ", message).split())
    return Script(
        text=text,
        tools=tuple(tools),
        fail_after=values.get("fail_after"),
        stall_after=values.get("stall_after"),
        error=error,
        delay_ms=values.get("delay_ms"),
        tokens=values.get("tokens"),
    )


def content_text(content: Any) -> str:
    """A message's text: a string, or the text parts of an OpenAI content-part list."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(p.get("text", "") for p in content if isinstance(p, dict))
    return ""


def count_words(messages: list[dict[str, Any]]) -> int:
    return sum(len(content_text(m.get("content")).split()) for m in messages)


def word_tokens(text: str) -> tuple[str, ...]:
    words = text.split()
    return tuple(w if i == 0 else f" {w}" for i, w in enumerate(words))


def plan_reply(messages: list[dict[str, Any]]) -> Reply:
    """The deterministic reply to a chat request's ``messages``."""
    if not isinstance(messages, list) or not messages or not all(isinstance(m, dict) for m in messages):
        raise ScriptError("messages must be a non-empty list of objects")
    last_user = max((i for i, m in enumerate(messages) if m.get("role") == "user"), default=None)
    script = parse_script(content_text(messages[last_user]["content"])) if last_user is not None else Script()
    after = messages[last_user + 1 :] if last_user is not None else messages
    results = [m for m in after if m.get("role") == "tool"]
    common: dict[str, Any] = {
        "prompt_tokens": count_words(messages),
        "fail_after": script.fail_after,
        "stall_after": script.stall_after,
        "error": script.error,
        "delay_ms": script.delay_ms,
    }
    if len(results) < len(script.tools):
        step = len(results)
        return Reply(
            tool_call=script.tools[step], tool_call_id=f"call_{step}_{script.tools[step].name}", **common
        )
    if results:
        last = results[-1]
        name = _tool_name(messages, last)
        text = f"Tool {name} returned: {content_text(last.get('content'))}"
    elif script.tokens is not None:
        text = " ".join(f"tok{i}" for i in range(script.tokens))
    else:
        text = f"You said: {script.text}"
        cited = _first_source(messages)
        if cited:
            text += f" (source: {cited})"
    return Reply(tokens=word_tokens(text), **common)


_SOURCE = re.compile(r"^(\[\d+\] .+?) \(part \d+\)$", re.MULTILINE)


def _first_source(messages: list[dict[str, Any]]) -> str | None:
    system = next((content_text(m.get("content")) for m in messages if m.get("role") == "system"), "")
    match = _SOURCE.search(system)
    return match.group(1) if match else None


def _tool_name(messages: list[dict[str, Any]], result: dict[str, Any]) -> str:
    call_id = result.get("tool_call_id")
    for message in messages:
        for call in message.get("tool_calls") or ():
            if isinstance(call, dict) and call.get("id") == call_id:
                return str((call.get("function") or {}).get("name", "unknown"))
    return str(result.get("name") or "unknown")
