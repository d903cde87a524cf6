"""What `swarm serve --dns ...` sets, and the fixed bounds of the DNS front (the README lists them)."""

from __future__ import annotations

import msgspec

UDP_PAYLOAD = 1232  # the largest UDP reply, and the EDNS0 size we advertise (DNS Flag Day 2020: no fragments)
PLAIN_UDP = 512  # a UDP reply to a query without EDNS0 (RFC 1035)
TCP_MESSAGE = 65535  # the most a 2-byte length prefix can carry
MAX_QUERY = 4096  # bytes of one query; a larger datagram is dropped, a larger TCP message closes the connection
TCP_CONNECTIONS = 512  # open TCP connections in all; more are closed as they come
TCP_PER_CLIENT = 16  # ... from one client address
TCP_IDLE_SECONDS = 10.0  # a TCP connection that completes no query for this long is closed
TCP_WRITE_BUFFER = 256 * 1024  # replies queued for a TCP client that does not read; then its queries wait
CACHED_ANSWERS = 4096  # encoded replies kept until the change index of what they cover moves
CACHED_BYTES = 16 * 1024 * 1024  # ... and their bytes together
ALIASES = 16384  # exact query spellings remembered per transport (each at most ALIASED_QUERY bytes)
ALIASED_QUERY = 512
VARIANTS = 8  # orders of one service's records, served in turn
MAX_RECORDS = 256  # in one answer, over TCP too (a larger service: that many of its instances, in turns)
RENDERED_RECORDS = 512  # records rendered for one cached answer, all its orders together (dnspython is slow)


class DnsSettings(msgspec.Struct, frozen=True):
    host: str
    port: int
    domain: str = "swarm"  # lower case, without the final dot
    ttl: int = 0  # seconds, on every record and as the SOA's negative-caching time (Consul's default 0)

    @property
    def shown(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"
