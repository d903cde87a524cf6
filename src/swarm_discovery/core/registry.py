"""The in-memory truth: records, health state, and every write.

Every write goes through the registry. Durable writes (registrations, deregistrations,
maintenance, nodes) go to the store through one group commit and are applied here only once
committed; live state (heartbeat metrics, check status, kept by the `HealthMonitor`, and
ejections from clients' reports) changes in memory alone and starts afresh after a restart.
Every change, durable or not, takes the next change index from the `ChangeLog`, which wakes
whoever waits on what it touched and keeps the history that watch streams resume from.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from functools import partial
from typing import Any, TypeVar

import msgspec

from ..balance.outliers import OutlierDetector, OutlierSettings
from ..errors import BadRequest, NotFound
from ..health.check import CheckRuntime, worst
from ..health.monitor import HealthMonitor, Owner
from ..health.protection import ExpiryGuard, ExpirySettings
from ..locality import Near, sort_near
from ..records import (
    HEALTHY,
    CheckState,
    Ejection,
    Heartbeat,
    InstanceRecord,
    InstanceSpec,
    InstanceView,
    Location,
    Maintenance,
    NodeRecord,
    NodeSpec,
    NodeView,
    Report,
    ReportsAccepted,
    ServiceSummary,
    validate_capabilities,
    validate_checks,
)
from ..selector import Bindings, Selector
from ..store import Change, Store
from ..store.commit import GroupCommitter
from .changes import ChangeLog, Event

CATALOG = "catalog"
NODES = "nodes"
T = TypeVar("T")
_encode = msgspec.json.Encoder().encode
_decode_instance = msgspec.json.Decoder(InstanceRecord).decode
_decode_node = msgspec.json.Decoder(NodeRecord).decode


_DEFAULTS: dict[type, dict[str, Any]] = {}


def _plain(view: msgspec.Struct) -> dict[str, Any]:
    """What selectors see: top-level fields with their defaults, so `instance.tags` exists when empty.

    The encoding leaves defaults out; they are filled in from one shared, read-only dict per type.
    """
    kind = type(view)
    defaults = _DEFAULTS.get(kind)
    if defaults is None:
        defaults = _DEFAULTS[kind] = {
            f.encode_name: msgspec.to_builtins(f.default_factory() if f.default is msgspec.NODEFAULT else f.default)
            for f in msgspec.structs.fields(kind)
            if f.default is not msgspec.NODEFAULT or f.default_factory is not msgspec.NODEFAULT
        }
    plain = {**defaults, **msgspec.to_builtins(view)}
    plain["check_states"] = list(plain["check_states"])  # CEL reads lists, not tuples
    return plain


def service_topic(service: str) -> str:
    return f"service/{service}"


MEMO_SELECTORS = 8


class Published(msgspec.Struct, gc=False):
    """One immutable version of an instance as readers see it.

    Its encodings and selector results are made on first use and kept: the next version is a new
    object, so nothing here goes stale, and a query repeated after an unrelated change evaluates
    its selector only on the instances that changed. Like the records, it holds no reference
    cycle, so the garbage collector need not track it (there is one per instance).
    """

    view: InstanceView
    node: dict[str, Any]
    healthy: bool
    _json: bytes | None = None
    _bindings: Bindings | None = None
    _matches: dict[str, bool] = {}

    @classmethod
    def of(cls, view: InstanceView, node: dict[str, Any]) -> Published:
        return cls(view, node, view.status in HEALTHY and view.ejected is None)

    @property
    def json(self) -> bytes:
        if self._json is None:
            self._json = _encode(self.view)
        return self._json

    @property
    def bindings(self) -> Bindings:
        if self._bindings is None:
            self._bindings = Bindings(_plain(self.view), self.node)
        return self._bindings

    def matches(self, selector: Selector) -> bool:
        memo = self._matches
        found = memo.get(selector.source)
        if found is None:
            found = selector.matches(self.bindings)
            if len(memo) >= MEMO_SELECTORS:  # start over: cheaper than finding the oldest, on 10,000 records
                memo.clear()
            memo[selector.source] = found
        return found


class _Instance(msgspec.Struct, gc=False):
    """An instance's current record, live state and published version; untracked, like Published."""

    record: InstanceRecord
    checks: tuple[CheckRuntime, ...]
    metrics: dict[str, float]
    updated_at: float
    published: Published = None  # type: ignore[assignment]  # Registry._publish sets it before any read

    def status(self, node: _Node | None) -> str:
        if self.record.maintenance is not None:
            return "maintenance"
        if not self.checks and node is None:
            return "passing"
        return worst([c.status for c in self.checks] + ([node.status()] if node is not None else []))


class _Node:
    __slots__ = ("checks", "data", "record", "updated_at", "view")

    def __init__(self, record: NodeRecord, checks: tuple[CheckRuntime, ...], now: float) -> None:
        self.record = record
        self.checks = checks
        self.updated_at = now
        self.republish()

    def status(self) -> str:
        return worst([c.status for c in self.checks])

    def republish(self) -> None:
        record = self.record
        self.view = NodeView(
            **msgspec.structs.asdict(record.spec),
            status=self.status(),  # type: ignore[arg-type]
            check_states=tuple(c.state() for c in self.checks),
            index=record.index,
            registered_at=record.registered_at,
            updated_at=self.updated_at,
        )
        self.data = _plain(self.view)


def _instance_owner(service: str, iid: str) -> Owner:
    return ("instance", service, iid)


class Registry:
    def __init__(
        self,
        store: Store,
        clock: Callable[[], float] = time.time,
        expiry: ExpirySettings | None = None,
        outliers: OutlierSettings | None = None,
    ) -> None:
        self.store = store
        self._clock = clock
        self.changes = ChangeLog()
        self._services: dict[str, dict[str, _Instance]] = {}
        self._nodes: dict[str, _Node] = {}
        self._node_services: dict[str, dict[str, int]] = {}  # node id -> service -> instance count
        self._committer = GroupCommitter(store, lambda: self.changes.index)
        self.health = HealthMonitor(self._health_changed, self._critical_too_long, guard=ExpiryGuard(expiry))
        self._background: set[asyncio.Future[Any]] = set()
        self._outlier_settings = outliers or OutlierSettings()
        self._outliers: dict[str, OutlierDetector] = {}  # per service: "at most half ejected" is per pool

    # --- lifecycle -----------------------------------------------------------------------

    async def start(self) -> None:
        snapshot = await self.store.load()
        now = self._clock()
        instances = []
        for key, value in snapshot.items:
            if key.startswith("nodes/"):
                node = _decode_node(value)
                self._put_node(node, now)
            else:
                instances.append(_decode_instance(value))
        for record in instances:
            self._put_instance(record, record.index, now)
        records = [r.index for r in instances] + [n.record.index for n in self._nodes.values()]
        self.changes.restart_at(max([snapshot.revision, *records]))
        self.health.start()

    async def stop(self) -> None:
        await self._committer.drain()
        await self.health.stop()
        self.changes.close()
        await self.store.close()

    # --- the change index: see changes.py -----------------------------------------------------

    @property
    def index(self) -> int:
        return self.changes.index

    def topic_index(self, topic: str) -> int:
        return self.changes.topic(topic)

    async def wait(self, topic: str, index: int, timeout: float) -> None:
        await self.changes.wait(topic, index, timeout)

    def history_since(self, index: int) -> list[Event] | None:
        return self.changes.since(index)

    # --- instances: writes -----------------------------------------------------------------

    def _publish(self, entry: _Instance, index: int) -> None:
        record, spec = entry.record, entry.record.spec
        fields = msgspec.structs.asdict(spec)
        fields["metrics"] = entry.metrics
        node = self._nodes.get(spec.node or "")
        view = InstanceView(
            **fields,
            status=entry.status(node),  # type: ignore[arg-type]
            check_states=tuple(c.state() for c in entry.checks),
            maintenance=record.maintenance,
            ejected=self._ejection(spec.service or "", spec.id or ""),
            index=record.index,
            registered_at=record.registered_at,
            updated_at=entry.updated_at,
        )
        entry.published = Published.of(view, node.data if node else {})
        service = spec.service or ""
        self.changes.record(Event(index, service, spec.id or "", entry.published))
        self.changes.touch((CATALOG, service_topic(service)), index)

    def _put_instance(self, record: InstanceRecord, publish_index: int, now: float | None = None) -> _Instance:
        spec = record.spec
        service, iid = spec.service or "", spec.id or ""
        owner = _instance_owner(service, iid)
        old = self._services.get(service, {}).get(iid)
        if old is not None:
            self._unlink_node(old)
            self.health.untrack(owner, old.checks)
        now = self._clock() if now is None else now
        entry = _Instance(record, self.health.track(owner, spec.checks), spec.metrics, now)
        self._services.setdefault(service, {})[iid] = entry
        if spec.node:
            counts = self._node_services.setdefault(spec.node, {})
            counts[service] = counts.get(service, 0) + 1
        self._publish(entry, publish_index)
        return entry

    def _unlink_node(self, entry: _Instance) -> None:
        spec = entry.record.spec
        if not spec.node:
            return
        counts = self._node_services.get(spec.node, {})
        counts[spec.service or ""] = counts.get(spec.service or "", 1) - 1
        if counts[spec.service or ""] <= 0:
            del counts[spec.service or ""]
        if not counts:
            self._node_services.pop(spec.node, None)

    def _entry(self, service: str, iid: str) -> _Instance:
        entry = self._services.get(service, {}).get(iid)
        if entry is None:
            raise NotFound(f"instance {iid!r} of service {service!r} is not registered")
        return entry

    def _write(
        self, apply: Callable[[int], T], key: str | None = None, value: bytes | None = None, index: int | None = None
    ) -> asyncio.Future[T]:
        """Apply a change in index order: after its durable commit when it has a key, else after
        the writes submitted before it. The future has what `apply` returned once it is applied."""
        index = index or self.changes.next()
        change = Change(key, value, index) if key is not None else None
        return self._committer.submit(change, partial(apply, index))

    async def register(self, service: str, iid: str, spec: InstanceSpec) -> Published:
        if spec.service not in (None, service):
            raise BadRequest(f"service: body says {spec.service!r} but the path says {service!r}")
        if spec.id not in (None, iid):
            raise BadRequest(f"id: body says {spec.id!r} but the path says {iid!r}")
        validate_checks(spec.checks)
        validate_capabilities(spec.capabilities)
        spec = msgspec.structs.replace(spec, service=service, id=iid)
        now = self._clock()
        old = self._services.get(service, {}).get(iid)
        record = InstanceRecord(
            spec=spec,
            registered_at=old.record.registered_at if old else now,
            maintenance=old.record.maintenance if old else None,
            index=self.changes.next(),
        )
        entry = await self._write(
            partial(self._put_instance, record), f"instances/{service}/{iid}", _encode(record), record.index
        )
        return entry.published

    async def deregister(self, service: str, iid: str) -> None:
        self._entry(service, iid)

        def apply(index: int) -> None:
            entry = self._services.get(service, {}).pop(iid, None)
            if entry is None:
                return
            if not self._services[service]:
                del self._services[service]
            self._unlink_node(entry)
            self.health.untrack(_instance_owner(service, iid), entry.checks)
            if service in self._outliers:
                self._outliers[service].forget(iid)
            self.changes.record(Event(index, service, iid, None))
            self.changes.touch((CATALOG, service_topic(service)), index)

        await self._write(apply, f"instances/{service}/{iid}")

    async def set_maintenance(self, service: str, iid: str, enable: bool, reason: str) -> Published:
        entry = self._entry(service, iid)
        maintenance = Maintenance(reason=reason, since=self._clock()) if enable else None
        record = msgspec.structs.replace(entry.record, maintenance=maintenance, index=self.changes.next())

        def apply(index: int) -> None:
            current = self._services.get(service, {}).get(iid)
            if current is not None:
                current.record = msgspec.structs.replace(current.record, maintenance=maintenance, index=index)
                self._republish(service, iid, index)

        await self._write(apply, f"instances/{service}/{iid}", _encode(record), record.index)
        return self._entry(service, iid).published

    async def heartbeat(self, service: str, iid: str, beat: Heartbeat) -> Published:
        """Renew TTL checks and replace live metrics: in memory only, they start afresh on restart."""
        self._entry(service, iid)

        def apply(index: int) -> None:
            entry = self._services.get(service, {}).get(iid)
            if entry is None:
                return
            if beat.metrics is not None:
                entry.metrics = beat.metrics
            owner = _instance_owner(service, iid)
            self.health.heartbeat(owner, entry.checks, beat.status or "passing", beat.output or "")
            entry.updated_at = self._clock()
            self._publish(entry, index)

        await self._write(apply)
        return self._entry(service, iid).published

    def checks(self, service: str, iid: str) -> list[CheckState]:
        """The live state of an instance's checks, newer than any published view."""
        return [c.state() for c in self._entry(service, iid).checks]

    def _in_background(self, work: Any) -> None:
        task = asyncio.ensure_future(work)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    def _health_changed(self, owner: Owner) -> None:
        """A check's status changed: republish its owner, in index order like every change."""
        if owner[0] == "node":
            self._in_background(self._write(lambda index: self._node_health_changed(owner[1], index)))
        else:
            self._republish_soon(owner[1], owner[2])

    def _critical_too_long(self, owner: Owner) -> None:
        if owner[0] == "instance" and owner[2] in self._services.get(owner[1], {}):
            self._in_background(self.deregister(owner[1], owner[2]))

    def _republish_soon(self, service: str, iid: str) -> None:
        """Live state changed outside a request: republish in index order, like every change."""
        self._in_background(self._write(lambda index: self._republish(service, iid, index)))

    def _republish(self, service: str, iid: str, index: int) -> None:
        entry = self._services.get(service, {}).get(iid)
        if entry is not None:
            entry.updated_at = self._clock()
            self._publish(entry, index)

    # --- passive checks: what clients saw ----------------------------------------------------

    def _ejection(self, service: str, iid: str) -> Ejection | None:
        detector = self._outliers.get(service)
        return detector.ejected.get(iid) if detector is not None else None

    def report(self, reports: list[Report]) -> ReportsAccepted:
        """Aggregate clients' observations; eject an instance when they agree that it fails."""
        accepted = 0
        for report in reports:
            entries = self._services.get(report.service)
            if entries is None or report.id not in entries:
                continue
            accepted += 1
            detector = self._outliers.get(report.service)
            if detector is None:
                detector = self._outliers[report.service] = OutlierDetector(self._outlier_settings, self._clock)
            ejection = detector.observe(report.id, report.ok, len(entries))
            if ejection is not None:
                self._republish_soon(report.service, report.id)
                self._release_at(report.service, ejection.until)
        return ReportsAccepted(accepted=accepted, ignored=len(reports) - accepted)

    def _release_at(self, service: str, until: float) -> None:
        delay = max(until - self._clock(), 0.0)
        asyncio.get_running_loop().call_later(delay, self._release_ejections, service, until)

    def _release_ejections(self, service: str, until: float) -> None:
        detector = self._outliers.get(service)
        if detector is None:
            return
        for iid in detector.release_due():
            self._republish_soon(service, iid)
        if any(e.until <= until for e in detector.ejected.values()):
            # The loop's timers run on a millisecond clock and may fire just before the wall clock
            # reaches `until`: without a second try that ejection would never end.
            self._release_at(service, until)

    # --- instances: reads ------------------------------------------------------------------

    def instance(self, service: str, iid: str) -> Published:
        return self._entry(service, iid).published

    def instances(
        self,
        service: str,
        *,
        tags: list[str] = [],  # noqa: B006 - never mutated
        selector: Selector | None = None,
        include_all: bool = False,
        near: Near | None = None,
        limit: int | None = None,
    ) -> list[Published]:
        found = []
        for entry in self._services.get(service, {}).values():
            state = entry.published
            if not include_all and not state.healthy:
                continue
            if tags and not all(tag in state.view.tags for tag in tags):
                continue
            if selector is not None and not state.matches(selector):
                continue
            found.append(state)
        if near is not None:
            found = sort_near(found, near, self._location)
        return found[:limit] if limit is not None else found

    def _location(self, state: Published) -> Location | None:
        if state.view.location is not None:
            return state.view.location
        node = self._nodes.get(state.view.node or "")
        return node.record.spec.location if node else None

    def services(self) -> list[ServiceSummary]:
        summaries = []
        for name in sorted(self._services):
            entries = self._services[name].values()
            tags: set[str] = set()
            versions: set[str] = set()
            healthy = 0
            for entry in entries:
                view = entry.published.view
                tags.update(view.tags)
                if view.version:
                    versions.add(view.version)
                healthy += entry.published.healthy
            summaries.append(
                ServiceSummary(
                    name=name, instances=len(entries), healthy=healthy, tags=sorted(tags), versions=sorted(versions)
                )
            )
        return summaries

    def counts(self) -> dict[str, int]:
        counts = {"passing": 0, "warning": 0, "critical": 0, "maintenance": 0}
        for entries in self._services.values():
            for entry in entries.values():
                counts[entry.published.view.status] += 1
        return counts

    @property
    def instance_count(self) -> int:
        return sum(len(entries) for entries in self._services.values())

    # --- nodes -----------------------------------------------------------------------------

    def _put_node(self, record: NodeRecord, now: float) -> None:
        nid = record.spec.id or ""
        owner = ("node", nid)
        old = self._nodes.get(nid)
        if old is not None:
            self.health.untrack(owner, old.checks)
        self._nodes[nid] = _Node(record, self.health.track(owner, record.spec.checks), now)

    async def put_node(self, nid: str, spec: NodeSpec) -> NodeView:
        if spec.id not in (None, nid):
            raise BadRequest(f"id: body says {spec.id!r} but the path says {nid!r}")
        validate_checks(spec.checks)
        if any(check.type == "ttl" for check in spec.checks):
            raise BadRequest("checks: nodes take http, tcp and grpc checks; TTL checks belong to instances")
        spec = msgspec.structs.replace(spec, id=nid)
        old = self._nodes.get(nid)
        registered_at = old.record.registered_at if old else self._clock()
        record = NodeRecord(spec=spec, registered_at=registered_at, index=self.changes.next())

        def apply(index: int) -> None:
            self._put_node(record, self._clock())
            self._node_changed(nid, index)

        await self._write(apply, f"nodes/{nid}", _encode(record), record.index)
        return self._nodes[nid].view

    async def delete_node(self, nid: str) -> None:
        self.node(nid)

        def apply(index: int) -> None:
            node = self._nodes.pop(nid, None)
            if node is not None:
                self.health.untrack(("node", nid), node.checks)
                self._node_changed(nid, index)

        await self._write(apply, f"nodes/{nid}")

    def _node_changed(self, nid: str, index: int) -> None:
        """Instances on the node see it in selectors and inherit its health: republish them."""
        for service in list(self._node_services.get(nid, {})):
            for entry in self._services.get(service, {}).values():
                if entry.record.spec.node == nid:
                    self._publish(entry, index)
        self.changes.touch((NODES,), index)

    def _node_health_changed(self, nid: str, index: int) -> None:
        node = self._nodes.get(nid)
        if node is not None:
            node.updated_at = self._clock()
            node.republish()
            self._node_changed(nid, index)

    def node(self, nid: str) -> NodeView:
        node = self._nodes.get(nid)
        if node is None:
            raise NotFound(f"node {nid!r} is not registered")
        return node.view

    def nodes(self, *, selector: Selector | None = None, kind: str | None = None) -> list[NodeView]:
        found = []
        for nid in sorted(self._nodes):
            node = self._nodes[nid]
            if kind is not None and node.record.spec.kind != kind:
                continue
            if selector is not None and not selector.matches(Bindings({}, node.data)):
                continue
            found.append(node.view)
        return found

    @property
    def node_count(self) -> int:
        return len(self._nodes)
