from __future__ import annotations

import pytest
from coca_platform.errors import Unauthenticated
from coca_platform.identity import Identity, sign, verify

SECRET = b"s3cret"


def test_signed_identity_round_trips() -> None:
    ident = Identity(
        tenant_id="t", user_id="u", role="admin", scopes=("a", "b"), method="api_key", api_key_id="k"
    )
    assert verify(*sign(ident, SECRET), SECRET) == ident


def test_tampered_identity_is_rejected() -> None:
    encoded, signature = sign(Identity(tenant_id="t", user_id="u"), SECRET)
    forged, _ = sign(Identity(tenant_id="other", user_id="u", role="owner"), b"attacker")
    with pytest.raises(Unauthenticated):
        verify(forged, signature, SECRET)
    with pytest.raises(Unauthenticated):
        verify(encoded, signature, b"another secret")


def test_stale_identity_is_rejected() -> None:
    encoded, signature = sign(Identity(tenant_id="t", user_id="u"), SECRET, now=1000.0)
    with pytest.raises(Unauthenticated, match="expired"):
        verify(encoded, signature, SECRET, now=1000.0 + 301)
