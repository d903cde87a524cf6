"""Certificate files, for the server and the SDK alike: loaded into a TLS context, or one line saying
which file is wrong and how, named by the option or variable it came from."""

from __future__ import annotations

import ssl


class CertificateFileError(ValueError):
    """A certificate, key or CA file that cannot be used; the message names where it was given."""


def _read(path: str, name: str) -> bytes:
    try:
        with open(path, "rb") as file:
            return file.read()
    except OSError as exc:
        raise CertificateFileError(f"{name}: cannot read {path}: {exc.strerror or exc}") from None


def trust(context: ssl.SSLContext, path: str, name: str) -> None:
    """Make `context` trust the CAs in the PEM bundle at `path`."""
    _read(path, name)
    try:
        context.load_verify_locations(cafile=path)
    except ssl.SSLError:
        raise CertificateFileError(f"{name}: {path} holds no PEM certificate") from None


def present(
    context: ssl.SSLContext, cert: str, key: str | None, names: tuple[str, str], password: str | None = None
) -> None:
    """Make `context` present the certificate in `cert` with its private key (`key`, or in `cert`).

    `names` are where the certificate and the key were given, for the error.
    """
    cert_name, key_name = names
    _read(cert, cert_name)
    if key is not None:
        _read(key, key_name)
    try:
        # Never None: OpenSSL would ask for a passphrase on the terminal.
        context.load_cert_chain(cert, key, password or (lambda: b""))
        return
    except ssl.SSLError:
        pass
    raise CertificateFileError(_what_is_wrong(cert, key or cert, (cert_name, key_name if key else cert_name), password))


def _what_is_wrong(cert: str, key: str, names: tuple[str, str], password: str | None) -> str:
    """Why OpenSSL refused a certificate and key: it says only "PEM lib" or "key values mismatch"."""
    from cryptography import x509
    from cryptography.exceptions import UnsupportedAlgorithm
    from cryptography.hazmat.primitives import serialization

    cert_name, key_name = names
    try:
        leaf = x509.load_pem_x509_certificates(_read(cert, cert_name))[0]
    except ValueError:
        return f"{cert_name}: {cert} holds no PEM certificate"
    try:
        private = serialization.load_pem_private_key(
            _read(key, key_name), password=password.encode() if password else None
        )
    except TypeError:  # what cryptography raises for a key that needs a passphrase
        return f"{key_name}: {key} is encrypted, and no passphrase for it was given"
    except (ValueError, UnsupportedAlgorithm):
        return f"{key_name}: {key} holds no PEM private key that can be used (or the passphrase is wrong)"
    der, spki = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    if leaf.public_key().public_bytes(der, spki) != private.public_key().public_bytes(der, spki):
        return f"{key_name}: {key} is not the private key of the certificate in {cert}"
    return f"{cert_name}: {cert} and {key} cannot be used together"
