"""`swarm serve`: the options checked here, each mistake one line; then the server runs."""

from __future__ import annotations

import enum
import math
import os
import re
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from ..balance.quorum import MAX_QUORUM, ReportSettings
from ..core.quotas import Quotas
from ..durations import format_duration
from ..fronts.dns.settings import DnsSettings
from ..fronts.http.limits import Limits
from ..store.etcd_config import EtcdOptions, parse_url
from .options import seconds
from .output import fail

if TYPE_CHECKING:
    from ..fronts.http.tls import TlsFiles

_LIMITS = Limits()  # the defaults
_REPORTS = ReportSettings()
_QUOTAS = Quotas()


class Anonymous(enum.StrEnum):
    read = "read"
    none = "none"


class LogLevel(enum.StrEnum):
    debug = "debug"
    info = "info"
    warning = "warning"
    error = "error"


def _address(given: str, option: str = "--http") -> tuple[str, int]:
    host, _, port = given.rpartition(":")
    host = host.removeprefix("[").removesuffix("]")  # [::1]:8500
    if not host or not port.isdigit():
        fail(f"{option}: expected HOST:PORT, got {given!r}")
    if not 1 <= int(port) <= 65535:
        fail(f"{option}: port {port} is not between 1 and 65535")
    return host, int(port)


def _store(
    url: str, ca: Path | None, cert: Path | None, key: Path | None, user: str | None
) -> tuple[str, EtcdOptions | None]:
    """The store's URL, checked, and how to reach etcd when it is etcd."""
    if url == "sqlite":
        if any(given is not None for given in (ca, cert, key, user)):
            fail("--etcd-ca, --etcd-cert, --etcd-key and --etcd-user go with --store etcd://...")
        return url, None
    try:
        parse_url(url)
    except ValueError as exc:
        fail(f"--store: {exc}")
    password = os.environ.get("SWARM_ETCD_PASSWORD") or None
    etcd = EtcdOptions(
        ca=str(ca) if ca else None,
        cert=str(cert) if cert else None,
        key=str(key) if key else None,
        user=user,
        password=password,
    )
    problem = etcd.problem()
    if problem is not None:
        fail(problem)
    return url, etcd


_DOMAIN_LABEL = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")


def _dns_settings(dns: str, domain: str, ttl: str) -> DnsSettings:
    host, port = _address(dns, "--dns")
    domain = domain.lower().rstrip(".")
    if len(domain) > 200 or not all(_DOMAIN_LABEL.match(label) for label in domain.split(".")):
        fail(f"--dns-domain: expected a domain name such as swarm or swarm.example.com, got {domain!r}")
    ttl_seconds = seconds(ttl, "--dns-ttl")
    if ttl_seconds != int(ttl_seconds) or not 0 <= ttl_seconds < 2**31:
        fail(f"--dns-ttl: expected whole seconds from 0s, got {ttl!r}")
    return DnsSettings(host, port, domain=domain, ttl=int(ttl_seconds))


def serve(
    http: Annotated[str, typer.Option(metavar="HOST:PORT", help="Where to serve HTTP.")] = "127.0.0.1:8500",
    data_dir: Annotated[Path, typer.Option(metavar="DIR", help="Where the embedded store keeps its file.")] = Path(
        "swarm-data"
    ),
    log_level: Annotated[
        LogLevel,
        typer.Option(
            metavar="LEVEL", help="debug, info, warning or error; debug shows the HTTP server's own news too."
        ),
    ] = LogLevel.info,
    expiry_share: Annotated[
        float,
        typer.Option(metavar="SHARE", help="Mass-expiry protection: hold TTL lapses when more than this share lapse."),
    ] = 0.5,
    expiry_minimum: Annotated[
        int, typer.Option(metavar="N", help="... and at least this many (a lone silent instance always expires).")
    ] = 10,
    expiry_window: Annotated[
        str, typer.Option(metavar="DURATION", help="How long a lapsed TTL waits before it expires.")
    ] = "5s",
    expiry_owners: Annotated[
        int, typer.Option(metavar="N", help="... and only when the lapses span at least this many registrants.")
    ] = 3,
    ejection_base: Annotated[
        str,
        typer.Option(metavar="DURATION", help="How long clients' reports eject an instance, times its ejections."),
    ] = "30s",
    report_quorum: Annotated[
        int,
        typer.Option(
            metavar="N", help="Eject an instance when reports from this many distinct clients agree that it fails."
        ),
    ] = _REPORTS.quorum,
    trusted_reporter: Annotated[
        list[str] | None,
        typer.Option(
            metavar="ID",
            help="A client whose reports alone eject: with --acl its token's id, else its address "
            "(your gateway's, say). Repeatable.",
        ),
    ] = None,
    max_instances_per_service: Annotated[
        int, typer.Option(metavar="N", help="Instances one service may have (429 past it).")
    ] = _QUOTAS.per_service,
    max_instances_per_registrant: Annotated[
        int,
        typer.Option(
            metavar="N", help="Instances one registrant (with --acl, a token) may have registered (429 past it)."
        ),
    ] = _QUOTAS.per_registrant,
    write_rate: Annotated[
        float,
        typer.Option(
            metavar="N", help="Requests other than GET a second from one client, in bursts of a second's worth; 0: any."
        ),
    ] = _LIMITS.write_rate,
    probe_allow: Annotated[
        list[str] | None,
        typer.Option(
            metavar="NETWORK",
            help="A network probes may reach: a CIDR, loopback, link-local or private. Repeatable; "
            "without it, every network not denied.",
        ),
    ] = None,
    probe_deny: Annotated[
        list[str] | None,
        typer.Option(metavar="NETWORK", help="A network probes may not reach. Repeatable; deny wins over allow."),
    ] = None,
    probe_per_target: Annotated[int, typer.Option(metavar="N", help="Probes in flight to one host:port.")] = 128,
    probe_per_registrant: Annotated[int, typer.Option(metavar="N", help="Probes in flight for one registrant.")] = 256,
    probe_rate: Annotated[float, typer.Option(metavar="N", help="Probes a second for one registrant.")] = 2000.0,
    max_connections: Annotated[
        int, typer.Option(metavar="N", help="Connections served at once; more wait to be accepted.")
    ] = _LIMITS.connections,
    max_long_reads: Annotated[
        int, typer.Option(metavar="N", help="Open blocking queries and watch streams in all (429 past it).")
    ] = _LIMITS.long_reads,
    max_long_reads_per_client: Annotated[
        int, typer.Option(metavar="N", help="... from one client address.")
    ] = _LIMITS.long_reads_per_client,
    watch_buffer: Annotated[
        int, typer.Option(metavar="BYTES", help="What a watch stream may have sent that its client has not taken.")
    ] = _LIMITS.watch_buffer,
    client_timeout: Annotated[
        str,
        typer.Option(
            metavar="DURATION", help="How long a client may take over a request head, idle, or taking nothing."
        ),
    ] = format_duration(_LIMITS.client_timeout),
    acl: Annotated[
        bool, typer.Option("--acl", help="Access control: every request needs a token allowing it (see swarm acl).")
    ] = False,
    acl_anonymous: Annotated[
        Anonymous,
        typer.Option(metavar="RIGHTS", help="With --acl, what a request without a token may do: read or none."),
    ] = Anonymous.read,
    # --- TLS ---
    tls_cert: Annotated[
        Path | None,
        typer.Option(metavar="FILE", help="Serve HTTPS with this certificate (PEM; intermediates after it)."),
    ] = None,
    tls_key: Annotated[
        Path | None, typer.Option(metavar="FILE", help="The certificate's private key (PEM, no passphrase).")
    ] = None,
    tls_client_ca: Annotated[
        Path | None,
        typer.Option(
            metavar="FILE",
            help="Require a client certificate signed by a CA in this PEM bundle (mTLS); needs --tls-cert.",
        ),
    ] = None,
    check_ca: Annotated[
        Path | None,
        typer.Option(metavar="FILE", help="HTTPS checks trust the CAs in this PEM bundle instead of the system's."),
    ] = None,
    # --- the store: the embedded SQLite file, or an etcd cluster shared with other servers ---
    store: Annotated[
        str,
        typer.Option(
            metavar="URL",
            help="sqlite (the file in --data-dir), or etcd://HOST:PORT/PREFIX to share an etcd cluster with "
            "other servers: one member or more (HOST:PORT,HOST:PORT), records under /PREFIX/ (/swarm/ without one).",
        ),
    ] = "sqlite",
    etcd_ca: Annotated[
        Path | None,
        typer.Option(metavar="FILE", envvar="SWARM_ETCD_CA", help="CA certificate to verify etcd's (TLS to etcd)."),
    ] = None,
    etcd_cert: Annotated[
        Path | None,
        typer.Option(metavar="FILE", envvar="SWARM_ETCD_CERT", help="Client certificate to present to etcd."),
    ] = None,
    etcd_key: Annotated[
        Path | None, typer.Option(metavar="FILE", envvar="SWARM_ETCD_KEY", help="... and its private key.")
    ] = None,
    etcd_user: Annotated[
        str | None,
        typer.Option(
            metavar="NAME",
            envvar="SWARM_ETCD_USER",
            help="etcd user, with etcd's authentication; the password comes from SWARM_ETCD_PASSWORD.",
        ),
    ] = None,
    # --- DNS ---
    dns: Annotated[
        str | None,
        typer.Option(metavar="HOST:PORT", help="Also serve DNS there, over UDP and TCP (e.g. 127.0.0.1:8600)."),
    ] = None,
    dns_domain: Annotated[
        str, typer.Option(metavar="DOMAIN", help="The domain DNS answers for: llm.service.DOMAIN.")
    ] = "swarm",
    dns_ttl: Annotated[
        str, typer.Option(metavar="DURATION", help="TTL of DNS records, and how long resolvers may cache a miss.")
    ] = "0s",
) -> None:
    """Run the server: on the embedded SQLite store, or on etcd beside other servers (Ctrl-C or SIGTERM stops it)."""
    from ..acl import AclSettings
    from ..certs import CertificateFileError
    from ..fronts.dns.listener import DnsUnavailable
    from ..health.limits import ProbeSettings
    from ..health.protection import ExpirySettings
    from ..health.targets import networks
    from ..server import CannotServe
    from ..server import serve as run_server

    host, port = _address(http)
    dns_settings = _dns_settings(dns, dns_domain, dns_ttl) if dns is not None else None
    tls = _tls(tls_cert, tls_key, tls_client_ca)
    if check_ca is not None:
        _check_ca(check_ca)
    window = seconds(expiry_window, "--expiry-window")
    ejection = seconds(ejection_base, "--ejection-base")
    timeout = seconds(client_timeout, "--client-timeout")
    if not 0 < expiry_share <= 1:
        fail("--expiry-share: must be in (0, 1]")
    for option, given in (("--probe-allow", probe_allow), ("--probe-deny", probe_deny)):
        try:
            networks(given or ())
        except ValueError as exc:
            fail(f"{option}: {exc}")
    for option, value in (
        ("--expiry-owners", expiry_owners),
        ("--probe-per-target", probe_per_target),
        ("--probe-per-registrant", probe_per_registrant),
        ("--probe-rate", probe_rate),
        ("--max-instances-per-service", max_instances_per_service),
        ("--max-instances-per-registrant", max_instances_per_registrant),
    ):
        if not (value > 0 and math.isfinite(value)):  # not `value <= 0`: NaN passes that
            fail(f"{option}: must be a positive number")
    if not 1 <= report_quorum <= MAX_QUORUM:
        fail(f"--report-quorum: between 1 and {MAX_QUORUM}")
    reports = ReportSettings(quorum=report_quorum, trusted=frozenset(trusted_reporter or ()))
    quotas = Quotas(per_service=max_instances_per_service, per_registrant=max_instances_per_registrant)
    store_url, etcd = _store(store, etcd_ca, etcd_cert, etcd_key, etcd_user)
    limits = Limits(max_connections, max_long_reads, max_long_reads_per_client, watch_buffer, timeout, write_rate)
    problem = limits.problem()
    if problem is not None:
        fail(problem)
    expiry = ExpirySettings(share=expiry_share, minimum=expiry_minimum, window=window, owners=expiry_owners)
    probes = ProbeSettings(
        per_target=probe_per_target,
        per_registrant=probe_per_registrant,
        rate=probe_rate,
        allow=tuple(probe_allow or ()),
        deny=tuple(probe_deny or ()),
        server=(host, port),
        ca_file=str(check_ca) if check_ca is not None else None,
    )
    try:
        run_server(
            host,
            port,
            str(data_dir),
            store=store_url,
            etcd=etcd,
            log_level=log_level.value,
            expiry=expiry,
            ejection_base=ejection,
            probes=probes,
            limits=limits,
            acl=AclSettings(enabled=acl, anonymous=acl_anonymous.value),
            reports=reports,
            quotas=quotas,
            tls=tls,
            dns=dns_settings,
        )
    except (CannotServe, DnsUnavailable) as exc:
        fail(exc.message)
    except CertificateFileError as exc:  # a file changed since it was checked
        fail(str(exc))


def _tls(cert: Path | None, key: Path | None, client_ca: Path | None) -> TlsFiles | None:
    """The TLS files, each checked (readable, PEM, the key the certificate's); None for plain HTTP."""
    from ..certs import CertificateFileError
    from ..fronts.http.tls import TlsFiles

    if cert is None and key is None:
        if client_ca is not None:
            fail("--tls-client-ca: needs --tls-cert and --tls-key (client certificates are checked over HTTPS)")
        return None
    if cert is None:
        fail("--tls-key: needs --tls-cert")
    if key is None:
        fail("--tls-cert: needs --tls-key")
    files = TlsFiles(str(cert), str(key), str(client_ca) if client_ca is not None else None)
    try:
        files.context()
    except CertificateFileError as exc:
        fail(str(exc))
    return files


def _check_ca(path: Path) -> None:
    import ssl

    from ..certs import CertificateFileError, trust

    try:
        trust(ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT), str(path), "--check-ca")
    except CertificateFileError as exc:
        fail(str(exc))
