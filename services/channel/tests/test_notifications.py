"""Notifications: other services ask over ``POST /internal/v1/notifications``; the ``notification``
exchange routes to ``notification.email`` (SMTP) and ``notification.push`` (webhook); a failing target
gets exactly 1 + 3 attempts, then the message is in the queue's DLQ."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from email import message_from_bytes
from typing import Any

import httpx
from coca_platform.amqp import ATTEMPT, REASON

from .conftest import NOTIFICATION_ATTEMPTS, Mailbox, Receiver, Tenant

Take = Callable[..., Awaitable[list[Any]]]
WaitFor = Callable[..., Awaitable[None]]


async def _notify(client: httpx.AsyncClient, headers: dict[str, str], **body: Any) -> httpx.Response:
    return await client.post(
        "/internal/v1/notifications", json={"tenant_id": str(uuid.uuid4())} | body, headers=headers
    )


def _for(envelope_id: str) -> Callable[[Any], bool]:
    return lambda message: message.message_id == envelope_id


async def test_email_notification_is_sent_over_smtp(
    client: httpx.AsyncClient, system_headers: dict[str, str], mailbox: Mailbox, wait_for: WaitFor
) -> None:
    to = f"ada-{uuid.uuid4().hex[:8]}@example.com"
    email = {"to": to, "subject": "Your document is ready", "body": "It has 12 chunks."}

    response = await _notify(client, system_headers, kind="email", email=email)

    assert response.status_code == 202, response.text
    await wait_for(lambda: any(to in m.rcpt_tos for m in mailbox.messages))
    (sent,) = [m for m in mailbox.messages if to in m.rcpt_tos]
    parsed = message_from_bytes(sent.original_content or b"")
    assert parsed["Subject"] == "Your document is ready"
    assert parsed["To"] == to
    assert parsed["From"] == "Coca AI <noreply@localhost>"
    assert str(parsed.get_payload()).strip() == "It has 12 chunks."
    assert mailbox.attempts[to] == 1


async def test_push_notification_is_posted_to_its_url(
    client: httpx.AsyncClient, system_headers: dict[str, str], receiver: Receiver, wait_for: WaitFor
) -> None:
    name = f"push-{uuid.uuid4().hex}"
    push = {"url": f"{receiver.url}/{name}", "payload": {"title": "Done", "n": 3}}

    response = await _notify(client, system_headers, kind="push", push=push)

    assert response.status_code == 202
    await wait_for(lambda: receiver.hits[name])
    (hit,) = receiver.hits[name]
    assert hit.json() == {"title": "Done", "n": 3}
    assert hit.headers["X-Coca-Notification-Id"] == response.json()["id"]


async def test_failing_smtp_server_gets_four_attempts_then_the_dead_letter_queue(
    client: httpx.AsyncClient, system_headers: dict[str, str], mailbox: Mailbox, take: Take
) -> None:
    to = f"fail-{uuid.uuid4().hex[:8]}@example.com"
    email = {"to": to, "subject": "Never arrives", "body": "451 every time"}

    response = await _notify(client, system_headers, kind="email", email=email)

    (dead,) = await take("notification.email.dlq", _for(response.json()["id"]), timeout_s=15)
    await asyncio.sleep(0.5)  # and nothing after it
    assert mailbox.attempts[to] == NOTIFICATION_ATTEMPTS == 4
    assert dead.headers[REASON] == "max_attempts"
    assert dead.headers[ATTEMPT] == 4


async def test_failing_push_target_gets_four_attempts_then_the_dead_letter_queue(
    client: httpx.AsyncClient, system_headers: dict[str, str], receiver: Receiver, take: Take
) -> None:
    name = f"push-down-{uuid.uuid4().hex}"
    receiver.statuses[name] = 500
    push = {"url": f"{receiver.url}/{name}", "payload": {"title": "Never"}}

    response = await _notify(client, system_headers, kind="push", push=push)

    (dead,) = await take("notification.push.dlq", _for(response.json()["id"]), timeout_s=15)
    await asyncio.sleep(0.5)
    assert len(receiver.hits[name]) == NOTIFICATION_ATTEMPTS
    assert dead.headers[REASON] == "max_attempts"


async def test_push_to_a_refused_address_is_dead_lettered_at_once(
    client: httpx.AsyncClient, system_headers: dict[str, str], take: Take
) -> None:
    push = {"url": "http://169.254.169.254/latest/meta-data", "payload": {}}

    response = await _notify(client, system_headers, kind="push", push=push)

    (dead,) = await take("notification.push.dlq", _for(response.json()["id"]))
    assert dead.headers[REASON] == "non_retryable"
    assert dead.headers["x-coca-error-code"] == "egress_refused"


async def test_only_system_callers_may_notify(
    client: httpx.AsyncClient, new_tenant: Callable[[], Tenant]
) -> None:
    email = {"to": "a@example.com", "subject": "s", "body": "b"}

    response = await _notify(client, new_tenant().headers, kind="email", email=email)

    assert response.status_code == 403


async def test_invalid_notification_requests_are_refused(
    client: httpx.AsyncClient, system_headers: dict[str, str]
) -> None:
    missing = await _notify(client, system_headers, kind="email")
    injected = await _notify(
        client,
        system_headers,
        kind="email",
        email={"to": "a@example.com", "subject": "x\r\nBcc: b@x", "body": ""},
    )
    bad_url = await _notify(client, system_headers, kind="push", push={"url": "file:///etc/passwd"})

    for response in (missing, injected, bad_url):
        assert response.status_code == 422, response.text
