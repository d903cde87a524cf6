"""The in-memory truth: records, health state, and every write.

Durable writes (registrations, deregistrations, maintenance, nodes) are transactions on the store,
each built from the current record and conditional on its revision being the one it was built
from: a write that raced another is rebuilt from what the other left and tried again, so nothing
acknowledged is overwritten unseen. The registry applies durable changes only as they come back
from the store's change feed, wherever they were written, and acknowledges a write once it is
applied here, so a client reads its own writes.

Live state (heartbeats and metrics, check results, ejections from clients' reports) has its own
lane: it changes memory at once, never waits behind a disk commit, and starts afresh after a
restart. Every change, durable or live, takes the next change index from the `ChangeLog`, which
wakes whoever waits on what it touched and keeps the history watch streams resume from.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import logging
import math
import time
from collections.abc import Callable, Sequence
from typing import Any, Protocol

import msgspec

from ..balance.outliers import OutlierSettings
from ..balance.quorum import QuorumDetector, Reporters, ReportSettings, Vote
from ..errors import BadRequest, Conflict, NotFound, StoreError
from ..health.check import CheckRuntime, worst
from ..health.limits import ProbeSettings
from ..health.metric import validate_rules
from ..health.monitor import HealthMonitor, Owner, registrant_of
from ..health.protection import ExpiryGuard, ExpirySettings
from ..locality import Near, sort_near
from ..records import (
    MAX_METRICS,
    CheckState,
    CheckStatus,
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
    Status,
    validate_checks,
)
from ..selector import Bindings, Selector
from ..store import Compacted, Compare, Delete, Op, Put, Snapshot, Store, StoreEvent, TxnResult, WatchBatch
from .changes import ChangeLog, Event
from .published import ENCODINGS, Published, admitted, plain, view_of
from .quotas import Census, Claim, Quotas
from .rules import RulesBook
from .shared import Shared

CATALOG = "catalog"
NODES = "nodes"
WRITE_ATTEMPTS = 32
QUIET_EVERY = 1.0  # new metrics and check output reach readers at most this often per instance
RELOAD_PAUSE = 1.0  # between tries to reload from a store that failed
META = "meta/"
# The change index, stored with a durable write at most once a second: after a restart indexes go
# on a million above it (more than can be handed out in a second), so an index a client saw
# before is not handed out again for something else. Indexes are compared, never counted.
INDEX_MARK = "meta/index"
MARK_EVERY = 1.0
MARK_MARGIN = 1_000_000  # a write rebuilt this often without landing answers 409
# On a shared store, live changes show at the next revision the feed brings: when none came this
# long after one (the shared heartbeats' writes come every 50 ms), this server writes one.
TICK_AFTER = 0.1
TICK = "meta/tick"
# A server that showed live changes at indexes of its own (the store out of reach) is that many
# ahead of the revisions, and would stay so, each revision moving it on by one: it has the store
# pass as many revisions, which move no server's index, so that the next one is every server's
# index once more. CATCH_UP_AT_ONCE at a time.
CATCH_UP_AT_ONCE = 64
_encode = msgspec.json.Encoder().encode
_decode_instance = msgspec.json.Decoder(InstanceRecord).decode
_decode_node = msgspec.json.Decoder(NodeRecord).decode
log = logging.getLogger("swarm.registry")


class Follower(Protocol):
    """Another part of the core whose keys live in the store beside the records (tokens)."""

    def apply(self, key: str, value: bytes | None, revision: int) -> None: ...

    def known(self) -> dict[str, int]:
        """Each key applied, with its mod revision: what a resync compares with a snapshot."""
        ...


def service_topic(service: str) -> str:
    return f"service/{service}"


def instance_key(service: str, iid: str) -> str:
    return f"instances/{service}/{iid}"


def node_key(nid: str) -> str:
    return f"nodes/{nid}"


_SPEC_FIELDS = InstanceSpec.__struct_fields__
_NO_NODE: dict[str, Any] = {}  # what selectors see as `node` without one; shared, never changed


class _Instance(msgspec.Struct, gc=False):
    """An instance's current record, live state and published version; untracked, like Published.

    The spec's fields live in the published view alone (a second copy per instance would cost
    more than the rest of this entry); `record()` makes the stored record again for a write.
    """

    revision: int  # the store's mod revision of the record: what a conditional write compares
    index: int  # the change index at which the record was applied
    registered_at: float
    maintenance: Maintenance | None
    registered_metrics: dict[str, float]  # the spec's own, which the stored record keeps
    checks: tuple[CheckRuntime, ...]
    metrics: dict[str, float]  # live: the latest heartbeat's, else the spec's
    updated_at: float
    published: Published = None  # type: ignore[assignment]  # Registry._publish sets it before any read
    published_at: float = 0.0  # monotonic: when `published` was made
    registrant: str | None = None  # as stored: who registered it, None for its service
    scraped: dict[str, float] | None = None  # what its metric checks' scrapes read last, over `metrics`

    @property
    def view(self) -> InstanceView:
        return self.published.view

    def record(self, maintenance: Maintenance | None) -> InstanceRecord:
        view = self.published.view
        spec = InstanceSpec(**{name: getattr(view, name) for name in _SPEC_FIELDS})
        spec.metrics = self.registered_metrics
        return InstanceRecord(
            spec=spec, registered_at=self.registered_at, maintenance=maintenance, registrant=self.registrant
        )

    def status(self, node: _Node | None) -> Status:
        if self.maintenance is not None:
            return "maintenance"
        if not self.checks and node is None:
            return "passing"
        return worst([c.status for c in self.checks] + ([node.status()] if node is not None else []))


class _Node:
    __slots__ = (
        "checks",
        "data",
        "index",
        "metrics",
        "record",
        "revision",
        "scraped",
        "shown_at",
        "updated_at",
        "view",
    )

    def __init__(
        self,
        record: NodeRecord,
        revision: int,
        index: int,
        checks: tuple[CheckRuntime, ...],
        now: float,
        metrics: dict[str, float],
    ):
        self.record = record
        self.revision = revision
        self.index = index
        self.checks = checks
        self.updated_at = now
        self.metrics = metrics  # live, from its heartbeats (and scrapes): in memory only
        self.scraped: dict[str, float] | None = None
        self.shown_at = time.monotonic()  # when a change of it last moved the index
        self.republish()

    def status(self) -> CheckStatus:
        return worst([c.status for c in self.checks])

    def republish(self) -> None:
        record = self.record
        self.view = NodeView(
            **msgspec.structs.asdict(record.spec),
            status=self.status(),
            metrics=self.metrics,
            check_states=tuple(c.state() for c in self.checks),
            index=self.index,
            registered_at=record.registered_at,
            updated_at=self.updated_at,
        )
        self.data = plain(self.view)


class _Local(msgspec.Struct, gc=False):
    """A value this server encoded for the store, with what it was made from and what became of it.

    The feed hands back the very bytes object, so the apply step need not decode it again, and
    the writer learns the version it created even if a later write has replaced it since. Its
    record and result are untracked Structs, so it cannot be part of a cycle either.
    """

    value: bytes
    record: Any
    result: Any = None


def _instance_owner(service: str, iid: str) -> Owner:
    return ("instance", service, iid)


class Registry:
    def __init__(
        self,
        store: Store,
        clock: Callable[[], float] = time.time,
        expiry: ExpirySettings | None = None,
        outliers: OutlierSettings | None = None,
        probes: ProbeSettings | None = None,
        reports: ReportSettings | None = None,
        quotas: Quotas | None = None,
    ) -> None:
        self.store = store
        self._clock = clock
        self.changes = ChangeLog()
        self._services: dict[str, dict[str, _Instance]] = {}
        self._nodes: dict[str, _Node] = {}
        self._node_services: dict[str, dict[str, int]] = {}  # node id -> service -> instance count
        self._shared = Shared()
        self.health = HealthMonitor(
            self._health_changed,
            self._critical_too_long,
            guard=ExpiryGuard(expiry),
            probes=probes,
            on_output=self._quietly_changed,
            on_metrics=self._scraped,
        )
        self._background: set[asyncio.Task[Any]] = set()
        self._timers: dict[int, asyncio.Handle] = {}  # ejections' releases, each dropped as it runs
        self._outlier_settings = outliers or OutlierSettings()
        self._report_settings = reports or ReportSettings()
        self._outliers: dict[str, QuorumDetector] = {}  # per service: "at most half ejected" is per pool
        self._reporters = Reporters(self._outlier_settings)
        self.census = Census(quotas)  # instances per registrant, for the caps
        self._applied = 0  # the store revision applied so far
        self._catching_up: list[tuple[int, int, asyncio.Future[None]]] = []  # (revision, seq, future) heap
        self._seq = itertools.count()
        self._local: dict[int, _Local] = {}  # id(value) -> what this server wrote, until applied
        self._follow: asyncio.Task[None] | None = None
        self._unreadable: dict[str, int] = {}  # key -> revision of a stored value this version cannot read
        self._quiet: dict[tuple[str, str], asyncio.TimerHandle] = {}  # quiet changes waiting to show
        self._quiet_nodes: dict[str, asyncio.TimerHandle] = {}  # the same for nodes
        self._index_mark: int | None = None  # the change index stored last, if ever
        # When the next durable write stores the change index again; never on a shared store,
        # where the servers' indexes follow its revisions and one server's mark would set it apart.
        self._mark_due = math.inf if store.shared else 0.0
        self._waiting_to_show: dict[tuple[Any, ...], None] = {}  # (show, *owner): live changes, in order
        # Live changes that show at the revision of the write that shares them (cluster.py), apart
        # from those waiting for any revision: holder -> their (show, *owner) keys, and back.
        self._held: dict[Owner, dict[tuple[Any, ...], None]] = {}
        self._holder_of: dict[tuple[Any, ...], Owner] = {}
        self._fresh: set[Owner] = set()  # holders with changes since `hold` last asked
        self._ticking: asyncio.TimerHandle | None = None
        self._catch_up_task: asyncio.Task[None] | None = None
        self._showing_now = False
        self._stopping = False
        self._followers: dict[str, Follower] = {}  # key prefix ("acl") -> who applies those keys
        self.on_heartbeat: Callable[[Owner, Heartbeat], None] | None = None
        self.on_health_changed: Callable[[Owner], None] | None = None  # after it is republished
        # On a shared store (cluster.py): votes cast here go to the other servers, and a service's
        # ejections are decided by one server, which shares them.
        self.on_vote: Callable[[str, str, Vote], None] | None = None
        self.on_ejection: Callable[[str, str, Ejection], None] | None = None
        self.decides: Callable[[str], bool] = lambda service: True
        self.rules = RulesBook(self.commit, self._rules_changed, clock)
        self.follow("rules", self.rules)

    def follow(self, kind: str, follower: Follower) -> None:
        """Hand stored changes of keys under `kind/` to `follower`, in order with every other change."""
        self._followers[kind] = follower

    async def commit(self, compares: Sequence[Compare], ops: Sequence[Op]) -> TxnResult:
        """Commit a transaction of a follower's keys; answered once the feed has applied it here."""
        if self._stopping:
            raise StoreError("the server is stopping; nothing was written")
        result = await self.store.txn(compares, ops)
        await self._caught_up(result.revision)
        return result

    # --- lifecycle -----------------------------------------------------------------------

    async def start(self) -> None:
        snapshot = await self.store.open()
        self._load(snapshot)
        # After the load, which published every record at its own revision: indexes go on above
        # every one handed out before the last durable write, and no watch resumes from before.
        marked = self._index_mark + MARK_MARGIN if self._index_mark is not None else 0
        self.changes.restart_at(max(snapshot.revision, marked))
        self.health.start()
        self._follow = asyncio.get_running_loop().create_task(self._follow_store(snapshot.revision + 1))

    def _load(self, snapshot: Snapshot) -> None:
        now = self._clock()
        nodes = [kv for kv in snapshot.items if kv.key.startswith("nodes/")]
        instances = (kv for kv in snapshot.items if not kv.key.startswith("nodes/"))
        # Instances read their node's data when published. One event at a time, not a list of
        # 100,000: those would leave that much memory behind, freed but still the process's.
        for kv in itertools.chain(nodes, instances):
            self._apply_event(StoreEvent(kv.key, kv.value, kv.mod_revision, kv.lease), kv.mod_revision, now)
        self._applied = snapshot.revision

    async def _follow_store(self, revision: int) -> None:
        """Apply every committed change, from here or elsewhere, as the store's feed brings it.

        This is the one way durable changes reach memory, and every acknowledgement waits on
        it: whatever goes wrong, it reloads and goes on rather than end.
        """
        while True:
            try:
                async for batch in self.store.watch(revision):
                    self._apply(batch)
                    revision = batch.revision + 1
                return  # the store closed its feed: it is shutting down
            except Compacted as exc:
                log.warning("the store's feed moved on (%s); reloading everything", exc)
            except Exception:
                log.exception("following the store failed; reloading everything")
                await asyncio.sleep(RELOAD_PAUSE)
            revision = await self._reload()

    async def _reload(self) -> int:
        """Resync from a fresh snapshot, as often as it takes; the revision to follow from."""
        while True:
            try:
                snapshot = await self.store.snapshot()
                self._resync(snapshot)
                return snapshot.revision + 1
            except Exception:
                if self._stopping:
                    raise  # the store is closed: the feed is done with
                log.exception("reloading from the store failed; trying again")
                await asyncio.sleep(RELOAD_PAUSE)

    def _apply(self, batch: WatchBatch) -> None:
        now = self._clock()
        revision, index = 0, self.changes.index
        for event in batch.events:
            if event.revision != revision:  # one change index per store revision
                revision, index = event.revision, self.changes.advance(event.revision)
            self._apply_event(event, index, now)
        if batch.events:
            self._show_waiting(index)
        self._caught_up_to(batch.revision)
        if self.changes.index > batch.revision and self.store.shared and self._catch_up_task is None:
            self._catch_up_task = self._in_background(self._catch_up())

    def _resync(self, snapshot: Snapshot) -> None:
        """Make memory equal a fresh snapshot: apply what differs, drop what is gone."""
        index, now = self.changes.advance(snapshot.revision), self._clock()
        self._local.clear()  # what the feed would have handed back: their writers read memory instead
        current = {kv.key: kv for kv in snapshot.items if not kv.key.startswith(META)}
        known = {instance_key(s, i): e.revision for s, entries in self._services.items() for i, e in entries.items()}
        known.update({node_key(n): node.revision for n, node in self._nodes.items()})
        known.update(self._unreadable)
        for follower in self._followers.values():
            known.update(follower.known())
        for key in known.keys() - current.keys():
            self._apply_event(StoreEvent(key, None, snapshot.revision), index, now)
        for key, kv in current.items():
            if known.get(key) != kv.mod_revision:
                self._apply_event(StoreEvent(key, kv.value, kv.mod_revision, kv.lease), index, now)
        for holder in list(self._held):  # the writes sharing them may be among the revisions skipped
            self.release(holder, index)
        self._show_waiting(index)
        self._caught_up_to(snapshot.revision)

    def _caught_up_to(self, revision: int) -> None:
        self._applied = max(self._applied, revision)
        waiting = self._catching_up
        while waiting and waiting[0][0] <= self._applied:
            future = heapq.heappop(waiting)[2]
            if not future.done():
                future.set_result(None)

    def _caught_up(self, revision: int) -> asyncio.Future[None]:
        """Done once everything up to `revision` is applied here."""
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if revision <= self._applied:
            future.set_result(None)
        else:
            heapq.heappush(self._catching_up, (revision, next(self._seq), future))
        return future

    async def stop(self) -> None:
        self._stopping = True
        for timer in [*self._timers.values(), *self._quiet.values(), *self._quiet_nodes.values()]:
            timer.cancel()
        if self._ticking is not None:
            self._ticking.cancel()
        for task in list(self._background):
            task.cancel()
        await asyncio.gather(*self._background, return_exceptions=True)
        await self.health.stop()
        self.changes.close()
        await self.store.close()  # ends the feed once what was committed has been handed over
        if self._follow is not None:
            await asyncio.gather(self._follow, return_exceptions=True)
        for _, _, future in self._catching_up:
            future.cancel()
        self._catching_up.clear()

    # --- the change index: see changes.py -----------------------------------------------------

    @property
    def index(self) -> int:
        return self.changes.index

    def topic_index(self, topic: str) -> int:
        return self.changes.topic(topic)

    async def wait(self, topic: str, index: int, timeout: float) -> None:
        await self.changes.wait(topic, index, timeout)

    def history_since(self, index: int) -> list[Event] | None:
        """What changed after `index`, oldest first, each with the version it made; None when the
        history no longer reaches back that far.

        An older change no longer holds its version (see changes.py): it is replayed only if it
        is the instance's last one here, with the instance as it is now, which is what it made.
        """
        changes = self.changes.since(index)
        if changes is None or all(type(change) is Event for change in changes):
            return changes  # type: ignore[return-value]
        last = {(change.service, change.id): change.index for change in changes}
        events = []
        for change in changes:
            if type(change) is Event:
                events.append(change)
            elif last[change.service, change.id] == change.index:
                entry = self._services.get(change.service, {}).get(change.id)
                events.append(Event(change.index, change.service, change.id, entry.published if entry else None))
        return events

    # --- durable writes ----------------------------------------------------------------------

    async def _write(
        self,
        key: str,
        build: Callable[[], tuple[int, _Local | None]],
        current: Callable[[], Any] | None = None,
        retry: bool = True,
    ) -> _Local | None:
        """Commit what `build` makes of the current state, if that state is still current.

        `build` returns the mod revision it read and the value to put (None deletes), or raises
        (NotFound, BadRequest) when the current state allows no write. When another write got
        there first, memory catches up with it and `build` runs again on what it left (unless
        `retry` is off: then the write is dropped). The result is what the write made, or, if
        memory was reloaded meanwhile, what `current()` finds.
        """
        for _ in range(WRITE_ATTEMPTS):
            if self._stopping:
                raise StoreError("the server is stopping; nothing was written")
            revision, local = build()
            ops: list[Op]
            if local is None:
                ops = [Delete(key)]
            else:
                ops = [Put(key, local.value)]
                self._local[id(local.value)] = local
            now = time.monotonic()
            if now >= self._mark_due:
                ops.append(Put(INDEX_MARK, str(self.changes.index).encode()))
                self._mark_due = now + MARK_EVERY
            try:
                result = await self.store.txn((Compare(key, revision),), ops)
            except BaseException:
                self._forget_local(local)
                raise
            if not result.succeeded:
                self._forget_local(local)
            if result.revision > self._applied:  # a local store's feed has it applied before the writer wakes
                await self._caught_up(result.revision)
            if result.succeeded:
                if local is not None and local.result is None and current is not None:
                    local.result = current()
                return local
            if not retry:
                return None
        raise Conflict(f"{key}: changed by other writes {WRITE_ATTEMPTS} times while this one was tried; try again")

    def _forget_local(self, local: _Local | None) -> None:
        if local is not None and self._local.get(id(local.value)) is local:
            del self._local[id(local.value)]

    def _apply_event(self, event: StoreEvent, index: int, now: float) -> None:
        """Apply one stored change; a value this version cannot read is set aside, not fatal."""
        key, value = event.key, event.value
        kind, _, rest = key.partition("/")
        if kind == "meta":
            if key == INDEX_MARK and value is not None:
                self._index_mark = max(self._index_mark or 0, int(value))
            return
        if value is None:
            self._unreadable.pop(key, None)
            if kind == "instances":
                service, _, iid = rest.partition("/")
                self._drop_instance(service, iid, index)
            elif kind == "nodes":
                self._drop_node(rest, index)
            elif kind in self._followers:
                self._followers[kind].apply(key, None, event.revision)
            return
        # What this server wrote comes back as the very bytes it encoded (keyed by identity: while
        # a _Local holds its value, no other live bytes object has its id), and is not decoded again.
        local = self._local.pop(id(value), None)
        try:
            if kind == "instances":
                entry = self._put_instance(
                    local.record if local else _decode_instance(value),
                    event.revision,
                    index,
                    now,
                    shared=local is not None,
                )
                if local is not None:
                    local.result = entry.published
            elif kind == "nodes":
                node = self._put_node(local.record if local else _decode_node(value), event.revision, index, now)
                if local is not None:
                    local.result = node.view
            elif kind in self._followers:
                self._followers[kind].apply(key, value, event.revision)
            else:
                log.warning("ignoring unknown key %r in the store", key)
        except (msgspec.ValidationError, msgspec.DecodeError, BadRequest) as exc:
            log.error("cannot read %s from the store (%s): left out until it is written again", key, exc)
            self._apply_event(StoreEvent(key, None, event.revision), index, now)
            self._unreadable[key] = event.revision

    # --- instances: writes -----------------------------------------------------------------

    def _publish(self, entry: _Instance, index: int, spec: InstanceSpec | None = None) -> None:
        """A new version of `entry`: from `spec` when it was just registered, else from the last one."""
        old = entry.published
        published = entry.published = self._version(entry, spec)
        entry.published_at = time.monotonic()
        if old is not None:
            ENCODINGS.forget(old)  # replaced: whoever still reads the old version encodes it again
        service, iid = published.view.service or "", published.view.id or ""
        if self._quiet:
            quiet = self._quiet.pop((service, iid), None)
            if quiet is not None:
                quiet.cancel()  # this version has what it was waiting to show
        self.changes.record(Event(index, service, iid, published))
        self.changes.touch((CATALOG, service_topic(service)), index)

    def _version(self, entry: _Instance, spec: InstanceSpec | None = None) -> Published:
        """`entry` as readers would see it now."""
        # Set on a copy of its own: `replace` would first gather the fields it sets in a dict.
        view = view_of(spec) if spec is not None else entry.published.view.__copy__()  # type: ignore[attr-defined]
        node = self._nodes.get(view.node) if view.node else None
        view.status = entry.status(node)
        view.ejected = self._ejection(view.service or "", view.id or "") if self._outliers else None
        view.metrics, view.maintenance, view.index = entry.metrics, entry.maintenance, entry.index
        view.check_states = tuple([c.state() for c in entry.checks]) if entry.checks else ()
        view.registered_at, view.updated_at = entry.registered_at, entry.updated_at
        return Published.of(view, node.data if node else _NO_NODE)

    def _put_instance(
        self, record: InstanceRecord, revision: int, index: int, now: float, shared: bool = False
    ) -> _Instance:
        spec = record.spec
        if not shared:
            self._shared.spec(spec)
        service, iid = spec.service or "", spec.id or ""
        owner = _instance_owner(service, iid)
        old = self._services.get(service, {}).get(iid)
        registrant = registrant_of(owner, record.registrant)
        self.census.moved(registrant_of(owner, old.registrant) if old is not None else None, registrant)
        if old is not None:
            self._unlink_node(old)
            ENCODINGS.forget(old.published)
        if old is not None and old.view.checks == spec.checks and old.registrant == record.registrant:
            checks = old.checks  # the same checks: their state (a passing probe, a running TTL) stands
        else:
            if old is not None:
                self.health.untrack(owner, old.checks)
            specs = [*spec.checks, *self.rules.of(service)]
            checks = self.health.track(owner, specs, registrant) if specs else ()
        metrics = old.metrics if old is not None and not spec.metrics else spec.metrics
        entry = _Instance(
            revision,
            index,
            record.registered_at,
            record.maintenance,
            spec.metrics,
            checks,
            metrics,
            now,
            registrant=record.registrant,
        )
        self._services.setdefault(service, {})[iid] = entry
        if spec.node:
            counts = self._node_services.setdefault(spec.node, {})
            counts[service] = counts.get(service, 0) + 1
        self._publish(entry, index, spec)
        # Only new checks judge the metrics it came with (kept ones judged them already).
        fresh = checks and checks is not (old.checks if old is not None else None)
        if fresh and metrics and self._judge(entry):
            self._publish(entry, index)
        return entry

    def _drop_instance(self, service: str, iid: str, index: int) -> None:
        entry = self._services.get(service, {}).pop(iid, None)
        if entry is None:
            return
        if not self._services[service]:
            del self._services[service]
        self._unlink_node(entry)
        ENCODINGS.forget(entry.published)
        quiet = self._quiet.pop((service, iid), None)
        if quiet is not None:
            quiet.cancel()
        owner = _instance_owner(service, iid)
        self.health.untrack(owner, entry.checks)
        self.census.moved(registrant_of(owner, entry.registrant), None)
        detector = self._outliers.get(service)
        if detector is not None:
            detector.forget(iid)
            if service not in self._services:
                del self._outliers[service]  # its pending release timers find nothing, and stop
        self.changes.record(Event(index, service, iid, None))
        self.changes.touch((CATALOG, service_topic(service)), index)

    def _unlink_node(self, entry: _Instance) -> None:
        spec = entry.view
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

    async def register(self, service: str, iid: str, spec: InstanceSpec, registrant: str | None = None) -> Published:
        """Register or replace an instance for `registrant` (None: the service), within the caps."""
        if spec.service not in (None, service):
            raise BadRequest(f"service: body says {spec.service!r} but the path says {service!r}")
        if spec.id not in (None, iid):
            raise BadRequest(f"id: body says {spec.id!r} but the path says {iid!r}")
        if spec.checks:  # most registrations have none: two calls fewer
            validate_checks(spec.checks)
            validate_rules(spec.checks)
        spec = spec.__copy__()  # type: ignore[attr-defined]  # the caller's stays as it was
        spec.service, spec.id = service, iid
        self._shared.spec(spec, validate=True)  # before it is written: applying it shares nothing more

        registrant_key = registrant_of(_instance_owner(service, iid), registrant)
        claim = Claim()

        def build() -> tuple[int, _Local]:
            entries = self._services.get(service, {})
            old = entries.get(iid)
            # Against the caps, a write adds to the service when the instance is new, and to its
            # registrant unless the instance was that registrant's already: a replacement adds nothing.
            adds_to = None if old is not None and old.registrant == registrant else registrant_key
            self.census.claim(claim, None if old else service, len(entries), adds_to)
            record = InstanceRecord(
                spec=spec,
                registered_at=old.registered_at if old else self._clock(),
                maintenance=old.maintenance if old else None,
                registrant=registrant,
            )
            return (old.revision if old else self._unreadable.get(key, 0)), _Local(_encode(record), record)

        key = instance_key(service, iid)
        try:
            local = await self._write(key, build, lambda: self.instance(service, iid))
        finally:
            self.census.release(claim)  # applied by now, and counted as such, or never written
        assert local is not None
        return local.result  # type: ignore[no-any-return]

    async def deregister(self, service: str, iid: str, *, revision: int | None = None) -> None:
        """Remove the instance; with `revision`, only the record of that revision (and no later one)."""
        key = instance_key(service, iid)

        def build() -> tuple[int, None]:
            if revision is not None:
                return revision, None
            if key in self._unreadable:  # what cannot be read can still be removed
                return self._unreadable[key], None
            return self._entry(service, iid).revision, None

        await self._write(key, build, retry=revision is None)

    async def set_maintenance(self, service: str, iid: str, enable: bool, reason: str) -> Published:
        maintenance = Maintenance(reason=reason, since=self._clock()) if enable else None

        def build() -> tuple[int, _Local]:
            entry = self._entry(service, iid)
            record = entry.record(maintenance)
            return entry.revision, _Local(_encode(record), record)

        local = await self._write(instance_key(service, iid), build, lambda: self.instance(service, iid))
        assert local is not None
        return local.result  # type: ignore[no-any-return]

    # --- live state: applied at once, never behind a commit ----------------------------------

    def heartbeat(self, service: str, iid: str, beat: Heartbeat) -> Published:
        """A heartbeat this server received: renewed here, and handed to `on_heartbeat`, which on a
        shared store has the other servers renew it too (see cluster.py)."""
        published = self.renew(service, iid, beat)
        if self.on_heartbeat is not None:
            self.on_heartbeat(_instance_owner(service, iid), beat)
        return published

    def lapse(self, owner: Owner) -> None:
        """The owner's TTL ran out in the store (see cluster.py): it lapses here now."""
        self.health.lapse(owner, self.checks_of(owner))

    def ttl_of(self, owner: Owner) -> float | None:
        """The shortest TTL of an instance's or a node's checks, None without a TTL check."""
        return min((c.ttl for c in self.checks_of(owner) if c.ttl is not None), default=None)

    def renew(self, service: str, iid: str, beat: Heartbeat, index: int | None = None, age: float = 0.0) -> Published:
        """Renew TTL checks and replace live metrics: in memory only, they start afresh on restart.

        With `index`, the heartbeat came from another server through the store's feed (already
        coalesced there, and received there `age` seconds ago: the TTLs run from then, so that
        they lapse together on every server): what it changes is published at once, at that index.

        A status change is published at once; new metrics or output quietly (see `_quietly_changed`);
        a heartbeat that changes neither moves no index and wakes nobody. The answer is the
        instance as it is now, published or not yet.
        """
        entry = self._entry(service, iid)
        metrics = beat.metrics
        if metrics is not None and entry.scraped:
            metrics = _laid_over(metrics, None, entry.scraped)
        metrics_changed = metrics is not None and metrics != entry.metrics
        if metrics_changed:
            entry.metrics = self._shared.metrics(metrics)  # type: ignore[arg-type]
        owner = _instance_owner(service, iid)
        entry.updated_at = self._clock()
        # Every heartbeat with metrics is one evaluation of the rules: a GPU that stays hot counts.
        judged = metrics is not None and self._judge(entry)
        if self.health.heartbeat(owner, entry.checks, beat.status or "passing", beat.output or "", age) or judged:
            if index is not None:
                self._publish(entry, index)
            elif not self._live(self._show, service, iid):
                return self._version(entry)  # shown once the shared store's revision moves
            return entry.published
        if index is not None and (metrics_changed or beat.output):
            self._publish(entry, index)
            return entry.published
        if metrics_changed or beat.output:
            self._quietly_changed(owner)
            if (service, iid) in self._quiet:  # not shown yet: answer with what will be
                return self._version(entry)
        return entry.published

    def _rules_changed(self, service: str) -> None:
        """The service's rules changed: each instance keeps its own checks, and of its rules those
        that stay the same (with their state); the new ones judge its metrics at once."""
        rules, index = self.rules.of(service), self.changes.index
        for iid, entry in self._services.get(service, {}).items():
            own, owner = len(entry.view.checks), _instance_owner(service, iid)
            registrant = registrant_of(owner, entry.registrant)
            old, checks, fresh = entry.checks[own:], list(entry.checks[:own]), []
            for position, rule in enumerate(rules, own):
                before = old[position - own] if position - own < len(old) else None
                if before is not None and before.spec == rule:
                    checks.append(before)
                    continue
                if before is not None:
                    self.health.untrack(owner, (before,), position)
                checks.extend(self.health.track(owner, [rule], registrant, position))
                fresh.append(position)
            for position in range(own + len(rules), own + len(old)):  # rules taken away
                self.health.untrack(owner, (old[position - own],), position)
            if not fresh and len(old) == len(rules):
                continue  # the same rules: nothing changed for this instance
            entry.checks = tuple(checks)
            entry.updated_at = self._clock()
            for position in fresh if entry.metrics else ():
                self._judge(entry, position)
            self._publish(entry, index)

    def _judge(self, entry: _Instance, only: int | None = None, node: bool = False) -> bool:
        """Evaluate the instance's metric rules on its live metrics and its node's (`only` the
        check at that position; with `node`, only the rules that read the node, which changed);
        True when a status changed."""
        if not any(check.rule is not None for check in entry.checks):
            return False  # most instances have no rule: their heartbeats build no bindings
        instance = entry.published.bindings.instance
        if instance["metrics"] is not entry.metrics:  # newer than the published version
            instance = {**instance, "metrics": entry.metrics}
        found = self._nodes.get(entry.view.node or "")
        owner = _instance_owner(entry.view.service or "", entry.view.id or "")
        bindings = Bindings(instance, found.data if found else _NO_NODE)
        return self.health.judge(owner, entry.checks, bindings, only, node)

    def _scraped(self, owner: Owner, position: int, metrics: dict[str, float]) -> None:
        """The scrape of the owner's check at `position` read these: they replace what the last
        scrape read, over the heartbeats' metrics, and that check judges them."""
        if owner[0] == "node":
            node = self._nodes.get(owner[1])
            if node is not None:
                live = _laid_over(node.metrics, node.scraped, metrics)
                node.scraped = metrics
                self._node_took(owner[1], node, live, False, None, position)
            return
        entry = self._services.get(owner[1], {}).get(owner[2])
        if entry is None:
            return
        entry.metrics = self._shared.metrics(_laid_over(entry.metrics, entry.scraped, metrics))
        entry.scraped = metrics
        if self._judge(entry, position):
            self._live(self._show, owner[1], owner[2])
            if self.on_health_changed is not None:
                self.on_health_changed(owner)
        else:
            self._quietly_changed(owner)

    def _quietly_changed(self, owner: Owner) -> None:
        """Metrics or check output changed, no status: published at most every QUIET_EVERY per
        instance, so a fleet heartbeating fast does not wake every watcher on each beat."""
        if owner[0] != "instance":
            return  # a node's output shows in its own checks; its instances inherit only its status
        service, iid = owner[1], owner[2]
        entry = self._services.get(service, {}).get(iid)
        if entry is None or (service, iid) in self._quiet:
            return
        wait = entry.published_at + QUIET_EVERY - time.monotonic()
        if wait <= 0:
            self._live(self._show, service, iid)
            return
        loop = asyncio.get_running_loop()
        self._quiet[service, iid] = loop.call_later(wait, self._quiet_due, service, iid)

    def _quiet_due(self, service: str, iid: str) -> None:
        self._quiet.pop((service, iid), None)
        self._live(self._show, service, iid)

    def _show(self, service: str, iid: str, index: int) -> None:
        """Publish the instance as it is now, if it is still registered."""
        entry = self._services.get(service, {}).get(iid)
        if entry is not None:
            self._publish(entry, index)

    def _live(self, show: Callable[..., None], *owner: str, holder: Owner | None = None) -> bool:
        """Show a live change of the owner with `show(*owner, index)`: at the next change index; on
        a shared store at the next revision that its feed brings, so that every server's index is
        the store's revision, or with `holder`, when `holder`'s write that shares it lands (see
        `hold`). True when it is shown now."""
        if not self.store.shared:
            show(*owner, self.changes.next())
            return True
        key = (show, *owner)
        if holder is not None:
            self._waiting_to_show.pop(key, None)
            self._hold_key(key, holder)
        elif key in self._holder_of:  # shows as it is by then, when its holder's next write lands
            self._fresh.add(self._holder_of[key])
        else:
            self._waiting_to_show[key] = None
            self._tick_later()
        return False

    def _tick_later(self) -> None:
        if self._ticking is None:
            self._ticking = asyncio.get_running_loop().call_later(TICK_AFTER, self._tick)

    def hold(self, owner: Owner) -> bool:
        """The owner's waiting live changes go to the other servers in a write of the cluster's
        (cluster.py), which calls `release` when it lands: they show then, at its revision, where
        the others show them, not at another write's that comes first. True when the owner holds
        changes made since it last asked (some held by `_live`'s `holder`), which a write must
        carry; not for those a write on its way already carries."""
        if owner[0] == "node":
            keys: tuple[tuple[Any, ...], ...] = ((self._node_health_changed, owner[1]),)
        else:
            keys = ((self._show, owner[1], owner[2]), (self._republish, owner[1], owner[2]))
        for key in keys:
            if key in self._waiting_to_show:
                del self._waiting_to_show[key]
                self._hold_key(key, owner)
        if owner not in self._fresh:
            return False
        self._fresh.discard(owner)
        return owner in self._held

    def _hold_key(self, key: tuple[Any, ...], holder: Owner) -> None:
        before = self._holder_of.get(key)
        if before is not None and before != holder:
            del self._held[before][key]  # the later write shows it, with what it is by then
            if not self._held[before]:
                del self._held[before]
        self._holder_of[key] = holder
        self._held.setdefault(holder, {})[key] = None
        self._fresh.add(holder)

    def release(self, holder: Owner, index: int | None) -> None:
        """The write sharing what `holder` holds landed at `index`: it shows at that revision.
        None: the write could not be made (the store out of reach, as likely as not): it shows
        now, at an index of this server's own, as when a tick cannot be written."""
        keys = self._held.pop(holder, {})
        self._fresh.discard(holder)
        for key in keys:
            del self._holder_of[key]
        if not keys:
            return
        if index is None:  # the writes that failed in one turn of the loop show at one index
            self._waiting_to_show.update(keys)
            if not self._showing_now:
                self._showing_now = True
                asyncio.get_running_loop().call_soon(self._show_at_own_index)
            return
        for key in keys:
            key[0](*key[1:], index)

    def _show_at_own_index(self) -> None:
        """The store out of reach: what waits shows at an index of this server's own, rather than
        not at all (it catches up with the revisions later: `_catch_up`)."""
        self._showing_now = False
        if self._waiting_to_show:
            self._show_waiting(self.changes.next())

    def _show_waiting(self, index: int) -> None:
        waiting, self._waiting_to_show = self._waiting_to_show, {}
        for show, *owner in waiting:
            show(*owner, index)

    def _tick(self) -> None:
        self._ticking = None
        if self._waiting_to_show:
            self._in_background(self._tick_write())

    async def _tick_write(self) -> None:
        """No revision came for live changes waiting to show: make one."""
        try:
            await self.store.txn((), (Put(TICK, b""),))
        except StoreError as exc:
            log.warning("live changes shown ahead of the store's revision (%s)", exc)
            self._show_at_own_index()

    async def _catch_up(self) -> None:
        """Have the store pass revisions until its revision is this server's index again."""
        try:
            while self.changes.index > self._applied and not self._stopping:
                ahead = min(self.changes.index - self._applied, CATCH_UP_AT_ONCE)
                await self._caught_up(await self.store.pass_revisions(ahead))
        except StoreError as exc:
            log.warning("cannot catch up with the store's revision yet (%s)", exc)  # the next batch tries again
        finally:
            self._catch_up_task = None

    def checks(self, service: str, iid: str) -> list[CheckState]:
        """The live state of an instance's checks, newer than any published view."""
        return [c.state(live=True) for c in self._entry(service, iid).checks]

    def _in_background(self, work: Any) -> asyncio.Task[Any]:
        task: asyncio.Task[Any] = asyncio.ensure_future(work)
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        task.add_done_callback(_log_failure)
        return task

    def _health_changed(self, owner: Owner) -> None:
        """A check's status changed: republish its owner."""
        if owner[0] == "node":
            self._live(self._node_health_changed, owner[1])
        else:
            self._live(self._republish, owner[1], owner[2])
        if self.on_health_changed is not None:
            self.on_health_changed(owner)

    def exists(self, owner: Owner) -> bool:
        """Whether the instance or node is registered."""
        if owner[0] == "node":
            return owner[1] in self._nodes
        return owner[2] in self._services.get(owner[1], {})

    def checks_of(self, owner: Owner) -> tuple[CheckRuntime, ...]:
        """The checks of an instance or a node, in their order (none when it is gone)."""
        if owner[0] == "node":
            node = self._nodes.get(owner[1])
            return node.checks if node is not None else ()
        entry = self._services.get(owner[1], {}).get(owner[2])
        return entry.checks if entry is not None else ()

    def set_checks(self, owner: Owner, states: Sequence[tuple[int, CheckStatus, str]], index: int) -> None:
        """What another server's probes found (position among the owner's checks, status, output),
        from the store's feed: set here as it is, and the owner republished at `index` if a status
        changed."""
        checks, now = self.checks_of(owner), self._clock()
        changed = [
            checks[position].set(status, output, now)
            for position, status, output in states
            if position < len(checks) and checks[position].ttl is None
        ]
        if not any(changed):
            return
        if owner[0] == "node":
            self._node_health_changed(owner[1], index)
        else:
            self._republish(owner[1], owner[2], index)

    def _critical_too_long(self, owner: Owner) -> None:
        entry = self._services.get(owner[1], {}).get(owner[2]) if owner[0] == "instance" else None
        if entry is not None:
            # Only the record that was critical: a re-registration in the meantime stays.
            self._in_background(self.deregister(owner[1], owner[2], revision=entry.revision))

    def _republish(self, service: str, iid: str, index: int) -> None:
        entry = self._services.get(service, {}).get(iid)
        if entry is not None:
            entry.updated_at = self._clock()
            self._publish(entry, index)

    # --- passive checks: what clients saw ----------------------------------------------------

    def _ejection(self, service: str, iid: str) -> Ejection | None:
        detector = self._outliers.get(service)
        return detector.ejected.get(iid) if detector is not None else None

    def report(self, reports: list[Report], reporter: str, trusted: bool = False) -> ReportsAccepted:
        """Judge `reporter`'s observations on their own; eject an instance once enough reporters
        agree that it fails, or a `trusted` one says so (see balance/quorum.py)."""
        accepted = 0
        judge = self._reporters.judge(reporter)
        for report in reports:
            entry = self._services.get(report.service, {}).get(report.id)
            if entry is None:
                continue
            accepted += 1
            view = entry.view  # its strings, not the report's: what the evidence keeps costs no copies
            reason = judge.observe(view.service or "", view.id or "", report.ok)
            if reason is None:
                continue
            vote = Vote(reporter, reason, trusted, self._clock())
            if self.on_vote is not None:
                self.on_vote(report.service, report.id, vote)
            self.vote(report.service, report.id, vote)
        return ReportsAccepted(accepted=accepted, ignored=len(reports) - accepted)

    def vote(self, service: str, iid: str, vote: Vote) -> None:
        """A vote cast here or, through the store, on another server: it ejects when it completes
        a quorum and this server `decides` the service's ejections."""
        if iid not in self._services.get(service, {}):
            return
        size, decide = self.size(service), self.decides(service)
        ejection = self._detector(service).vote(iid, vote.reporter, vote.reason, vote.trusted, size, vote.at, decide)
        if ejection is not None:
            self._live(self._republish, service, iid)
            self._release_at(service, ejection.until)
            if self.on_ejection is not None:
                self.on_ejection(service, iid, ejection)

    def eject(self, service: str, iid: str, ejection: Ejection | None, index: int) -> None:
        """An ejection another server decided (None: it ended there), from the store's feed: taken
        as it is, and the instance republished at `index`. Taken before its instance is, too: a
        snapshot holds ejections/ before instances/, and the instance shows it once loaded."""
        if ejection is None and service not in self._outliers:
            return
        if self._detector(service).adopt(iid, ejection):
            self._republish(service, iid, index)
            if ejection is not None:
                self._release_at(service, ejection.until)

    @property
    def vote_window(self) -> float:
        """How long a vote stands."""
        return self._report_settings.window

    def _detector(self, service: str) -> QuorumDetector:
        detector = self._outliers.get(service)
        if detector is None:
            detector = self._outliers[service] = QuorumDetector(
                self._outlier_settings, self._report_settings, self._clock
            )
        return detector

    def _release_at(self, service: str, until: float) -> None:
        delay, number = max(until - self._clock(), 0.0), next(self._seq)
        # By number, not by `when()`: uvloop answers call_later(0) with a Handle, which has none.
        self._timers[number] = asyncio.get_running_loop().call_later(
            delay, self._release_ejections, service, until, number
        )

    def _release_ejections(self, service: str, until: float, number: int) -> None:
        del self._timers[number]
        detector = self._outliers.get(service)
        if detector is None:
            return
        for iid in detector.release_due():
            self._live(self._republish, service, iid)
        if any(e.until <= until for e in detector.ejected.values()):
            # The loop's timers run on a millisecond clock and may fire just before the wall clock
            # reaches `until`: without a second try that ejection would never end.
            self._release_at(service, until)

    # --- instances: reads ------------------------------------------------------------------

    def instance(self, service: str, iid: str) -> Published:
        return self._entry(service, iid).published

    def size(self, service: str) -> int:
        """How many instances the service has, healthy or not."""
        return len(self._services.get(service, {}))

    def services_with(self, iid: str) -> list[str]:
        """The services that have an instance `iid`: Consul's API names an instance by its id alone."""
        return [name for name, entries in self._services.items() if iid in entries]

    def services_on(self, nid: str) -> list[str]:
        """The services with instances on node `nid`."""
        return sorted(self._node_services.get(nid, {}))

    def published(self, service: str) -> list[Published]:
        """Every instance of the service as readers see it, healthy or not."""
        return [entry.published for entry in self._services.get(service, {}).values()]

    def instances(
        self,
        service: str,
        *,
        tags: Sequence[str] = (),
        selector: Selector | None = None,
        include_all: bool = False,
        near: Near | None = None,
        limit: int | None = None,
    ) -> list[Published]:
        found = [
            state
            for state in self.published(service)
            if admitted(state, tags=tags, selector=selector, include_all=include_all)
        ]
        return self.ordered(found, near, limit)

    def ordered(self, found: list[Published], near: Near | None, limit: int | None) -> list[Published]:
        """Nearest first when asked, then at most `limit` of them."""
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

    def _put_node(self, record: NodeRecord, revision: int, index: int, now: float) -> _Node:
        nid = record.spec.id or ""
        owner = ("node", nid)
        old = self._nodes.get(nid)
        if old is not None and old.record.spec.checks == record.spec.checks:
            checks = old.checks
        else:
            if old is not None:
                self.health.untrack(owner, old.checks)
            checks = self.health.track(owner, record.spec.checks)
        node = self._nodes[nid] = _Node(record, revision, index, checks, now, old.metrics if old else {})
        self._node_changed(nid, index)
        return node

    def _drop_node(self, nid: str, index: int) -> None:
        node = self._nodes.pop(nid, None)
        quiet = self._quiet_nodes.pop(nid, None)
        if quiet is not None:
            quiet.cancel()
        if node is not None:
            self.health.untrack(("node", nid), node.checks)
            self._judge_on_node(nid)  # what their rules read of it is gone: republished below
            self._node_changed(nid, index)

    async def put_node(self, nid: str, spec: NodeSpec) -> NodeView:
        if spec.id not in (None, nid):
            raise BadRequest(f"id: body says {spec.id!r} but the path says {nid!r}")
        validate_checks(spec.checks)
        validate_rules(spec.checks, of_node=True)
        spec = msgspec.structs.replace(spec, id=nid)

        def build() -> tuple[int, _Local]:
            old = self._nodes.get(nid)
            record = NodeRecord(spec=spec, registered_at=old.record.registered_at if old else self._clock())
            return (old.revision if old else self._unreadable.get(key, 0)), _Local(_encode(record), record)

        key = node_key(nid)
        local = await self._write(key, build, lambda: self.node(nid))
        assert local is not None
        return local.result  # type: ignore[no-any-return]

    async def delete_node(self, nid: str) -> None:
        key = node_key(nid)

        def build() -> tuple[int, None]:
            node = self._nodes.get(nid)
            if node is None and key in self._unreadable:
                return self._unreadable[key], None
            if node is None:
                raise NotFound(f"node {nid!r} is not registered")
            return node.revision, None

        await self._write(key, build)

    def _node_changed(self, nid: str, index: int) -> None:
        """Instances on the node see it in selectors and inherit its health: republish them."""
        for service in list(self._node_services.get(nid, {})):
            for entry in self._services.get(service, {}).values():
                if entry.view.node == nid:
                    self._publish(entry, index)
        self.changes.touch((NODES,), index)

    def _node_health_changed(self, nid: str, index: int) -> None:
        node = self._nodes.get(nid)
        if node is not None:
            quiet = self._quiet_nodes.pop(nid, None)
            if quiet is not None:
                quiet.cancel()  # this version shows what it was waiting to show
            node.updated_at = self._clock()
            node.shown_at = time.monotonic()
            node.republish()
            self._node_changed(nid, index)

    def _node_quietly_changed(self, nid: str) -> None:
        """A node's metrics or output changed, no status: shown at most every QUIET_EVERY, as an
        instance's (its instances are republished with it, for selectors reading `node`)."""
        node = self._nodes.get(nid)
        if node is None or nid in self._quiet_nodes:
            return
        wait = node.shown_at + QUIET_EVERY - time.monotonic()
        if wait <= 0:
            self._live(self._node_health_changed, nid)
            return
        loop = asyncio.get_running_loop()
        self._quiet_nodes[nid] = loop.call_later(wait, self._quiet_node_due, nid)

    def _quiet_node_due(self, nid: str) -> None:
        self._quiet_nodes.pop(nid, None)
        self._live(self._node_health_changed, nid)

    def node_heartbeat(self, nid: str, beat: Heartbeat) -> NodeView:
        """A node's heartbeat this server received: renewed here and handed to `on_heartbeat`."""
        view = self.renew_node(nid, beat)
        if self.on_heartbeat is not None:
            self.on_heartbeat(("node", nid), beat)
        return view

    def renew_node(self, nid: str, beat: Heartbeat, index: int | None = None, age: float = 0.0) -> NodeView:
        """Renew the node's TTL checks and take its live metrics, judged by its rules and by the
        rules of its instances that read `node`: in memory only, as an instance's. With `index`,
        from another server through the store's feed (see `renew`)."""
        node = self._nodes.get(nid)
        if node is None:
            raise NotFound(f"node {nid!r} is not registered")
        node.updated_at = self._clock()
        changed = self.health.heartbeat(("node", nid), node.checks, beat.status or "passing", beat.output or "", age)
        metrics = beat.metrics
        if metrics is not None and node.scraped:
            metrics = _laid_over(metrics, None, node.scraped)
        # Received here: the node's heartbeat write (cluster.py) shares what its instances' rules made of it.
        holder = ("node", nid) if index is None and self.on_heartbeat is not None else None
        self._node_took(nid, node, metrics, changed, index, said=bool(beat.output), holder=holder)
        return node.view

    def _node_took(
        self,
        nid: str,
        node: _Node,
        metrics: dict[str, float] | None,
        changed: bool,
        index: int | None = None,
        only: int | None = None,
        said: bool = False,
        holder: Owner | None = None,
    ) -> None:
        """What a node's heartbeat or scrape brought: its metrics judged (by its rules, or `only`
        the scraping check, then by its instances' rules that read `node`), then shown: a status
        change at once (at `index` when it came from another server), new metrics or output
        quietly, and a heartbeat that changed nothing not at all. With `holder`, what it changes
        in its instances shows when that owner's shared write lands (`hold`)."""
        if metrics is not None:
            said |= metrics != node.metrics
            node.metrics = self._shared.metrics(metrics)
            node.republish()  # what the rules read
            changed |= self.health.judge(("node", nid), node.checks, Bindings(_NO_NODE, node.data), only)
            for service, iid in self._judge_on_node(nid):
                if index is None:
                    self._live(self._republish, service, iid, holder=holder)
                else:
                    self._republish(service, iid, index)
        if changed or (index is not None and said):
            if index is None:
                self._live(self._node_health_changed, nid)
            else:
                self._node_health_changed(nid, index)
        elif said:
            node.republish()  # the answer shows it at once; readers at most every QUIET_EVERY
            self._node_quietly_changed(nid)

    def _judge_on_node(self, nid: str) -> list[tuple[str, str]]:
        """Judge the rules that read `node` of the instances on `nid` (gone: they read `{}`); the
        instances whose status changed."""
        changed = []
        for service in list(self._node_services.get(nid, {})):
            for iid, entry in self._services.get(service, {}).items():
                if entry.view.node == nid and self._judge(entry, node=True):
                    changed.append((service, iid))
        return changed

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


def _laid_over(live: dict[str, float], before: dict[str, float] | None, scraped: dict[str, float]) -> dict[str, float]:
    """`live` metrics with a scrape's over them, the previous scrape's (`before`) taken out first,
    at most MAX_METRICS in all (the heartbeat's first)."""
    merged = {k: v for k, v in live.items() if k not in before} if before else dict(live)
    for name, value in scraped.items():
        if len(merged) >= MAX_METRICS and name not in merged:
            break
        merged[name] = value
    return merged


def _log_failure(task: asyncio.Task[Any]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("background write failed: %s", task.exception())
