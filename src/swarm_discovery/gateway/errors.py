"""The gateway's own answers when it cannot pass a request on, in one shape or OpenAI's.

Everything is `{"error": "<reason>"}`, as the registry answers, except on the OpenAI-style
paths, where clients expect OpenAI's shape: `{"error": {"message", "type", "param", "code"}}`.
`reason` is also the metrics label (`swarm_gateway_errors_total{reason=...}`), from a fixed set.
"""

from __future__ import annotations

from typing import Literal

import msgspec

from ..errors import SwarmError
from .front import Response

Reason = Literal[
    "not_found",  # no such service or path
    "unknown_model",
    "bad_request",
    "too_large",
    "no_view",  # the registry has not been read yet
    "no_instance",  # none healthy
    "saturated",  # every candidate is saturated and the wait ran out
    "busy",  # the gateway's own bounds
    "upstream_failed",
    "upstream_timeout",
]
_TYPES = {400: "invalid_request_error", 404: "invalid_request_error", 413: "invalid_request_error", 429: "rate_limit"}
_encode = msgspec.json.Encoder().encode


class GatewayError(SwarmError):
    def __init__(
        self,
        status: int,
        reason: Reason,
        message: str,
        *,
        retry_after: int | None = None,
        param: str | None = None,
        instance: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status_code = status
        self.reason = reason
        self.retry_after = retry_after
        self.param = param
        self.instance = instance  # the last instance tried, if any

    def response(self, openai: bool) -> Response:
        if openai:
            error = {
                "message": self.message,
                "type": _TYPES.get(self.status_code, "server_error"),
                "param": self.param,
                "code": "model_not_found" if self.reason == "unknown_model" else self.reason,
            }
            body = _encode({"error": error})
        else:
            body = _encode({"error": self.message})
        # Says the answer is the gateway's own, not the instance's (or, to a client that took the
        # gateway for the registry, that it has the wrong address).
        fields = [("Content-Type", "application/json"), ("X-Swarm-Gateway", self.reason)]
        if self.retry_after is not None:
            fields.append(("Retry-After", str(self.retry_after)))
        if self.instance is not None:
            fields.append(("X-Swarm-Instance", self.instance))
        return Response(self.status_code, body, fields)
