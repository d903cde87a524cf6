"""Access control: tokens with rules, followed from the store; every front asks it (`Acl`)."""

from .access import EVERYONE, Acl, AclSettings, Caller, secret_from
from .rules import Level, Policy, Rules, Section
from .tokens import CreatedToken, TokenRequest, TokenView

__all__ = [
    "EVERYONE",
    "Acl",
    "AclSettings",
    "Caller",
    "CreatedToken",
    "Level",
    "Policy",
    "Rules",
    "Section",
    "TokenRequest",
    "TokenView",
    "secret_from",
]
