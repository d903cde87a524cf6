"""How `swarm serve` reaches etcd: the store's URL, TLS files and a user (no gRPC imported here)."""

from __future__ import annotations

import os
from urllib.parse import urlsplit

import msgspec

DEFAULT_PREFIX = "swarm"


class EtcdOptions(msgspec.Struct, frozen=True):
    """How to reach the cluster: TLS files (CA, client certificate and key) and a user."""

    ca: str | None = None
    cert: str | None = None
    key: str | None = None
    user: str | None = None
    password: str | None = None

    @classmethod
    def from_env(cls) -> EtcdOptions:
        """SWARM_ETCD_CA, SWARM_ETCD_CERT, SWARM_ETCD_KEY, SWARM_ETCD_USER, SWARM_ETCD_PASSWORD."""
        env = {name: os.environ.get(f"SWARM_ETCD_{name.upper()}") or None for name in cls.__struct_fields__}
        return cls(**env)

    def to_env(self) -> dict[str, str]:
        return {f"SWARM_ETCD_{name.upper()}": value for name, value in msgspec.structs.asdict(self).items() if value}

    def problem(self) -> str | None:
        """What is wrong with these options, in one line, or None."""
        if (self.cert is None) != (self.key is None):
            return "--etcd-cert and --etcd-key go together"
        if (self.user is None) != (self.password is None):
            return "--etcd-user needs a password (SWARM_ETCD_PASSWORD), and a password a user"
        for option, path in (("--etcd-ca", self.ca), ("--etcd-cert", self.cert), ("--etcd-key", self.key)):
            if path is not None and not os.access(path, os.R_OK):
                return f"{option}: cannot read {path}"
        return None

    @property
    def tls(self) -> bool:
        return self.ca is not None or self.cert is not None


def parse_url(url: str) -> tuple[list[str], str]:
    """`etcd://h1:2379,h2:2379[/prefix]` -> (["h1:2379", "h2:2379"], "/prefix/"), or ValueError."""
    parts = urlsplit(url)
    if parts.scheme != "etcd":
        raise ValueError(f"expected etcd://HOST:PORT[,HOST:PORT...][/PREFIX], got {url!r}")
    endpoints = [e.strip() for e in parts.netloc.split(",") if e.strip()]
    if not endpoints:
        raise ValueError(f"{url!r} names no etcd member")
    for endpoint in endpoints:
        host, _, port = endpoint.rpartition(":")
        if not host or not port.isdigit() or not 1 <= int(port) <= 65535:
            raise ValueError(f"etcd member {endpoint!r}: expected HOST:PORT")
    if parts.query or parts.fragment:
        raise ValueError(f"{url!r}: no query or fragment expected")
    prefix = parts.path.strip("/") or DEFAULT_PREFIX
    return endpoints, f"/{prefix}/"
