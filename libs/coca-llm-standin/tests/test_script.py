from __future__ import annotations

import pytest
from coca_llm_standin.script import ScriptError, ToolCall, parse_script, plan_reply


def _user(text: str) -> list[dict[str, object]]:
    return [{"role": "system", "content": "be brief"}, {"role": "user", "content": text}]


def test_default_reply_echoes_the_last_user_message_word_by_word() -> None:
    reply = plan_reply(_user("hello there world"))
    assert reply.tokens == ("You", " said:", " hello", " there", " world")
    assert reply.content == "You said: hello there world"
    assert reply.prompt_tokens == 5
    assert reply.completion_tokens == 5


def test_directives_are_parsed_and_removed_from_the_echo() -> None:
    script = parse_script('hi [[fail_after:2]] there [[delay_ms:5]] [[tool:lookup {"q": [1, 2]}]]')
    assert script.text == "hi there"
    assert script.fail_after == 2
    assert script.delay_ms == 5
    assert script.tools == (ToolCall("lookup", '{"q": [1, 2]}'),)


def test_tokens_directive_replies_exactly_n_tokens() -> None:
    assert plan_reply(_user("[[tokens:3]]")).content == "tok0 tok1 tok2"


def test_tool_directives_are_called_in_order_then_the_result_is_reported() -> None:
    messages = _user('[[tool:a {}]] [[tool:b {"x": 1}]]')
    first = plan_reply(messages)
    assert first.tool_call == ToolCall("a", "{}")
    messages += [
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {"id": first.tool_call_id, "type": "function", "function": {"name": "a", "arguments": "{}"}}
            ],
        },
        {"role": "tool", "tool_call_id": first.tool_call_id, "content": "one"},
    ]
    second = plan_reply(messages)
    assert second.tool_call == ToolCall("b", '{"x": 1}')
    messages += [
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {"id": second.tool_call_id, "type": "function", "function": {"name": "b", "arguments": "{}"}}
            ],
        },
        {"role": "tool", "tool_call_id": second.tool_call_id, "content": "two"},
    ]
    assert plan_reply(messages).content == "Tool b returned: two"


@pytest.mark.parametrize("text", ["[[fail_after:x]]", "[[error:200]]", "[[nonsense]]", "[[tool:]]"])
def test_malformed_directives_are_rejected(text: str) -> None:
    with pytest.raises(ScriptError):
        parse_script(text)


def test_messages_must_be_a_non_empty_list() -> None:
    with pytest.raises(ScriptError):
        plan_reply([])


def test_reply_cites_the_first_numbered_source_of_the_system_prompt() -> None:
    system = (
        "Answer from these sources and cite them as [n].\n"
        "[1] handbook.md (part 2)\nThe office opens at 9.\n\n[2] faq.txt (part 1)\nNo."
    )
    reply = plan_reply(
        [{"role": "system", "content": system}, {"role": "user", "content": "when do we open"}]
    )
    assert "".join(reply.tokens) == "You said: when do we open (source: [1] handbook.md)"


def test_reply_without_sources_cites_nothing() -> None:
    reply = plan_reply([{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hi"}])
    assert "".join(reply.tokens) == "You said: hi"
