"""Records made from what the lookup found: A, AAAA, CNAME and SRV for instances and nodes, the zone's SOA.

An instance's address is an IP address or a host name. For A and AAAA the IP addresses of that
family are the answer; a host name becomes a CNAME, as in Consul, but only when no instance has
an IP address (a name holding a CNAME may hold nothing else): then the answer is one CNAME, to
each host in turn. An SRV record names its target as Consul does: `HEX.addr.DOMAIN` for an IP
address, with its A or AAAA record in the additional section, or the host name itself.
"""

from __future__ import annotations

import functools
import ipaddress
import random
import re
from collections.abc import Callable, Sequence
from itertools import chain, islice
from typing import NamedTuple, TypeVar

import dns.name
import dns.rdataclass
import dns.rdatatype
import dns.rrset
from dns.rdtypes.ANY.CNAME import CNAME
from dns.rdtypes.ANY.NS import NS
from dns.rdtypes.ANY.SOA import SOA
from dns.rdtypes.IN.A import A
from dns.rdtypes.IN.AAAA import AAAA
from dns.rdtypes.IN.SRV import SRV

from ...core.published import Published
from .names import hex_label
from .settings import RENDERED_RECORDS, VARIANTS, DnsSettings

IN = dns.rdataclass.IN
RRset = dns.rrset.RRset
IP = ipaddress.IPv4Address | ipaddress.IPv6Address
Target = IP | dns.name.Name
T = TypeVar("T")

_HOST_LABEL = re.compile(r"^[A-Za-z0-9_]([A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?$")
SMALLEST_RECORD = 16  # bytes of an A record whose name is compressed: what bounds the records that can fit
ADDRESS_TYPES = (dns.rdatatype.A, dns.rdatatype.AAAA, dns.rdatatype.ANY, dns.rdatatype.CNAME)
_REFRESH, _RETRY, _EXPIRE = 3600, 600, 86400  # Consul's; nothing transfers this zone


class Sections(NamedTuple):
    """One reply's answer and additional records."""

    answer: list[RRset]
    additional: list[RRset]


@functools.lru_cache(maxsize=4096)  # every cached answer made again parses the same addresses
def target_of(address: str) -> Target | None:
    """An IP address (brackets and an IPv6 zone dropped), a host name, or None for neither."""
    bare = address.strip("[]").split("%", 1)[0]
    try:
        return ipaddress.ip_address(bare)
    except ValueError:
        pass
    labels = address.rstrip(".").split(".")
    if len(address) > 253 or not all(_HOST_LABEL.match(label) for label in labels):
        return None
    return dns.name.from_text(address)


class Zone:
    """The served domain: its names, its SOA, and the records of one TTL."""

    def __init__(self, settings: DnsSettings) -> None:
        self.origin = dns.name.from_text(settings.domain)
        self.ttl = settings.ttl
        self.ns = dns.name.from_text("ns", self.origin)
        self._hostmaster = dns.name.from_text("hostmaster", self.origin)
        self._addr = dns.name.from_text("addr", self.origin)

    def soa(self, serial: int) -> RRset:
        """The SOA, whose minimum (the time a negative answer may be cached) is the TTL."""
        data = SOA(
            IN, dns.rdatatype.SOA, self.ns, self._hostmaster, serial & 0xFFFFFFFF, _REFRESH, _RETRY, _EXPIRE, self.ttl
        )
        return self._rrset(self.origin, data)

    def name_server(self) -> RRset:
        return self._rrset(self.origin, NS(IN, dns.rdatatype.NS, self.ns))

    def address(self, owner: dns.name.Name, address: IP) -> RRset:
        if address.version == 4:
            return self._rrset(owner, A(IN, dns.rdatatype.A, str(address)))
        return self._rrset(owner, AAAA(IN, dns.rdatatype.AAAA, str(address)))

    def cname(self, owner: dns.name.Name, host: dns.name.Name) -> RRset:
        return self._rrset(owner, CNAME(IN, dns.rdatatype.CNAME, host))

    def addr_name(self, address: IP) -> dns.name.Name:
        return dns.name.Name((hex_label(address).encode(), *self._addr.labels))

    def _rrset(self, owner: dns.name.Name, data: dns.rdata.Rdata) -> RRset:
        return dns.rrset.from_rdata(owner, self.ttl, data)

    # --- answers -------------------------------------------------------------------------

    def for_target(self, owner: dns.name.Name, target: Target | None, rdtype: int) -> Sections | None:
        """A node's or an `addr` name's answer; None when it has nothing of that type."""
        if isinstance(target, dns.name.Name):
            return Sections([self.cname(owner, target)], []) if rdtype in ADDRESS_TYPES else None
        if target is not None and rdtype in _TYPES_OF[target.version]:
            return Sections([self.address(owner, target)], [])
        return None

    def for_instances(
        self, owner: dns.name.Name, states: Sequence[Published], rdtype: int, fits: int, shuffled: bool
    ) -> list[Sections] | None:
        """Replies for a service's instances (at most `fits` records each), in several orders when
        `shuffled`, else in the lookup's; None when none has a record of that type."""
        found = [(state, target) for state in states if (target := target_of(state.view.address)) is not None]
        if rdtype == dns.rdatatype.SRV:
            return _variants(found, fits, shuffled, lambda item: self._srv(owner, *item))
        ips = [(state, t) for state, t in found if not isinstance(t, dns.name.Name)]
        if not ips and rdtype in ADDRESS_TYPES:
            hosts = [t for _, t in found if isinstance(t, dns.name.Name)]
            return _variants(hosts, 1, shuffled, lambda host: Sections([self.cname(owner, host)], []))
        wanted = [(s, t) for s, t in ips if rdtype in _TYPES_OF[t.version]]
        return _variants(wanted, fits, shuffled, lambda item: Sections([self.address(owner, item[1])], []))

    def _srv(self, owner: dns.name.Name, state: Published, target: Target) -> Sections:
        view = state.view
        if isinstance(target, dns.name.Name):
            name, additional = target, []
        else:
            name = self.addr_name(target)
            additional = [self.address(name, target)]
        data = SRV(IN, dns.rdatatype.SRV, 1, view.weight, view.port, name)
        return Sections([self._rrset(owner, data)], additional)


_TYPES_OF = {
    4: (dns.rdatatype.A, dns.rdatatype.ANY),
    6: (dns.rdatatype.AAAA, dns.rdatatype.ANY),
}


def _variants(items: Sequence[T], fits: int, shuffled: bool, make: Callable[[T], Sections]) -> list[Sections] | None:
    """Replies of at most `fits` records: the order given, or rotations of a random sample (each
    of its first records leads in turn), as many as RENDERED_RECORDS allows."""
    if not items:
        return None
    if not shuffled:
        return [_joined([make(item) for item in items[:fits]])]
    turns = min(len(items), VARIANTS, max(1, RENDERED_RECORDS // fits))
    made = [make(item) for item in random.sample(items, min(len(items), fits + turns - 1))]
    if len(made) == len(items):
        return [_joined(list(islice(chain(made[turn:], made[:turn]), fits))) for turn in range(turns)]
    return [_joined(made[turn : turn + fits]) for turn in range(turns)]


def _joined(parts: list[Sections]) -> Sections:
    additional: dict[dns.name.Name, RRset] = {}  # one address record per target, however many ports
    for part in parts:
        for rrset in part.additional:
            additional.setdefault(rrset.name, rrset)
    return Sections([rrset for part in parts for rrset in part.answer], list(additional.values()))
