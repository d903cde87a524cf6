"""What the servers on one shared store (etcd) share besides the records: who serves, heartbeats,
and the active checks, split among them.

    servers/{id}            each server, under a lease of its own (PEER_TTL, renewed every third
                            of it): the live peers. A server that stops renewing drops out.
    beats/{service}/{id}    the last heartbeat a server received for an instance; every other
                            server renews the instance's TTL and takes its metrics from it.
                            An instance with a TTL check holds it under a lease of its own.
    nodebeats/{id}          the same for a node.
    checks/{kind}/{...}     what the probes of the server that runs an owner's active checks found.
    votes/{service}/{id}/{reporter hash}
                            a reporter's vote against an instance, cast by the server it reports to.
    ejections/{service}/{id}
                            an ejection, with its reason, `until` and count, from the server that
                            decides the service's ejections.

Active checks are split by rendezvous hashing: each owner (an instance or a node) is probed by the
live server with the highest hash of (server, owner), so that a server joining or leaving moves
only its own share, and a dead server's checks move within PEER_TTL. Its results are written only
when a status changes (or, quietly, the output: at most every BEAT_EVERY); the others set them
as they are, so every server shows the same status.

Heartbeats are coalesced: one instance's is written when its status or output changed, when it
changed what this server shows (a status its rules made of its metrics, metrics due to show),
when its metrics changed and BEAT_EVERY has passed since the last write, or when a third of its
TTL has passed (so that the others renew it in time); a server's writes go out together,
FLUSH_OPS to a transaction, every FLUSH_EVERY. A fleet heartbeating every second with a 15 s TTL and steady
metrics writes a fifth of its heartbeats. checks/ and ejections/ keys hold their writer's lease:
they go with the server that wrote them; so do beats/ of owners without a TTL.

TTLs on leases: an owner with a TTL check (an instance or a node) has an etcd lease of its own,
lasting a third more than its TTL, which its beats/ key holds. Whichever server writes its
heartbeat renews that lease first (a server learns the lease from the others' writes), or grants a
new one when it ended; writes come at most a third of a TTL apart while heartbeats come, so the
lease ends only after a whole TTL without one, whatever server received them and whether or not it
is still alive. When it ends, etcd deletes the key, and every server lets the owner's TTL lapse at
that revision, through the same mass-expiry guard as its own timers, which lapse it on time
(precisely one TTL after the last heartbeat; the lease is what holds when the others' writes do
not come).

Passive reports: each reporter's evidence stays on the server it reports to (a client sticks to
one), and the votes it casts go to every server, each recording them all. One server per service,
by rendezvous hashing as for active checks, decides its ejections, and writes each; every server
takes it as written (balance/quorum.py says why one decides rather than each). So reporters on
different servers make one quorum, and every server shows the same ejection, to its `until`, each
ending it on its own clock then. An ejection ends everywhere when its key goes: its time is up
(the decider deletes it) or the decider left. Votes live under leases of their own, one for each
half vote window, lasting one and a half: a vote is gone from the store one to one and a half
windows after it was cast, whoever wrote it, and it counts for one window from when it was cast.

Mass-expiry protection is each server's own, from the same heartbeats: a shared heartbeat carries
when it was received, and the others run its TTLs from then, so a fleet gone silent lapses at the
same moment everywhere (its last writes come up to a third of a TTL after its last beats, each
instance at its own phase), and every server holds it or lets it expire alike.

The change index is etcd's revision on every server. A change applied from the store's feed
takes its revision; a live change made here that the others are told of (what a heartbeat this
server received changed, a node's in its instances too; its probe's result; an ejection it
decided) shows at the revision of the write that shares it, 50 ms on, not at another write's that
the feed brings first (`Registry.hold` and `release`); one they are not told of (a TTL lapse on its
clock) at the next revision the feed brings (see `Registry._live`; when none comes within 100 ms,
the registry writes one; with etcd out of reach, at an index of its own, and it catches up with
the revisions later: see CATCH_UP_AT_ONCE). So the same state has the same index on every server,
the others showing a shared change at that revision too. Metrics that show later, when a second has passed since the
last change shown (QUIET_EVERY), show here at a revision before the others take them.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import math
import os
import socket
import time
from typing import Any

import msgspec

from .. import __version__
from ..balance.quorum import Vote
from ..errors import NotFound, StoreError
from ..health.monitor import Owner
from ..records import CheckStatus, Ejection, Heartbeat, Peer
from ..store import Delete, LeaseNotFound, Op, Put
from ..store.etcd import EtcdStore
from .registry import Registry

PEER_TTL = 6.0
BEAT_EVERY = 1.0
FLUSH_EVERY = 0.05
FLUSH_OPS = 100  # etcd takes at most 128 operations in one transaction by default
PRUNE_EVERY = 60.0  # what was written for instances since gone is forgotten this often
log = logging.getLogger("swarm.cluster")


class SharedBeat(msgspec.Struct, frozen=True):
    by: str  # the server that received it
    beat: Heartbeat
    at: float | None = None  # when (its wall clock); None from a server older than this field
    lease: int = 0  # the owner's own lease (one with a TTL check), which every server renews


class CheckResults(msgspec.Struct, frozen=True):
    by: str
    states: list[tuple[int, CheckStatus, str]]  # position among the owner's checks, status, output


class SharedVote(msgspec.Struct, frozen=True):
    by: str
    vote: Vote


class SharedEjection(msgspec.Struct, frozen=True):
    by: str
    ejection: Ejection


class _Sharing:
    """A write of this server's that shares live changes held here, until it lands."""

    __slots__ = ("holder", "revision", "sent", "value")

    def __init__(self, holder: Owner, value: bytes, sent: float) -> None:
        self.holder = holder
        self.value = value
        self.sent = sent
        self.revision: int | None = None  # once the transaction has answered


class _Written:
    __slots__ = ("at", "metrics", "said")

    def __init__(self, at: float, said: tuple[str, str], metrics: Any) -> None:
        self.at = at
        self.said = said
        self.metrics = metrics


_encode = msgspec.json.Encoder().encode
_decode_peer = msgspec.json.Decoder(Peer).decode
_decode_beat = msgspec.json.Decoder(SharedBeat).decode
_decode_results = msgspec.json.Decoder(CheckResults).decode
_decode_vote = msgspec.json.Decoder(SharedVote).decode
_decode_ejection = msgspec.json.Decoder(SharedEjection).decode


def _owner_key(owner: Owner) -> str:
    return "checks/" + "/".join(owner)


def _beat_owner(key: str) -> Owner:
    """Whose heartbeat a beats/ or nodebeats/ key holds."""
    kind, _, rest = key.partition("/")
    return ("node", rest) if kind == "nodebeats" else ("instance", *rest.split("/", 1))


def _weight(server: str, owner: Owner) -> int:
    digest = hashlib.blake2b(f"{server}\0{'/'.join(owner)}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


class Cluster:
    """This server among the others on the store: follows servers/, beats/ and checks/ keys."""

    def __init__(self, registry: Registry, address: str) -> None:
        self._registry = registry
        self._store = registry.store
        host = socket.gethostname()
        self.me = Peer(
            id=f"{host}-{os.getpid()}-{os.urandom(3).hex()}",
            address=address,
            version=__version__,
            started_at=time.time(),
        )
        self.peers: dict[str, Peer] = {}
        self._revisions: dict[str, int] = {}  # every key applied, with its mod revision
        self._lease = 0
        # key -> (value, None to delete; not before); a heartbeat is encoded once its lease is known
        self._pending: dict[str, tuple[bytes | SharedBeat | None, float]] = {}
        self._written: dict[Owner, _Written] = {}
        # Live changes held here until the write that shares them lands (see "The change index"),
        # by their holder (Registry.hold): key -> holder of the write queued under it; key -> the
        # write sent; holder -> how many of those it has.
        self._holding: dict[str, Owner] = {}
        self._sharing: dict[str, _Sharing] = {}
        self._holds: dict[Owner, int] = {}
        self._leases: dict[Owner, int] = {}  # the owners' own leases (see "TTLs on leases")
        self._mine: dict[Owner, bool] = {}  # rendezvous answers, until the peers change
        self._ejecting: dict[str, float] = {}  # ejections/ keys this server wrote last -> until
        self._votes_lease = 0
        self._votes_leased = -math.inf  # when it was granted
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        # Before the registry loads the store: the votes and ejections in it are judged as live ones.
        for kind in ("servers", "beats", "nodebeats", "checks", "votes", "ejections"):
            registry.follow(kind, self)
        registry.on_vote = self.share_vote
        registry.on_ejection = self.share_ejection
        registry.decides = self.decides

    # --- lifecycle ------------------------------------------------------------------------------

    async def start(self) -> None:
        registry = self._registry
        await self._join()
        registry.on_heartbeat = self.share_heartbeat
        registry.on_health_changed = self.share_checks
        registry.health.scheduler.mine = self.mine
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self._renew()), loop.create_task(self._flush())]

    async def _join(self) -> None:
        self._lease = await self._store.grant(PEER_TTL)
        await self._registry.commit([], [Put(f"servers/{self.me.id}", _encode(self.me), lease=self._lease)])

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        with contextlib.suppress(StoreError):  # the others see it leave now, not in PEER_TTL
            await self._store.revoke(self._lease)

    async def _renew(self) -> None:
        while True:
            await asyncio.sleep(PEER_TTL / 3)
            try:
                await self._store.keep_alive(self._lease)
            except LeaseNotFound:
                log.warning("this server's lease ran out (the store was out of reach): joining again")
                with contextlib.suppress(StoreError):
                    await self._join()
            except StoreError as exc:
                log.warning("cannot renew this server's lease: %s", exc)

    # --- the peers and the checks they share out ---------------------------------------------

    def live(self) -> list[Peer]:
        return sorted(self.peers.values(), key=lambda p: p.id)

    def mine(self, key: Any) -> bool:
        """Whether this server probes the check `key` ((*owner, position)): the owner's rendezvous."""
        return self._rendezvous(key[:-1])

    def decides(self, service: str) -> bool:
        """Whether this server decides the service's ejections: the service's rendezvous."""
        return self._rendezvous(("ejections", service))

    def _rendezvous(self, owner: Owner) -> bool:
        found = self._mine.get(owner)
        if found is None:
            ids = self.peers.keys() | {self.me.id}
            found = self._mine[owner] = max(ids, key=lambda server: _weight(server, owner)) == self.me.id
        return found

    async def members(self) -> list[dict[str, Any]] | None:
        """etcd's members and their health, None when the store cannot say."""
        if not isinstance(self._store, EtcdStore):
            return None
        try:
            return await self._store.members()
        except StoreError as exc:
            return [{"error": str(exc)}]

    def share(self) -> int:
        """How many active checks this server runs now."""
        scheduler = self._registry.health.scheduler
        return sum(1 for key in scheduler if self.mine(key))

    def share_checks(self, owner: Owner) -> None:
        """A status of the owner changed here: if its probes are ours, the others learn it."""
        checks = self._registry.checks_of(owner)
        active = [(p, c.status, c.output) for p, c in enumerate(checks) if c.ttl is None]
        if active and self.mine((*owner, 0)):
            self._queue(_owner_key(owner), _encode(CheckResults(self.me.id, active)), 0.0, self._hold(owner))

    # --- passive reports --------------------------------------------------------------------------

    def share_vote(self, service: str, iid: str, vote: Vote) -> None:
        """A reporter's vote cast here, for the others to record (and the decider to judge)."""
        # A token or an address, any string: hashed, it is a key segment.
        reporter = hashlib.blake2b(vote.reporter.encode(), digest_size=8).hexdigest()
        self._queue(f"votes/{service}/{iid}/{reporter}", _encode(SharedVote(self.me.id, vote)), 0.0)

    def share_ejection(self, service: str, iid: str, ejection: Ejection) -> None:
        """An ejection this server decided, for the others to take."""
        key = f"ejections/{service}/{iid}"
        self._ejecting[key] = ejection.until
        self._queue(key, _encode(SharedEjection(self.me.id, ejection)), 0.0, self._hold(("instance", service, iid)))

    async def _lease_for_votes(self) -> int:
        """The lease votes go under now: one for each half window, lasting one and a half."""
        window, now = self._registry.vote_window, time.monotonic()
        if now - self._votes_leased >= window / 2:
            self._votes_lease = await self._store.grant(window * 1.5)
            self._votes_leased = now
        return self._votes_lease

    # --- heartbeats -----------------------------------------------------------------------------

    def share_heartbeat(self, owner: Owner, beat: Heartbeat) -> None:
        """Queue the heartbeat of an instance or a node for the others, unless they have what it
        says and need no renewal yet."""
        now = time.monotonic()
        said = (beat.status or "passing", beat.output or "")
        last = self._written.get(owner)
        key = f"nodebeats/{owner[1]}" if owner[0] == "node" else f"beats/{owner[1]}/{owner[2]}"
        holder = self._hold(owner)  # a status it changed here, or what its node's rules made of it
        if holder is not None or last is None or last.said != said:
            not_before = now
        elif key in self._pending:
            # It goes with the write queued already: scheduling the next one from that write's
            # time would push the writes further off with each beat, past the TTL.
            not_before = last.at
        else:
            ttl = self._registry.ttl_of(owner)
            renewal = last.at + ttl / 3 if ttl is not None else math.inf
            metrics = last.at + BEAT_EVERY if beat.metrics is not None and beat.metrics != last.metrics else math.inf
            not_before = min(renewal, metrics)
            if not_before == math.inf:
                return
        self._written[owner] = _Written(max(now, not_before), said, beat.metrics)
        self._queue(key, SharedBeat(self.me.id, beat, time.time()), not_before, holder)

    def _queue(
        self, key: str, value: bytes | SharedBeat | None, not_before: float, holder: Owner | None = None
    ) -> None:
        """Write `value` under `key` soon; with `holder`, it shares live changes that owner holds."""
        queued = self._pending.get(key)
        self._pending[key] = (value, min(not_before, queued[1]) if queued is not None else not_before)
        if holder is not None and key not in self._holding:
            self._holding[key] = holder
            self._holds[holder] = self._holds.get(holder, 0) + 1
        self._wake.set()

    def _hold(self, owner: Owner) -> Owner | None:
        """The owner as the holder of its live changes waiting here, if any (`Registry.hold`)."""
        return owner if self._registry.hold(owner) else None

    def _sent(self, key: str, value: bytes | None, holder: Owner | None) -> None:
        """`value` went out under `key` (None: it could not): what it shares waits for it to land."""
        if holder is None:
            return
        if value is None:
            self._unhold(holder, None)
            return
        earlier = self._sharing.get(key)
        if earlier is not None:  # not back yet: this one carries what it shared too
            self._unhold(earlier.holder, None)
        self._sharing[key] = _Sharing(holder, value, time.monotonic())

    def _answered(self, key: str, value: bytes | None, revision: int | None) -> None:
        """The transaction with this write answered: committed at `revision`, or failed (None)."""
        sharing = self._sharing.get(key)
        if sharing is None or sharing.value != value:
            return
        if revision is not None:
            sharing.revision = revision
            return
        del self._sharing[key]
        self._unhold(sharing.holder, None)

    def _landed(self, key: str, value: bytes | None, revision: int, mine: bool) -> None:
        """The feed brought a write of `key` at `revision`: what the write sharing held changes
        under it shares shows now, when this is that write, or one after it (a resync skipped
        ours). Neither an earlier write of this server's (the later one carries what it shared)
        nor another server's that came first."""
        sharing = self._sharing.get(key)
        if sharing is None:
            return
        if not (mine and sharing.value == value) and (sharing.revision is None or revision < sharing.revision):
            return
        del self._sharing[key]
        self._unhold(sharing.holder, self._registry.index)

    def _unhold(self, holder: Owner, index: int | None) -> None:
        left = self._holds[holder] - 1
        if left:  # another write shares them too: they show when it lands
            self._holds[holder] = left
        else:
            del self._holds[holder]
            self._registry.release(holder, index)

    async def _flush(self) -> None:
        pruned = time.monotonic()
        while True:
            await self._wake.wait()
            await asyncio.sleep(FLUSH_EVERY)  # what arrives meanwhile goes in the same transactions
            now = time.monotonic()
            due = [(key, value) for key, (value, not_before) in self._pending.items() if not_before <= now]
            holders: dict[str, Owner] = {}  # taken with their writes: a change held meanwhile goes with the next
            for key, _ in due:
                del self._pending[key]
                holder = self._holding.pop(key, None)
                if holder is not None:
                    holders[key] = holder
            if not self._pending:
                self._wake.clear()
            votes = 0
            if any(key.startswith("votes/") for key, _ in due):
                try:
                    votes = await self._lease_for_votes()
                except StoreError as exc:
                    log.warning("cannot share votes (no lease for them): %s", exc)
                    due = [(key, value) for key, value in due if not key.startswith("votes/")]
            written: list[tuple[str, bytes | None, int]] = []
            leases = await asyncio.gather(*(self._lease_for(key, value) for key, value in due))
            for (key, value), lease in zip(due, leases, strict=True):
                if isinstance(value, SharedBeat):
                    encoded = None if lease is None else _encode(msgspec.structs.replace(value, lease=lease))
                    self._sent(key, encoded, holders.get(key))
                    if encoded is not None:  # else the next heartbeats say it again
                        written.append((key, encoded, lease or 0))
                else:
                    self._sent(key, value, holders.get(key))
                    written.append((key, value, votes if key.startswith("votes/") else 0))
            for start in range(0, len(written), FLUSH_OPS):
                ops: list[Op] = [
                    Delete(key) if value is None else Put(key, value, lease=lease or self._lease)
                    for key, value, lease in written[start : start + FLUSH_OPS]
                ]
                committed: int | None = None
                try:
                    committed = (await self._store.txn([], ops)).revision
                except StoreError as exc:  # the next heartbeats say it again
                    log.warning("cannot share %d heartbeats, check results and votes: %s", len(ops), exc)
                if self._sharing:
                    for key, value, _ in written[start : start + FLUSH_OPS]:
                        self._answered(key, value, committed)
            if now - pruned > PRUNE_EVERY:
                pruned = now
                self._prune()

    async def _lease_for(self, key: str, value: bytes | SharedBeat | None) -> int | None:
        """For a heartbeat: its owner's own lease, renewed or granted afresh (0 without a TTL: it
        goes under this server's); None when etcd could give neither."""
        if not isinstance(value, SharedBeat):
            return 0
        owner = _beat_owner(key)
        ttl = self._registry.ttl_of(owner)
        if ttl is None:
            return 0
        lease = self._leases.get(owner)
        try:
            if lease is not None:
                with contextlib.suppress(LeaseNotFound):  # it ended: the owner lapsed meanwhile
                    await self._store.keep_alive(lease)
                    return lease
            lease = self._leases[owner] = await self._store.grant(ttl * 4 / 3)
        except StoreError as exc:
            log.warning("cannot renew the TTL lease of %s: %s", "/".join(owner[1:]), exc)
            return None
        return lease

    def _prune(self) -> None:
        for owner in list(self._written):
            if not self._registry.exists(owner):
                del self._written[owner]
        for owner in [owner for owner in self._leases if not self._registry.exists(owner)]:
            del self._leases[owner]  # nobody renews it now: it ends on its own
        now = time.time()
        for key in [key for key, until in self._ejecting.items() if until <= now]:
            del self._ejecting[key]
            self._queue(key, None, 0.0)  # over everywhere already, each server's clock says
        # A write the feed never brought back, nor one after it (a resync that skipped both, the
        # key gone again): what it held shows at the next revision, not never.
        lost = time.monotonic() - PRUNE_EVERY
        for key in [key for key, sharing in self._sharing.items() if sharing.sent < lost]:
            self._unhold(self._sharing.pop(key).holder, None)

    # --- following the store --------------------------------------------------------------------

    def apply(self, key: str, value: bytes | None, revision: int) -> None:
        kind, _, rest = key.partition("/")
        if value is None:
            self._revisions.pop(key, None)
            if self._sharing:
                self._landed(key, None, revision, mine=False)
            if kind == "servers" and self.peers.pop(rest, None) is not None:
                self._mine.clear()  # its checks move to the others
            elif kind == "ejections":
                service, _, iid = rest.partition("/")
                self._registry.eject(service, iid, None, self._registry.index)
            elif kind in ("beats", "nodebeats"):
                owner = _beat_owner(key)
                if self._leases.pop(owner, None) is not None and self._registry.exists(owner):
                    self._registry.lapse(owner)  # its lease ended: no heartbeat for a whole TTL
            return
        self._revisions[key] = revision
        if kind == "servers":
            self.peers[rest] = _decode_peer(value)
            self._mine.clear()
        elif kind in ("beats", "nodebeats"):
            shared = _decode_beat(value)
            owner = _beat_owner(key)
            if self._sharing:
                self._landed(key, value, revision, shared.by == self.me.id)
            if shared.lease:
                self._leases[owner] = shared.lease
            if shared.by == self.me.id:
                return
            # What every server has now: a beat here that says otherwise is written at once.
            said = (shared.beat.status or "passing", shared.beat.output or "")
            self._written[owner] = _Written(time.monotonic(), said, shared.beat.metrics)
            age = self._age(owner, shared.at)
            with contextlib.suppress(NotFound):  # not registered (yet, or any more)
                if kind == "nodebeats":
                    self._registry.renew_node(rest, shared.beat, self._registry.index, age)
                else:
                    self._registry.renew(owner[1], owner[2], shared.beat, self._registry.index, age)
        elif kind == "votes":
            shared_vote = _decode_vote(value)
            if shared_vote.by != self.me.id:
                service, _, iid = rest.rpartition("/")[0].partition("/")
                self._registry.vote(service, iid, shared_vote.vote)
        elif kind == "ejections":
            decided = _decode_ejection(value)
            if self._sharing:
                self._landed(key, value, revision, decided.by == self.me.id)
            if decided.by != self.me.id:
                self._ejecting.pop(key, None)  # another's now: not this server's to delete
                service, _, iid = rest.partition("/")
                self._registry.eject(service, iid, decided.ejection, self._registry.index)
        else:
            results = _decode_results(value)
            if self._sharing:
                self._landed(key, value, revision, results.by == self.me.id)
            if results.by != self.me.id:
                self._registry.set_checks(tuple(rest.split("/")), results.states, self._registry.index)

    def _age(self, owner: Owner, at: float | None) -> float:
        """How long ago the server that wrote a heartbeat received it: the TTL runs from then here
        too, so that a fleet gone silent lapses together on every server (its last writes come up
        to a third of a TTL after its last beats). More than half a TTL is the servers' clocks
        disagreeing, not the coalescing: it counts for half."""
        ttl = self._registry.ttl_of(owner)
        if at is None or ttl is None:
            return 0.0
        return min(max(time.time() - at, 0.0), ttl / 2)

    def known(self) -> dict[str, int]:
        return dict(self._revisions)
