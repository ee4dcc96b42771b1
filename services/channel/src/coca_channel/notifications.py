"""Notifications: the ``notification.email`` (SMTP) and ``notification.push`` (webhook) handlers.

Both queues are consumed with ``NOTIFICATION_MAX_ATTEMPTS`` (4: the brief's "3 retries then the
DLQ"). A transient failure (SMTP 4xx, connection or timeout; push 5xx/408/429 or network) is
retried with backoff; a permanent one (SMTP 5xx, push 4xx, a refused destination, an invalid
payload) goes to ``notification.{email,push}.dlq`` at once. Each envelope is sent at most once
when all goes well: the runner's deduper drops a second copy of the same envelope id.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import make_msgid
from typing import TypeVar

import aiohttp
import aiosmtplib
import orjson
from coca_platform.egress import EgressPolicy
from coca_platform.envelope import Envelope
from coca_platform.errors import CocaError, InvalidArgument, Unavailable
from pydantic import BaseModel, ValidationError

from coca_channel import sending
from coca_channel.events import NOTIFICATION_REQUESTED, EmailData, PushData

log = logging.getLogger(__name__)

NOTIFICATION_HEADER = "X-Coca-Notification-Id"

T = TypeVar("T", bound=BaseModel)


class EmailRejected(CocaError):
    """The SMTP server refused the message for good (a 5xx reply)."""

    code = "email_rejected"
    http_status = 502


@dataclass(frozen=True, slots=True)
class SmtpConfig:
    host: str
    port: int
    sender: str
    username: str | None = None
    password: str | None = None
    starttls: bool = False
    timeout_s: float = 10.0


class EmailSender:
    def __init__(self, config: SmtpConfig) -> None:
        self._config = config

    async def send(self, message_id: str, data: EmailData) -> None:
        config = self._config
        message = EmailMessage()
        message["From"], message["To"], message["Subject"] = config.sender, data.to, data.subject
        message["Message-ID"] = make_msgid(idstring=message_id.replace("-", ""))
        message.set_content(data.body)
        try:
            await aiosmtplib.send(
                message,
                hostname=config.host,
                port=config.port,
                username=config.username,
                password=config.password,
                start_tls=config.starttls,
                timeout=config.timeout_s,
            )
        except aiosmtplib.SMTPRecipientsRefused as exc:
            codes = [r.code for r in exc.recipients]
            if all(code >= 500 for code in codes):
                raise EmailRejected(f"SMTP server refused the recipient ({codes})") from exc
            raise Unavailable(f"SMTP server deferred the recipient ({codes})") from exc
        except aiosmtplib.SMTPResponseException as exc:
            if exc.code >= 500:
                raise EmailRejected(f"SMTP server refused the message: {exc.code}") from exc
            raise Unavailable(f"SMTP server deferred the message: {exc.code}") from exc
        except (aiosmtplib.SMTPException, OSError) as exc:  # connect, timeout, disconnect
            raise Unavailable(f"SMTP server unavailable: {type(exc).__name__}") from exc


class NotificationHandlers:
    def __init__(
        self,
        email: EmailSender,
        http: aiohttp.ClientSession,
        policy: EgressPolicy,
        *,
        push_timeout_s: float,
        max_response_bytes: int,
    ) -> None:
        self._email, self._http, self._policy = email, http, policy
        self._push_timeout_s, self._max_bytes = push_timeout_s, max_response_bytes

    async def email(self, envelope: Envelope) -> None:
        data = _payload(envelope, EmailData)
        await self._email.send(envelope.id, data)
        log.info("email notification sent", extra={"data": {"id": envelope.id}})

    async def push(self, envelope: Envelope) -> None:
        data = _payload(envelope, PushData)
        headers = {NOTIFICATION_HEADER: envelope.id}
        await sending.post(
            self._http,
            data.url,
            orjson.dumps(data.payload),
            headers,
            policy=self._policy,
            timeout_s=self._push_timeout_s,
            max_response_bytes=self._max_bytes,
        )
        log.info("push notification sent", extra={"data": {"id": envelope.id}})


def _payload(envelope: Envelope, model: type[T]) -> T:
    if envelope.type != NOTIFICATION_REQUESTED:
        raise InvalidArgument(f"unexpected message type {envelope.type!r}", code="unexpected_type")
    try:
        return model.model_validate(envelope.data)
    except ValidationError as exc:
        raise InvalidArgument(f"invalid notification: {exc.error_count()} errors") from exc
