"""The Python SDK: `Client` (sync) and `AsyncClient`, one core behind two faces.

`BaseClient` does all the non-I/O work, as httpx's does: each private builder (`_register`, ...)
returns an `Operation`, the request to send and how to read its answer. `Client` and `AsyncClient`
spell every method out with its signature and return type, and differ only in the one line that
sends: `self._send(...)` blocks in one and is awaited in the other. Errors arrive as `ApiError`
with the server's message, `Unreachable` when the server did not answer, or `NotSwarm` when
what answered is not a swarm server. `watch()` and `events()` follow the server across restarts
(`resume.py`); `keep_alive()` heartbeats in the background (`keepalive.py`).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import ssl
import time
import urllib.parse
from collections.abc import AsyncIterator, Iterator
from typing import Any, Generic, TypedDict, TypeVar, Unpack

import httpx
import msgspec

from ..acl.rules import Rules
from ..acl.tokens import CreatedToken, TokenView
from ..certs import CertificateFileError, present, trust
from ..errors import ApiError, BadRequest, Unreachable
from ..records import (
    CheckSpec,
    CheckState,
    InstanceSpec,
    InstanceView,
    NodeSpec,
    NodeView,
    Report,
    ReportsAccepted,
    ServerInfo,
    ServiceRules,
    ServiceSummary,
    checked_name,
    report_batches,
)
from .answers import NotSwarm, Read, raise_for_error, reader
from .balancer import AsyncBalancer, Balancer
from .keepalive import AsyncKeepAlive, KeepAlive, MetricsSource
from .resume import EventParser, Follower, WatchEvent
from .servers import Servers, parse_addresses

__all__ = ["AsyncClient", "CertificateFileError", "Client", "NotSwarm", "WatchEvent", "tls_context"]
DEFAULT_ADDR = "http://127.0.0.1:8500"
T = TypeVar("T")
# A client certificate as httpx takes one: a file holding it and its key, (cert, key) or (cert, key, password).
CertTypes = str | tuple[str, str] | tuple[str, str, str]


class Filters(TypedDict, total=False):
    """Which instances a listing returns; every key is optional."""

    selector: str | None  # CEL over instance and node
    tags: list[str] | None  # all of them
    all: bool  # unhealthy instances too
    near: str | None  # sort by nearness to a region, zone or "lat,lon"
    limit: int | None


class Operation(msgspec.Struct, Generic[T], frozen=True):
    """One request and how to read its answer: what a method of either face sends."""

    request: httpx.Request
    read: Read[T]


def server_address(addr: str | None = None) -> str:
    """The first of the servers `addr` (or SWARM_ADDR) names."""
    return parse_addresses(addr)[0]


def tls_context(cacert: str | None = None, cert: CertTypes | None = None) -> ssl.SSLContext | None:
    """How to verify the server, and the certificate to show it (mTLS); None for httpx's defaults.

    `cacert` (else SWARM_CACERT) is a PEM bundle of the CAs to trust instead of the system's;
    `cert` (else SWARM_CLIENT_CERT, with SWARM_CLIENT_KEY unless its file holds the key too) is a
    client certificate. A file that cannot be used is a `CertificateFileError` naming where it was given.
    """
    env = os.environ.get
    ca_name = "cacert"
    if cacert is None and env("SWARM_CACERT"):
        cacert, ca_name = env("SWARM_CACERT"), "SWARM_CACERT"
    names = ("cert", "cert")
    client_cert, client_key = env("SWARM_CLIENT_CERT"), env("SWARM_CLIENT_KEY")
    if cert is None and client_cert:
        cert = (client_cert, client_key) if client_key else client_cert
        names = ("SWARM_CLIENT_CERT", "SWARM_CLIENT_KEY")
    elif cert is None and client_key:
        raise CertificateFileError("SWARM_CLIENT_KEY: needs SWARM_CLIENT_CERT, the certificate it is the key of")
    if cacert is None and cert is None:
        return None
    if cacert is None:
        context = httpx.create_ssl_context()  # what httpx verifies with by default
    else:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        trust(context, cacert, ca_name)
    if isinstance(cert, str):
        present(context, cert, None, names)
    elif cert is not None:
        present(context, cert[0], cert[1], names, cert[2] if len(cert) == 3 else None)
    return context


def _hint(error: httpx.TransportError, https: bool, shows_cert: bool) -> str:
    """What to do about a failure that looks like TLS set up wrong, for the end of its message."""
    text = str(error)
    if "CERTIFICATE_VERIFY_FAILED" in text:
        return " (SWARM_CACERT names the CA bundle to check the server's certificate against)"
    # A server that wants a client certificate refuses the handshake; in TLS 1.3 the client
    # learns only that the connection closed, at its first read.
    dropped = "CERTIFICATE_REQUIRED" in text or "without sending a response" in text
    if https and dropped and not shows_cert:
        return " (if the server requires a client certificate: SWARM_CLIENT_CERT and SWARM_CLIENT_KEY)"
    if not https and ("without sending a response" in text or "illegal" in text):
        return " (if it serves HTTPS, give the address as https://HOST:PORT)"
    if "WRONG_VERSION_NUMBER" in text or "record layer failure" in text:
        return " (is it serving HTTPS?)"
    return ""


def _body(spec: msgspec.Struct | dict[str, Any] | None, fields: dict[str, Any]) -> bytes:
    if spec is not None and fields:
        raise TypeError("pass either a spec or keyword fields, not both")
    return msgspec.json.encode(spec if spec is not None else fields)


_read_instance = reader(InstanceView)
_read_instances = reader(list[InstanceView])
_read_checks = reader(list[CheckState])
_read_accepted = reader(ReportsAccepted)


def _summed(parts: list[ReportsAccepted]) -> ReportsAccepted:
    return ReportsAccepted(accepted=sum(p.accepted for p in parts), ignored=sum(p.ignored for p in parts))


_read_services = reader(list[ServiceSummary])
_read_node = reader(NodeView)
_read_rules = reader(ServiceRules)
_read_nodes = reader(list[NodeView])
_read_server = reader(ServerInfo)
_read_created = reader(CreatedToken)
_read_tokens = reader(list[TokenView])
_read_token = reader(TokenView)


def _beat(metrics: dict[str, float] | None, status: str | None, output: str | None) -> bytes:
    beat = {k: v for k, v in {"metrics": metrics, "status": status, "output": output}.items() if v is not None}
    return msgspec.json.encode(beat)


def _read_instances_at(response: httpx.Response) -> tuple[list[InstanceView], int]:
    return _read_instances(response), int(response.headers.get("x-swarm-index", 0))


def _listing_params(index: int | None, wait: float | None, filters: Filters) -> dict[str, Any]:
    # `Unpack[Filters]` is checked only statically; a misspelt keyword must still fail here.
    unexpected = filters.keys() - Filters.__optional_keys__
    if unexpected:
        raise TypeError(f"unexpected keyword argument(s): {', '.join(sorted(unexpected))}")
    return {
        "selector": filters.get("selector"),
        "tag": filters.get("tags") or [],
        "all": "true" if filters.get("all") else None,
        "near": filters.get("near"),
        "limit": filters.get("limit"),
        "index": index,
        "wait": f"{wait}s" if wait is not None else None,
    }


def _named(value: str, param: str) -> str:
    """A name for a path, checked here as the server checks it: one with "/", "..", "?" or "#" in
    it would reach another path (another instance) before the server could refuse it."""
    try:
        return checked_name(value, param)
    except BadRequest as exc:
        raise ApiError(400, exc.message) from None


def _service_path(service: str, rest: str = "") -> str:
    return f"/v1/services/{_named(service, 'service')}{rest}"


def _instance_path(service: str, id: str, rest: str = "") -> str:
    return _service_path(service, f"/instances/{_named(id, 'id')}{rest}")


def _node_path(id: str, rest: str = "") -> str:
    return f"/v1/nodes/{_named(id, 'id')}{rest}"


class BaseClient:
    """The server, the token, TLS and the timeout, and every request built and every answer read."""

    def __init__(
        self,
        addr: str | None = None,
        token: str | None = None,
        timeout: float = 10.0,
        cacert: str | None = None,
        cert: CertTypes | None = None,
    ) -> None:
        self.servers = Servers(addr)  # several, comma-separated: the next when one stops answering
        token = token or os.environ.get("SWARM_TOKEN")
        self.headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.timeout = timeout
        self.tls = tls_context(cacert, cert)  # also what balancers verify instances with and show them
        self._shows_cert = bool(cert or os.environ.get("SWARM_CLIENT_CERT"))

    @property
    def base_url(self) -> str:
        """The server in use."""
        return self.servers.current

    def _request(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, Any] | None = None,
        content: bytes | None = None,
        timeout: float | None = None,
    ) -> httpx.Request:
        query = {k: v for k, v in (params or {}).items() if v is not None and v is not False and v != []}
        return httpx.Request(
            method,
            self.base_url + path,
            params=query,
            content=content,
            headers={**self.headers, "content-type": "application/json"} if content is not None else self.headers,
            extensions={"timeout": httpx.Timeout(timeout or self.timeout).as_dict()},
        )

    @contextlib.contextmanager
    def _translate_errors(self) -> Iterator[None]:
        """Where httpx's errors enter: a server that did not answer is `Unreachable`, named."""
        try:
            yield
        except httpx.TransportError as exc:
            hint = _hint(exc, self.base_url.startswith("https://"), self._shows_cert)
            reason = str(exc).rstrip(".")
            raise Unreachable(f"cannot reach the swarm server at {self.servers.named()}: {reason}{hint}") from exc

    def _register(
        self, service: str, id: str, spec: InstanceSpec | dict[str, Any] | None, fields: dict[str, Any]
    ) -> Operation[InstanceView]:
        return Operation(self._request("PUT", _instance_path(service, id), content=_body(spec, fields)), _read_instance)

    def _deregister(self, service: str, id: str) -> Operation[None]:
        return Operation(self._request("DELETE", _instance_path(service, id)), raise_for_error)

    def _instance_heartbeat(
        self, service: str, id: str, metrics: dict[str, float] | None, status: str | None, output: str | None
    ) -> Operation[InstanceView]:
        path = _instance_path(service, id, "/heartbeat")
        return Operation(self._request("PUT", path, content=_beat(metrics, status, output)), _read_instance)

    def _node_heartbeat(
        self, id: str, metrics: dict[str, float] | None, status: str | None, output: str | None
    ) -> Operation[NodeView]:
        path = _node_path(id, "/heartbeat")
        return Operation(self._request("PUT", path, content=_beat(metrics, status, output)), _read_node)

    def _rules(self, service: str) -> Operation[ServiceRules]:
        return Operation(self._request("GET", _service_path(service, "/rules")), _read_rules)

    def _set_rules(self, service: str, rules: list[CheckSpec] | list[dict[str, Any]]) -> Operation[ServiceRules]:
        content = msgspec.json.encode({"rules": rules})
        return Operation(self._request("PUT", _service_path(service, "/rules"), content=content), _read_rules)

    def _clear_rules(self, service: str) -> Operation[None]:
        return Operation(self._request("DELETE", _service_path(service, "/rules")), raise_for_error)

    def _maintenance(self, service: str, id: str, enable: bool, reason: str) -> Operation[InstanceView]:
        path = _instance_path(service, id, "/maintenance")
        content = msgspec.json.encode({"enable": enable, "reason": reason})
        return Operation(self._request("PUT", path, content=content), _read_instance)

    def _listing(self, service: str, index: int | None, wait: float | None, filters: Filters) -> httpx.Request:
        params = _listing_params(index, wait, filters)
        # The server may hold a blocking query for `wait`; the timeout covers the answer after it.
        return self._request("GET", _service_path(service), params=params, timeout=(wait or 0) + self.timeout)

    def _instances_at(
        self, service: str, index: int | None, wait: float | None, filters: Filters
    ) -> Operation[tuple[list[InstanceView], int]]:
        return Operation(self._listing(service, index, wait, filters), _read_instances_at)

    def _instances(
        self, service: str, index: int | None, wait: float | None, filters: Filters
    ) -> Operation[list[InstanceView]]:
        return Operation(self._listing(service, index, wait, filters), _read_instances)

    def _instance(self, service: str, id: str) -> Operation[InstanceView]:
        return Operation(self._request("GET", _instance_path(service, id)), _read_instance)

    def _checks(self, service: str, id: str) -> Operation[list[CheckState]]:
        return Operation(self._request("GET", _instance_path(service, id, "/checks")), _read_checks)

    def _report(self, batch: bytes) -> Operation[ReportsAccepted]:
        return Operation(self._request("POST", "/v1/reports", content=batch), _read_accepted)

    def _services(self) -> Operation[list[ServiceSummary]]:
        return Operation(self._request("GET", "/v1/services"), _read_services)

    def _put_node(self, id: str, spec: NodeSpec | dict[str, Any] | None, fields: dict[str, Any]) -> Operation[NodeView]:
        return Operation(self._request("PUT", _node_path(id), content=_body(spec, fields)), _read_node)

    def _node(self, id: str) -> Operation[NodeView]:
        return Operation(self._request("GET", _node_path(id)), _read_node)

    def _delete_node(self, id: str) -> Operation[None]:
        return Operation(self._request("DELETE", _node_path(id)), raise_for_error)

    def _nodes(self, selector: str | None, kind: str | None) -> Operation[list[NodeView]]:
        return Operation(self._request("GET", "/v1/nodes", params={"selector": selector, "kind": kind}), _read_nodes)

    def _server(self) -> Operation[ServerInfo]:
        return Operation(self._request("GET", "/v1/server"), _read_server)

    def _events(self, service: str, selector: str | None, all: bool, since: int | None) -> httpx.Request:
        params = {"service": service, "selector": selector, "all": "true" if all else None}
        request = self._request("GET", "/v1/watch", params=params)
        if since is not None:
            request.headers["Last-Event-ID"] = str(since)
        # A change stream is quiet between changes: only connecting and writing may time out.
        request.extensions["timeout"] = httpx.Timeout(self.timeout, read=None).as_dict()
        return request

    def _bootstrap(self) -> Operation[CreatedToken]:
        return Operation(self._request("PUT", "/v1/acl/bootstrap"), _read_created)

    def _create_token(
        self, rules: Rules | dict[str, Any], description: str, identities: list[str] | None
    ) -> Operation[CreatedToken]:
        body = {"description": description, "rules": rules, "identities": identities or []}
        return Operation(self._request("POST", "/v1/acl/tokens", content=msgspec.json.encode(body)), _read_created)

    def _tokens(self) -> Operation[list[TokenView]]:
        return Operation(self._request("GET", "/v1/acl/tokens"), _read_tokens)

    def _own_token(self) -> Operation[TokenView]:
        return Operation(self._request("GET", "/v1/acl/self"), _read_token)

    def _delete_token(self, id: str) -> Operation[None]:
        return Operation(self._request("DELETE", f"/v1/acl/tokens/{urllib.parse.quote(id, safe='')}"), raise_for_error)

    def _stream_ended(self) -> Unreachable:
        return Unreachable(f"{self.base_url} ended the stream")


class Client(BaseClient):
    """Blocking SDK client. `with Client() as c: c.instances("llm", selector=...)`.

    `cacert` and `cert` (else SWARM_CACERT, SWARM_CLIENT_CERT and SWARM_CLIENT_KEY) are TLS's CA
    bundle and client certificate: see `tls_context`.
    """

    def __init__(
        self,
        addr: str | None = None,
        token: str | None = None,
        timeout: float = 10.0,
        *,
        cacert: str | None = None,
        cert: CertTypes | None = None,
    ) -> None:
        super().__init__(addr, token, timeout, cacert, cert)
        self._http = httpx.Client(verify=self.tls or True)

    def _send(self, operation: Operation[T]) -> T:
        with self._translate_errors():
            response = self._transmit(operation.request)
        return operation.read(response)

    def _transmit(self, request: httpx.Request, stream: bool = False) -> httpx.Response:
        """`request` to the server in use, or to the next ones while they cannot be reached."""
        attempts = self.servers.attempts(request)
        while True:
            try:
                return self._http.send(request, stream=stream)
            except httpx.TransportError as exc:
                request = self.servers.next_after(attempts, request, exc)  # or raises exc

    def register(
        self, service: str, id: str, spec: InstanceSpec | dict[str, Any] | None = None, **fields: Any
    ) -> InstanceView:
        """Register (or replace) instance `id` of `service`, from a spec or its fields as keywords."""
        return self._send(self._register(service, id, spec, fields))

    def deregister(self, service: str, id: str) -> None:
        """Remove instance `id` of `service`."""
        self._send(self._deregister(service, id))

    def heartbeat(
        self,
        service: str,
        id: str,
        metrics: dict[str, float] | None = None,
        status: str | None = None,
        output: str | None = None,
    ) -> InstanceView:
        """Renew the instance's TTL checks, with its current metrics and, optionally, a status."""
        return self._send(self._instance_heartbeat(service, id, metrics, status, output))

    def node_heartbeat(
        self, id: str, metrics: dict[str, float] | None = None, status: str | None = None, output: str | None = None
    ) -> NodeView:
        """Renew node `id`'s TTL checks, with its current metrics (which its rules, and its instances', judge)."""
        return self._send(self._node_heartbeat(id, metrics, status, output))

    def rules(self, service: str) -> ServiceRules:
        """The metric rules every instance of `service` takes (`rules` empty when none)."""
        return self._send(self._rules(service))

    def set_rules(self, service: str, rules: list[CheckSpec] | list[dict[str, Any]]) -> ServiceRules:
        """Set the metric rules of `service`, for its instances now and registered later."""
        return self._send(self._set_rules(service, rules))

    def clear_rules(self, service: str) -> None:
        """Clear the metric rules of `service`."""
        self._send(self._clear_rules(service))

    def maintenance(self, service: str, id: str, enable: bool, reason: str = "") -> InstanceView:
        """Take the instance out of listings (`enable=True`) or put it back."""
        return self._send(self._maintenance(service, id, enable, reason))

    def instances_at(
        self, service: str, *, index: int | None = None, wait: float | None = None, **filters: Unpack[Filters]
    ) -> tuple[list[InstanceView], int]:
        """Instances and the change index they are current at; blocks up to `wait` while `index` is current."""
        return self._send(self._instances_at(service, index, wait, filters))

    def instances(
        self, service: str, *, index: int | None = None, wait: float | None = None, **filters: Unpack[Filters]
    ) -> list[InstanceView]:
        """Instances of `service` that match: the healthy ones unless `all=True`."""
        return self._send(self._instances(service, index, wait, filters))

    def instance(self, service: str, id: str) -> InstanceView:
        """Instance `id` of `service`, whatever its status."""
        return self._send(self._instance(service, id))

    def checks(self, service: str, id: str) -> list[CheckState]:
        """The state of each check of one instance."""
        return self._send(self._checks(service, id))

    def report(self, reports: list[Report]) -> ReportsAccepted:
        """Passive observations (what a request to an instance saw), for the server to aggregate;
        sent in as many batches as the server's limits need."""
        return _summed([self._send(self._report(batch)) for batch in report_batches(reports)])

    def services(self) -> list[ServiceSummary]:
        """The catalog: every service with its instance and healthy counts."""
        return self._send(self._services())

    def put_node(self, id: str, spec: NodeSpec | dict[str, Any] | None = None, **fields: Any) -> NodeView:
        """Register (or replace) node `id`, from a spec or its fields as keywords."""
        return self._send(self._put_node(id, spec, fields))

    def node(self, id: str) -> NodeView:
        """One node."""
        return self._send(self._node(id))

    def delete_node(self, id: str) -> None:
        """Remove node `id`."""
        self._send(self._delete_node(id))

    def nodes(self, *, selector: str | None = None, kind: str | None = None) -> list[NodeView]:
        """Nodes matching a CEL `selector` and of `kind` (compute, storage or network)."""
        return self._send(self._nodes(selector, kind))

    def server(self) -> ServerInfo:
        """The server's version, store and change index."""
        return self._send(self._server())

    def watch(self, service: str, wait: float = 60.0, **filters: Unpack[Filters]) -> Iterator[list[InstanceView]]:
        """Yield the matching instances now, then again each time they change (blocking queries).

        Once answered, it outlives the server: it reconnects with a backoff and resumes from the
        last index, logging (on `swarm.sdk`) when it lost the server and when it is back.
        """
        follower = Follower(f"watch of {service}", self.base_url)
        while True:
            try:
                found, current = self.instances_at(service, index=follower.index, wait=wait, **filters)
            except ApiError as exc:
                time.sleep(follower.lost(exc))
                continue
            follower.answered()
            if current != follower.index:
                yield found
            follower.index = current

    def events(self, service: str, selector: str | None = None, all: bool = False) -> Iterator[WatchEvent]:
        """The server's change stream (SSE) for one service: a snapshot, then every change.

        Like `watch()`, it outlives the server, resuming with Last-Event-ID.
        """
        follower = Follower(f"events of {service}", self.base_url)
        while True:
            try:
                with self._translate_errors():
                    request = self._events(service, selector, all, follower.since(self.base_url))
                    response = self._transmit(request, stream=True)
                with contextlib.closing(response):
                    if response.status_code >= 400:
                        response.read()
                        raise_for_error(response)
                    follower.answered(str(response.request.url))
                    parser = EventParser()
                    for line in response.iter_lines():
                        event = parser.feed(line)
                        if event is not None:
                            follower.index = event.index
                            yield event
                raise self._stream_ended()  # the server is stopping
            except (ApiError, httpx.TransportError) as exc:
                self.servers.lost(exc)
                time.sleep(follower.lost(exc))

    def bootstrap(self) -> CreatedToken:
        """The first management token of a server started with --acl; refused (403) once done."""
        return self._send(self._bootstrap())

    def create_token(
        self, rules: Rules | dict[str, Any], description: str = "", identities: list[str] | None = None
    ) -> CreatedToken:
        """A new token with `rules`; its secret is in this answer only. `identities`: certificates acting as it."""
        return self._send(self._create_token(rules, description, identities))

    def tokens(self) -> list[TokenView]:
        """Every token, without secrets."""
        return self._send(self._tokens())

    def own_token(self) -> TokenView:
        """The token this client presents."""
        return self._send(self._own_token())

    def delete_token(self, id: str) -> None:
        """Delete the token with accessor `id`: its secret stops working on every server."""
        self._send(self._delete_token(id))

    def keep_alive(self, service: str, id: str, every: float = 5.0, metrics: MetricsSource = None) -> KeepAlive:
        """Heartbeat `id` every `every` seconds in a thread: `with client.keep_alive(...):`.

        `metrics`, a mapping or a callable returning one, goes with each heartbeat.
        """
        return KeepAlive(self, service, id, every, metrics)

    def balancer(self, service: str, **options: Any) -> Balancer:
        """A live, balanced view of `service`: `balancer.request("GET", "/path")`.

        Options: strategy (round_robin, weighted, least_loaded, consistent_hash), selector, tags,
        zone, region, near=(lat, lon), attempts, per_try_timeout, retry_budget, panic_threshold.
        """
        return Balancer(self, service, **options)

    def close(self) -> None:
        """Close the connections."""
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class AsyncClient(BaseClient):
    """Asyncio SDK client. `async with AsyncClient() as c: await c.instances("llm")`; TLS as `Client`'s."""

    def __init__(
        self,
        addr: str | None = None,
        token: str | None = None,
        timeout: float = 10.0,
        *,
        cacert: str | None = None,
        cert: CertTypes | None = None,
    ) -> None:
        super().__init__(addr, token, timeout, cacert, cert)
        self._http = httpx.AsyncClient(verify=self.tls or True)

    async def _send(self, operation: Operation[T]) -> T:
        with self._translate_errors():
            response = await self._transmit(operation.request)
        return operation.read(response)

    async def _transmit(self, request: httpx.Request, stream: bool = False) -> httpx.Response:
        """`request` to the server in use, or to the next ones while they cannot be reached."""
        attempts = self.servers.attempts(request)
        while True:
            try:
                return await self._http.send(request, stream=stream)
            except httpx.TransportError as exc:
                request = self.servers.next_after(attempts, request, exc)  # or raises exc

    async def register(
        self, service: str, id: str, spec: InstanceSpec | dict[str, Any] | None = None, **fields: Any
    ) -> InstanceView:
        """Register (or replace) instance `id` of `service`, from a spec or its fields as keywords."""
        return await self._send(self._register(service, id, spec, fields))

    async def deregister(self, service: str, id: str) -> None:
        """Remove instance `id` of `service`."""
        await self._send(self._deregister(service, id))

    async def heartbeat(
        self,
        service: str,
        id: str,
        metrics: dict[str, float] | None = None,
        status: str | None = None,
        output: str | None = None,
    ) -> InstanceView:
        """Renew the instance's TTL checks, with its current metrics and, optionally, a status."""
        return await self._send(self._instance_heartbeat(service, id, metrics, status, output))

    async def node_heartbeat(
        self, id: str, metrics: dict[str, float] | None = None, status: str | None = None, output: str | None = None
    ) -> NodeView:
        """Renew node `id`'s TTL checks, with its current metrics (which its rules, and its instances', judge)."""
        return await self._send(self._node_heartbeat(id, metrics, status, output))

    async def rules(self, service: str) -> ServiceRules:
        """The metric rules every instance of `service` takes (`rules` empty when none)."""
        return await self._send(self._rules(service))

    async def set_rules(self, service: str, rules: list[CheckSpec] | list[dict[str, Any]]) -> ServiceRules:
        """Set the metric rules of `service`, for its instances now and registered later."""
        return await self._send(self._set_rules(service, rules))

    async def clear_rules(self, service: str) -> None:
        """Clear the metric rules of `service`."""
        await self._send(self._clear_rules(service))

    async def maintenance(self, service: str, id: str, enable: bool, reason: str = "") -> InstanceView:
        """Take the instance out of listings (`enable=True`) or put it back."""
        return await self._send(self._maintenance(service, id, enable, reason))

    async def instances_at(
        self, service: str, *, index: int | None = None, wait: float | None = None, **filters: Unpack[Filters]
    ) -> tuple[list[InstanceView], int]:
        """Instances and the change index they are current at; blocks up to `wait` while `index` is current."""
        return await self._send(self._instances_at(service, index, wait, filters))

    async def instances(
        self, service: str, *, index: int | None = None, wait: float | None = None, **filters: Unpack[Filters]
    ) -> list[InstanceView]:
        """Instances of `service` that match: the healthy ones unless `all=True`."""
        return await self._send(self._instances(service, index, wait, filters))

    async def instance(self, service: str, id: str) -> InstanceView:
        """Instance `id` of `service`, whatever its status."""
        return await self._send(self._instance(service, id))

    async def checks(self, service: str, id: str) -> list[CheckState]:
        """The state of each check of one instance."""
        return await self._send(self._checks(service, id))

    async def report(self, reports: list[Report]) -> ReportsAccepted:
        """Passive observations (what a request to an instance saw), for the server to aggregate;
        sent in as many batches as the server's limits need."""
        return _summed([await self._send(self._report(batch)) for batch in report_batches(reports)])

    async def services(self) -> list[ServiceSummary]:
        """The catalog: every service with its instance and healthy counts."""
        return await self._send(self._services())

    async def put_node(self, id: str, spec: NodeSpec | dict[str, Any] | None = None, **fields: Any) -> NodeView:
        """Register (or replace) node `id`, from a spec or its fields as keywords."""
        return await self._send(self._put_node(id, spec, fields))

    async def node(self, id: str) -> NodeView:
        """One node."""
        return await self._send(self._node(id))

    async def delete_node(self, id: str) -> None:
        """Remove node `id`."""
        await self._send(self._delete_node(id))

    async def nodes(self, *, selector: str | None = None, kind: str | None = None) -> list[NodeView]:
        """Nodes matching a CEL `selector` and of `kind` (compute, storage or network)."""
        return await self._send(self._nodes(selector, kind))

    async def server(self) -> ServerInfo:
        """The server's version, store and change index."""
        return await self._send(self._server())

    async def watch(
        self, service: str, wait: float = 60.0, **filters: Unpack[Filters]
    ) -> AsyncIterator[list[InstanceView]]:
        """Yield the matching instances now, then again each time they change (blocking queries).

        Once answered, it outlives the server, as `Client.watch` does.
        """
        follower = Follower(f"watch of {service}", self.base_url)
        while True:
            try:
                found, current = await self.instances_at(service, index=follower.index, wait=wait, **filters)
            except ApiError as exc:
                await asyncio.sleep(follower.lost(exc))
                continue
            follower.answered()
            if current != follower.index:
                yield found
            follower.index = current

    async def events(self, service: str, selector: str | None = None, all: bool = False) -> AsyncIterator[WatchEvent]:
        """The server's change stream (SSE) for one service; it outlives the server, as `Client.events` does."""
        follower = Follower(f"events of {service}", self.base_url)
        while True:
            try:
                with self._translate_errors():
                    request = self._events(service, selector, all, follower.since(self.base_url))
                    response = await self._transmit(request, stream=True)
                try:
                    if response.status_code >= 400:
                        await response.aread()
                        raise_for_error(response)
                    follower.answered(str(response.request.url))
                    parser = EventParser()
                    async for line in response.aiter_lines():
                        event = parser.feed(line)
                        if event is not None:
                            follower.index = event.index
                            yield event
                finally:
                    await response.aclose()
                raise self._stream_ended()
            except (ApiError, httpx.TransportError) as exc:
                self.servers.lost(exc)
                await asyncio.sleep(follower.lost(exc))

    async def bootstrap(self) -> CreatedToken:
        """The first management token of a server started with --acl; refused (403) once done."""
        return await self._send(self._bootstrap())

    async def create_token(
        self, rules: Rules | dict[str, Any], description: str = "", identities: list[str] | None = None
    ) -> CreatedToken:
        """A new token with `rules`; its secret is in this answer only. `identities`: certificates acting as it."""
        return await self._send(self._create_token(rules, description, identities))

    async def tokens(self) -> list[TokenView]:
        """Every token, without secrets."""
        return await self._send(self._tokens())

    async def own_token(self) -> TokenView:
        """The token this client presents."""
        return await self._send(self._own_token())

    async def delete_token(self, id: str) -> None:
        """Delete the token with accessor `id`: its secret stops working on every server."""
        await self._send(self._delete_token(id))

    def keep_alive(self, service: str, id: str, every: float = 5.0, metrics: MetricsSource = None) -> AsyncKeepAlive:
        """Heartbeat `id` every `every` seconds from a task: `async with client.keep_alive(...):`."""
        return AsyncKeepAlive(self, service, id, every, metrics)

    def balancer(self, service: str, **options: Any) -> AsyncBalancer:
        """A live, balanced view of `service`: `async with client.balancer(...) as lb` (or `await` it).

        Then `await lb.request("GET", "/path")`; the options are `Client.balancer`'s.
        """
        return AsyncBalancer(self, service, **options)

    async def aclose(self) -> None:
        """Close the connections."""
        await self._http.aclose()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()
