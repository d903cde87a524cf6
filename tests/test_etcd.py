"""Several `swarm serve` processes on one three-member etcd cluster: what one writes, the others see.

One cluster and two servers for the module (tests use services of their own); the tests that
kill or restart members bring them back before they end, so the next test finds three.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from swarm_discovery.core.cluster import _weight
from swarm_discovery.errors import Unreachable
from swarm_discovery.sdk.client import Client
from swarm_discovery.store.etcd import EtcdStore
from tests.backends import HttpBackend
from tests.conftest import FAST_EXPIRY
from tests.etcd import EtcdCluster
from tests.helpers import ids, instance, put, unique, wait_for
from tests.server import Server, free_port

PREFIX = "ha"
TRUSTED = "127.0.0.3"  # reporters are told apart by address: each client below binds its own


@pytest.fixture(scope="module")
def cluster() -> Iterator[EtcdCluster]:
    etcd = EtcdCluster(3)
    etcd.start()
    yield etcd
    etcd.stop()


def _server(root: Path, name: str, url: str, *args: str) -> Server:
    (root / name).mkdir(parents=True, exist_ok=True)
    return Server(root / name / "data", args=(*FAST_EXPIRY, "--store", url, *args))


@pytest.fixture(scope="module")
def servers(cluster: EtcdCluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, Server]]:
    root = tmp_path_factory.mktemp("ha")
    endpoints = cluster.endpoints
    # Each lists the members in another order, so that they start on different members.
    # Ejections long enough to be seen on both before they end.
    reports = ("--ejection-base", "5s", "--trusted-reporter", TRUSTED)
    a = _server(root, "a", "etcd://" + ",".join(endpoints) + f"/{PREFIX}", *reports)
    b = _server(root, "b", "etcd://" + ",".join(reversed(endpoints)) + f"/{PREFIX}", *reports)
    a.start()
    b.start()
    yield a, b
    a.stop()
    b.stop()


def _run(scenario: object) -> object:
    return asyncio.run(asyncio.wait_for(scenario, 60))  # type: ignore[arg-type]


def test_a_write_through_one_server_shows_on_the_other_at_the_same_index(servers: tuple[Server, Server]) -> None:
    a, b = servers
    service = unique("shared")
    written = put(a.http, service, "i1")
    wait_for(lambda: ids(b.http.get(f"/v1/services/{service}")) == ["i1"], 5)
    # The same durable state: the same index everywhere, which is etcd's revision.
    on_a, on_b = a.http.get(f"/v1/services/{service}"), b.http.get(f"/v1/services/{service}")
    assert on_a.headers["x-swarm-index"] == on_b.headers["x-swarm-index"] == written.headers["x-swarm-index"]
    assert on_b.json()[0]["index"] == written.json()["index"]
    b.http.delete(f"/v1/services/{service}/instances/i1")
    wait_for(lambda: a.http.get(f"/v1/services/{service}/instances/i1").status_code == 404, 5)
    assert a.http.get("/v1/server").json()["store"] == "etcd"


def test_each_server_lists_its_peers_and_etcds_members(servers: tuple[Server, Server]) -> None:
    a, b = servers
    info = a.http.get("/v1/server").json()
    addresses = {peer["address"] for peer in info["peers"]}
    assert addresses == {a.addr, b.addr}
    assert info["id"] in {peer["id"] for peer in info["peers"]}
    assert len(info["members"]) == 3 and all(m["healthy"] for m in info["members"])
    assert sum(m["leader"] for m in info["members"]) == 1
    assert b.http.get("/v1/server").json()["peers"] == info["peers"]


def test_a_heartbeat_to_one_server_renews_the_ttl_on_every_server(servers: tuple[Server, Server]) -> None:
    a, b = servers
    service = unique("ttl")
    put(a.http, service, "i1", checks=[{"type": "ttl", "ttl": "1s"}])
    beat = f"/v1/services/{service}/instances/i1/heartbeat"
    started = time.monotonic()
    n = 0
    while time.monotonic() - started < 3:  # three TTLs, every heartbeat through b only
        assert b.http.put(beat, json={"metrics": {"queue_depth": n}}).status_code == 200
        assert ids(a.http.get(f"/v1/services/{service}")) == ["i1"], "a let the TTL lapse"
        n += 1
        time.sleep(0.2)
    # The metrics reach a too (coalesced: at most a second behind).
    wait_for(lambda: a.http.get(f"{beat.removesuffix('/heartbeat')}").json()["metrics"] == {"queue_depth": n - 1}, 5)
    # Silence everywhere: both let it lapse.
    for server in (a, b):
        wait_for(lambda server=server: ids(server.http.get(f"/v1/services/{service}")) == [], 10)  # type: ignore[misc]


def _beat_lease(cluster: EtcdCluster, service: str, iid: str) -> tuple[int, int] | None:
    """The lease the instance's shared heartbeat is held under in etcd, and that lease's granted TTL."""
    key = base64.b64encode(f"/{PREFIX}/beats/{service}/{iid}".encode()).decode()
    with httpx.Client(base_url=f"http://{cluster.members[0].endpoint}", timeout=2) as http:
        kvs = http.post("/v3/kv/range", json={"key": key}).json().get("kvs", [])
        if not kvs:
            return None
        lease = int(kvs[0].get("lease", 0))
        granted = http.post("/v3/lease/timetolive", json={"ID": lease}).json().get("grantedTTL", 0)
    return lease, int(granted)


def test_a_ttl_instance_holds_an_etcd_lease_that_heartbeats_to_any_server_renew(
    cluster: EtcdCluster, servers: tuple[Server, Server]
) -> None:
    a, b = servers
    service = unique("leased")
    put(a.http, service, "i1", checks=[{"type": "ttl", "ttl": "3s"}])
    beat = f"/v1/services/{service}/instances/i1/heartbeat"
    assert b.http.put(beat, json={}).status_code == 200
    wait_for(lambda: _beat_lease(cluster, service, "i1") is not None, 5)
    found = _beat_lease(cluster, service, "i1")
    assert found is not None
    lease, granted = found
    assert granted == 4, "the instance's own lease, a third longer than its TTL (the servers' last 6 s)"
    started = time.monotonic()
    while time.monotonic() - started < 6:  # past the lease's 4 s: only renewals keep the key
        assert a.http.put(beat, json={}).status_code == 200  # through the other server now
        time.sleep(0.5)
    assert _beat_lease(cluster, service, "i1") == (lease, 4), "a renewed b's lease for the instance"
    assert ids(b.http.get(f"/v1/services/{service}")) == ["i1"]
    # Silence: the lease ends in etcd (its key goes) and the instance lapses on both servers.
    wait_for(lambda: _beat_lease(cluster, service, "i1") is None, 10)
    for server in (a, b):
        wait_for(lambda server=server: ids(server.http.get(f"/v1/services/{service}")) == [], 5)  # type: ignore[misc]


@contextlib.contextmanager
def _other_writes(server: Server) -> Iterator[None]:
    """Registrations through `server` meanwhile, as fast as they go: revisions of other writes."""
    done, service, written, failed = threading.Event(), unique("others"), [0], []

    def write() -> None:
        try:
            with httpx.Client(base_url=server.url, timeout=10) as http:
                while not done.is_set():
                    put(http, service, f"i{written[0] % 10}", meta={"n": str(written[0])})
                    written[0] += 1
        except Exception as exc:  # raised in the test, not lost in the thread
            failed.append(exc)

    writer = threading.Thread(target=write)
    writer.start()
    try:
        yield
    finally:
        done.set()
        writer.join()
    assert not failed, failed
    assert written[0] >= 10, "hardly any other writes: the test did not test what it says"


@pytest.mark.parametrize("others", [False, True], ids=["alone", "among-other-writes"])
def test_live_changes_show_at_the_same_index_on_every_server(servers: tuple[Server, Server], others: bool) -> None:
    """A heartbeat's status, through either server, shows on both at one index: the revision of
    the write that shared it, not an index of the receiving server's own ahead of the store's,
    nor a revision of another write that came before it."""
    a, b = servers
    with _other_writes(b) if others else contextlib.nullcontext():
        _heartbeats_through_each(a, b, unique("live"))
    wait_for(lambda: a.http.get("/v1/server").json()["index"] == b.http.get("/v1/server").json()["index"], 5)


def _heartbeats_through_each(a: Server, b: Server, service: str) -> None:
    put(a.http, service, "i1", checks=[{"type": "ttl", "ttl": "30s"}])
    beat, listing = f"/v1/services/{service}/instances/i1/heartbeat", f"/v1/services/{service}?all=true"
    wait_for(lambda: ids(b.http.get(listing)) == ["i1"], 5)  # registered on both before its beats

    def seen(server: Server) -> tuple[str, str]:
        answer = server.http.get(listing)
        return answer.json()[0]["status"], answer.headers["x-swarm-index"]

    for n, status in enumerate(["warning", "passing", "critical", "passing"]):
        through = (a, b)[n % 2]
        answer = through.http.put(beat, json={"status": status})
        assert answer.status_code == 200 and answer.json()["status"] == status  # the answer shows it at once
        wait_for(lambda status=status: seen(a) == seen(b) and seen(a)[0] == status, 5)  # type: ignore[misc]
    # A status the service's rule makes of a heartbeat's metrics, too.
    rule = {"type": "metric", "name": "q", "critical": "instance.metrics.q > 10.0"}
    assert a.http.put(f"/v1/services/{service}/rules", json={"rules": [rule]}).status_code == 200
    for n, (q, status) in enumerate([(50.0, "critical"), (1.0, "passing"), (60.0, "critical")]):
        answer = (a, b)[n % 2].http.put(beat, json={"metrics": {"q": q}})
        assert answer.status_code == 200 and answer.json()["status"] == status
        wait_for(lambda status=status: seen(a) == seen(b) and seen(a)[0] == status, 5)  # type: ignore[misc]


def test_node_heartbeats_and_service_rules_reach_every_server(servers: tuple[Server, Server]) -> None:
    a, b = servers
    service, node = unique("rules"), unique("node")
    assert a.http.put(f"/v1/nodes/{node}", json={"checks": [{"type": "ttl", "ttl": "1s"}]}).status_code == 200
    put(a.http, service, "i1", node=node)
    rule = {"type": "metric", "name": "q", "critical": "instance.metrics.q > 10.0"}
    assert b.http.put(f"/v1/services/{service}/rules", json={"rules": [rule]}).status_code == 200
    started = time.monotonic()
    while time.monotonic() - started < 3:  # three TTLs, every node heartbeat through b only
        assert b.http.put(f"/v1/nodes/{node}/heartbeat", json={"metrics": {"load": 1.0}}).status_code == 200
        assert a.http.get(f"/v1/nodes/{node}").json()["status"] == "passing", "a let the node's TTL lapse"
        time.sleep(0.2)
    wait_for(lambda: a.http.get(f"/v1/nodes/{node}").json()["metrics"] == {"load": 1.0}, 5)
    # The rule written through b judges the heartbeats a receives, and b hears of it.
    a.http.put(f"/v1/services/{service}/instances/i1/heartbeat", json={"metrics": {"q": 50.0}})
    for server in (a, b):
        wait_for(lambda server=server: ids(server.http.get(f"/v1/services/{service}")) == [], 5)  # type: ignore[misc]


def test_a_client_given_several_servers_moves_past_one_that_does_not_answer(servers: tuple[Server, Server]) -> None:
    a, b = servers
    service = unique("addresses")
    put(a.http, service, "i1")
    dead = f"127.0.0.1:{free_port()}"
    with Client(f"{dead},{b.addr}") as client:
        assert [i.id for i in client.instances(service)] == ["i1"]
        assert client.base_url == b.url  # and it stays there
        events = client.events(service)
        assert next(events).event == "snapshot"
    with Client(f"{dead},127.0.0.1:{free_port()}") as client, pytest.raises(Unreachable, match="nor at"):
        client.services()


def test_a_blocking_query_and_a_watch_on_one_server_wake_for_a_write_through_the_other(
    servers: tuple[Server, Server],
) -> None:
    a, b = servers
    service = unique("wake")
    put(a.http, service, "first")
    wait_for(lambda: ids(b.http.get(f"/v1/services/{service}")) == ["first"], 5)  # else it wakes for this one
    index = int(b.http.get(f"/v1/services/{service}").headers["x-swarm-index"])
    woke: dict[str, float] = {}
    events: list[str] = []
    listed: list[list[str]] = []

    def block() -> None:
        answer = b.http.get(f"/v1/services/{service}", params={"index": index, "wait": "20s"})
        woke["blocking"] = time.monotonic()
        listed.append(sorted(ids(answer)))

    def stream() -> None:
        with httpx.stream("GET", f"{b.url}/v1/watch", params={"service": service}, timeout=20) as answer:
            for line in answer.iter_lines():
                if line.startswith("event: "):
                    events.append(line.removeprefix("event: "))
                if events[-2:] == ["snapshot", "put"] or "put" in events:
                    woke["watch"] = time.monotonic()
                    return

    threads = [threading.Thread(target=block), threading.Thread(target=stream)]
    for thread in threads:
        thread.start()
    wait_for(lambda: "snapshot" in events and b.http.get("/v1/server").json()["watchers"] >= 1, 10)
    written = time.monotonic()
    put(a.http, service, "second")
    for thread in threads:
        thread.join(20)
    assert woke.keys() == {"blocking", "watch"}, woke
    assert all(at - written < 5 for at in woke.values())
    assert listed == [["first", "second"]]


def test_no_acknowledged_write_is_lost_when_the_etcd_leader_is_killed(
    cluster: EtcdCluster, servers: tuple[Server, Server]
) -> None:
    a, b = servers
    service = unique("load")
    leader = cluster.leader()
    acknowledged: list[str] = []
    failed: list[str] = []
    after_kill: list[str] = []
    killed = asyncio.Event()

    async def writer(http: httpx.AsyncClient, name: str) -> None:
        for n in range(10_000):
            iid = f"{name}-{n}"
            try:
                answer = await http.put(f"/v1/services/{service}/instances/{iid}", json=instance())
            except httpx.TransportError:
                failed.append(iid)
                continue
            (acknowledged if answer.status_code == 200 else failed).append(iid)
            if answer.status_code == 200 and killed.is_set():
                after_kill.append(iid)
            if len(after_kill) >= 40:
                return

    async def load() -> None:
        async with (
            httpx.AsyncClient(base_url=a.url, timeout=30) as on_a,
            httpx.AsyncClient(base_url=b.url, timeout=30) as on_b,
        ):
            writers = [
                asyncio.ensure_future(writer(h, f"{s}{k}")) for h, s in ((on_a, "a"), (on_b, "b")) for k in range(4)
            ]
            while len(acknowledged) < 40:
                await asyncio.sleep(0.01)
            await asyncio.to_thread(leader.kill)
            killed.set()
            await asyncio.wait_for(asyncio.gather(*writers), 45)

    try:
        _run(load())
        assert len(after_kill) >= 40  # writes went on without the leader
        for server in (a, b):
            listed = set(ids(server.http.get(f"/v1/services/{service}", params={"all": "true"})))
            assert set(acknowledged) <= listed, sorted(set(acknowledged) - listed)[:5]
    finally:
        leader.start()
        cluster.wait_healthy()


def test_servers_and_their_watchers_resume_after_etcd_restarts(
    cluster: EtcdCluster, servers: tuple[Server, Server]
) -> None:
    a, b = servers
    service, live = unique("restart"), unique("outage")
    put(a.http, service, "before")
    put(a.http, live, "i1", checks=[{"type": "ttl", "ttl": "60s"}])
    beat, live_listing = f"/v1/services/{live}/instances/i1/heartbeat", f"/v1/services/{live}?all=true"
    assert a.http.put(beat, json={}).status_code == 200
    wait_for(lambda: ids(b.http.get(f"/v1/services/{service}")) == ["before"], 5)
    index = int(b.http.get(f"/v1/services/{service}").headers["x-swarm-index"])
    for member in cluster.members:
        member.stop()
    try:
        assert ids(b.http.get(f"/v1/services/{service}")) == ["before"]  # reads come from memory
        refused = a.http.put(f"/v1/services/{service}/instances/during", json=instance())
        assert refused.status_code == 503 and "etcd" in refused.json()["error"]
        # A live change still shows, at an index of a's own: no revision comes for it.
        assert a.http.put(beat, json={"status": "warning"}).status_code == 200
        wait_for(lambda: a.http.get(live_listing).json()[0]["status"] == "warning", 20)
    finally:
        for member in cluster.members:
            member.start()
        cluster.wait_healthy()
    woke: list[httpx.Response] = []
    blocking = threading.Thread(
        target=lambda: woke.append(
            b.http.get(f"/v1/services/{service}", params={"index": index, "wait": "20s"}, timeout=30)
        )
    )
    blocking.start()
    put(a.http, service, "after")  # through a server whose store came back
    blocking.join(30)
    assert sorted(ids(woke[0])) == ["after", "before"]  # the other's feed resumed, and woke it

    # a was ahead of the revision, by the live change shown at its own index; it catches up, so
    # that a write shows at one index on both again.
    writes = iter(range(1000))

    def same_index() -> bool:
        n = str(next(writes))
        put(b.http, service, "after", meta={"n": n})
        instances = f"/v1/services/{service}/instances/after"
        wait_for(lambda: a.http.get(instances).json()["meta"] == {"n": n}, 5)
        return bool(index_of(a) == index_of(b))

    def index_of(server: Server) -> str:
        return str(server.http.get(f"/v1/services/{service}").headers["x-swarm-index"])

    wait_for(same_index, 10)


def test_a_server_whose_history_was_compacted_reloads(
    cluster: EtcdCluster, servers: tuple[Server, Server], tmp_path: Path
) -> None:
    """A server frozen while its member is down, etcd's history compacted meanwhile: when it wakes,
    its watch cannot resume, and it reloads from a snapshot (puts and deletes it missed alike)."""
    a, _ = servers
    only = cluster.members[2]
    c = _server(tmp_path, "c", f"etcd://{only.endpoint}/{PREFIX}")
    c.start()
    service = unique("compacted")
    put(a.http, service, "gone")
    wait_for(lambda: ids(c.http.get(f"/v1/services/{service}")) == ["gone"], 5)
    os.kill(c.worker_pid(), signal.SIGSTOP)
    try:
        only.kill()
        deleted = a.http.delete(f"/v1/services/{service}/instances/gone")
        assert deleted.status_code == 200, deleted.text
        put(a.http, service, "new")
        revision = cluster.members[0].revision()

        async def compact() -> None:
            store = EtcdStore(cluster.endpoints[:2], f"/{PREFIX}/")
            await store.open()
            await store.compact((await store.snapshot()).revision)
            await store.close()

        _run(compact())
        only.start()
        wait_for(lambda: only.revision() >= revision, 15)
    finally:
        os.kill(c.worker_pid(), signal.SIGCONT)
    try:
        wait_for(lambda: ids(c.http.get(f"/v1/services/{service}")) == ["new"], 15)
        assert "reloading everything" in Path(c.log.name).read_text()
        put(a.http, service, "later")  # and it follows the feed again
        wait_for(lambda: len(ids(c.http.get(f"/v1/services/{service}"))) == 2, 5)
    finally:
        c.stop()
        cluster.wait_healthy()


def test_active_checks_are_split_among_the_servers_and_move_when_one_dies(
    cluster: EtcdCluster, servers: tuple[Server, Server], tmp_path: Path
) -> None:
    a, b = servers
    c = _server(tmp_path, "c", cluster.url(PREFIX))
    c.start()
    backend = HttpBackend()
    service = unique("probed")
    try:
        wait_for(lambda: len(a.http.get("/v1/server").json()["peers"]) == 3, 10)
        check = {"type": "http", "url": backend.url, "interval": "200ms"}
        for n in range(30):
            put(a.http, service, f"i{n}", checks=[check])

        def shares() -> list[int]:
            return [s.http.get("/v1/server").json()["checks_here"] for s in (a, b, c)]

        def healthy(server: Server) -> int:
            return len(ids(server.http.get(f"/v1/services/{service}")))

        wait_for(lambda: sum(shares()) == 30, 10)  # each check on exactly one server
        assert all(share > 0 for share in shares()), shares()
        # Each server shows what the others' probes found.
        wait_for(lambda: [healthy(s) for s in (a, b, c)] == [30, 30, 30], 10)
        backend.status = 503
        wait_for(lambda: [healthy(s) for s in (a, b, c)] == [0, 0, 0], 10)
        # Each at the revision of the write that shared it, so the three agree on the index too.
        listing = f"/v1/services/{service}?all=true"
        wait_for(lambda: len({s.http.get(listing).headers["x-swarm-index"] for s in (a, b, c)}) == 1, 5)
        backend.status = 200
        # A client that names c first, and a after it, heartbeating a TTL instance through c.
        with Client(f"{c.addr},{a.addr}", timeout=2) as client:
            client.register(service, "ttl", address="10.0.0.9", port=80, checks=[{"type": "ttl", "ttl": "2s"}])
            with client.keep_alive(service, "ttl", every=0.3):
                wait_for(lambda: "ttl" in ids(b.http.get(f"/v1/services/{service}")), 5)
                c.kill()  # its share moves to the others within a lease TTL, and they probe it
                wait_for(lambda: sum(s.http.get("/v1/server").json()["checks_here"] for s in (a, b)) == 30, 15)
                wait_for(lambda: [healthy(s) for s in (a, b)] == [31, 31], 10)
                assert client.base_url == a.url  # the client moved on, and its heartbeats held the TTL
                assert [i.id for i in client.instances(service) if i.id == "ttl"] == ["ttl"]
    finally:
        backend.stop()
        c.stop()


def test_a_network_cut_that_silences_a_fleet_is_held_alike_on_every_server(
    cluster: EtcdCluster, tmp_path: Path
) -> None:
    """Heartbeats through one server only, whose shared writes (a third of a TTL apart, each
    instance at its own phase) reach the other late: both still see the lapses together, and hold."""
    url = cluster.url(unique("guard"))  # a world of its own: only these checks count
    one, other = (_server(tmp_path, name, url, "--expiry-window", "300ms") for name in ("one", "other"))
    one.start()
    other.start()
    fleet = [(f"svc{s}", f"i{i}") for s in range(4) for i in range(4)]  # four registrants, 16 checks
    try:
        for service, iid in fleet:
            put(one.http, service, iid, checks=[{"type": "ttl", "ttl": "3s"}])

        async def beat(started: float) -> None:
            async with httpx.AsyncClient(base_url=one.url, timeout=10) as http:
                # Each instance starts 60 ms after the one before: its writes, a third of a TTL
                # apart, fall at its own phase, as a fleet's do.
                for n, (service, iid) in enumerate(fleet):
                    await asyncio.sleep(max(started + 0.06 * n - time.monotonic(), 0))
                    await http.put(f"/v1/services/{service}/instances/{iid}/heartbeat", json={})
                while time.monotonic() - started < 3:
                    await asyncio.sleep(0.2)
                    paths = [f"/v1/services/{s}/instances/{i}/heartbeat" for s, i in fleet]
                    await asyncio.gather(*(http.put(path, json={}) for path in paths))

        _run(beat(time.monotonic()))  # then the cut: nothing heartbeats any more

        def held(server: Server) -> bool:
            return bool(server.http.get("/v1/server").json()["expiry_protection"])

        wait_for(lambda: held(one) and held(other), 10)
        for server in (one, other):
            listed = sorted((s, i) for s in {s for s, _ in fleet} for i in ids(server.http.get(f"/v1/services/{s}")))
            assert listed == fleet, f"{server.url} let {sorted(set(fleet) - set(listed))} expire"
    finally:
        one.stop()
        other.stop()


def _reporter(server: Server, address: str) -> httpx.Client:
    return httpx.Client(base_url=server.url, transport=httpx.HTTPTransport(local_address=address), timeout=10)


def _fail(reporter: httpx.Client, service: str, iid: str, times: int = 5) -> None:
    answer = reporter.post("/v1/reports", json=[{"service": service, "id": iid, "ok": False}] * times)
    assert answer.status_code == 200 and answer.json()["accepted"] == times, answer.text


def _ejections(server: Server, service: str) -> dict[str, dict[str, object]]:
    shown = server.http.get(f"/v1/services/{service}", params={"all": "true"}).json()
    return {i["id"]: i["ejected"] for i in shown if i.get("ejected")}


def _fleet(servers: tuple[Server, Server], decided_by: Server) -> str:
    """A service of four instances that both servers list, whose ejections `decided_by` decides
    (the rendezvous of the service among the two)."""
    a, b = servers
    peers = [peer["id"] for peer in a.http.get("/v1/server").json()["peers"]]
    while True:
        service = unique("eject")
        decider = max(peers, key=lambda server: _weight(server, ("ejections", service)))
        if decider == decided_by.http.get("/v1/server").json()["id"]:
            break
    for i in range(4):
        put(a.http, service, f"i{i}")
    wait_for(lambda: len(ids(b.http.get(f"/v1/services/{service}"))) == 4, 5)
    return service


@pytest.mark.parametrize("decider", [0, 1], ids=["a-decides", "b-decides"])
def test_reporters_on_different_servers_make_one_quorum_and_the_ejection_shows_and_ends_alike(
    servers: tuple[Server, Server], decider: int
) -> None:
    a, b = servers
    service = _fleet(servers, servers[decider])
    with _reporter(a, "127.0.0.1") as on_a, _reporter(b, "127.0.0.2") as on_b:
        _fail(on_a, service, "i0")
        assert _ejections(a, service) == _ejections(b, service) == {}  # one reporter's vote
        _fail(on_b, service, "i0")
    wait_for(lambda: _ejections(a, service).keys() == _ejections(b, service).keys() == {"i0"}, 5)
    ejection = _ejections(a, service)["i0"]
    assert ejection["reason"] == "5 failures in a row (2 reporters agree)" and ejection["count"] == 1
    assert _ejections(b, service) == {"i0": ejection}  # the same until, to the microsecond
    for server in (a, b):
        assert ids(server.http.get(f"/v1/services/{service}")) == ["i1", "i2", "i3"]
    listing = f"/v1/services/{service}?all=true"  # at one index: the revision of the ejection's write
    wait_for(lambda: a.http.get(listing).headers["x-swarm-index"] == b.http.get(listing).headers["x-swarm-index"], 5)
    for server in (a, b):  # and it ends on both
        wait_for(lambda server=server: _ejections(server, service) == {}, 10)  # type: ignore[misc]
        assert len(ids(server.http.get(f"/v1/services/{service}"))) == 4


@pytest.mark.parametrize("decider", [0, 1], ids=["a-decides", "b-decides"])
def test_a_trusted_reporters_vote_through_one_server_ejects_on_the_other(
    servers: tuple[Server, Server], decider: int
) -> None:
    a, b = servers
    service = _fleet(servers, servers[decider])
    with _reporter(a, TRUSTED) as trusted:
        _fail(trusted, service, "i2")
    wait_for(lambda: "i2" in _ejections(b, service), 5)
    ejection = _ejections(b, service)["i2"]
    assert ejection["reason"] == "5 failures in a row (a trusted reporter)"
    wait_for(lambda: _ejections(a, service) == {"i2": ejection}, 5)


def test_a_server_that_starts_during_an_ejection_shows_it(
    cluster: EtcdCluster, servers: tuple[Server, Server], tmp_path: Path
) -> None:
    a, b = servers
    service = _fleet(servers, a)
    with _reporter(b, TRUSTED) as trusted:
        _fail(trusted, service, "i1")
    wait_for(lambda: "i1" in _ejections(a, service), 5)
    ejection = _ejections(a, service)["i1"]
    c = _server(tmp_path, "c", cluster.url(PREFIX), "--ejection-base", "5s")
    c.start()
    try:
        assert _ejections(c, service) == {"i1": ejection}  # from the snapshot it loaded
        wait_for(lambda: _ejections(c, service) == {}, 10)  # and ended on time
    finally:
        c.stop()
