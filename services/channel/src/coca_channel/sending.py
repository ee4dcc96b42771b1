"""POSTing to user-supplied URLs (webhook replies, push notifications) through the egress guard, with
the outcome classified for the consumer runner: retry it, or give up.

- 2xx: delivered (a body over the read limit does not matter: only the status is used).
- 408, 429 and 5xx, timeouts and network failures: ``Unavailable`` (retried with backoff).
- Other 4xx, a redirect (not followed: a webhook URL is configured as its final address) and a
  destination the egress policy refuses: non-retryable (dead-lettered at once).
"""

from __future__ import annotations

import aiohttp
from coca_platform.egress import EgressPolicy, ResponseTooLarge, safe_request
from coca_platform.errors import CocaError, Unavailable

_RETRYABLE_4XX = frozenset({408, 425, 429})


class DeliveryRejected(CocaError):
    """The destination refused the message for good (a 4xx other than 408/425/429, or a redirect)."""

    code = "delivery_rejected"
    http_status = 502


class DeliveryFailed(Unavailable):
    """The destination failed this time (5xx, 408, 429): worth another try later."""

    code = "delivery_failed"


def outcome(status: int, url_host: str) -> CocaError | None:
    """``None`` for a success, else the error that says whether to retry."""
    if 200 <= status < 300:
        return None
    if status >= 500 or status in _RETRYABLE_4XX:
        return DeliveryFailed(f"{url_host} answered HTTP {status}")
    return DeliveryRejected(f"{url_host} answered HTTP {status}")


async def post(
    session: aiohttp.ClientSession,
    url: str,
    body: bytes,
    headers: dict[str, str],
    *,
    policy: EgressPolicy,
    timeout_s: float,
    max_response_bytes: int,
) -> int:
    """POST ``body``; returns the 2xx status, else raises the classified error (see the module)."""
    host = url.split("://", 1)[-1].split("/", 1)[0]
    try:
        status, _, _ = await safe_request(
            session,
            "POST",
            url,
            policy=policy,
            max_redirects=0,
            max_response_bytes=max_response_bytes,
            timeout_s=timeout_s,
            data=body,
            headers={"Content-Type": "application/json", **headers},
        )
    except ResponseTooLarge as exc:
        status = exc.status
    except Unavailable as exc:
        if exc.code == "too_many_redirects":
            raise DeliveryRejected(f"{host} redirected; configure the final URL") from exc
        raise
    error = outcome(status, host)
    if error is not None:
        raise error
    return status
