"""The access table: every token, followed from the store, and the one question fronts ask.

Tokens live in the store (`acl/tokens/{id}`) and reach memory the way records do, through the
registry's apply step, so a token made on one server works on every server of the cluster once
its write is acknowledged. A front resolves the secret a request carries to a `Caller` (or the
anonymous caller), then asks `require` before it answers or writes. Token rules never change
after creation (delete and create again), so what was allowed to a caller stays allowed while
the token exists: the HTTP front's per-caller cache aliases rely on that.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Literal, NoReturn

import msgspec

from ..errors import BadRequest, Forbidden, NotFound, Unauthorized
from ..store import Commit, Compare, Delete, Put
from .rules import MANAGEMENT, NOTHING, READ_ALL, Level, Policy, Section
from .tokens import (
    BOOTSTRAPPED,
    TOKENS,
    CreatedToken,
    Token,
    TokenRequest,
    TokenView,
    decode,
    digest,
    encode,
    new_secret,
    view,
)

MAX_TOKENS = 10_000


class AclSettings(msgspec.Struct, frozen=True):
    enabled: bool = False
    anonymous: Literal["read", "none"] = "read"  # what a request without a token may do


class Caller:
    """Who a request comes from: a token (by its accessor id) or, with `id` None, anyone."""

    __slots__ = ("id", "policy")

    def __init__(self, id: str | None, policy: Policy) -> None:
        self.id = id
        self.policy = policy

    @property
    def key(self) -> str:
        """What caches tell callers apart by."""
        return self.id or ""


EVERYONE = Caller(None, Policy(MANAGEMENT))  # the caller of every request while ACLs are off


def secret_from(authorization: str | None, swarm_token: str | None) -> str | None:
    """The secret a request presents (`Authorization: Bearer T` or `X-Swarm-Token: T`), if any."""
    if authorization:
        scheme, _, secret = authorization.strip().partition(" ")
        if scheme.lower() != "bearer" or not secret.strip():
            raise Unauthorized("Authorization: expected 'Bearer TOKEN'")
        return secret.strip()
    return swarm_token.strip() or None if swarm_token else None


class Acl:
    def __init__(self, settings: AclSettings, commit: Commit, clock: Callable[[], float] = time.time) -> None:
        self.settings = settings
        self.enabled = settings.enabled
        self._commit = commit
        self._clock = clock
        self.anonymous = Caller(None, Policy(READ_ALL if settings.anonymous == "read" else NOTHING))
        self._tokens: dict[str, Token] = {}  # accessor id -> token
        self._revisions: dict[str, int] = {}  # store key -> mod revision, for a resync
        self._by_secret: dict[str, Caller] = {}  # SHA-256 of the secret -> caller
        self._by_identity: dict[str, Token] = {}  # certificate identity -> token (the oldest claiming it)
        self.bootstrapped = False

    # --- following the store (the registry's apply step calls these) ---------------------------

    def apply(self, key: str, value: bytes | None, revision: int) -> None:
        """One stored change under `acl/`; an unreadable value raises, and is then applied as gone."""
        if key == BOOTSTRAPPED:
            self.bootstrapped = value is not None
        elif key.startswith(TOKENS):
            self._drop(key.removeprefix(TOKENS))
            if value is not None:
                self._add(decode(value))
        if value is None:
            self._revisions.pop(key, None)
        else:
            self._revisions[key] = revision

    def known(self) -> dict[str, int]:
        return dict(self._revisions)

    def _add(self, token: Token) -> None:
        self._tokens[token.id] = token
        self._by_secret[token.secret_sha256] = Caller(token.id, Policy(token.rules))
        for identity in token.identities:
            holder = self._by_identity.get(identity)
            if holder is None or (holder.created, holder.id) > (token.created, token.id):
                self._by_identity[identity] = token

    def _drop(self, id: str) -> None:
        token = self._tokens.pop(id, None)
        if token is None:
            return
        self._by_secret.pop(token.secret_sha256, None)
        for identity in token.identities:
            if self._by_identity.get(identity) is token:
                del self._by_identity[identity]
                claims = [t for t in self._tokens.values() if identity in t.identities]
                if claims:
                    self._by_identity[identity] = min(claims, key=lambda t: (t.created, t.id))

    # --- who is asking -----------------------------------------------------------------------

    def caller(self, secret: str | None, identity: str | None = None) -> Caller:
        """The caller a secret (or else a verified certificate identity) stands for; 401 for an unknown secret."""
        if not self.enabled:
            return EVERYONE
        if secret is None:
            token = self._by_identity.get(identity) if identity is not None else None
            return self._by_secret[token.secret_sha256] if token is not None else self.anonymous
        found = self._by_secret.get(digest(secret))
        if found is None:
            raise Unauthorized("token: not a token this server knows (it may have been deleted)")
        return found

    def known_caller(self, secret: str | None) -> Caller | None:
        """`caller` without raising: None for a secret nobody holds."""
        if secret is None:
            return self.anonymous
        return self._by_secret.get(digest(secret))

    def policy_of(self, key: str) -> Policy:
        """The policy of the caller `Caller.key` names (nothing for a token deleted since)."""
        if not key:
            return self.anonymous.policy
        token = self._tokens.get(key)
        return self._by_secret[token.secret_sha256].policy if token is not None else Policy(NOTHING)

    def require(self, caller: Caller, section: Section, name: str, level: Level) -> None:
        """Return if `caller` may do it; 401 for the anonymous caller, 403 for a token."""
        if caller.policy.allows(section, name, level):
            return
        refuse(caller, f"{level} access to {_what(section, name)}")

    def require_any(self, caller: Caller, section: Section) -> None:
        """Return if `caller` may read at least some names of `section` (a listing is filtered)."""
        if not caller.policy.has_rules(section):
            refuse(caller, f"read access to {section}")

    # --- tokens --------------------------------------------------------------------------------

    async def bootstrap(self) -> CreatedToken:
        """The first management token; once only, across every server of the cluster."""
        self._need_acl()
        token, secret = self._new(TokenRequest(description="bootstrap token (management)"), management=True)
        result = await self._commit(
            [Compare(BOOTSTRAPPED, 0)], [Put(BOOTSTRAPPED, str(self._clock()).encode()), _put(token)]
        )
        if not result.succeeded:
            raise Forbidden("bootstrap: already done; create tokens with a management token (swarm acl token create)")
        return CreatedToken(id=token.id, token=secret, description=token.description)

    async def create(self, request: TokenRequest) -> CreatedToken:
        self._need_acl()
        if len(self._tokens) >= MAX_TOKENS:
            raise Forbidden(f"tokens: this server holds at most {MAX_TOKENS}; delete some first")
        for identity in request.identities:
            holder = self._by_identity.get(identity)
            if holder is not None:
                raise BadRequest(f"identities: {identity!r} already stands for token {holder.id}")
        token, secret = self._new(request)
        await self._commit([Compare(TOKENS + token.id, 0)], [_put(token)])
        return CreatedToken(id=token.id, token=secret, description=token.description)

    def tokens(self) -> list[TokenView]:
        self._need_acl()
        return [view(t) for t in sorted(self._tokens.values(), key=lambda t: (t.created, t.id))]

    def token(self, id: str) -> TokenView:
        self._need_acl()
        token = self._tokens.get(id)
        if token is None:
            raise NotFound(f"token {id}: no such token")
        return view(token)

    def own(self, caller: Caller) -> TokenView:
        """The token a caller presents."""
        self._need_acl()
        if caller.id is None:
            refuse(caller, "reading its own token")
        return self.token(caller.id)

    async def delete(self, id: str) -> None:
        self.token(id)
        await self._commit([], [Delete(TOKENS + id)])

    def _new(self, request: TokenRequest, management: bool = False) -> tuple[Token, str]:
        id, secret = new_secret()
        token = Token(
            id=id,
            secret_sha256=digest(secret),
            description=request.description,
            rules=MANAGEMENT if management else request.rules,
            identities=request.identities,
            created=self._clock(),
            management=management,
        )
        return token, secret

    def _need_acl(self) -> None:
        if not self.enabled:
            raise BadRequest("acl: access control is off on this server (start it with swarm serve --acl)")


def refuse(caller: Caller, what: str) -> NoReturn:
    if caller.id is None:
        raise Unauthorized(f"{what} needs a token (Authorization: Bearer TOKEN, X-Swarm-Token or X-Consul-Token)")
    raise Forbidden(f"token {caller.id}: no {what}")


def _what(section: Section, name: str) -> str:
    return "operator work" if section == "operator" else f"{section} {name!r}"


def _put(token: Token) -> Put:
    return Put(TOKENS + token.id, encode(token))
