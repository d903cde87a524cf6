"""Swarm Service Discovery: a registry, catalog and change stream for GPU, storage and inference services."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .sdk.client import AsyncClient, Client

__version__ = "0.1.0"
__all__ = ["AsyncClient", "Client", "__version__"]


def __getattr__(name: str) -> object:
    # The SDK pulls in httpx; the server does not need it loaded.
    if name in ("Client", "AsyncClient"):
        from .sdk import client

        return getattr(client, name)
    raise AttributeError(name)
