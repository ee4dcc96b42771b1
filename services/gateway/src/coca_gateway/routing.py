"""The routing table: which peer serves a public path, and which paths need no credential."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from coca_platform.httpclient import service_url

# Public path prefix -> peer name (a key of the ``upstreams`` mapping given to ``RoutingTable``).
ROUTES: tuple[tuple[str, str], ...] = (
    ("/v1/auth", "user"),
    ("/v1/users", "user"),
    ("/v1/api-keys", "user"),
    ("/v1/tenants", "user"),
    ("/.well-known/jwks.json", "user"),
    ("/v1/agents", "agent"),
    ("/v1/conversations", "agent"),
    ("/v1/channels", "channel"),
    ("/v1/knowledge-bases", "memory"),
    ("/v1/usage", "billing"),
    ("/v1/billing", "billing"),
    ("/v1/plugins", "plugin"),
)
WEBSOCKET_PATH = "/ws"

# Credential-stuffing targets: a stricter per-IP limit applies to them.
AUTH_ROUTES = frozenset({"/v1/auth/register", "/v1/auth/login", "/v1/auth/refresh"})
_PUBLIC = frozenset(
    {("POST", p) for p in AUTH_ROUTES}
    | {("GET", "/.well-known/jwks.json"), ("HEAD", "/.well-known/jwks.json")}
)
_CHANNEL_INBOUND = re.compile(r"/v1/channels/[^/]+/inbound")
_DOT_SEGMENT = re.compile(r"(^|/)\.\.?(/|$)")


@dataclass(frozen=True, slots=True)
class Route:
    prefix: str  # also the metrics/access-log label: bounded cardinality
    upstream: str  # peer name
    base_url: str
    forward_authorization: bool  # only the user service sees the raw bearer (logout needs it)

    @property
    def path(self) -> str:
        """The label the platform's metrics middleware reads from ``scope["route"]``."""
        return self.prefix


class RoutingTable:
    def __init__(self, upstreams: Mapping[str, str]) -> None:
        self._routes = {
            prefix: Route(prefix, name, service_url(upstreams[name]), name == "user")
            for prefix, name in ROUTES
        }

    def match(self, path: str) -> Route | None:
        """The route for ``path`` (``/v1/<resource>`` or ``/v1/<resource>/...``), or None."""
        if path.startswith("/v1/"):
            end = path.find("/", 4)
            return self._routes.get(path if end < 0 else path[:end])
        return self._routes.get(path)


def is_public(method: str, path: str) -> bool:
    """Routes that need no credential: sign-up/in, the JWKS, and channel providers' webhooks."""
    return (method, path) in _PUBLIC or (method == "POST" and _CHANNEL_INBOUND.fullmatch(path) is not None)


def is_safe_path(path: str) -> bool:
    """Refuse ``.``/``..`` segments (decoded, so ``%2e%2e`` too), backslashes and NULs: no path games
    that an upstream could normalise into a route the table did not choose."""
    return _DOT_SEGMENT.search(path) is None and "\\" not in path and "\x00" not in path
