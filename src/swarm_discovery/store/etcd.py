"""The shared store: records under a key prefix in an etcd v3 cluster, which several servers use at once.

etcd is the source of truth and assigns the revisions; a transaction is acknowledged only after
etcd committed it (a quorum has it on disk). The v3 API is spoken through aetcd's gRPC bindings
(`aetcd.rpc`) over a channel managed here, because aetcd's own client takes one member, no TLS,
and queues watch events without bound:

- **Members.** One channel to one member at a time. A call that the member cannot answer
  (unreachable, no leader, too slow) moves to the next member and is tried there, member after
  member for up to `RETRY_FOR` (an election takes about a second); only then does it fail with a
  `StoreError`. A transaction whose answer
  was lost may have committed: tried again, its comparisons (every write of the registry is
  conditional on a mod revision) fail and its writer rebuilds it from what it finds, so nothing
  is applied twice unseen.
- **The feed** is one etcd watch on the prefix, read as fast as the consumer takes batches (gRPC
  flow control holds etcd back meanwhile: nothing is queued here). It requires a leader, so a
  member cut off from the others cancels it, and it resumes on another member from the revision
  after the last batch; `Compacted` when etcd no longer holds that revision.
- **Revisions nobody would see.** A transaction that fails its comparisons, or changes nothing,
  answers with etcd's current revision, which may belong to a key outside the prefix: no event
  would ever arrive for it, and whoever waits to have applied it would wait forever. For those
  the store puts its own sync key (`SYNC_KEY`, left out of every batch and snapshot), at most
  one at a time while a watch is open: its revision comes after theirs, and the watch hands over
  an empty batch at it.
- **Transactions that arrive together** (in one turn of the event loop, or while MAX_SENDING are
  in flight) go to etcd as one when their keys are disjoint and they fit etcd's 128 operations:
  one round trip and one revision for a burst of registrations, as SQLite's group commit has one
  fsync. When the merged one fails a comparison, each is tried on its own to find out which.
- **Leases** are etcd's: whole seconds, at least etcd's minimum (about 1.5 election timeouts),
  renewed over one keep-alive stream shared by every caller (answers come back in order).
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections import deque
from collections.abc import AsyncIterator, Sequence
from typing import Any
from urllib.parse import urlsplit

import grpc
from aetcd import rpc

from ..errors import StoreError
from .etcd_config import DEFAULT_PREFIX, EtcdOptions
from .protocol import (
    Compacted,
    Compare,
    Delete,
    KeyValue,
    LeaseNotFound,
    Op,
    Put,
    Snapshot,
    StoreEvent,
    TxnResult,
    WatchBatch,
)

log = logging.getLogger("swarm.store")

# One call on one member; past it the next member is tried. A write a follower forwarded to a
# leader that died is lost, and etcd would answer only at its own request timeout (7 s).
CALL_TIMEOUT = 2.0
RETRY_FOR = 8.0  # a call is tried on member after member for this long (an election takes about 1 s)
RETRY_PAUSE = 0.2  # after every member failed once, before the next round
# gRPC waits this long at most before it connects again to a member that refused: a member back
# from a restart is used within a second (gRPC's default backoff grows to two minutes).
RECONNECT_MS = 1000
PAGE = 500  # records per range request of a snapshot: 500 of at most 64 KiB fit one message
KEYS_PAGE = 100_000  # keys (names alone, under 1 KiB each) per request of a snapshot's first pass
SCAN_TIMEOUT = 10.0  # for one of those: etcd visits every key to the prefix's end (a million: ~1 s)
MAX_MESSAGE = 64 * 1024 * 1024
SYNC_KEY = ".sync"
MAX_TXN_OPS = 128  # comparisons, and operations, in one transaction: etcd's --max-txn-ops default
MAX_SENDING = 4  # merged transactions in flight at once; what arrives meanwhile waits to be merged
_RETRYABLE = {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED}
_LEADER_LOST = ("no leader", "leader changed", "request timed out", "not capable", "stopped")


def _range_end(prefix: bytes) -> bytes:
    return prefix[:-1] + bytes([prefix[-1] + 1])  # the prefix ends in "/", never 0xff


class _Link:
    """A channel to one member and the stubs over it."""

    def __init__(self, endpoint: str, options: EtcdOptions, credentials: grpc.ChannelCredentials | None) -> None:
        self.endpoint = endpoint
        settings = [
            ("grpc.max_receive_message_length", MAX_MESSAGE),
            ("grpc.max_send_message_length", MAX_MESSAGE),
            ("grpc.initial_reconnect_backoff_ms", 100),
            ("grpc.min_reconnect_backoff_ms", 100),
            ("grpc.max_reconnect_backoff_ms", RECONNECT_MS),
        ]
        if credentials is not None:
            self.channel = grpc.aio.secure_channel(endpoint, credentials, options=settings)
        else:
            self.channel = grpc.aio.insecure_channel(endpoint, options=settings)
        self.kv = rpc.KVStub(self.channel)
        self.watch = rpc.WatchStub(self.channel)
        self.lease = rpc.LeaseStub(self.channel)
        self.cluster = rpc.ClusterStub(self.channel)
        self.maintenance = rpc.MaintenanceStub(self.channel)
        self.auth = rpc.AuthStub(self.channel)


def _retryable(exc: grpc.aio.AioRpcError) -> bool:
    return exc.code() in _RETRYABLE or any(reason in (exc.details() or "") for reason in _LEADER_LOST)


def _error(exc: grpc.aio.AioRpcError) -> StoreError:
    details = exc.details() or exc.code().name
    if "lease not found" in details:
        return LeaseNotFound(f"etcd: {details}")
    return StoreError(f"etcd: {details}")


class _KeepAlive:
    """One LeaseKeepAlive stream shared by every renewal: etcd answers each request in order."""

    def __init__(self, store: EtcdStore) -> None:
        self._store = store
        self._call: Any = None
        self._link: _Link | None = None
        self._waiting: deque[asyncio.Future[float]] = deque()
        self._reader: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()

    async def renew(self, lease: int) -> float:
        for _ in range(2):  # a stream that broke is opened again once
            future: asyncio.Future[float] = asyncio.get_running_loop().create_future()
            async with self._lock:
                call = await self._stream()
                self._waiting.append(future)
                try:
                    await call.write(rpc.LeaseKeepAliveRequest(ID=lease))
                except (grpc.aio.AioRpcError, asyncio.InvalidStateError) as exc:
                    self._broken(exc)
            try:
                ttl = await asyncio.wait_for(future, CALL_TIMEOUT)
            except (TimeoutError, _StreamBroken):
                self._broken(StoreError("the keep-alive stream did not answer"))
                continue
            if ttl <= 0:
                raise LeaseNotFound(f"lease {lease} is not granted (it expired or was revoked)")
            return ttl
        raise StoreError("etcd: no member renewed the lease")

    async def _stream(self) -> Any:
        if self._call is None:
            self._link = self._store._member()
            self._call = self._link.lease.LeaseKeepAlive(metadata=self._store._metadata)
            self._reader = asyncio.get_running_loop().create_task(self._read(self._call))
        return self._call

    async def _read(self, call: Any) -> None:
        try:
            while (response := await call.read()) is not grpc.aio.EOF:
                if self._waiting:
                    future = self._waiting.popleft()
                    if not future.done():
                        future.set_result(float(response.TTL))
        except grpc.aio.AioRpcError as exc:
            if call is self._call:
                self._broken(exc)
            return
        if call is self._call:
            self._broken(StoreError("the keep-alive stream ended"))

    def _broken(self, exc: BaseException) -> None:
        if self._call is not None:
            self._call.cancel()
        if isinstance(exc, grpc.aio.AioRpcError) and self._link is not None and _retryable(exc):
            self._store._failed(self._link)
        self._call, self._link = None, None
        while self._waiting:
            future = self._waiting.popleft()
            if not future.done():
                future.set_exception(_StreamBroken())

    async def close(self) -> None:
        if self._call is not None:
            self._call.cancel()
        if self._reader is not None:
            self._reader.cancel()
            await asyncio.gather(self._reader, return_exceptions=True)
        self._call = None


class _StreamBroken(Exception):
    pass


class EtcdStore:
    name = "etcd"
    shared = True

    def __init__(
        self, endpoints: Sequence[str], prefix: str = f"/{DEFAULT_PREFIX}/", options: EtcdOptions | None = None
    ):
        if not prefix.endswith("/"):
            prefix += "/"
        self.endpoints = list(endpoints)
        self.prefix = prefix
        self._prefix = prefix.encode()
        self._end = _range_end(self._prefix)
        self._sync = self._prefix + SYNC_KEY.encode()
        self.options = options or EtcdOptions()
        self.location: str | None = f"etcd://{','.join(self.endpoints)}{prefix.rstrip('/')}"
        self._credentials: grpc.ChannelCredentials | None = None
        self._links: dict[str, _Link] = {}
        self._at = 0  # the member in use
        self._metadata: tuple[tuple[str, str], ...] = ()
        self._authenticating: asyncio.Future[None] | None = None
        self._keepalive: _KeepAlive | None = None
        self._watches: set[Any] = set()  # their open gRPC calls
        self._covered = 0  # every open watch will hand over a batch at this revision or later
        self._unseen = 0  # the highest revision handed out that may have no event of ours
        self._syncing: asyncio.Task[None] | None = None
        self._waiting: list[_Waiting] = []  # transactions not sent yet
        self._batching: asyncio.Task[None] | None = None
        self._sending: set[asyncio.Task[None]] = set()
        self._opened = False
        self._closed = False

    # --- members ------------------------------------------------------------------------------

    def _member(self) -> _Link:
        endpoint = self.endpoints[self._at % len(self.endpoints)]
        link = self._links.get(endpoint)
        if link is None:
            link = self._links[endpoint] = _Link(endpoint, self.options, self._credentials)
        return link

    def _failed(self, link: _Link) -> None:
        """The member behind `link` did not answer: the next calls go to the next member."""
        if self.endpoints[self._at % len(self.endpoints)] == link.endpoint:
            self._at += 1
            if self._opened:  # before, the error that open() raises says it all
                log.warning("etcd member %s did not answer; using %s", link.endpoint, self._member().endpoint)

    async def _call(
        self, stub: str, method: str, request: Any, timeout: float = CALL_TIMEOUT, renew: bool = True
    ) -> Any:
        """One unary call, moved to the next member while members fail to answer it; with `renew`,
        a token etcd no longer takes is renewed and the call tried again."""
        last: grpc.aio.AioRpcError | None = None
        give_up = asyncio.get_running_loop().time() + RETRY_FOR
        attempt = 0
        while last is None or asyncio.get_running_loop().time() < give_up:
            if self._closed:
                raise StoreError("the store is closed")
            if attempt and attempt % len(self.endpoints) == 0:
                await asyncio.sleep(RETRY_PAUSE)
            attempt += 1
            link = self._member()
            try:
                return await getattr(getattr(link, stub), method)(request, timeout=timeout, metadata=self._metadata)
            except grpc.aio.AioRpcError as exc:
                if exc.code() == grpc.StatusCode.UNAUTHENTICATED and renew and self.options.user is not None:
                    await self._authenticate()  # tokens expire (etcd's simple tokens after 5 minutes)
                    last = exc
                    continue
                if not _retryable(exc):
                    raise _error(exc) from None
                last = exc
                self._failed(link)
        assert last is not None
        unknown = " (a write may or may not have been committed)" if stub == "kv" and method == "Txn" else ""
        raise StoreError(f"etcd: no member answered: {last.details() or last.code().name}{unknown}")

    async def _authenticate(self) -> None:
        if self._authenticating is not None:  # one at a time; the others wait for it
            await asyncio.shield(self._authenticating)
            return
        self._authenticating = asyncio.get_running_loop().create_future()
        try:
            self._metadata = ()
            request = rpc.AuthenticateRequest(name=self.options.user, password=self.options.password)
            response = await self._call("auth", "Authenticate", request, renew=False)
            self._metadata = (("token", response.token),)
            self._authenticating.set_result(None)
        except BaseException as exc:
            self._authenticating.set_exception(exc)
            self._authenticating.exception()  # retrieved: waiters re-raise it, nobody else must
            raise
        finally:
            self._authenticating = None

    # --- opening and closing ------------------------------------------------------------------

    async def open(self) -> Snapshot:
        if self.options.tls:
            self._credentials = grpc.ssl_channel_credentials(
                root_certificates=_read(self.options.ca),
                private_key=_read(self.options.key),
                certificate_chain=_read(self.options.cert),
            )
        self._keepalive = _KeepAlive(self)
        if self.options.user is not None:
            await self._authenticate()
        snapshot = await self.snapshot()
        self._opened = True
        return snapshot

    async def snapshot(self) -> Snapshot:
        """Every key under the prefix at one revision, a page at a time."""
        while True:
            try:
                return await self._snapshot()
            except StoreError as exc:
                if "compacted" not in str(exc):
                    raise
                # The revision the pages are read at was compacted meanwhile: start again.

    async def _snapshot(self) -> Snapshot:
        """Two passes at one revision: the keys alone, in a few large pages, to find where pages of
        PAGE records begin; then each page of records between two of those keys. etcd 3.4 counts
        every key from a range's start to its end on each limited request (to say `count`), so
        pages of records over the open rest of the prefix cost the square of the keys: a million
        took longer than a call may. A range with an end counts only what lies inside it."""
        revision, start, bounds = 0, self._prefix, []
        while True:
            request = rpc.RangeRequest(
                key=start, range_end=self._end, limit=KEYS_PAGE, revision=revision, keys_only=True
            )
            response = await self._call("kv", "Range", request, timeout=SCAN_TIMEOUT)
            revision = revision or response.header.revision
            keys = [kv.key for kv in response.kvs]
            bounds += keys[::PAGE]
            if not response.more or not keys:
                break
            start = keys[-1] + b"\0"
        items: list[KeyValue] = []
        skip = len(self._prefix)
        for i, begin in enumerate(bounds):
            end = bounds[i + 1] if i + 1 < len(bounds) else self._end
            response = await self._call("kv", "Range", rpc.RangeRequest(key=begin, range_end=end, revision=revision))
            for kv in response.kvs:
                if kv.key != self._sync:
                    items.append(KeyValue(kv.key[skip:].decode(), kv.value, kv.mod_revision, kv.lease))
        return Snapshot(items=items, revision=revision)

    async def close(self) -> None:
        self._closed = True
        for waiting in self._waiting:
            _answer(waiting, StoreError("the store is closed"))
        self._waiting.clear()
        await asyncio.gather(*self._sending, return_exceptions=True)  # answered by etcd, or failed
        for call in list(self._watches):
            call.cancel()
        if self._syncing is not None:
            self._syncing.cancel()
            await asyncio.gather(self._syncing, return_exceptions=True)
        if self._keepalive is not None:
            await self._keepalive.close()
        for link in self._links.values():
            await link.channel.close()
        self._links.clear()

    # --- transactions -------------------------------------------------------------------------

    async def txn(self, compares: Sequence[Compare], ops: Sequence[Op]) -> TxnResult:
        if self._closed:
            raise StoreError("the store is closed")
        waiting = _Waiting(compares, ops, asyncio.get_running_loop().create_future())
        self._waiting.append(waiting)
        if self._batching is None:
            self._batching = asyncio.get_running_loop().create_task(self._send_waiting())
        return await waiting.answer

    async def _send_waiting(self) -> None:
        """Send what waits, merged as far as it goes, at most MAX_SENDING transactions at a time."""
        try:
            await asyncio.sleep(0)  # what else this turn of the loop brings goes with it
            while self._waiting:
                while len(self._sending) >= MAX_SENDING:
                    await asyncio.wait(self._sending, return_when=asyncio.FIRST_COMPLETED)
                batch, self._waiting = _together(self._waiting)
                task = asyncio.get_running_loop().create_task(self._send(batch))
                self._sending.add(task)
                task.add_done_callback(self._sending.discard)
        finally:
            self._batching = None

    async def _send(self, batch: list[_Waiting]) -> None:
        try:
            if len(batch) > 1:
                merged = await self._txn([c for w in batch for c in w.compares], [o for w in batch for o in w.ops])
                if merged.succeeded:
                    for waiting in batch:
                        _answer(waiting, merged)
                    return
            results = await asyncio.gather(*(self._txn(w.compares, w.ops) for w in batch), return_exceptions=True)
            for waiting, result in zip(batch, results, strict=True):
                _answer(waiting, result)
        except BaseException as exc:
            for waiting in batch:
                _answer(waiting, exc)
            if not isinstance(exc, Exception):
                raise

    async def _txn(self, compares: Sequence[Compare], ops: Sequence[Op]) -> TxnResult:
        request = rpc.TxnRequest(
            compare=[
                rpc.Compare(
                    key=self._prefix + c.key.encode(),
                    result=rpc.Compare.EQUAL,
                    target=rpc.Compare.MOD,
                    mod_revision=c.mod_revision,
                )
                for c in compares
            ],
            success=[self._op(op) for op in ops],
        )
        response = await self._call("kv", "Txn", request)
        revision = response.header.revision
        changed = response.succeeded and any(
            r.WhichOneof("response") == "response_put" or r.response_delete_range.deleted for r in response.responses
        )
        if changed:
            self._covered = max(self._covered, revision)  # its own events are at this revision
        else:
            self._may_not_show(revision)
        return TxnResult(response.succeeded, revision)

    def _op(self, op: Op) -> Any:
        key = self._prefix + op.key.encode()
        if isinstance(op, Put):
            return rpc.RequestOp(request_put=rpc.PutRequest(key=key, value=op.value, lease=op.lease))
        assert isinstance(op, Delete)
        return rpc.RequestOp(request_delete_range=rpc.DeleteRangeRequest(key=key))

    def _may_not_show(self, revision: int) -> None:
        """`revision` was handed out and may have no event under the prefix: make one after it."""
        if revision <= self._covered or not self._watches or self._closed:
            return
        self._unseen = max(self._unseen, revision)
        if self._syncing is None:
            self._syncing = asyncio.get_running_loop().create_task(self._sync_watches())

    async def _sync_watches(self) -> None:
        try:
            while self._unseen > self._covered and self._watches and not self._closed:
                request = rpc.PutRequest(key=self._sync, value=b"")
                response = await self._call("kv", "Put", request)
                # Put after every revision handed out before it: it covers all of them.
                self._covered = max(self._covered, response.header.revision)
        except StoreError as exc:
            log.warning("etcd: cannot write the sync key (%s); a writer may wait for the next change", exc)
        finally:
            self._syncing = None

    # --- the feed -----------------------------------------------------------------------------

    async def watch(self, from_revision: int) -> AsyncIterator[WatchBatch]:
        revision = from_revision
        failures = 0
        skip = len(self._prefix)
        while not self._closed:
            if failures and failures % len(self.endpoints) == 0:
                await asyncio.sleep(min(RETRY_PAUSE * failures, 2.0))
                if self._closed:
                    return
            link = self._member()
            # With "hasleader", a member cut off from the others ends the watch instead of going
            # silent, so the watch moves to a member that still hears about changes.
            call = link.watch.Watch(metadata=(*self._metadata, ("hasleader", "true")))
            self._watches.add(call)
            try:
                create = rpc.WatchCreateRequest(
                    key=self._prefix, range_end=self._end, start_revision=revision, progress_notify=True
                )
                await call.write(rpc.WatchRequest(create_request=create))
                while (response := await call.read()) is not grpc.aio.EOF:
                    if response.compact_revision:
                        raise Compacted(
                            f"etcd compacted its history to revision {response.compact_revision}: "
                            f"the watch from {revision} cannot resume"
                        )
                    if response.canceled:
                        log.warning("etcd ended the watch on %s: %s", link.endpoint, response.cancel_reason)
                        break
                    failures = 0
                    if response.events:
                        events = [
                            StoreEvent(
                                e.kv.key[skip:].decode(),
                                e.kv.value if e.type == rpc.Event.PUT else None,
                                e.kv.mod_revision,
                                e.kv.lease,
                            )
                            for e in response.events
                            if e.kv.key != self._sync
                        ]
                        # The last event's revision, not the header's: etcd may send what it has
                        # of a long history with the current revision in the header.
                        batch = WatchBatch(response.events[-1].kv.mod_revision, events)
                    elif not response.created:
                        batch = WatchBatch(response.header.revision, [])  # progress: nothing of ours since
                    else:
                        continue
                    if batch.revision < revision:
                        continue
                    revision = batch.revision + 1
                    yield batch
                failures += 1  # the member ended the watch: go on at the next one
                self._failed(link)
            except grpc.aio.AioRpcError as exc:
                if self._closed or exc.code() == grpc.StatusCode.CANCELLED:
                    return
                if not _retryable(exc):
                    raise _error(exc) from None
                failures += 1
                self._failed(link)
            except (asyncio.CancelledError, Exception):
                if self._closed:  # whatever closing the channel made of the call
                    return
                raise
            finally:
                self._watches.discard(call)
                call.cancel()

    # --- leases -------------------------------------------------------------------------------

    async def grant(self, ttl: float) -> int:
        response = await self._call("lease", "LeaseGrant", rpc.LeaseGrantRequest(TTL=max(1, math.ceil(ttl))))
        if response.error:
            raise StoreError(f"etcd: {response.error}")
        return int(response.ID)

    async def keep_alive(self, lease: int) -> float:
        if self._closed or self._keepalive is None:
            raise StoreError("the store is closed")
        return await self._keepalive.renew(lease)

    async def pass_revisions(self, count: int) -> int:
        """Puts of the sync key, which no batch or snapshot holds, each a revision of its own (not
        merged with other writes), MAX_SENDING at a time."""
        revision = self._covered
        request = rpc.PutRequest(key=self._sync, value=b"")
        for start in range(0, count, MAX_SENDING):
            puts = min(MAX_SENDING, count - start)
            answers = await asyncio.gather(*(self._call("kv", "Put", request) for _ in range(puts)))
            revision = max(revision, *(answer.header.revision for answer in answers))
            self._covered = max(self._covered, revision)
        return revision

    async def revoke(self, lease: int) -> None:
        await self._call("lease", "LeaseRevoke", rpc.LeaseRevokeRequest(ID=lease))

    # --- the cluster --------------------------------------------------------------------------

    async def members(self) -> list[dict[str, Any]]:
        """Each member: name, client URLs, and whether it answers (then with its revision and
        whether it leads), asked of all of them at once, a second at most."""
        listed = await self._call("cluster", "MemberList", rpc.MemberListRequest())
        return list(await asyncio.gather(*(self._member_status(m) for m in listed.members)))

    async def _member_status(self, member: Any) -> dict[str, Any]:
        entry: dict[str, Any] = {"name": member.name, "id": f"{member.ID:x}", "urls": list(member.clientURLs)}
        endpoint = urlsplit(member.clientURLs[0]).netloc if member.clientURLs else ""
        link = self._links.get(endpoint) or _Link(endpoint, self.options, self._credentials)
        try:
            status = await link.maintenance.Status(rpc.StatusRequest(), timeout=1.0, metadata=self._metadata)
        except grpc.aio.AioRpcError as exc:
            entry.update(healthy=False, error=exc.details() or exc.code().name)
        else:
            entry.update(healthy=True, leader=status.leader == member.ID, revision=status.header.revision)
        finally:
            if endpoint not in self._links:
                await link.channel.close()
        return entry

    async def compact(self, revision: int) -> None:
        """Drop etcd's history before `revision` (what etcd's auto-compaction does)."""
        await self._call("kv", "Compact", rpc.CompactionRequest(revision=revision, physical=True))


def _read(path: str | None) -> bytes | None:
    if path is None:
        return None
    with open(path, "rb") as f:
        return f.read()


class _Waiting:
    """A transaction a caller waits on, not sent yet."""

    __slots__ = ("answer", "compares", "ops")

    def __init__(self, compares: Sequence[Compare], ops: Sequence[Op], answer: asyncio.Future[TxnResult]) -> None:
        self.compares = compares
        self.ops = ops
        self.answer = answer


def _together(waiting: list[_Waiting]) -> tuple[list[_Waiting], list[_Waiting]]:
    """The first transactions that can go as one (no key in two of them, within etcd's bounds), and
    the rest, in their order."""
    batch: list[_Waiting] = []
    rest: list[_Waiting] = []
    keys: set[str] = set()
    compares = ops = 0
    for item in waiting:
        touched = {c.key for c in item.compares} | {op.key for op in item.ops}
        fits = compares + len(item.compares) <= MAX_TXN_OPS and ops + len(item.ops) <= MAX_TXN_OPS
        if batch and (rest or not fits or touched & keys):
            rest.append(item)
            continue
        batch.append(item)
        keys |= touched
        compares += len(item.compares)
        ops += len(item.ops)
    return batch, rest


def _answer(waiting: _Waiting, result: TxnResult | BaseException) -> None:
    if waiting.answer.done():  # its caller was cancelled
        return
    if isinstance(result, BaseException):
        waiting.answer.set_exception(result)
    else:
        waiting.answer.set_result(result)
