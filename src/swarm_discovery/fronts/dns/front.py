"""One DNS message in, one reply out: names parsed into a `Query`, the lookup's answer encoded.

Which instances are healthy, how `near` orders them and what the change index is are the
lookup's; this module only maps names and encodes. A reply for a `Query` is kept in an
`AnswerCache` (core/answers.py, as the HTTP front keeps its answers) under `(Query, Asked)` until
the change index of the query's topic moves; a query spelled as one answered before is served
from it without being parsed.

Like Consul: a service with no healthy instance (or one the anonymous caller may not read) is
NXDOMAIN; a name that exists but has no record of the type asked is NODATA (NOERROR, no
answer); both carry the SOA in the authority section. A name outside the domain is REFUSED
(this is no recursive resolver), and a reply is never answered (no loops between servers).
"""

from __future__ import annotations

import logging
from typing import cast

import dns.flags
import dns.message
import dns.name
import dns.opcode
import dns.rcode
import dns.rdataclass
import dns.rdatatype

from ...core.answers import AnswerCache
from ...core.core import Core
from ...core.lookup import Query
from ...core.published import Published
from ...errors import BadRequest, NotFound
from ...records import NodeView
from .cache import DnsAnswer, Key, Spellings
from .encode import Asked, failure, render
from .names import NOTHING, Named, named
from .records import SMALLEST_RECORD, Sections, Zone, target_of
from .settings import CACHED_ANSWERS, CACHED_BYTES, MAX_QUERY, MAX_RECORDS, DnsSettings

log = logging.getLogger("swarm.dns")
_HEADER = 12
_REFUSED_TYPES = frozenset({dns.rdatatype.AXFR, dns.rdatatype.IXFR})


class DnsFront:
    def __init__(self, settings: DnsSettings, core: Core) -> None:
        self.zone = Zone(settings)
        self.lookup = core.lookup
        self._registry = core.registry
        # What DNS may show: the anonymous caller's reads (everything while ACLs are off).
        # It is fixed at startup, so cached replies never need to know who asked.
        self.policy = core.acl.caller(None).policy
        self.answers: AnswerCache[DnsAnswer] = AnswerCache(core.registry.topic_index, CACHED_ANSWERS, CACHED_BYTES)
        self._spellings = {False: Spellings(), True: Spellings()}  # by transport: UDP, TCP

    def reply(self, wire: bytes, tcp: bool) -> bytes | None:
        """The reply to one message, or None for one that gets none (a reply, no header, too long)."""
        key = self._spellings[tcp].get(wire[2:])
        try:
            if key is not None:
                return wire[:2] + self._current(key).next()
            if len(wire) < _HEADER or len(wire) > MAX_QUERY or wire[2] & 0x80:
                return None
            return self._parsed(wire, tcp)
        except Exception:  # a bug: the asker hears of it, the server goes on
            log.exception("dns: answering a query failed")
            return failure(int.from_bytes(wire[:2]), wire[2] << 8, dns.rcode.SERVFAIL)

    def _parsed(self, wire: bytes, tcp: bool) -> bytes:
        query_id, flags = int.from_bytes(wire[:2]), int.from_bytes(wire[2:4])
        if dns.opcode.from_flags(flags) != dns.opcode.QUERY:  # before parsing: UPDATE's sections differ
            return failure(query_id, flags, dns.rcode.NOTIMP)
        try:
            query = dns.message.from_wire(wire)
        except Exception:  # whatever a hostile message makes the parser raise
            return failure(query_id, flags, dns.rcode.FORMERR)
        if len(query.question) != 1:
            return failure(query_id, flags, dns.rcode.FORMERR)
        asked = Asked.of(query, tcp)
        qname = query.question[0].name
        if query.edns > 0:
            reply = render(asked, dns.rcode.BADVERS)
        elif (
            asked.rdclass not in (dns.rdataclass.IN, dns.rdataclass.ANY)
            or asked.rdtype in _REFUSED_TYPES
            or not qname.is_subdomain(self.zone.origin)
        ):
            reply = render(asked, dns.rcode.REFUSED)
        else:
            what = self._named(qname)
            key = self._key(what, asked)
            if key is not None:
                self._spellings[tcp].remember(wire[2:], key)
                return wire[:2] + self._current(key).next()
            reply = self._unlooked(what, asked)
        return wire[:2] + reply[2:]

    def _named(self, qname: dns.name.Name) -> Named:
        try:
            labels = tuple(label.decode("ascii").lower() for label in qname.relativize(self.zone.origin).labels)
        except UnicodeDecodeError:
            return NOTHING
        return named(labels)

    def _key(self, what: Named, asked: Asked) -> Key | None:
        """The cache key of a question the lookup answers, or None."""
        if what.kind == "node":
            return Query("node", id=what.node), asked
        if what.kind != "service":
            return None
        query = Query("instances", service=what.service, tags=(what.tag,) if what.tag else (), near=what.near)
        try:
            self.lookup.check(query)
        except BadRequest:  # a `near` label that is no zone, region or point
            return None
        return query, asked

    def _unlooked(self, what: Named, asked: Asked) -> bytes:
        """The reply to a name that needs no lookup: the zone itself, an address, or nothing."""
        serial = self._registry.index
        if what.kind == "apex":
            return self._records(asked, self._apex(asked.rdtype, serial), serial)
        if what.kind == "addr":
            return self._records(asked, self.zone.for_target(asked.name, target_of(what.address), asked.rdtype), serial)
        return self._nxdomain(asked, serial)

    def _current(self, key: Key) -> DnsAnswer:
        """The cached answer while it is current, else a new one, cached."""
        return self.answers.get(key) or self._answer(key)

    def _answer(self, key: Key) -> DnsAnswer:
        query, asked = key
        index = self.lookup.index(query)  # before reading: the reply is current at it
        replies = self._node(query, asked, index) if query.kind == "node" else self._service(query, asked, index)
        answer = DnsAnswer(query.topic, index, replies)
        self.answers.put(key, answer)
        return answer

    def _service(self, query: Query, asked: Asked, index: int) -> list[bytes]:
        if not self.policy.allows("services", query.service, "read"):
            return [self._nxdomain(asked, index)]
        found = cast(list[Published], self.lookup.answer(query).items)
        if not found:
            return [self._nxdomain(asked, index)]
        # Over UDP, more records than can fit, so that a reply holding fewer than exist is truncated.
        fits = min(MAX_RECORDS, (asked.max_size - _HEADER) // SMALLEST_RECORD + 1)
        variants = self.zone.for_instances(asked.name, found, asked.rdtype, fits, shuffled=query.near is None)
        if variants is None:
            return [self._records(asked, None, index)]
        return [render(asked, dns.rcode.NOERROR, sections) for sections in variants]

    def _node(self, query: Query, asked: Asked, index: int) -> list[bytes]:
        if not self.policy.allows("nodes", query.id, "read"):
            return [self._nxdomain(asked, index)]
        try:
            node = cast(NodeView, self.lookup.answer(query).items)
        except NotFound:
            return [self._nxdomain(asked, index)]
        target = target_of(node.address) if node.address else None
        return [self._records(asked, self.zone.for_target(asked.name, target, asked.rdtype), index)]

    def _apex(self, rdtype: int, serial: int) -> Sections | None:
        answer = []
        if rdtype in (dns.rdatatype.SOA, dns.rdatatype.ANY):
            answer.append(self.zone.soa(serial))
        if rdtype in (dns.rdatatype.NS, dns.rdatatype.ANY):
            answer.append(self.zone.name_server())
        return Sections(answer, []) if answer else None

    def _records(self, asked: Asked, sections: Sections | None, serial: int) -> bytes:
        """The records found, or NODATA: the name exists, with nothing of that type."""
        if sections is None:
            return render(asked, dns.rcode.NOERROR, authority=[self.zone.soa(serial)])
        return render(asked, dns.rcode.NOERROR, sections)

    def _nxdomain(self, asked: Asked, serial: int) -> bytes:
        return render(asked, dns.rcode.NXDOMAIN, authority=[self.zone.soa(serial)])
