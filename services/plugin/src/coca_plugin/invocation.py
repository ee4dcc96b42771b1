"""Calling a tool endpoint: through the egress-checked session, with the plugin's secret as a bearer
token, a deadline and a response-size limit. Failures to get an answer become the plugin service's
error codes; an answer of any HTTP status is returned to the caller as is.

============================  ====  =====================================================
code                          HTTP  when
============================  ====  =====================================================
``tool_timeout``              504   no complete answer within ``TOOL_TIMEOUT_S``
``tool_unavailable``          502   connection failed, TLS failed, too many redirects
``response_too_large``        502   the body passed ``TOOL_MAX_RESPONSE_BYTES``
``egress_refused``            422   the URL, an address it resolves to, or a redirect is refused
============================  ====  =====================================================

One log line per invocation: ids, status, sizes and duration; never the secret or the arguments.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

import aiohttp
from coca_platform.crypto import SecretBox
from coca_platform.egress import EgressPolicy, ResponseTooLarge, safe_request
from coca_platform.errors import CocaError, DeadlineExceeded, Unavailable
from prometheus_client import Counter, Histogram

from coca_plugin.models import Plugin, ToolAnswer, ToolSpec, tool_id

log = logging.getLogger(__name__)

TOOL_INVOCATIONS = Counter(
    "coca_plugin_tool_invocations_total", "Tool endpoint calls by outcome", ["outcome"]
)
TOOL_DURATION = Histogram(
    "coca_plugin_tool_duration_seconds",
    "Tool endpoint call duration",
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)


class ToolTimeout(DeadlineExceeded):
    code = "tool_timeout"


class ToolUnavailable(Unavailable):
    code = "tool_unavailable"
    http_status = 502


@dataclass(frozen=True, slots=True)
class CallLimits:
    timeout_s: float
    max_response_bytes: int
    max_redirects: int


class ToolCaller:
    def __init__(
        self, session: aiohttp.ClientSession, policy: EgressPolicy, box: SecretBox, limits: CallLimits
    ) -> None:
        self._session, self._policy, self._box, self._limits = session, policy, box, limits

    async def call(self, plugin: Plugin, tool: ToolSpec, arguments: bytes) -> ToolAnswer:
        """POST ``arguments`` (JSON) to the tool's endpoint; its answer, or a ``CocaError``."""
        ident = tool_id(plugin.name, tool.name)
        headers = {
            "Content-Type": "application/json",
            "Accept": "application/json, text/plain;q=0.9, */*;q=0.1",
            "User-Agent": "coca-plugin",
            "X-Coca-Tool-Id": ident,
        }
        if plugin.secret_ciphertext is not None:
            headers["Authorization"] = f"Bearer {self._box.decrypt(plugin.secret_ciphertext)}"
        limits, started = self._limits, time.perf_counter()
        outcome, status, size = "ok", 0, 0
        try:
            status, answer_headers, body = await safe_request(
                self._session,
                tool.method,
                tool.endpoint_url,
                policy=self._policy,
                max_redirects=limits.max_redirects,
                max_response_bytes=limits.max_response_bytes,
                timeout_s=limits.timeout_s,
                data=arguments,
                headers=headers,
            )
            size = len(body)
            outcome = "ok" if 200 <= status < 300 else "http_error"
        except ResponseTooLarge as exc:
            outcome = exc.code
            raise ResponseTooLarge(
                f"tool {ident!r} answered more than {limits.max_response_bytes} bytes",
                status=exc.status,
                headers=exc.headers,
            ) from exc
        except DeadlineExceeded as exc:
            outcome = ToolTimeout.code
            raise ToolTimeout(f"tool {ident!r} did not answer within {limits.timeout_s:g} s") from exc
        except Unavailable as exc:
            outcome = ToolUnavailable.code
            raise ToolUnavailable(f"tool {ident!r} is unavailable: {exc.message}") from exc
        except CocaError as exc:  # egress_refused
            outcome = exc.code
            raise
        finally:
            elapsed = time.perf_counter() - started
            TOOL_INVOCATIONS.labels(outcome).inc()
            TOOL_DURATION.observe(elapsed)
            data: dict[str, Any] = {
                "tenant_id": str(plugin.tenant_id),
                "plugin_id": str(plugin.id),
                "tool_id": ident,
                "outcome": outcome,
                "status": status,
                "duration_ms": round(elapsed * 1000),
                "arguments_bytes": len(arguments),
                "response_bytes": size,
            }
            log.info("tool invoked", extra={"data": data})
        content_type = answer_headers.get("Content-Type", "").split(";")[0].strip().lower()
        return ToolAnswer(status, body, content_type, data["duration_ms"])
