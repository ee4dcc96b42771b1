"""The caller's identity on internal calls: set and signed by the gateway, verified by services.

Headers: ``X-Coca-Identity`` (base64url JSON: tenant, user, role, scopes, method, issued-at) and
``X-Coca-Identity-Signature`` (HMAC-SHA256 with ``INTERNAL_SECRET``). A service accepts the
headers only with a valid signature younger than ``MAX_AGE_S``; the gateway strips any copy a
client sends. Services never trust identity from anywhere else.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from dataclasses import asdict, dataclass, field
from typing import Annotated
from uuid import UUID

import orjson
from fastapi import Depends, Request

from coca_platform.errors import PermissionDenied, Unauthenticated

IDENTITY_HEADER = "x-coca-identity"
SIGNATURE_HEADER = "x-coca-identity-signature"
MAX_AGE_S = 300


@dataclass(frozen=True, slots=True)
class Identity:
    tenant_id: str
    user_id: str
    role: str = "member"  # owner | admin | member
    scopes: tuple[str, ...] = field(default_factory=tuple)
    method: str = "jwt"  # jwt | api_key
    api_key_id: str | None = None

    def require_role(self, *roles: str) -> None:
        if self.role not in roles:
            raise PermissionDenied(f"this action needs role {' or '.join(roles)}")

    def tenant_uuid(self) -> UUID:
        """The tenant the caller acts for; 403 for an identity with none (a service principal)."""
        try:
            return UUID(self.tenant_id)
        except ValueError:
            raise PermissionDenied("the caller acts for no tenant") from None


def sign(identity: Identity, secret: bytes, now: float | None = None) -> tuple[bytes, bytes]:
    """``(identity header, signature header)`` values for an internal request."""
    payload = asdict(identity) | {"iat": int(now if now is not None else time.time())}
    encoded = base64.urlsafe_b64encode(orjson.dumps(payload)).rstrip(b"=")
    return encoded, hmac.new(secret, encoded, hashlib.sha256).hexdigest().encode()


def verify(
    encoded: bytes | str | None, signature: bytes | str | None, secret: bytes, now: float | None = None
) -> Identity:
    if not encoded or not signature:
        raise Unauthenticated("authentication required")
    encoded_b = encoded.encode() if isinstance(encoded, str) else encoded
    signature_b = signature.encode() if isinstance(signature, str) else signature
    expected = hmac.new(secret, encoded_b, hashlib.sha256).hexdigest().encode()
    if not hmac.compare_digest(expected, signature_b):
        raise Unauthenticated("invalid internal identity signature")
    try:
        payload = orjson.loads(base64.urlsafe_b64decode(encoded_b + b"=" * (-len(encoded_b) % 4)))
        iat = int(payload.pop("iat"))
        payload["scopes"] = tuple(payload.get("scopes") or ())
        identity = Identity(**payload)
    except (ValueError, TypeError, KeyError) as exc:
        raise Unauthenticated("malformed internal identity") from exc
    if abs((now if now is not None else time.time()) - iat) > MAX_AGE_S:
        raise Unauthenticated("internal identity expired")
    return identity


def identity_from_request(request: Request) -> Identity:
    """FastAPI dependency: the verified caller, or 401."""
    secret = request.app.state.settings.internal_secret.get_secret_value().encode()
    return verify(request.headers.get(IDENTITY_HEADER), request.headers.get(SIGNATURE_HEADER), secret)


IdentityDep = Annotated[Identity, Depends(identity_from_request)]
