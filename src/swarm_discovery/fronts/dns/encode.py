"""Replies in wire format, rendered by dnspython, and how a question was put.

A reply that does not fit (512 bytes over UDP without EDNS0, the asker's EDNS0 size up to
UDP_PAYLOAD, 65,535 over TCP) carries the records that fit and the TC bit: a resolver asks again
over TCP, one that does not still has addresses to use. Records are rendered one RRset each, so
that truncation can stop between two of them.
"""

from __future__ import annotations

import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdataclass
import dns.rrset
import msgspec
from dns.rdatatype import RdataType

from .records import Sections
from .settings import PLAIN_UDP, TCP_MESSAGE, UDP_PAYLOAD

_OPCODE = 0x7800  # the header's opcode bits, which a reply repeats


class Asked(msgspec.Struct, frozen=True, gc=False):
    """How a question was put: everything in its reply that does not come from the registry."""

    qname: str  # as spelled, case and all: resolvers may check that it comes back unchanged
    rdtype: int
    rdclass: int
    rd: bool  # recursion desired: echoed
    edns: bool
    max_size: int

    @classmethod
    def of(cls, query: dns.message.Message, tcp: bool) -> Asked:
        question = query.question[0]
        if tcp:
            size = TCP_MESSAGE
        elif query.edns >= 0:
            size = max(PLAIN_UDP, min(query.payload, UDP_PAYLOAD))
        else:
            size = PLAIN_UDP
        return cls(
            question.name.to_text(),
            question.rdtype,
            question.rdclass,
            bool(query.flags & dns.flags.RD),
            query.edns >= 0,
            size,
        )

    @property
    def name(self) -> dns.name.Name:
        return dns.name.from_text(self.qname)


def render(
    asked: Asked,
    rcode: dns.rcode.Rcode,
    sections: Sections | None = None,
    authority: list[dns.rrset.RRset] | None = None,
) -> bytes:
    """The reply, its id 0 (each asker's goes in its place); authoritative unless refused."""
    message = dns.message.Message(id=0)
    message.flags = dns.flags.QR | (dns.flags.RD if asked.rd else 0)
    if rcode != dns.rcode.REFUSED:
        message.flags |= dns.flags.AA
    question = dns.rrset.RRset(asked.name, dns.rdataclass.RdataClass.make(asked.rdclass), RdataType.make(asked.rdtype))
    message.question = [question]
    if asked.edns:
        message.use_edns(0, 0, UDP_PAYLOAD)
    message.set_rcode(rcode)  # after use_edns: BADVERS lives in the OPT record
    if sections is not None:
        message.answer, message.additional = sections.answer, sections.additional
    message.authority = authority or []
    return message.to_wire(max_size=asked.max_size, prefer_truncation=True)


def failure(query_id: int, flags: int, rcode: dns.rcode.Rcode) -> bytes:
    """A reply to a query that could not be read: its header only."""
    message = dns.message.Message(id=query_id)
    message.flags = dns.flags.QR | (flags & (dns.flags.RD | _OPCODE))
    message.set_rcode(rcode)
    return message.to_wire()
