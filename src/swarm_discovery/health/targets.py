"""Where probes may go: a check's target, and the operator's allow and deny lists.

A probe can reach whatever the server can, and its output tells the registrant whether a port is
open and what answers there, so an operator can fence probes in with `--probe-allow` and
`--probe-deny` networks (deny wins; no allow list means everywhere). Names are resolved first and
the test applies to the addresses: a probe connects only to an address that passed it, so a name
that resolves differently a moment later (DNS rebinding) gains nothing. The server's own HTTP port
on loopback is always denied: a probe must not act on the server's API with the server's network
position (an unauthenticated `PUT /v1/acl/bootstrap`, say).
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any
from urllib.parse import urlsplit

from ..records import CheckSpec

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network
GetAddrInfo = Callable[..., Awaitable[list[tuple[Any, ...]]]]

# Names for the networks an operator most often fences off. "loopback" includes the unspecified
# address: connecting to 0.0.0.0 or :: reaches this host's own listeners.
ALIASES: dict[str, tuple[str, ...]] = {
    "loopback": ("127.0.0.0/8", "::1/128", "0.0.0.0/32", "::/128"),
    "link-local": ("169.254.0.0/16", "fe80::/10"),  # cloud metadata endpoints live here
    "private": ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10", "fc00::/7"),
}


class TargetDenied(OSError):
    """A probe target the operator's lists refuse; its message is the check's output."""


def target_of(spec: CheckSpec) -> tuple[str, int]:
    """(host, port) of an http, tcp or grpc check, or of a metric check's scrape, as written; the
    host lower-cased, unbracketed."""
    if spec.type in ("http", "metric"):
        parts = urlsplit((spec.url if spec.type == "http" else spec.scrape) or "")
        try:
            port = parts.port
        except ValueError:  # an out-of-range port: the probe itself will say so
            port = None
        return (parts.hostname or "", port or (443 if parts.scheme == "https" else 80))
    host, _, digits = (spec.tcp or spec.grpc or "").partition("/")[0].rpartition(":")
    return (host.strip("[]").lower(), int(digits) if digits.isdigit() else 0)


def networks(values: Iterable[str]) -> tuple[Network, ...]:
    """CIDRs (a bare address is a /32 or /128) or the names in ALIASES; ValueError names a bad one."""
    found: list[Network] = []
    for value in values:
        for cidr in ALIASES.get(value, (value,)):
            try:
                found.append(ipaddress.ip_network(cidr, strict=False))
            except ValueError:
                raise ValueError(
                    f"expected a CIDR such as 10.0.0.0/8 or one of {', '.join(ALIASES)}, got {value!r}"
                ) from None
    return tuple(found)


def _address(text: str) -> Address | None:
    try:
        found = ipaddress.ip_address(text.partition("%")[0])  # a zone index (fe80::1%eth0) is no part of it
    except ValueError:
        return None
    if isinstance(found, ipaddress.IPv6Address) and found.ipv4_mapped is not None:
        return found.ipv4_mapped  # ::ffff:127.0.0.1 is 127.0.0.1
    return found


def is_address(host: str) -> bool:
    return _address(host) is not None


class TargetPolicy:
    def __init__(
        self,
        allow: Sequence[str] = (),
        deny: Sequence[str] = (),
        server: tuple[str, int] | None = None,
        getaddrinfo: GetAddrInfo | None = None,
    ) -> None:
        self._allow = networks(allow)
        self._deny = networks(deny)
        own = _address(server[0]) if server else None
        self._own = own if own is not None and not own.is_unspecified else None  # 0.0.0.0 is in loopback
        self._own_port = server[1] if server else None
        self._loopback = networks(["loopback"])
        self._getaddrinfo = getaddrinfo

    def refusal(self, address: Address, port: int) -> str | None:
        """Why a probe may not connect to address:port, or None when it may."""
        if port == self._own_port and (address == self._own or any(address in n for n in self._loopback)):
            return f"target denied: {address}:{port} is this server's own address"
        for network in self._deny:
            if address in network:
                return f"target denied by --probe-deny {network}: {address}"
        if self._allow and not any(address in network for network in self._allow):
            return f"target denied: {address} is outside every --probe-allow"
        return None

    async def resolve(self, host: str, port: int) -> list[tuple[socket.AddressFamily, str]]:
        """The addresses of host that a probe may connect to, in resolver order; raises
        TargetDenied when there are none (naming why the first was refused)."""
        if is_address(host):  # as written: ::ffff:127.0.0.1 is tested as 127.0.0.1, dialled as IPv6
            found = [(socket.AF_INET6 if ":" in host else socket.AF_INET, host)]
        else:
            getaddrinfo = self._getaddrinfo or asyncio.get_running_loop().getaddrinfo
            infos = await getaddrinfo(host, port, type=socket.SOCK_STREAM)
            found = [(info[0], str(info[4][0])) for info in infos]
        allowed, refusals = [], []
        for family, text in found:
            address = _address(text)
            refusal = self.refusal(address, port) if address is not None else f"target denied: {text}"
            if refusal is None:
                allowed.append((family, text))
            else:
                refusals.append(refusal)
        if not allowed:
            raise TargetDenied(refusals[0] if refusals else f"target denied: {host} has no address")
        return allowed
