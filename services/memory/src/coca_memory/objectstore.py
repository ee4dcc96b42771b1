"""The uploaded documents in S3 (MinIO in production, moto in dev and tests), via the ``minio`` client.

The bucket is versioned: an object is read back by the version its upload created, so a later upload
under the same key never changes what an earlier document indexes. The client blocks, so every call
runs in this store's own small thread pool.
"""

from __future__ import annotations

import asyncio
import io
import logging
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import TypeVar
from urllib.parse import urlsplit

import urllib3
from coca_platform.errors import NotFound, Unavailable
from minio import Minio
from minio.commonconfig import ENABLED
from minio.error import MinioException, S3Error
from minio.versioningconfig import VersioningConfig

log = logging.getLogger(__name__)

T = TypeVar("T")

_MISSING = {"NoSuchKey", "NoSuchVersion", "NoSuchBucket"}


@dataclass(frozen=True, slots=True)
class StoredObject:
    key: str
    version_id: str | None


class ObjectStore:
    def __init__(self, client: Minio, bucket: str, executor: ThreadPoolExecutor) -> None:
        self._client, self._bucket, self._executor = client, bucket, executor

    async def _run(self, fn: Callable[[], T], what: str) -> T:
        try:
            return await asyncio.get_running_loop().run_in_executor(self._executor, fn)
        except S3Error as exc:
            if exc.code in _MISSING:
                raise NotFound(f"{what}: {exc.code}") from exc
            raise Unavailable(f"{what}: S3 answered {exc.code}") from exc
        except (MinioException, urllib3.exceptions.HTTPError, OSError) as exc:
            raise Unavailable(f"{what}: S3 is unreachable ({type(exc).__name__})") from exc

    async def ensure_bucket(self) -> None:
        """Create the bucket (versioned) unless it exists. Idempotent."""

        def ensure() -> None:
            if not self._client.bucket_exists(self._bucket):
                try:
                    self._client.make_bucket(self._bucket)
                except S3Error as exc:  # created meanwhile by another replica
                    if exc.code not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
                        raise
            self._client.set_bucket_versioning(self._bucket, VersioningConfig(ENABLED))

        await self._run(ensure, f"cannot prepare bucket {self._bucket!r}")

    async def ping(self) -> None:
        await self._run(lambda: self._client.bucket_exists(self._bucket), "S3 readiness")

    async def put(self, key: str, data: bytes, content_type: str) -> StoredObject:
        def put() -> StoredObject:
            result = self._client.put_object(
                self._bucket, key, io.BytesIO(data), len(data), content_type=content_type
            )
            return StoredObject(key, result.version_id)

        return await self._run(put, "cannot store the document")

    async def get(self, key: str, version_id: str | None) -> bytes:
        def get() -> bytes:
            response = self._client.get_object(self._bucket, key, version_id=version_id)
            try:
                return response.read()
            finally:
                response.close()
                response.release_conn()

        return await self._run(get, f"cannot read object {key!r}")


@asynccontextmanager
async def open_object_store(
    endpoint: str, access_key: str, secret_key: str, *, region: str, bucket: str, workers: int = 4
) -> AsyncIterator[ObjectStore]:
    """A store on ``bucket`` (created, versioned, if missing) at ``endpoint`` (``http(s)://host:port``)."""
    parts = urlsplit(endpoint)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(f"S3_ENDPOINT must be an http(s) URL, got {endpoint!r}")
    http = urllib3.PoolManager(
        maxsize=workers,
        timeout=urllib3.Timeout(connect=5.0, read=60.0),
        retries=urllib3.Retry(total=2, backoff_factor=0.2, status_forcelist=(500, 502, 503, 504)),
    )
    client = Minio(
        parts.netloc,
        access_key=access_key,
        secret_key=secret_key,
        secure=parts.scheme == "https",
        region=region,
        http_client=http,
    )
    executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="coca-s3")
    try:
        store = ObjectStore(client, bucket, executor)
        await store.ensure_bucket()
        yield store
    finally:
        executor.shutdown(wait=True, cancel_futures=True)
        http.clear()
