"""Input a fuzzer or an attacker sends: odd digits, huge numbers, bytes that are not UTF-8, deep
nesting, ids with a newline, bodies that say they are not JSON. Each is a 4xx naming what is
wrong, never a 500, and nothing is written."""

from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.conftest import Server
from tests.helpers import instance, put, unique

ODD_NUMBERS = ["%C2%B2", "%EF%BC%91", "%D9%A3", "9" * 5000, "1" * 19, "-1", "1e3"]  # ², fullwidth 1, Arabic-Indic 3


@pytest.mark.parametrize("number", ODD_NUMBERS)
@pytest.mark.parametrize(
    ("path", "param"),
    [
        ("/v1/services/{s}", "limit"),
        ("/v1/services/{s}", "index"),
        ("/v1/services", "index"),
        ("/v1/services/{s}/instances/a", "index"),
        ("/v1/nodes", "index"),
        ("/v1/nodes/n", "index"),
    ],
)
def test_numbers_are_ascii_digits_of_bounded_length(shared_server: Server, path: str, param: str, number: str) -> None:
    service = unique("num")
    put(shared_server.http, service, "a")
    response = shared_server.http.get(f"{path.format(s=service)}?{param}={number}&wait=0s")
    assert response.status_code == 400, response.text
    assert response.json()["error"].startswith(f"{param}:")


def test_a_watch_resumes_only_from_an_ascii_index(shared_server: Server) -> None:
    for last in ["1" * 19, "12a"]:
        response = shared_server.http.get("/v1/watch?service=w", headers={"Last-Event-ID": last})
        assert response.status_code == 400 and response.json()["error"].startswith("Last-Event-ID")
    for number in ODD_NUMBERS[:4]:
        response = shared_server.http.get(f"/v1/watch?service=w&index={number}")
        assert response.status_code == 400 and response.json()["error"].startswith("Last-Event-ID")


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("PUT", "/v1/services/{s}/instances/a", b'{"address": "10.0.0.1", "port": 80, "tags": ["\xff\xfe"]}'),
        ("PUT", "/v1/services/{s}/instances/a/heartbeat", b'{"output": "\xc3\x28"}'),
        ("PUT", "/v1/services/{s}/instances/a/maintenance", b'{"enable": true, "reason": "\xe2\x82"}'),
        ("PUT", "/v1/nodes/{s}", b'{"labels": {"k": "\xf0\x28\x8c\x28"}}'),
        ("POST", "/v1/reports", b'[{"service": "\xff", "id": "a", "ok": false}]'),
    ],
)
def test_bodies_that_are_not_utf8_are_400(shared_server: Server, method: str, path: str, body: bytes) -> None:
    service = unique("utf")
    put(shared_server.http, service, "a", port=1234)
    response = shared_server.http.request(
        method, path.format(s=service), content=body, headers={"content-type": "application/json"}
    )
    assert response.status_code == 400, response.text
    assert "UTF-8" in response.json()["error"] or "invalid" in response.json()["error"].lower()
    assert shared_server.http.get(f"/v1/services/{service}/instances/a").json()["port"] == 1234


def test_deeply_nested_bodies_are_400(shared_server: Server) -> None:
    service = unique("deep")
    nested = '{"x":' * 990 + "1" + "}" * 990  # deeper than Python's json module can even write
    body = '{"address": "10.0.0.1", "port": 80, "capabilities": ' + nested + "}"
    response = shared_server.http.put(f"/v1/services/{service}/instances/a", content=body)
    assert response.status_code == 400 and response.json()["error"].startswith(("body", "capabilities"))
    assert shared_server.http.get(f"/v1/services/{service}").json() == []


@pytest.mark.parametrize(
    "path", ["/v1/services/s/instances/nl%0A", "/v1/services/nl%0A/instances/a", "/v1/nodes/n1%0A"]
)
def test_ids_with_a_trailing_newline_are_refused(shared_server: Server, path: str) -> None:
    body = {"kind": "compute"} if path.startswith("/v1/nodes") else instance()
    response = shared_server.http.put(path, json=body)
    assert response.status_code == 400, response.text
    assert response.json()["error"].startswith(("id:", "service:"))


@pytest.mark.parametrize("content_type", ["text/plain", "application/xml", "multipart/form-data; boundary=x"])
def test_a_body_that_says_it_is_not_json_is_415(shared_server: Server, content_type: str) -> None:
    service = unique("ct")
    response = shared_server.http.put(
        f"/v1/services/{service}/instances/a",
        content=json.dumps(instance()),
        headers={"content-type": content_type},
    )
    assert response.status_code == 415 and response.json()["error"].startswith("Content-Type")
    assert shared_server.http.get(f"/v1/services/{service}").json() == []


@pytest.mark.parametrize(
    "content_type", [None, "application/json", "application/json; charset=utf-8", "application/x-www-form-urlencoded"]
)
def test_json_and_curls_default_are_accepted(shared_server: Server, content_type: str | None) -> None:
    service = unique("ok")
    headers = {"content-type": content_type} if content_type else {}
    response = shared_server.http.put(
        f"/v1/services/{service}/instances/a", content=json.dumps(instance()), headers=headers
    )
    assert response.status_code == 200, response.text


def test_selectors_that_cannot_work_say_so(shared_server: Server) -> None:
    service = unique("sel")
    put(shared_server.http, service, "a", capabilities={"l": list(range(200)), "s": "abc"})
    for selector, says in [
        ('instance.capabilities.s.matches("[")', "regular expression"),
        ("instance.capabilities.l.all(x, instance.capabilities.l.all(y, x + y >= 0))", "10,000 iterations"),
    ]:
        response = shared_server.http.get(f"/v1/services/{service}", params={"selector": selector})
        assert response.status_code == 400 and says in response.json()["error"], response.text


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"address": "10.0.0.1\u0000"}, "address"),
        ({"address": "evil\u001b[2J"}, "address"),
        ({"tags": ["ok", "a\u202eb"]}, "tags[1]"),
        ({"tags": ["bell\u0007"]}, "tags[0]"),
        ({"meta": {"owner": "x\u2066y"}}, "meta"),
        ({"node": "n1\n"}, "node"),
        ({"version": "1.0\u0000"}, "version"),
    ],
)
def test_control_and_bidi_characters_are_refused(shared_server: Server, fields: dict[str, object], field: str) -> None:
    service = unique("ctl")
    response = shared_server.http.put(f"/v1/services/{service}/instances/a", json=instance(**fields))
    assert response.status_code == 400 and response.json()["error"].startswith(field), response.text
    assert shared_server.http.get(f"/v1/services/{service}").json() == []


def test_free_text_keeps_its_line_breaks(shared_server: Server) -> None:
    service = unique("text")
    response = shared_server.http.put(f"/v1/services/{service}/instances/a", json=instance(meta={"note": "a\nb\tc"}))
    assert response.status_code == 200 and response.json()["meta"]["note"] == "a\nb\tc"


def test_capability_strings_are_at_most_1024_characters(shared_server: Server) -> None:
    response = shared_server.http.put(
        f"/v1/services/{unique('long')}/instances/a", json=instance(capabilities={"d": ["ok", "x" * 1025]})
    )
    assert response.status_code == 400 and response.json()["error"].startswith("capabilities.d[1]:")


def test_capabilities_nest_at_most_32_deep_and_nodes_count_sanely(shared_server: Server) -> None:
    service = unique("nest")
    nested: object = 1
    for _ in range(33):
        nested = {"x": nested}
    response = shared_server.http.put(f"/v1/services/{service}/instances/a", json=instance(capabilities=nested))
    assert response.status_code == 400 and "32 deep" in response.json()["error"]
    response = shared_server.http.put(f"/v1/nodes/{unique('n')}", json={"resources": {"cpu_cores": 2**70}})
    assert response.status_code == 400 and response.json()["error"].startswith("resources.cpu_cores")


def test_a_costly_selector_is_refused_and_freezes_nothing(shared_server: Server) -> None:
    """Each record takes CEL tens of milliseconds (9,801 iterations, each joining two strings of
    1,024 characters, the longest a capability may hold): together far over the budget, and
    requests in between are served."""
    service = unique("costly")
    for i in range(100):
        put(shared_server.http, service, f"i{i}", capabilities={"l": list(range(99)), "s": "x" * 1024})
    items, s = "instance.capabilities.l", "instance.capabilities.s"
    selector = f"{items}.all(x, {items}.all(y, size({s} + {s}) > 0))"
    with ThreadPoolExecutor(1) as pool:
        costly = pool.submit(shared_server.http.get, f"/v1/services/{service}", params={"selector": selector})
        deadline = time.monotonic() + 10
        while not costly.done() and time.monotonic() < deadline:  # meanwhile the server answers at once
            began = time.monotonic()
            assert shared_server.http.get("/healthz").status_code == 200
            put(shared_server.http, unique("meanwhile"), "a")
            assert time.monotonic() - began < 0.5
        response = costly.result(timeout=10)
    assert response.status_code == 400 and "too costly" in response.json()["error"], response.text
