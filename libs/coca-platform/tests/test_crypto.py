"""Secrets at rest: authenticated encryption, key rotation, and the development key kept out of prod."""

from __future__ import annotations

import pytest
from coca_platform.crypto import DEV_SECRETS_KEY, SecretBox, SecretsSettings, generate_key
from coca_platform.errors import InvalidArgument
from coca_platform.settings import PlatformSettings
from pydantic import ValidationError


class _Settings(PlatformSettings, SecretsSettings):
    service_name: str = "crypto-test"


def test_encrypt_round_trips_and_hides_the_plaintext() -> None:
    box = SecretBox(generate_key())
    first, second = box.encrypt("tok-123 ünïcode"), box.encrypt("tok-123 ünïcode")
    assert "tok-123" not in first
    assert first != second  # a fresh IV each time
    assert box.decrypt(first) == box.decrypt(second) == "tok-123 ünïcode"


def test_tampered_token_is_refused() -> None:
    box = SecretBox(generate_key())
    token = box.encrypt("secret")
    tampered = token[:-6] + ("A" if token[-6] != "A" else "B") + token[-5:]
    with pytest.raises(InvalidArgument) as caught:
        box.decrypt(tampered)
    assert caught.value.code == "secret_undecryptable"


def test_token_from_another_key_is_refused() -> None:
    with pytest.raises(InvalidArgument):
        SecretBox(generate_key()).decrypt(SecretBox(generate_key()).encrypt("secret"))


def test_rotation_new_key_first_decrypts_old_tokens_and_rotate_moves_them() -> None:
    old, new = generate_key(), generate_key()
    stored = SecretBox(old).encrypt("secret")
    both = SecretBox(f"{new}, {old}")
    assert both.decrypt(stored) == "secret"
    rotated = both.rotate(stored)
    assert SecretBox(new).decrypt(rotated) == "secret"
    with pytest.raises(InvalidArgument):
        SecretBox(old).decrypt(rotated)


@pytest.mark.parametrize("keys", ["", " , ", "not-a-key", f"{DEV_SECRETS_KEY},short"])
def test_malformed_keys_are_refused_without_echoing_them(keys: str) -> None:
    with pytest.raises(ValueError, match="key") as caught:
        SecretBox(keys)
    assert "not-a-key" not in str(caught.value)
    assert "short" not in str(caught.value)


def test_development_key_works_in_local_and_test() -> None:
    for environment in ("local", "test"):
        box = _Settings(environment=environment).secret_box()
        assert box.decrypt(box.encrypt("x")) == "x"


@pytest.mark.parametrize("environment", ["staging", "prod"])
def test_development_key_is_refused_outside_local_and_test(environment: str) -> None:
    with pytest.raises(ValidationError, match="SECRETS_KEYS must be set"):
        _Settings(environment=environment)
    with pytest.raises(ValidationError, match="SECRETS_KEYS must be set"):
        _Settings(environment=environment, secrets_keys=f"{generate_key()},{DEV_SECRETS_KEY}")


def test_secrets_keys_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    old, new = generate_key(), generate_key()
    monkeypatch.setenv("SECRETS_KEYS", f"{new},{old}")
    monkeypatch.setenv("ENVIRONMENT", "prod")
    box = _Settings().secret_box()
    assert box.decrypt(SecretBox(old).encrypt("legacy")) == "legacy"
    assert SecretBox(new).decrypt(box.encrypt("fresh")) == "fresh"


def test_malformed_key_in_settings_fails_at_startup() -> None:
    with pytest.raises(ValidationError, match="not urlsafe base64"):
        _Settings(secrets_keys="nope")
