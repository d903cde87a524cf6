"""Tokens: what is stored of one (never its secret), what creating one asks and answers.

A secret is 256 random bits, so its SHA-256 is all the server keeps: a stolen store gives no
usable token, and looking a presented secret up by its hash needs no slow password hash.
"""

from __future__ import annotations

import hashlib
import secrets
import uuid
from typing import Annotated

import msgspec

from ..records import Spec, Text, View
from .rules import Rules

PREFIX = "acl/"
TOKENS = "acl/tokens/"
BOOTSTRAPPED = "acl/bootstrapped"
MAX_IDENTITIES = 16  # certificate identities one token may stand for
# A certificate's SAN (DNS name, URI, e-mail) or subject CN: printable, no spaces at the ends.
Identity = Annotated[str, msgspec.Meta(min_length=1, max_length=255, pattern=r"^[!-~]([ -~]*[!-~])?$")]


class TokenRequest(Spec, kw_only=True):
    """`POST /v1/acl/tokens`: what the new token may do, and the certificates that act as it."""

    description: Text = ""
    rules: Rules = msgspec.field(default_factory=Rules)
    identities: Annotated[list[Identity], msgspec.Meta(max_length=MAX_IDENTITIES)] = []


class Token(msgspec.Struct, kw_only=True, frozen=True):
    """The stored token, under `acl/tokens/{id}`."""

    id: str  # the accessor: names the token in lists and deletes, grants nothing
    secret_sha256: str
    description: str = ""
    rules: Rules = msgspec.field(default_factory=Rules)
    identities: list[str] = []
    created: float = 0.0
    management: bool = False  # the bootstrap token


class TokenView(View, kw_only=True):
    id: str
    description: str = ""
    rules: Rules
    identities: list[str] = []
    created: float
    management: bool = False


class CreatedToken(View, kw_only=True):
    """The one answer that shows a secret."""

    id: str
    token: str
    description: str = ""


class Deleted(View, kw_only=True):
    deleted: bool


def new_secret() -> tuple[str, str]:
    """A new token's accessor id and secret."""
    return str(uuid.uuid4()), secrets.token_urlsafe(32)


def digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def view(token: Token) -> TokenView:
    return TokenView(
        id=token.id,
        description=token.description,
        rules=token.rules,
        identities=token.identities,
        created=token.created,
        management=token.management,
    )


encode = msgspec.json.Encoder().encode
decode = msgspec.json.Decoder(Token).decode
