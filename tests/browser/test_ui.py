"""The browser UI in real headless Chromium against the whole running suite: a person signs up, logs
out and in, creates an agent, chats with it and watches the reply stream in; a failed run and a
dropped stream are handled; the knowledge and usage pages work or say clearly why not."""

from __future__ import annotations

import re
import uuid
from pathlib import Path
from typing import Any

import pytest
from coca_platform.devstack import Stack

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]

# Fixtures come from conftest.py: `stack` (the running suite), `page` (a fresh Chromium tab on the web
# UI, with `page.problems`), `artifacts` (the test-artifacts/ folder).
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
PASSWORD = "correct horse battery staple"

# Records every text the newest assistant bubble shows, so a test can tell a streamed reply (many
# growing texts) from one that appeared at once.
WATCH_REPLY = """() => {
  window.__replyTexts = [];
  new MutationObserver(() => {
    const bubbles = document.querySelectorAll('.message.assistant .text');
    const last = bubbles[bubbles.length - 1];
    if (last) window.__replyTexts.push(last.textContent);
  }).observe(document.getElementById('messages'), {subtree: true, childList: true, characterData: true});
}"""


async def sign_up(page: Any, email: str) -> None:
    await page.goto("/signup")
    await page.get_by_label("Your name").fill("Ada Browser")
    await page.get_by_label("Email").fill(email)
    await page.get_by_label("Password").fill(PASSWORD)
    await page.get_by_label("Organisation").fill("Browser Test Org")
    await page.get_by_role("button", name="Sign up").click()
    await page.wait_for_url("**/agents")


async def open_chat_with_new_agent(page: Any, name: str) -> str:
    await page.get_by_label("Name").fill(name)
    await page.get_by_label("Instructions").fill("Repeat what the user says.")
    await page.get_by_role("button", name="Create agent").click()
    await page.get_by_role("button", name=f"Chat with {name}").click()
    await page.wait_for_url(re.compile(r"/conversations/[0-9a-f-]{36}$"))
    await page.wait_for_function("() => !document.getElementById('chat-input').disabled")
    return str(page.url.rsplit("/", 1)[1])


async def send(page: Any, text: str) -> None:
    await page.get_by_role("textbox", name="Message").fill(text)
    await page.get_by_role("textbox", name="Message").press("Enter")


async def wait_reply_done(page: Any) -> Any:
    await page.wait_for_function(
        "() => { const m = document.querySelectorAll('.message.assistant');"
        " return m.length && !m[m.length - 1].classList.contains('streaming'); }"
    )
    return page.locator(".message.assistant .text").last


async def test_a_person_signs_up_logs_in_and_watches_a_reply_stream_in(
    page: Any, stack: Stack, artifacts: Path
) -> None:
    email = f"ada-{uuid.uuid4().hex[:10]}@example.com"
    await sign_up(page, email)
    assert await page.locator("#whoami").text_content() == email

    await page.get_by_role("button", name="Log out").click()
    await page.wait_for_url("**/login")
    await page.goto("/agents")  # signed out: a protected page sends the browser to log in
    await page.wait_for_url(re.compile(r"/login\?next=%2Fagents$"))
    await page.get_by_label("Email").fill(email)
    await page.get_by_label("Password").fill(PASSWORD)
    await page.get_by_role("button", name="Log in").click()
    await page.wait_for_url("**/agents")

    await open_chat_with_new_agent(page, "Echo")
    assert await page.locator("#chat-title").text_content() == "Chat with Echo"
    await page.evaluate(WATCH_REPLY)
    words = "please repeat these twelve words back to me one token at a time"
    await send(page, words)

    await page.get_by_text(f"You said: {words}").wait_for()
    reply = await wait_reply_done(page)
    assert await reply.text_content() == f"You said: {words}"
    assert await page.locator(".message.user .text").last.text_content() == words
    seen = await page.evaluate("window.__replyTexts")
    partial = {text for text in seen if 0 < len(text) < len(f"You said: {words}")}
    assert len(partial) >= 3, f"the reply did not stream in: {seen}"
    assert await page.locator("#chat-status").text_content() == ""

    screenshot = artifacts / "browser-chat.png"
    screenshot.unlink(missing_ok=True)
    await page.screenshot(path=str(screenshot), full_page=True)
    assert screenshot.read_bytes()[:8] == PNG_MAGIC

    await page.reload()  # the conversation was stored: history comes back
    await page.get_by_text(f"You said: {words}").wait_for()
    assert await page.locator(".message").count() == 2
    assert page.problems == []


async def test_a_failed_run_is_shown_as_an_error_and_the_chat_goes_on(page: Any) -> None:
    await sign_up(page, f"fail-{uuid.uuid4().hex[:10]}@example.com")
    await open_chat_with_new_agent(page, "Fragile")
    await send(page, "this will break [[fail_after:2]]")
    await page.locator(".message.assistant.failed").wait_for()
    status = page.locator("#chat-status")
    assert "The agent could not answer" in (await status.text_content() or "")
    assert "error" in (await status.get_attribute("class") or "")

    await send(page, "and this works")
    await page.get_by_text("You said: and this works").wait_for()
    assert page.problems == []


async def test_a_dropped_stream_resumes_after_the_last_event_without_losing_or_repeating_tokens(
    page: Any,
) -> None:
    await sign_up(page, f"drop-{uuid.uuid4().hex[:10]}@example.com")
    await open_chat_with_new_agent(page, "Resumer")
    resumed_with: list[str | None] = []

    async def cut_stream(route: Any) -> None:
        """The reply's stream ends after its first three events, as if the connection dropped."""
        if route.request.method != "POST":
            await route.continue_()
            return
        response = await route.fetch()
        events = (await response.body()).split(b"\n\n")
        await route.fulfill(response=response, body=b"\n\n".join(events[:3]) + b"\n\n")

    page.on(
        "request",
        lambda request: (
            resumed_with.append(request.headers.get("last-event-id"))
            if request.url.endswith("/events")
            else None
        ),
    )
    await page.route(re.compile(r"/v1/conversations/[^/]+/messages$"), cut_stream)
    words = "one two three four five six seven eight"
    await send(page, words)
    reply = await wait_reply_done(page)
    assert await reply.text_content() == f"You said: {words}"
    assert resumed_with, "the page did not resume"
    assert resumed_with[0], "the page resumed without Last-Event-ID"
    assert page.problems == []


async def test_the_usage_page_shows_the_balance_and_usage_or_a_clear_error(
    page: Any, artifacts: Path
) -> None:
    await sign_up(page, f"usage-{uuid.uuid4().hex[:10]}@example.com")
    await page.get_by_role("link", name="Usage").click()
    await page.wait_for_url("**/usage")
    for section, status in (("#balance", "#balance-status"), ("#usage", "#usage-status")):
        await page.wait_for_function(f"() => document.querySelector('{status}').textContent !== 'Loading…'")
        text = await page.locator(status).text_content() or ""
        shown = await page.locator(f"{section} > *").count()
        assert shown or text, f"{section} shows nothing"
        if "error" in (await page.locator(status).get_attribute("class") or ""):
            assert len(text) > 20
            assert "undefined" not in text
    await page.screenshot(path=str(artifacts / "browser-usage.png"), full_page=True)
    assert page.problems == []


async def test_a_document_uploaded_to_a_knowledge_base_becomes_ready_and_searchable(
    page: Any, tmp_path: Path, artifacts: Path
) -> None:
    await sign_up(page, f"kb-{uuid.uuid4().hex[:10]}@example.com")
    await page.get_by_role("link", name="Knowledge").click()
    await page.get_by_label("Name").fill("Handbook")
    await page.get_by_role("button", name="Create knowledge base").click()
    await page.get_by_role("link", name="Handbook").click()
    await page.wait_for_url(re.compile(r"/knowledge/[0-9a-f-]{36}$"))

    document = tmp_path / "handbook.txt"
    document.write_text("The office coffee machine is on the third floor, next to the library.\n")
    await page.get_by_label("File").set_input_files(str(document))
    await page.get_by_role("button", name="Upload").click()
    row = page.locator("#doc-rows tr", has_text="handbook.txt")
    await row.wait_for()
    await row.locator(".tag.ready").wait_for(timeout=90_000)

    await page.get_by_label("Question or keywords").fill("where is the coffee machine?")
    await page.get_by_role("button", name="Search").click()
    await page.locator("#search-results li", has_text="third floor").wait_for()
    await page.screenshot(path=str(artifacts / "browser-knowledge.png"), full_page=True)
    assert page.problems == []
