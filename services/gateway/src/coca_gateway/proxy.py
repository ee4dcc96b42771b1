"""The hot path: a plain ASGI handler that checks, authenticates, limits and relays each request.

Per HTTP request: route by prefix (unknown → 404, never proxied) → public routes: per-IP limit
(stricter on the auth routes); others: credential and limits (client IP plus user or API key, see
``_admit``) → relay to the peer through aiohttp with a signed identity, streaming the request body up
and the response (SSE included) down chunk by chunk, as it arrives. ``/ws`` goes to
:mod:`coca_gateway.websocket`. Failures answer in the platform's error model: peer unreachable → 503
``upstream_unavailable``, broken answer → 502 ``upstream_unavailable``, silent peer → 504
``upstream_timeout``.

Redis down: rate limits fail open (requests pass, a WARNING is logged; :mod:`coca_gateway.ratelimit`);
JWT session checks fail closed (503; :mod:`coca_platform.auth`); API-key checks go to the user service.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator

import aiohttp
from coca_platform.auth import Authenticator
from coca_platform.errors import CocaError, NotFound, PayloadTooLarge, RateLimited, Unauthenticated
from coca_platform.httpclient import service_url
from coca_platform.identity import IDENTITY_HEADER, SIGNATURE_HEADER, Identity, sign
from coca_platform.web import error_body
from multidict import CIMultiDict
from opentelemetry import propagate
from starlette.types import Message, Receive, Scope, Send
from yarl import URL

from coca_gateway.bodies import BodyFeed, ClientGone, stream_response_body
from coca_gateway.forwarding import client_ip, inbound_headers, outbound_headers
from coca_gateway.ratelimit import Decision, Limit, RateLimiter
from coca_gateway.routing import AUTH_ROUTES, WEBSOCKET_PATH, RoutingTable, is_public, is_safe_path
from coca_gateway.settings import Settings
from coca_gateway.websocket import relay_websocket

log = logging.getLogger(__name__)

_BUFFER_BODY_UP_TO = 64 * 1024  # smaller bodies are read whole: one write, exact Content-Length
_SKIP_AUTO_HEADERS = ("Accept-Encoding", "User-Agent", "Content-Type")
_JSON = (b"content-type", b"application/json")


class Gateway:
    def __init__(
        self,
        settings: Settings,
        *,
        http: aiohttp.ClientSession,
        authenticator: Authenticator,
        limiter: RateLimiter,
        routes: RoutingTable,
    ) -> None:
        self._http, self._auth, self._limiter, self._routes = http, authenticator, limiter, routes
        self._secret = settings.internal_secret.get_secret_value().encode()
        self._hops = settings.trusted_proxy_hops
        self._access_log = settings.access_log
        self._ip_limit, self._auth_ip_limit = (
            settings.rate_limit_ip_per_min,
            settings.rate_limit_auth_ip_per_min,
        )
        self._user_limit, self._key_limit = settings.rate_limit_user_per_min, settings.rate_limit_key_per_min
        self._ws_url = service_url(settings.ws_gateway_service_addr) + WEBSOCKET_PATH
        self._timeout = aiohttp.ClientTimeout(
            total=None,
            sock_connect=settings.upstream_connect_timeout_s,
            sock_read=settings.upstream_read_timeout_s,
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        start = time.perf_counter()
        label, status = "unmatched", 500
        try:
            if scope["type"] == "websocket":
                label, status = WEBSOCKET_PATH, await self._websocket(scope, receive, send)
            elif scope["type"] == "http":
                label, status = await self._http_request(scope, receive, send)
        except PayloadTooLarge:
            status = 413
            raise
        except ClientGone:
            status = 499  # client closed the request (nginx's convention); nothing left to answer
        finally:
            if self._access_log and scope["type"] != "lifespan":
                log.info(
                    "request completed",
                    extra={
                        "data": {
                            "method": scope.get("method", "WS"),
                            "route": label,
                            "status": status,
                            "duration_ms": round((time.perf_counter() - start) * 1000, 2),
                            "request_id": next(
                                (v.decode() for k, v in scope["headers"] if k == b"x-request-id"), None
                            ),
                        }
                    },
                )

    async def _http_request(self, scope: Scope, receive: Receive, send: Send) -> tuple[str, int]:
        method, path = scope["method"], scope["path"]
        route = self._routes.match(path) if is_safe_path(path) else None
        if route is None:
            return "unmatched", await _reject(send, NotFound("no such route"))
        scope["route"] = route  # the platform metrics label requests by route.path (the prefix)
        ip = client_ip(scope, self._hops)
        outbound = outbound_headers(
            scope, trusted_hops=self._hops, keep_authorization=route.forward_authorization
        )
        try:
            if is_public(method, path):
                limits = [Limit(f"ip:{ip}", self._ip_limit)]
                if path in AUTH_ROUTES:
                    limits.append(Limit(f"auth-ip:{ip}", self._auth_ip_limit))
                remaining = _allowed(await self._limiter.check(*limits))
            else:
                identity, remaining = await self._admit(_bearer(outbound.authorization), ip)
                _add_identity(outbound.headers, identity, self._secret)
        except CocaError as exc:
            return route.prefix, await _reject(send, exc)
        propagate.inject(outbound.headers)
        url = route.base_url + (scope.get("raw_path") or path.encode()).decode("latin-1")
        if scope.get("query_string"):
            url += "?" + scope["query_string"].decode("latin-1")
        body: bytes | AsyncIterator[bytes] | None = None
        feed = BodyFeed(receive)
        if outbound.content_length is not None and outbound.content_length <= _BUFFER_BODY_UP_TO:
            body = await feed.read_all() if outbound.content_length else None
        elif outbound.content_length or outbound.chunked:
            body = feed.stream()
        status = await self._relay(method, url, outbound.headers, body, feed, send, remaining, route.upstream)
        return route.prefix, status

    async def _admit(self, credential: str | None, ip: str) -> tuple[Identity, int | None]:
        """Authenticate the caller and charge its limits: the client IP always, then the user (JWT)
        or the API key. Returns the identity and the smallest remaining allowance."""
        ip_limit = Limit(f"ip:{ip}", self._ip_limit)
        if credential is not None and credential.startswith("coca_"):
            # an unknown API key costs a call to the user service: the IP pays before it is checked
            ip_remaining = _allowed(await self._limiter.check(ip_limit))
            identity = await self._auth.authenticate(credential)
            key_limit = Limit(f"key:{identity.api_key_id}", self._key_limit)
            return identity, _least(ip_remaining, _allowed(await self._limiter.check(key_limit)))
        try:
            if credential is None:
                raise Unauthenticated("authentication required")
            identity = await self._auth.authenticate(credential)  # a JWT: verified locally
        except CocaError:
            _allowed(await self._limiter.check(ip_limit))  # failures count against the IP too
            raise
        user_limit = Limit(f"user:{identity.tenant_id}:{identity.user_id}", self._user_limit)
        return identity, _allowed(await self._limiter.check(ip_limit, user_limit))  # one round trip

    async def _relay(
        self,
        method: str,
        url: str,
        headers: CIMultiDict[str],
        body: bytes | AsyncIterator[bytes] | None,
        feed: BodyFeed,
        send: Send,
        remaining: int | None,
        upstream: str,
    ) -> int:
        started = False
        try:
            async with self._http.request(
                method,
                URL(url, encoded=True),
                headers=headers,
                data=body,
                allow_redirects=False,
                timeout=self._timeout,
                skip_auto_headers=_SKIP_AUTO_HEADERS,
                auto_decompress=False,
            ) as resp:
                await send(
                    {
                        "type": "http.response.start",
                        "status": resp.status,
                        "headers": inbound_headers(resp.raw_headers, remaining),
                    }
                )
                started = True
                await stream_response_body(resp, send, feed)
                return resp.status
        except (TimeoutError, aiohttp.ClientError) as exc:
            feed.raise_if_failed()
            if started:  # the status is gone already: drop the connection so the client sees a cut
                log.warning(
                    "upstream stream broken", extra={"data": {"upstream": upstream, "error": repr(exc)}}
                )
                return 502
            if isinstance(exc, TimeoutError):
                return await _reject_status(
                    send, 504, "upstream_timeout", f"the {upstream} service timed out"
                )
            status = 503 if isinstance(exc, aiohttp.ClientConnectorError) else 502
            log.warning("upstream unavailable", extra={"data": {"upstream": upstream, "error": repr(exc)}})
            return await _reject_status(
                send, status, "upstream_unavailable", f"the {upstream} service is unavailable"
            )

    async def _websocket(self, scope: Scope, receive: Receive, send: Send) -> int:
        ip = client_ip(scope, self._hops)
        decision = await self._limiter.check(Limit(f"ip:{ip}", self._ip_limit))
        if not decision.allowed:
            await send({"type": "websocket.close", "code": 1013, "reason": "rate limited"})
            return 429
        if scope["path"] != WEBSOCKET_PATH:
            await send({"type": "websocket.close", "code": 1008, "reason": "no such route"})
            return 404
        outbound = outbound_headers(scope, trusted_hops=self._hops, keep_authorization=False)
        propagate.inject(outbound.headers)
        query = scope.get("query_string", b"").decode("latin-1")
        url = self._ws_url + (f"?{query}" if query else "")
        return await relay_websocket(scope, receive, send, http=self._http, url=url, headers=outbound.headers)


def _add_identity(headers: CIMultiDict[str], identity: Identity, secret: bytes) -> None:
    encoded, signature = sign(identity, secret)
    headers[IDENTITY_HEADER] = encoded.decode()
    headers[SIGNATURE_HEADER] = signature.decode()


def _bearer(authorization: str | None) -> str | None:
    if not authorization:
        return None
    scheme, _, credential = authorization.partition(" ")
    return credential.strip() or None if scheme.lower() == "bearer" else None


def _least(a: int | None, b: int | None) -> int | None:
    return b if a is None else a if b is None else min(a, b)


def _allowed(decision: Decision) -> int | None:
    """The remaining allowance of an allowed check; ``RateLimited`` otherwise."""
    if not decision.allowed:
        retry = decision.retry_after_s
        raise RateLimited(f"too many requests; retry in {retry} s", retry_after=retry)
    return decision.remaining


async def _reject(send: Send, exc: CocaError) -> int:
    headers = [_JSON]
    if isinstance(exc, RateLimited) and exc.retry_after is not None:
        headers += [(b"retry-after", str(exc.retry_after).encode()), (b"x-ratelimit-remaining", b"0")]
    if isinstance(exc, Unauthenticated):
        headers.append((b"www-authenticate", b'Bearer realm="coca"'))
    await _send_json(send, exc.http_status, headers, error_body(exc.code, exc.message))
    return exc.http_status


async def _reject_status(send: Send, status: int, code: str, message: str) -> int:
    await _send_json(send, status, [_JSON], error_body(code, message))
    return status


async def _send_json(send: Send, status: int, headers: list[tuple[bytes, bytes]], body: bytes) -> None:
    start: Message = {"type": "http.response.start", "status": status, "headers": headers}
    await send(start)
    await send({"type": "http.response.body", "body": body})
