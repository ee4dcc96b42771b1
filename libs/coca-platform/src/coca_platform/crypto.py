"""Secrets at rest (tool credentials, channel signing secrets and tokens): Fernet with key rotation.

``SecretBox(keys)`` encrypts with the first key and decrypts with any of them (``MultiFernet``), so
a key is rotated by putting the new one first, re-encrypting stored values (``rotate``), then
dropping the old one. Keys are urlsafe-base64 32-byte Fernet keys, comma-separated in
``SECRETS_KEYS`` (mix in :class:`SecretsSettings`); make one with ``python -m coca_platform.crypto``.
Tokens are authenticated (AES-128-CBC + HMAC-SHA256): a tampered or foreign one raises
``InvalidArgument`` (code ``secret_undecryptable``), never returns garbage.

The development key below is public: settings refuse it outside ``local`` and ``test``.
"""

from __future__ import annotations

from collections.abc import Sequence

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from pydantic import SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from coca_platform.errors import InvalidArgument

# A development-only key (urlsafe base64 of 32 bytes). Never valid in staging or prod.
DEV_SECRETS_KEY = "Y29jYS1kZXYtc2VjcmV0cy1rZXktY2hhbmdlLW1lISE="


def parse_keys(keys: str | Sequence[str]) -> list[str]:
    """Key strings from a comma list (or a sequence), blanks dropped; at least one is required."""
    items = keys.split(",") if isinstance(keys, str) else list(keys)
    found = [k.strip() for k in items if k.strip()]
    if not found:
        raise ValueError("at least one secrets key is required")
    return found


class SecretBox:
    """Encrypts with the first key, decrypts with any. Cheap enough to call on the event loop."""

    def __init__(self, keys: str | Sequence[str]) -> None:
        fernets = []
        for position, key in enumerate(parse_keys(keys), start=1):
            try:
                fernets.append(Fernet(key))
            except ValueError:  # the message never includes the key
                raise ValueError(f"secrets key #{position} is not urlsafe base64 of 32 bytes") from None
        self._fernet = MultiFernet(fernets)

    def encrypt(self, plaintext: str) -> str:
        return self._fernet.encrypt(plaintext.encode()).decode("ascii")

    def decrypt(self, token: str) -> str:
        try:
            return self._fernet.decrypt(token.encode("ascii")).decode()
        except (InvalidToken, UnicodeError) as exc:
            raise InvalidArgument(
                "stored secret cannot be decrypted (tampered, or encrypted with an unknown key)",
                code="secret_undecryptable",
            ) from exc

    def rotate(self, token: str) -> str:
        """``token`` re-encrypted with the first key (for a rotation job)."""
        try:
            return self._fernet.rotate(token.encode("ascii")).decode("ascii")
        except (InvalidToken, UnicodeError) as exc:
            raise InvalidArgument("stored secret cannot be decrypted", code="secret_undecryptable") from exc


def generate_key() -> str:
    return Fernet.generate_key().decode("ascii")


class SecretsSettings(BaseSettings):
    """Mixin for services that keep secrets at rest. Combine with ``PlatformSettings``: outside
    local/test the development key is refused when the settings are built."""

    model_config = SettingsConfigDict(extra="ignore", frozen=True)

    # Comma-separated Fernet keys (urlsafe base64, 32 bytes); the first encrypts, all decrypt.
    secrets_keys: SecretStr = SecretStr(DEV_SECRETS_KEY)

    @model_validator(mode="after")
    def _refuse_dev_key_in_production(self) -> SecretsSettings:
        keys = parse_keys(self.secrets_keys.get_secret_value())
        SecretBox(keys)  # every key well-formed, before anything starts
        if getattr(self, "environment", "local") not in ("local", "test") and DEV_SECRETS_KEY in keys:
            raise ValueError("SECRETS_KEYS must be set outside local/test environments")
        return self

    def secret_box(self) -> SecretBox:
        return SecretBox(self.secrets_keys.get_secret_value())


__all__ = ["DEV_SECRETS_KEY", "SecretBox", "SecretsSettings", "generate_key", "parse_keys"]

if __name__ == "__main__":
    print(generate_key())
