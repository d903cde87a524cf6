"""The OpenAI-style paths at the gateway's root: which model a request names, and its prompt.

`POST /v1/chat/completions`, `/v1/completions` and `/v1/embeddings` go to an instance whose
`capabilities.models` lists the body's `model`; `GET /v1/models` lists the models the healthy
fleet serves, in OpenAI's shape. The prompt (the messages' text, the prompt, or the input) is
the pick's key, which the AI-aware strategy cuts into prefix blocks; only as much of it is
kept as that strategy looks at. With another strategy the key is the body's `user`, if any (for
`consistent_hash`: one user's requests stay on one instance).
"""

from __future__ import annotations

import time
from typing import Any

import msgspec

from .errors import GatewayError

MODEL_PATHS = frozenset({"/v1/chat/completions", "/v1/completions", "/v1/embeddings"})
_started = int(time.time())


def parse(body: bytes) -> dict[str, Any]:
    """The request's JSON object, with a `model` that is a string; 400 naming what is wrong."""
    try:
        found = msgspec.json.decode(body)
    except msgspec.DecodeError as exc:
        raise GatewayError(400, "bad_request", f"body: not JSON ({exc})") from None
    if not isinstance(found, dict):
        raise GatewayError(400, "bad_request", "body: expected a JSON object")
    model = found.get("model")
    if not isinstance(model, str) or not model:
        raise GatewayError(400, "bad_request", "model: required, a string naming the model", param="model")
    return found


def _text(value: Any, out: list[str], budget: int) -> int:
    """Append the text in a prompt, message content or input to `out`, up to `budget` characters."""
    if budget <= 0:
        return budget
    if isinstance(value, str):
        out.append(value[:budget])
        return budget - len(out[-1])
    if isinstance(value, list):
        for item in value:
            if isinstance(item, dict):  # a content part: {"type": "text", "text": ...}
                item = item.get("text")
            budget = _text(item, out, budget)
            if budget <= 0:
                break
    return budget


def prompt_key(request: dict[str, Any], limit: int) -> str | None:
    """The first `limit` characters of the prompt, as the model server sees it in order."""
    out: list[str] = []
    messages = request.get("messages")
    if isinstance(messages, list):
        budget = limit
        for message in messages:
            if not isinstance(message, dict):
                continue
            out.append(f"{message.get('role')}:")
            budget = _text(message.get("content"), out, budget - len(out[-1]))
            if budget <= 0:
                break
    else:
        _text(request.get("prompt", request.get("input")), out, limit)
    return "".join(out) or None


def listing(served: dict[str, int]) -> bytes:
    """`GET /v1/models`: OpenAI's list, with how many healthy instances serve each model."""
    data = [
        {"id": model, "object": "model", "created": _started, "owned_by": "swarm", "instances": count}
        for model, count in sorted(served.items())
    ]
    return msgspec.json.encode({"object": "list", "data": data})
