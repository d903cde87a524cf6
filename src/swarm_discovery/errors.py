"""Errors raised by the core and translated to HTTP at the API edge.

SwarmError
├── BadRequest      400: the input is wrong; the message names the field
├── Unauthorized    401: a token is needed, or the one given is not known
├── Forbidden       403: the token does not allow it
├── NotFound        404
├── Conflict        409: the record kept changing under a write; nothing was written
├── PayloadTooLarge 413
├── UnsupportedMediaType 415: the body is not JSON
├── TooBusy         429: a bounded resource is taken; try again after `retry_after` seconds
├── StoreError      503: the durable store failed; nothing was acknowledged
└── ApiError        what the SDK raises for an error answer; carries the server's status
    └── Unreachable the server did not answer at all (connection refused, timeout)
"""

from __future__ import annotations


class SwarmError(Exception):
    status_code = 500

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class BadRequest(SwarmError):
    status_code = 400


class Unauthorized(SwarmError):
    status_code = 401


class Forbidden(SwarmError):
    status_code = 403


class NotFound(SwarmError):
    status_code = 404


class Conflict(SwarmError):
    status_code = 409


class PayloadTooLarge(SwarmError):
    status_code = 413


class UnsupportedMediaType(SwarmError):
    status_code = 415


class TooBusy(SwarmError):
    status_code = 429
    retry_after = 5


class StoreError(SwarmError):
    status_code = 503


class ApiError(SwarmError):
    def __init__(self, status_code: int, message: str) -> None:
        super().__init__(message)
        self.status_code = status_code

    def __str__(self) -> str:
        return f"{self.status_code}: {self.message}"


class Unreachable(ApiError):
    def __init__(self, message: str) -> None:
        super().__init__(0, message)

    def __str__(self) -> str:
        return self.message
