"""Outbound HTTP to user-supplied URLs (tool endpoints, webhooks, push targets), safe from SSRF.

``egress_session(policy, timeout_s=...)`` is an aiohttp session whose connector checks every address
it connects to, after DNS resolution and at connect time, so DNS rebinding cannot slip past it: a
hostname is refused when any of its addresses is refused, and the socket factory checks the address
actually connected to (IP literals never reach a resolver). Refused unless the policy allows them:
loopback, private (RFC 1918, ULA, CGNAT), link-local (169.254.0.0/16 with the cloud metadata
address, fe80::/10), multicast, reserved, unspecified, and the same behind IPv6 wrappers
(IPv4-mapped, 6to4, Teredo, NAT64). The session ignores proxy variables (``trust_env=False``).

``safe_request(session, method, url, policy=..., max_response_bytes=...)`` checks the URL (http or
https, no credentials, an allowed literal address), follows redirects itself re-checking each hop
(``Authorization`` and ``Cookie`` are dropped when the origin changes), and stops reading a body
over the limit. Errors: ``InvalidArgument`` code ``egress_refused`` (a refused URL or destination),
``DeadlineExceeded`` (timeout), ``Unavailable`` (network failure, too many redirects) and
``ResponseTooLarge`` (code ``response_too_large``).

Policy from settings (mix in :class:`EgressSettings`): ``EGRESS_ALLOW_PRIVATE`` (default false)
admits loopback and private ranges, never link-local; ``EGRESS_ALLOWED_HOSTS`` (comma list) admits
hostnames (exact match), IP addresses and CIDR networks (``10.1.0.0/16``) whatever they resolve to.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.connector import AddrInfoType, SocketFactoryType
from aiohttp.resolver import DefaultResolver
from multidict import CIMultiDict, CIMultiDictProxy
from pydantic_settings import BaseSettings, SettingsConfigDict
from yarl import URL

from coca_platform.errors import DeadlineExceeded, InvalidArgument, Unavailable

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

EGRESS_REFUSED = "egress_refused"
_REDIRECTS = frozenset({301, 302, 303, 307, 308})
_PRIVATE_REASONS = frozenset({"loopback", "private", "shared"})
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
_SENSITIVE_HEADERS = ("authorization", "cookie", "proxy-authorization")


class ResponseTooLarge(Unavailable):
    """The destination answered with a body over the limit (not retried: it would do it again)."""

    code = "response_too_large"
    http_status = 502
    retryable = False

    def __init__(self, message: str, *, status: int, headers: Mapping[str, str]) -> None:
        super().__init__(message)
        self.status, self.headers = status, headers


class EgressRefusedError(OSError):
    """Raised inside the connector for a refused address; ``safe_request`` turns it into
    ``InvalidArgument(code="egress_refused")``. Plain session users see it as the ``os_error`` of
    aiohttp's ``ClientConnectorError``."""

    def __init__(self, host: str, address: str, reason: str) -> None:
        super().__init__(f"egress to {host!r} refused: {address} is {reason.replace('_', '-')}")
        self.host, self.address, self.reason = host, address, reason


def _unwrap(ip: IPAddress) -> IPAddress:
    """The IPv4 address behind an IPv6 wrapper (mapped, 6to4, Teredo, NAT64), else ``ip``."""
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return ip.ipv4_mapped
        if ip.sixtofour is not None:
            return ip.sixtofour
        if ip.teredo is not None:
            return ip.teredo[1]
        if ip in _NAT64:
            return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return ip


def refusal_reason(ip: IPAddress) -> str | None:
    """Why ``ip`` is not a public unicast address (``None`` when it is)."""
    inner = _unwrap(ip)
    for candidate in (inner, ip) if inner is not ip else (ip,):
        if candidate.is_unspecified:
            return "unspecified"
        if candidate.is_multicast:
            return "multicast"
        if candidate.is_loopback:
            return "loopback"
        if candidate.is_link_local:
            return "link_local"
        if candidate.is_reserved:
            return "reserved"
        if candidate.is_private:
            return "private"
        if not candidate.is_global:
            return "shared"  # e.g. 100.64.0.0/10 (carrier-grade NAT)
    return None


@dataclass(frozen=True)
class EgressPolicy:
    """Which destinations outbound calls may reach. The default refuses every non-public address.

    ``allowed_hosts`` holds hostnames (matched exactly, case-insensitively) and may hold IP
    addresses; ``allowed_networks`` admits whole networks.
    """

    allow_private: bool = False
    allowed_hosts: frozenset[str] = frozenset()
    allowed_networks: tuple[IPNetwork, ...] = ()
    _names: frozenset[str] = field(init=False, repr=False, compare=False)
    _networks: tuple[IPNetwork, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        names, networks = set(), list(self.allowed_networks)
        for entry in self.allowed_hosts:
            host = entry.strip().lower().rstrip(".")
            try:
                networks.append(ipaddress.ip_network(host.strip("[]"), strict=False))
            except ValueError:
                names.add(host)
        object.__setattr__(self, "_names", frozenset(names))
        object.__setattr__(self, "_networks", tuple(networks))

    @classmethod
    def parse(cls, *, allow_private: bool = False, allowed_hosts: str | Iterable[str] = "") -> EgressPolicy:
        """From settings values: ``allowed_hosts`` a comma list of names, addresses and CIDRs."""
        entries = allowed_hosts.split(",") if isinstance(allowed_hosts, str) else allowed_hosts
        return cls(allow_private, frozenset(e.strip() for e in entries if e.strip()))

    def host_allowed(self, host: str) -> bool:
        """``host`` (a name) is allow-listed: whatever it resolves to may be reached."""
        return host.lower().rstrip(".") in self._names

    def check_address(self, ip: IPAddress) -> str | None:
        """``None`` when ``ip`` may be reached, else the reason it may not."""
        candidates = (ip, _unwrap(ip))
        if any(c in net for c in candidates for net in self._networks if net.version == c.version):
            return None
        reason = refusal_reason(ip)
        if reason is None or (self.allow_private and reason in _PRIVATE_REASONS):
            return None
        return reason


def _parse_ip(address: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(address.strip("[]"))
    except ValueError:
        return None


class _CheckingResolver(AbstractResolver):
    """Resolves with aiohttp's default resolver, then refuses a name with any refused address."""

    def __init__(self, policy: EgressPolicy, approved: set[str]) -> None:
        self._inner, self._policy, self._approved = DefaultResolver(), policy, approved

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        results = await self._inner.resolve(host, port, family)
        if self._policy.host_allowed(host):
            self._approved.update(r["host"] for r in results)  # the socket factory lets these through
            return results
        for result in results:
            ip = _parse_ip(result["host"])
            reason = "unparsable" if ip is None else self._policy.check_address(ip)
            if reason is not None:
                raise EgressRefusedError(host, result["host"], reason)
        return results

    async def close(self) -> None:
        await self._inner.close()


def _socket_factory(policy: EgressPolicy, approved: set[str]) -> SocketFactoryType:
    """The last check, on the address being connected to (covers IP literals, which skip the resolver)."""

    def make(addr_info: AddrInfoType) -> socket.socket:
        family, type_, proto, _, sockaddr = addr_info
        address = str(sockaddr[0])
        if address not in approved:
            ip = _parse_ip(address)
            reason = "unparsable" if ip is None else policy.check_address(ip)
            if reason is not None:
                raise EgressRefusedError(address, address, reason)
        return socket.socket(family=family, type=type_, proto=proto)

    return make


def egress_session(
    policy: EgressPolicy, *, timeout_s: float, limit: int = 100, **aiohttp_kwargs: Any
) -> aiohttp.ClientSession:
    """A session whose every connection is checked against ``policy``; close it (or use it as
    ``async with``). ``timeout_s`` is the default total time of one request (one hop)."""
    if "connector" in aiohttp_kwargs:
        raise ValueError("egress_session makes its own connector")
    approved: set[str] = set()
    connector = aiohttp.TCPConnector(
        limit=limit,
        resolver=_CheckingResolver(policy, approved),
        socket_factory=_socket_factory(policy, approved),
        ttl_dns_cache=10,
    )
    aiohttp_kwargs.setdefault(
        "timeout", aiohttp.ClientTimeout(total=timeout_s, sock_connect=min(timeout_s, 5))
    )
    return aiohttp.ClientSession(
        connector=connector, trust_env=False, raise_for_status=False, **aiohttp_kwargs
    )


def check_url(url: str | URL, policy: EgressPolicy) -> URL:
    """The parsed ``url`` if it may be requested: http(s), a host, no credentials, and, for an IP
    literal host, an allowed address. Names are checked when they are resolved."""
    try:
        parsed = url if isinstance(url, URL) else URL(url)
    except (ValueError, TypeError) as exc:
        raise InvalidArgument(f"not a valid URL: {exc}", code=EGRESS_REFUSED) from exc
    if parsed.scheme not in ("http", "https"):
        raise InvalidArgument(
            f"URL scheme {parsed.scheme!r} is not allowed (http, https)", code=EGRESS_REFUSED
        )
    if not parsed.host:
        raise InvalidArgument("URL has no host", code=EGRESS_REFUSED)
    if parsed.user is not None or parsed.password is not None:
        raise InvalidArgument("URL must not carry credentials", code=EGRESS_REFUSED)
    ip = _parse_ip(parsed.host)
    if ip is not None:
        reason = policy.check_address(ip)
        if reason is not None:
            raise InvalidArgument(str(EgressRefusedError(parsed.host, str(ip), reason)), code=EGRESS_REFUSED)
    return parsed


def _refusal(exc: BaseException) -> EgressRefusedError | None:
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, EgressRefusedError):
            return seen
        nested = getattr(seen, "os_error", None)
        seen = nested if isinstance(nested, BaseException) else seen.__cause__
    return None


async def _read_limited(response: aiohttp.ClientResponse, limit: int) -> bytes:
    declared = response.content_length
    if declared is not None and declared > limit:
        raise ResponseTooLarge(
            f"response of {declared} bytes exceeds the limit of {limit}",
            status=response.status,
            headers=response.headers,
        )
    body = bytearray()
    async for chunk in response.content.iter_chunked(65_536):
        body += chunk
        if len(body) > limit:
            raise ResponseTooLarge(
                f"response exceeds the limit of {limit} bytes",
                status=response.status,
                headers=response.headers,
            )
    return bytes(body)


async def safe_request(
    session: aiohttp.ClientSession,
    method: str,
    url: str,
    *,
    policy: EgressPolicy,
    max_redirects: int = 3,
    max_response_bytes: int,
    timeout_s: float | None = None,
    **kwargs: Any,
) -> tuple[int, CIMultiDictProxy[str], bytes]:
    """``(status, headers, body)`` of the final answer; non-2xx statuses are returned, not raised.
    ``timeout_s`` bounds the whole exchange, redirects included (else each hop has the session's).
    ``kwargs`` go to ``session.request`` (``data``, ``json``, ``headers``, ...)."""
    try:
        async with asyncio.timeout(timeout_s):
            return await _follow(session, method, url, policy, max_redirects, max_response_bytes, kwargs)
    except TimeoutError as exc:
        raise DeadlineExceeded(f"{URL(url).host} did not answer in time") from exc
    except aiohttp.ClientError as exc:
        refused = _refusal(exc)
        if refused is not None:
            raise InvalidArgument(str(refused), code=EGRESS_REFUSED) from exc
        raise Unavailable(f"{URL(url).host} is unavailable: {type(exc).__name__}") from exc


async def _follow(
    session: aiohttp.ClientSession,
    method: str,
    url: str,
    policy: EgressPolicy,
    max_redirects: int,
    limit: int,
    kwargs: dict[str, Any],
) -> tuple[int, CIMultiDictProxy[str], bytes]:
    current = check_url(url, policy)
    headers = CIMultiDict(kwargs.pop("headers", None) or {})
    for hop in range(max_redirects + 1):
        async with session.request(
            method, current, headers=headers, allow_redirects=False, **kwargs
        ) as response:
            location = response.headers.get("Location")
            if response.status not in _REDIRECTS or location is None:
                return response.status, response.headers, await _read_limited(response, limit)
        if hop == max_redirects:
            break
        target = check_url(current.join(URL(location)), policy)
        if response.status == 303 or (response.status in (301, 302) and method.upper() == "POST"):
            method = "GET"
            kwargs = {k: v for k, v in kwargs.items() if k not in ("data", "json")}
            headers.popall("content-type", None)
        if target.origin() != current.origin():
            for name in _SENSITIVE_HEADERS:
                headers.popall(name, None)
        current = target
    raise Unavailable(
        f"{URL(url).host} redirected more than {max_redirects} times", code="too_many_redirects"
    )


class EgressSettings(BaseSettings):
    """Mixin for services that call user-supplied URLs."""

    model_config = SettingsConfigDict(extra="ignore", frozen=True)

    # Let outbound calls to user-supplied URLs reach loopback and private networks (never link-local).
    egress_allow_private: bool = False
    # Comma list of hostnames, IP addresses and CIDR networks outbound calls may always reach.
    egress_allowed_hosts: str = ""

    def egress_policy(self) -> EgressPolicy:
        return EgressPolicy.parse(
            allow_private=self.egress_allow_private, allowed_hosts=self.egress_allowed_hosts
        )


__all__ = [
    "EGRESS_REFUSED",
    "EgressPolicy",
    "EgressRefusedError",
    "EgressSettings",
    "ResponseTooLarge",
    "check_url",
    "egress_session",
    "refusal_reason",
    "safe_request",
]
