"""What a question's name asks for, below the served domain: Consul's DNS names, with ours in them.

    [TAG.]SERVICE.service[.NEAR].DOMAIN    the service's healthy instances: A, AAAA, SRV
    _SERVICE._TAG.service[.NEAR].DOMAIN    the same as RFC 2782 spells it; `_tcp` filters nothing
    NODE.node.DOMAIN                       a node's address
    HEX.addr.DOMAIN                        an address in hex (8 or 32 digits): what SRV targets name
    DOMAIN                                 the zone itself: SOA and NS

NEAR, where Consul names a datacenter, is a zone or region name: instances there come first, as
with the HTTP API's `near`. Names are compared in lower case (resolvers may mix the case of what
they ask), so services, tags and nodes with capitals in their names cannot be found over DNS, nor
services with dots in their names (the label before `service` is the service).
"""

from __future__ import annotations

import ipaddress
from typing import Literal

import msgspec

Kind = Literal["service", "node", "addr", "apex", "nothing"]


class Named(msgspec.Struct, frozen=True, gc=False):
    kind: Kind
    service: str = ""
    tag: str | None = None
    near: str | None = None
    node: str = ""
    address: str = ""  # of an `addr` name: the IP address it spells


NOTHING = Named("nothing")
APEX = Named("apex")


def named(labels: tuple[str, ...]) -> Named:
    """What the labels below the domain (lower case, most specific first) name."""
    if not labels:
        return APEX
    if labels[-1] == "node" and len(labels) > 1:
        return Named("node", node=".".join(labels[:-1]))
    if labels[-1] == "addr" and len(labels) == 2:
        address = _hex_address(labels[0])
        return Named("addr", address=address) if address else NOTHING
    if labels[-1] == "service":
        return _service(labels[:-1], None)
    if len(labels) > 2 and labels[-2] == "service":
        return _service(labels[:-2], labels[-1])
    return NOTHING


def _service(labels: tuple[str, ...], near: str | None) -> Named:
    if not labels:
        return NOTHING
    if len(labels) == 2 and labels[0].startswith("_") and labels[1].startswith("_"):
        service, tag = labels[0][1:], labels[1][1:]
        if not service or not tag:
            return NOTHING
        return Named("service", service=service, tag=None if tag == "tcp" else tag, near=near)
    # A tag may hold dots; a service name here cannot.
    return Named("service", service=labels[-1], tag=".".join(labels[:-1]) or None, near=near)


def _hex_address(label: str) -> str | None:
    if len(label) not in (8, 32):
        return None
    try:
        packed = bytes.fromhex(label)
    except ValueError:
        return None
    return str(ipaddress.ip_address(packed))


def hex_label(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str:
    """The `addr` label of an address: 0a080007 for 10.8.0.7."""
    return address.packed.hex()
