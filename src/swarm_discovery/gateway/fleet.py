"""What the gateway knows of the registry: the catalog, followed services, their backends, the models.

The catalog is followed from the start. The services the model paths look in (every service, or
those `[models]` names) are followed from the start too, since a model is found by what their
instances serve; any other service is followed from its first request. A service that leaves the
catalog is no longer followed. At most `max_services` (service, selector) pairs are followed at
once; a request for another is refused with 503 saying so.

Each followed service feeds the backends that route to it, and the model index: which models
instances list in `capabilities.models`, and each model's backend over every instance serving it.
A request for a service or model before its first view waits for it a short while (`READY_WAIT`)
and is refused with 503 if the registry has not answered by then.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import msgspec

from ..balance import Signals
from ..records import HEALTHY, InstanceView
from .backend import Backend
from .errors import GatewayError
from .registry import CatalogFollower, Follower, RegistryClient
from .settings import Routes

READY_WAIT = 5.0
MODELS_EVERY = 0.05  # seconds between two rebuilds of the model index
FollowKey = tuple[str, str | None]


class Fleet:
    def __init__(
        self, client: RegistryClient, routes: Routes, signals: dict[str, Signals], max_services: int = 512
    ) -> None:
        self.client = client
        self.routes = routes
        self.signals = signals  # scraped model-server metrics, by "address:port"
        self.max_services = max_services
        self.catalog = CatalogFollower(client, self._catalog_changed)
        self.followers: dict[FollowKey, Follower] = {}
        self.backends: dict[str, Backend] = {}  # by service
        self.models: dict[str, list[InstanceView]] = {}  # model -> every instance listing it, ids service/id
        self.model_backends: dict[str, Backend] = {}
        self._models_due = False
        self._models_at = 0.0
        self._stopping: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        self.catalog.start()

    async def stop(self) -> None:
        await self.catalog.stop()
        await asyncio.gather(*(f.stop() for f in self.followers.values()))

    # --- following -------------------------------------------------------------------------------

    def _model_services(self, names: set[str]) -> set[str]:
        listed = self.routes.models.services
        return names if listed is None else names & set(listed)

    def _catalog_changed(self, names: set[str]) -> None:
        for key in [key for key in self.followers if key[0] not in names]:
            stopping = asyncio.ensure_future(self.followers.pop(key).stop())
            self._stopping.add(stopping)
            stopping.add_done_callback(self._stopping.discard)
            self.backends.pop(key[0], None)
        for service in sorted(self._model_services(names)):
            self._follow(service, self.routes.models.watch_selector)
        self._models_changed()

    def _follow(self, service: str, selector: str | None) -> Follower | None:
        key = (service, selector)
        follower = self.followers.get(key)
        if follower is None:
            if len(self.followers) >= self.max_services:
                return None
            follower = self.followers[key] = Follower(self.client, service, selector, self._changed)
            follower.start()
        return follower

    def _changed(self, follower: Follower) -> None:
        backend = self.backends.get(follower.service)
        if backend is not None and backend.route.watch_selector == follower.selector:
            backend.update(list(follower.instances.values()))
        if follower.selector == self.routes.models.watch_selector:
            self._models_changed()

    def _models_changed(self) -> None:
        """Rebuild the model index soon: once for every follower that changed meanwhile, and at
        most every MODELS_EVERY, so that a large fleet's metrics do not rebuild it on every beat."""
        if not self._models_due:
            self._models_due = True
            loop = asyncio.get_running_loop()
            loop.call_later(max(self._models_at + MODELS_EVERY - loop.time(), 0.0), self._models_timer)

    def _models_timer(self) -> None:
        if self._models_due:
            self._rebuild_models()

    def _rebuild_models(self) -> None:
        self._models_due = False
        self._models_at = asyncio.get_running_loop().time()
        selector = self.routes.models.watch_selector
        services = self._model_services(set(self.catalog.services or ()))
        models: dict[str, list[InstanceView]] = {}
        for service in sorted(services):
            follower = self.followers.get((service, selector))
            for instance in follower.instances.values() if follower is not None else ():
                served = instance.capabilities.get("models")
                if not isinstance(served, list):
                    continue
                qualified = msgspec.structs.replace(instance, id=f"{service}/{instance.id}")
                for model in served:
                    if isinstance(model, str):
                        models.setdefault(model, []).append(qualified)
        self.models = models
        for model, backend in list(self.model_backends.items()):
            if model in models:
                backend.update(models[model])
            else:
                del self.model_backends[model]

    # --- what a request is sent to -------------------------------------------------------------

    async def _catalog_ready(self) -> set[str]:
        if self.catalog.services is None:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(READY_WAIT):
                    await self.catalog.ready.wait()
        if self.catalog.services is None:
            raise GatewayError(
                503, "no_view", f"no view of the registry yet: {self.catalog.status.stale}", retry_after=1
            )
        return self.catalog.services

    async def service(self, service: str) -> Backend:
        backend = self.backends.get(service)
        if backend is not None:
            return backend
        if service not in await self._catalog_ready():
            raise GatewayError(404, "not_found", f"no service {service!r} in the registry")
        route = self.routes.for_service(service)
        follower = self._follow(service, route.watch_selector)
        if follower is None:
            raise GatewayError(
                503, "busy", f"the gateway follows at most {self.max_services} services (--max-services)"
            )
        if not follower.ready.is_set():
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(READY_WAIT):
                    await follower.ready.wait()
            if not follower.ready.is_set():
                raise GatewayError(
                    503, "no_view", f"no view of {service!r} yet: {follower.status.stale}", retry_after=1
                )
        backend = self.backends.get(service)
        if backend is None:
            backend = self.backends[service] = Backend(service, service, route, self.signals)
            backend.update(list(follower.instances.values()))
        return backend

    async def model(self, model: str) -> Backend:
        await self._catalog_ready()
        backend = self.model_backends.get(model)
        if backend is None:
            if self._models_due:  # the model may have just appeared
                self._rebuild_models()
            instances = self.models.get(model)
            if instances is None:
                raise GatewayError(404, "unknown_model", f"The model `{model}` does not exist.", param="model")
            backend = self.model_backends[model] = Backend(
                model, f"model:{model}", self.routes.models, self.signals, qualified=True
            )
            backend.update(instances)
        if not backend.healthy:
            raise GatewayError(
                503, "no_instance", f"no healthy instance serves the model `{model}`", retry_after=1, param="model"
            )
        return backend

    def served_models(self) -> dict[str, int]:
        """Each model with a healthy instance, and how many serve it."""
        if self._models_due:
            self._rebuild_models()
        served = {}
        for model, instances in self.models.items():
            healthy = sum(1 for i in instances if i.status in HEALTHY and i.ejected is None)
            if healthy:
                served[model] = healthy
        return served

    def all_backends(self) -> list[Backend]:
        return [*self.backends.values(), *self.model_backends.values()]

    def state(self) -> dict[str, Any]:
        """What `/metrics` and the status show of the view."""
        routes = {}
        for backend in self.all_backends():
            stats = backend.core.stats()
            follower = self.followers.get((backend.name, backend.route.watch_selector))
            stats["stale"] = follower.status.stale if follower is not None else None
            if backend.qualified:  # a model's view is stale when any service it comes from is
                stale = [f.status.stale for f in self.followers.values() if f.status.stale is not None]
                stats["stale"] = stale[0] if stale else None
            stats["queued"] = len(backend.admission)
            routes[backend.label] = stats
        return {"catalog_stale": self.catalog.status.stale, "routes": routes}
