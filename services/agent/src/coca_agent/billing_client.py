"""Billing from the agent's side: reserve quota before a run, release it after a failed one, and the
usage record that billing meters from Kafka.

::

    billing = BillingClient(http, settings.billing_service_addr, settings.internal_secret.get_secret_value())
    await billing.reserve(tenant_id, run_id, estimated_tokens)  # before the first LLM call
    ...                                                          # the run
    envelope = BillingClient.usage_envelope(tenant_id, user_id, agent_id, run_id, model, prompt, completion)
    await producer.produce(USAGE_TOPIC, envelope.to_json(), key=str(tenant_id))   # after it completed
    await billing.release(run_id)                                # instead, when it failed before using tokens

``reserve`` raises ``PaymentRequired`` (HTTP 402, code ``quota_exceeded``, billing's message saying the
quota, the used and the reserved tokens) when the tenant is over its monthly quota; the agent's edge
renders it as is. Billing unreachable: ``Unavailable`` / ``DeadlineExceeded`` (503 / 504).

The usage event's id is derived from the run id (UUID v5), so publishing a run's usage again after a
retry or a crash is deduplicated by billing: a run is metered once.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from uuid import UUID

import aiohttp
from coca_platform.envelope import Envelope
from coca_platform.errors import NotFound
from coca_platform.httpclient import request_json, service_url
from coca_platform.identity import IDENTITY_HEADER, SIGNATURE_HEADER, Identity, sign
from pydantic import BaseModel

#: The Kafka topic billing meters (key: the tenant id).
USAGE_TOPIC = "usage.records"
USAGE_EVENT_TYPE = "usage.recorded"
#: Namespace of usage event ids: ``uuid5(USAGE_EVENT_NAMESPACE, "run:<run id>")``. Never change it.
USAGE_EVENT_NAMESPACE = UUID("5b1e6f1c-2f4d-4c3a-9a57-6f3c0b8d2e41")

_PEER = "billing service"
_RESERVE_PATH = "/internal/v1/quota:reserve"
_RELEASE_PATH = "/internal/v1/quota:release"


class _ReservationOut(BaseModel):
    reservation_id: str
    run_id: str
    tokens: int
    status: str
    expires_at: datetime
    remaining: int | None = None


@dataclass(frozen=True, slots=True)
class QuotaReservation:
    reservation_id: str
    run_id: str
    tokens: int
    remaining: int  # tokens of the monthly quota left after this reservation
    expires_at: datetime  # billing forgets it then if the run's usage never arrived


def usage_event_id(run_id: UUID | str) -> str:
    """The deterministic event id of a run's usage record."""
    return str(uuid.uuid5(USAGE_EVENT_NAMESPACE, f"run:{run_id}"))


class BillingClient:
    """Calls billing's internal quota API as a ``system`` caller. Share one per process."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        billing_addr: str,
        internal_secret: str | bytes,
        *,
        timeout_s: float = 5.0,
        caller: str = "service:agent",
    ) -> None:
        self._session = session
        self._base = service_url(billing_addr)
        self._secret = internal_secret.encode() if isinstance(internal_secret, str) else internal_secret
        self._timeout_s = timeout_s
        self._identity = Identity(tenant_id="-", user_id=caller, role="system")

    def _headers(self) -> dict[str, str]:
        encoded, signature = sign(self._identity, self._secret)  # signed per call: it ages out
        return {IDENTITY_HEADER: encoded.decode(), SIGNATURE_HEADER: signature.decode()}

    async def reserve(
        self, tenant_id: UUID | str, run_id: UUID | str, estimated_tokens: int
    ) -> QuotaReservation:
        """Hold ``estimated_tokens`` of the tenant's monthly quota for the run (idempotent per run).

        Raises ``PaymentRequired`` (402, code ``quota_exceeded``) over the quota, ``InvalidArgument``
        for an estimate billing refuses, ``Conflict`` when the run already ended its reservation."""
        out = await request_json(
            self._session,
            "POST",
            self._base + _RESERVE_PATH,
            peer=_PEER,
            json={"tenant_id": str(tenant_id), "run_id": str(run_id), "estimated_tokens": estimated_tokens},
            headers=self._headers(),
            timeout_s=self._timeout_s,
            model=_ReservationOut,
        )
        return QuotaReservation(
            reservation_id=out.reservation_id,
            run_id=out.run_id,
            tokens=out.tokens,
            remaining=out.remaining if out.remaining is not None else 0,
            expires_at=out.expires_at,
        )

    async def release(self, run_id: UUID | str) -> str | None:
        """Give a failed run's reservation back, uncharged. Returns the reservation's status afterwards
        (``released``, or ``settled`` / ``expired`` when it had ended already); None if it had none."""
        try:
            out = await request_json(
                self._session,
                "POST",
                self._base + _RELEASE_PATH,
                peer=_PEER,
                json={"run_id": str(run_id)},
                headers=self._headers(),
                timeout_s=self._timeout_s,
                model=_ReservationOut,
            )
        except NotFound:
            return None
        return out.status

    @staticmethod
    def usage_envelope(
        tenant_id: UUID | str,
        user_id: UUID | str | None,
        agent_id: UUID | str | None,
        run_id: UUID | str,
        model: str,
        prompt_tokens: int,
        completion_tokens: int,
    ) -> Envelope:
        """The ``usage.recorded`` event of a run, for ``USAGE_TOPIC`` keyed by the tenant id."""
        tenant = str(tenant_id)
        return Envelope(
            id=usage_event_id(run_id),
            type=USAGE_EVENT_TYPE,
            source="agent",
            tenant_id=tenant,
            subject=str(run_id),
            data={
                "tenant_id": tenant,
                "user_id": str(user_id) if user_id is not None else None,
                "agent_id": str(agent_id) if agent_id is not None else None,
                "run_id": str(run_id),
                "model": model,
                "prompt_tokens": prompt_tokens,
                "completion_tokens": completion_tokens,
            },
        )


__all__ = [
    "USAGE_EVENT_NAMESPACE",
    "USAGE_EVENT_TYPE",
    "USAGE_TOPIC",
    "BillingClient",
    "QuotaReservation",
    "usage_event_id",
]
