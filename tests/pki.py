"""Certificate authorities and certificates made for the tests and benchmarks, written as PEM files."""

from __future__ import annotations

import datetime
import ipaddress
import ssl
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

_DAY = datetime.timedelta(days=1)


class Issued:
    """A certificate and its key, as files: `cert` (PEM) and `key` (PEM, unencrypted)."""

    def __init__(self, cert: Path, key: Path) -> None:
        self.cert = cert
        self.key = key

    @property
    def pair(self) -> tuple[str, str]:
        """As httpx and the SDK take a client certificate."""
        return str(self.cert), str(self.key)

    def encrypted_key(self, passphrase: bytes) -> Path:
        """The key again, in a file of its own, encrypted with `passphrase`."""
        key = serialization.load_pem_private_key(self.key.read_bytes(), None)
        encrypted = self.key.with_suffix(".encrypted.key")
        encrypted.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.BestAvailableEncryption(passphrase),
            )
        )
        return encrypted


class Authority:
    """A CA in `directory`, which issues server and client certificates there."""

    def __init__(self, directory: Path, name: str = "test CA") -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.directory = directory
        self.name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        self._key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.UTC)
        self.certificate = (
            x509.CertificateBuilder()
            .subject_name(self.name)
            .issuer_name(self.name)
            .public_key(self._key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - _DAY)
            .not_valid_after(now + _DAY)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(True, False, False, False, False, True, True, False, False), critical=True)
            .sign(self._key, hashes.SHA256())
        )
        self.bundle = directory / f"{name.replace(' ', '-')}.pem"
        self.bundle.write_bytes(self.certificate.public_bytes(serialization.Encoding.PEM))

    def issue(
        self,
        file: str,
        *,
        cn: str | None = None,
        dns: tuple[str, ...] = (),
        uris: tuple[str, ...] = (),
        emails: tuple[str, ...] = (),
        ips: tuple[str, ...] = (),
        client: bool = False,
    ) -> Issued:
        """A certificate for a server (or, with `client`, a client) with these names."""
        key = ec.generate_private_key(ec.SECP256R1())
        cert = self.build(key, cn=cn, dns=dns, uris=uris, emails=emails, ips=ips, client=client)
        issued = Issued(self.directory / f"{file}.pem", self.directory / f"{file}.key")
        issued.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        issued.key.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
        )
        return issued

    def build(
        self,
        key: ec.EllipticCurvePrivateKey,
        *,
        cn: str | None = None,
        dns: tuple[str, ...] = (),
        uris: tuple[str, ...] = (),
        emails: tuple[str, ...] = (),
        ips: tuple[str, ...] = (),
        client: bool = False,
    ) -> x509.Certificate:
        now = datetime.datetime.now(datetime.UTC)
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)] if cn else [])
        builder = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(self.name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - _DAY)
            .not_valid_after(now + _DAY)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH if client else ExtendedKeyUsageOID.SERVER_AUTH]),
                critical=False,
            )
        )
        names: list[x509.GeneralName] = [
            *(x509.DNSName(name) for name in dns),
            *(x509.UniformResourceIdentifier(uri) for uri in uris),
            *(x509.RFC822Name(email) for email in emails),
            *(x509.IPAddress(ipaddress.ip_address(ip)) for ip in ips),
        ]
        if names:
            builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=not cn)
        return builder.sign(self._key, hashes.SHA256())

    def server(self, file: str = "server") -> Issued:
        """A server certificate for 127.0.0.1 and localhost."""
        return self.issue(file, cn="swarm server", dns=("localhost",), ips=("127.0.0.1",))

    def client_context(self, cert: Issued | None = None) -> ssl.SSLContext:
        """A client's TLS context that trusts this CA only, presenting `cert` if given."""
        context = ssl.create_default_context(cafile=str(self.bundle))
        if cert is not None:
            context.load_cert_chain(*cert.pair)
        return context
