"""Password hashing: bcrypt over a SHA-256 pre-hash, always in a bounded thread pool.

bcrypt reads at most 72 bytes (bcrypt>=5 rejects longer input), so a password is first reduced to
``base64(sha256(password))`` (44 ASCII bytes, no NUL) and that is what bcrypt hashes. Every long
password therefore counts in full. bcrypt is CPU-bound (cost 12 is ~0.25 s): it runs in the
executor the lifespan created, never on the event loop.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import secrets
from concurrent.futures import Executor

import bcrypt


def _prehash(password: str) -> bytes:
    return base64.b64encode(hashlib.sha256(password.encode("utf-8")).digest())


def _hash(password: str, cost: int) -> str:
    return bcrypt.hashpw(_prehash(password), bcrypt.gensalt(rounds=cost)).decode("ascii")


def _check(password: str, password_hash: str) -> bool:
    try:
        return bcrypt.checkpw(_prehash(password), password_hash.encode("ascii"))
    except ValueError:  # a malformed stored hash never matches
        return False


def hash_cost(password_hash: str) -> int | None:
    """The work factor recorded in a bcrypt hash (``$2b$12$...`` -> 12)."""
    parts = password_hash.split("$")
    return int(parts[2]) if len(parts) >= 4 and parts[2].isdigit() else None


class PasswordHasher:
    def __init__(self, executor: Executor, cost: int) -> None:
        self._executor = executor
        self._cost = cost
        self._dummy_hash: str | None = None

    @property
    def cost(self) -> int:
        return self._cost

    async def hash(self, password: str) -> str:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, _hash, password, self._cost)

    async def verify(self, password: str, password_hash: str) -> bool:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, _check, password, password_hash)

    def needs_rehash(self, password_hash: str) -> bool:
        return hash_cost(password_hash) != self._cost

    async def prepare(self) -> None:
        """Make the dummy hash at startup, so the first unknown-email login costs what later ones do."""
        if self._dummy_hash is None:
            self._dummy_hash = await self.hash(secrets.token_urlsafe(16))

    async def verify_dummy(self, password: str) -> None:
        """Spend the time a real check would, for an unknown account (no timing oracle on emails)."""
        await self.prepare()
        assert self._dummy_hash is not None
        await self.verify(password, self._dummy_hash)
