"""The small pure pieces: durations, deadlines, nearness, selectors, the route table."""

from __future__ import annotations

import asyncio

import pytest

from swarm_discovery.durations import parse_duration
from swarm_discovery.errors import BadRequest
from swarm_discovery.fronts.http.dispatch import Found, RouteTable, WrongMethod
from swarm_discovery.fronts.http.routes import ROUTES
from swarm_discovery.health.deadlines import Deadlines
from swarm_discovery.locality import Near, distance_km, parse_near, sort_near
from swarm_discovery.records import Location
from swarm_discovery.selector import Bindings, compile_selector
from tests.fakes import FakeClock


@pytest.mark.parametrize(
    ("text", "seconds"), [("500ms", 0.5), ("10s", 10), ("2m", 120), ("1m30s", 90), ("1.5h", 5400), ("250us", 0.00025)]
)
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration(text, "interval") == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "10", "s", "10 s", "-1s", "1d", "5s3"])
def test_bad_durations_name_the_field(text: str) -> None:
    with pytest.raises(BadRequest, match=r"^interval: "):
        parse_duration(text, "interval")


def test_deadlines_fire_in_order_and_renewal_postpones() -> None:
    clock = FakeClock()
    fired: list[str] = []

    async def scenario() -> None:
        deadlines = Deadlines(lambda key, due: fired.append(key), clock)
        deadlines.set("a", 10)
        deadlines.set("b", 5)
        deadlines.set("c", 7)
        deadlines.cancel("c")
        clock.advance(6)
        deadlines.expire_due()
        assert fired == ["b"]
        deadlines.set("a", 10)  # renewed at t=6: now due at 16, the entry for 10 is stale
        clock.advance(5)
        deadlines.expire_due()
        assert fired == ["b"]
        clock.advance(5)
        deadlines.expire_due()
        assert fired == ["b", "a"]
        assert deadlines.next_due_in() is None or deadlines.next_due_in() <= 0

    asyncio.run(scenario())


def test_near_parsing() -> None:
    assert parse_near("eu-west") == Near(name="eu-west")
    assert parse_near("52.37,4.9") == Near(lat=52.37, lon=4.9)
    for bad in ("1,2,3", "91,0", "a,b", ""):
        with pytest.raises(BadRequest, match=r"^near: "):
            parse_near(bad)


def test_distance_is_great_circle() -> None:
    assert distance_km(51.5, -0.12, 48.85, 2.35) == pytest.approx(343, abs=3)  # London-Paris
    assert distance_km(0, 0, 0, 180) == pytest.approx(20015, abs=5)


def test_sort_near_by_zone_then_region() -> None:
    places = {
        "a": Location(region="eu", zone="eu-1"),
        "b": Location(region="eu", zone="eu-2"),
        "c": Location(region="us", zone="us-1"),
        "d": None,
    }
    order = sort_near(["d", "c", "b", "a"], Near(name="eu-2"), places.get)
    assert order == ["b", "a", "c", "d"]
    assert sort_near(["d", "c", "b", "a"], Near(name="us"), places.get) == ["c", "b", "a", "d"]


def test_selector_is_compiled_once_and_errors_do_not_match() -> None:
    source = "instance.capabilities.gpu.memory_gb >= 80"
    assert compile_selector(source) is compile_selector(source)
    selector = compile_selector(source)
    assert selector.matches(Bindings({"capabilities": {"gpu": {"memory_gb": 80}}}, {}))
    assert not selector.matches(Bindings({"capabilities": {}}, {}))
    assert not compile_selector('instance.port > "x"').matches(Bindings({"port": 1}, {}))
    with pytest.raises(BadRequest, match=r"selector: .*undeclared reference"):
        compile_selector("pod.x == 1")
    with pytest.raises(BadRequest, match="longer than"):
        compile_selector("true && " * 300 + "true")


def test_route_table_matches_segments_and_tells_wrong_methods() -> None:
    table = RouteTable(ROUTES)
    found = table.find("PUT", "/v1/services/llm/instances/i-1/heartbeat")
    assert isinstance(found, Found)
    assert found.endpoint.path == "/v1/services/{service}/instances/{id}/heartbeat"
    assert found.params == {"service": "llm", "id": "i-1"}
    head = table.find("HEAD", "/v1/services/llm")
    assert isinstance(head, Found) and head.endpoint.method == "GET"
    wrong = table.find("POST", "/v1/services/llm/instances/i-1")
    assert isinstance(wrong, WrongMethod) and wrong.allowed == ["DELETE", "GET", "HEAD", "PUT"]
    assert table.find("GET", "/v1/services//instances/i-1") is None  # an empty segment is no parameter
    assert table.find("GET", "/v1/services/llm/instances/i-1/nope") is None
    assert table.find("GET", "/v2/services") is None
