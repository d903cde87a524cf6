"""Small builders shared by the tests."""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable
from typing import Any

import httpx

_ids = itertools.count()


def unique(prefix: str) -> str:
    return f"{prefix}-{next(_ids)}"


def instance(**fields: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"address": "10.0.0.1", "port": 8000}
    body.update(fields)
    return body


def put(http: httpx.Client, service: str, iid: str, **fields: Any) -> httpx.Response:
    response = http.put(f"/v1/services/{service}/instances/{iid}", json=instance(**fields))
    assert response.status_code == 200, response.text
    return response


def ids(response: httpx.Response) -> list[str]:
    assert response.status_code == 200, response.text
    return [i["id"] for i in response.json()]


def wait_for(condition: Callable[[], object], seconds: float = 10.0) -> float:
    """Seconds until `condition` held; fails the test past `seconds`."""
    started = time.monotonic()
    while not condition():
        assert time.monotonic() - started < seconds, "the condition never held"
        time.sleep(0.02)
    return time.monotonic() - started
