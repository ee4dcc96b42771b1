"""The Coca error hierarchy: raised by domain code, translated once at each edge.

::

    CocaError                        code               HTTP  gRPC                 retryable
    ├─ InvalidArgument               invalid_argument   422   INVALID_ARGUMENT     no
    │  └─ BadRequest                 bad_request        400   INVALID_ARGUMENT     no
    ├─ Unauthenticated               unauthenticated    401   UNAUTHENTICATED      no
    ├─ PaymentRequired               payment_required   402   FAILED_PRECONDITION  no
    ├─ PermissionDenied              permission_denied  403   PERMISSION_DENIED    no
    ├─ NotFound                      not_found          404   NOT_FOUND            no
    ├─ AlreadyExists                 already_exists     409   ALREADY_EXISTS       no
    │  └─ Conflict                   conflict           409   ABORTED              no
    ├─ PayloadTooLarge               payload_too_large  413   INVALID_ARGUMENT     no
    ├─ QuotaExceeded                 quota_exceeded     429   RESOURCE_EXHAUSTED   no
    │  └─ RateLimited                rate_limited       429   RESOURCE_EXHAUSTED   yes (after retry_after)
    └─ Unavailable                   unavailable        503   UNAVAILABLE          yes
       └─ DeadlineExceeded           deadline_exceeded  504   DEADLINE_EXCEEDED    yes

HTTP: ``web`` renders ``{"error": {"code", "message", "trace_id"}}``. gRPC: ``rpc.ErrorInterceptor``
aborts with ``grpc_status``. Consumers: ``retryable`` errors are retried with backoff, the rest
dead-lettered. Any other exception is a bug: 500 / INTERNAL, logged once with its traceback.
"""

from __future__ import annotations

from typing import ClassVar

import grpc


class CocaError(Exception):
    code: ClassVar[str] = "internal"
    http_status: ClassVar[int] = 500
    grpc_status: ClassVar[grpc.StatusCode] = grpc.StatusCode.INTERNAL
    retryable: ClassVar[bool] = False

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code  # type: ignore[misc]  # a more specific code for clients


class InvalidArgument(CocaError):
    code = "invalid_argument"
    http_status = 422
    grpc_status = grpc.StatusCode.INVALID_ARGUMENT


class BadRequest(InvalidArgument):
    code = "bad_request"
    http_status = 400


class Unauthenticated(CocaError):
    code = "unauthenticated"
    http_status = 401
    grpc_status = grpc.StatusCode.UNAUTHENTICATED


class PaymentRequired(CocaError):
    code = "payment_required"
    http_status = 402
    grpc_status = grpc.StatusCode.FAILED_PRECONDITION


class PermissionDenied(CocaError):
    code = "permission_denied"
    http_status = 403
    grpc_status = grpc.StatusCode.PERMISSION_DENIED


class NotFound(CocaError):
    code = "not_found"
    http_status = 404
    grpc_status = grpc.StatusCode.NOT_FOUND


class AlreadyExists(CocaError):
    code = "already_exists"
    http_status = 409
    grpc_status = grpc.StatusCode.ALREADY_EXISTS


class Conflict(AlreadyExists):
    code = "conflict"
    grpc_status = grpc.StatusCode.ABORTED


class PayloadTooLarge(CocaError):
    code = "payload_too_large"
    http_status = 413
    grpc_status = grpc.StatusCode.INVALID_ARGUMENT


class QuotaExceeded(CocaError):
    code = "quota_exceeded"
    http_status = 429
    grpc_status = grpc.StatusCode.RESOURCE_EXHAUSTED

    def __init__(self, message: str, *, retry_after: int | None = None, code: str | None = None) -> None:
        super().__init__(message, code=code)
        self.retry_after = retry_after


class RateLimited(QuotaExceeded):
    code = "rate_limited"
    retryable = True


class Unavailable(CocaError):
    code = "unavailable"
    http_status = 503
    grpc_status = grpc.StatusCode.UNAVAILABLE
    retryable = True


class DeadlineExceeded(Unavailable):
    code = "deadline_exceeded"
    http_status = 504
    grpc_status = grpc.StatusCode.DEADLINE_EXCEEDED


_BY_GRPC: dict[grpc.StatusCode, type[CocaError]] = {
    grpc.StatusCode.INVALID_ARGUMENT: InvalidArgument,
    grpc.StatusCode.UNAUTHENTICATED: Unauthenticated,
    grpc.StatusCode.PERMISSION_DENIED: PermissionDenied,
    grpc.StatusCode.NOT_FOUND: NotFound,
    grpc.StatusCode.ALREADY_EXISTS: AlreadyExists,
    grpc.StatusCode.ABORTED: Conflict,
    grpc.StatusCode.FAILED_PRECONDITION: PaymentRequired,
    grpc.StatusCode.RESOURCE_EXHAUSTED: QuotaExceeded,
    grpc.StatusCode.UNAVAILABLE: Unavailable,
    grpc.StatusCode.DEADLINE_EXCEEDED: DeadlineExceeded,
}

_BY_HTTP: dict[int, type[CocaError]] = {
    400: BadRequest,
    401: Unauthenticated,
    402: PaymentRequired,
    403: PermissionDenied,
    404: NotFound,
    409: AlreadyExists,
    413: PayloadTooLarge,
    422: InvalidArgument,
    429: QuotaExceeded,
    503: Unavailable,
    504: DeadlineExceeded,
}


def from_grpc_status(status: grpc.StatusCode, message: str) -> CocaError:
    """Map a peer's gRPC status back to the same class (used by typed clients)."""
    return _BY_GRPC.get(status, Unavailable)(message)


def from_http_status(status: int, message: str, code: str | None = None) -> CocaError:
    """Map a peer's HTTP error back to the same class (used by typed HTTP clients)."""
    cls = _BY_HTTP.get(status, Unavailable if status >= 500 else BadRequest)
    return cls(message, code=code)
