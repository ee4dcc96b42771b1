"""Static files shipped inside the package, served from memory with caching headers.

Every file is read once at startup and given a content hash. Pages link to ``/static/<path>?v=<hash>``:
such a URL names one version forever, so it is cached for a year (``immutable``). A request without the
current hash (an old page, a hand-typed URL) is answered with ``no-cache`` and an ``ETag``, so the browser
revalidates it and gets a cheap 304 when nothing changed.
"""

from __future__ import annotations

import hashlib
import importlib.resources
from dataclasses import dataclass
from importlib.resources.abc import Traversable

from coca_platform.errors import NotFound
from starlette.requests import Request
from starlette.responses import Response

_TYPES = {
    ".css": "text/css; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".ico": "image/x-icon",
    ".txt": "text/plain; charset=utf-8",
}
IMMUTABLE = "public, max-age=31536000, immutable"
REVALIDATE = "no-cache"


@dataclass(frozen=True, slots=True)
class Asset:
    body: bytes
    content_type: str
    version: str  # the first 16 hex digits of the content's SHA-256

    @property
    def etag(self) -> str:
        return f'"{self.version}"'


class AssetStore:
    """The package's ``static/`` folder, by path relative to it (``css/app.css``)."""

    def __init__(self, assets: dict[str, Asset]) -> None:
        self._assets = assets

    @classmethod
    def load(cls, package: str, folder: str = "static") -> AssetStore:
        assets: dict[str, Asset] = {}
        root = importlib.resources.files(package) / folder
        for path, entry in _walk(root, ""):
            content_type = _TYPES.get(path[path.rfind(".") :])
            if content_type is None:
                continue  # only known types are served: nothing is guessed or sniffed
            body = entry.read_bytes()
            assets[path] = Asset(body, content_type, hashlib.sha256(body).hexdigest()[:16])
        return cls(assets)

    def __contains__(self, path: str) -> bool:
        return path in self._assets

    def url(self, path: str) -> str:
        """The versioned URL of a static file; an unknown one is a bug in a template."""
        return f"/static/{path}?v={self._assets[path].version}"

    def response(self, request: Request, path: str) -> Response:
        asset = self._assets.get(path)
        if asset is None:
            raise NotFound(f"no static file {path!r}")
        versioned = request.query_params.get("v") == asset.version
        headers = {"Cache-Control": IMMUTABLE if versioned else REVALIDATE, "ETag": asset.etag}
        if asset.etag in _etags(request.headers.get("if-none-match", "")):
            return Response(status_code=304, headers=headers)
        body = b"" if request.method == "HEAD" else asset.body
        headers["Content-Length"] = str(len(asset.body))
        return Response(body, headers=headers, media_type=asset.content_type)


def _walk(folder: Traversable, prefix: str) -> list[tuple[str, Traversable]]:
    found: list[tuple[str, Traversable]] = []
    for entry in folder.iterdir():
        name = f"{prefix}{entry.name}"
        if entry.is_dir():
            found.extend(_walk(entry, f"{name}/"))
        elif entry.is_file():
            found.append((name, entry))
    return found


def _etags(header: str) -> set[str]:
    return {tag.strip().removeprefix("W/") for tag in header.split(",") if tag.strip()}
