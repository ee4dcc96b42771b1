"""Webhook request signing, both ways: providers sign what they send us, we sign what we send them.

``X-Coca-Timestamp: <unix seconds>`` and ``X-Coca-Signature: v1=<hex HMAC-SHA256(secret,
f"{timestamp}.{raw body}")>``. The signature header may carry several comma-separated ``v1=``
values (a sender rotating its secret); one match is enough. A timestamp further than the tolerance
from now (either way) is refused, which bounds how long a captured request could be replayed; the
replay guard (``replay``) refuses an exact copy inside that window.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time

from coca_platform.errors import Unauthenticated

TIMESTAMP_HEADER = "X-Coca-Timestamp"
SIGNATURE_HEADER = "X-Coca-Signature"
SCHEME = "v1"
_MAX_SIGNATURES = 8


def new_signing_secret() -> str:
    """A fresh signing secret (256 random bits), shown to the channel's owner once."""
    return "whsec_" + secrets.token_urlsafe(32)


def sign(secret: str, timestamp: int, body: bytes) -> str:
    """The ``X-Coca-Signature`` value for ``body`` sent at ``timestamp``."""
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return f"{SCHEME}={mac.hexdigest()}"


def signed_headers(secret: str, body: bytes, now: float | None = None) -> dict[str, str]:
    """Both headers for an outgoing request."""
    timestamp = int(now if now is not None else time.time())
    return {TIMESTAMP_HEADER: str(timestamp), SIGNATURE_HEADER: sign(secret, timestamp, body)}


def verify(
    secret: str,
    timestamp: str | None,
    signature: str | None,
    body: bytes,
    *,
    tolerance_s: int,
    now: float | None = None,
) -> str:
    """Check a signed request; returns the matching signature (the replay key). Raises
    ``Unauthenticated`` (code ``signature_missing``, ``signature_invalid`` or ``timestamp_stale``)."""
    if not timestamp or not signature:
        raise Unauthenticated(
            f"{TIMESTAMP_HEADER} and {SIGNATURE_HEADER} headers are required", code="signature_missing"
        )
    if not timestamp.isascii() or not timestamp.isdigit() or len(timestamp) > 12:
        raise Unauthenticated(f"{TIMESTAMP_HEADER} must be unix seconds", code="signature_invalid")
    sent_at = int(timestamp)
    if abs((now if now is not None else time.time()) - sent_at) > tolerance_s:
        raise Unauthenticated(
            f"{TIMESTAMP_HEADER} is more than {tolerance_s} s away from now", code="timestamp_stale"
        )
    expected = sign(secret, sent_at, body)
    offered = [part.strip() for part in signature.split(",")][:_MAX_SIGNATURES]
    for candidate in offered:
        if hmac.compare_digest(candidate.encode(), expected.encode()):
            return expected
    raise Unauthenticated("signature does not match", code="signature_invalid")
