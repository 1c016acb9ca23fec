"""No route or dependency of the services runs in a worker thread.

FastAPI runs a plain ``def`` route or dependency on a thread of its pool: a thread hop per
request. On the column service's single-event path that hop was a third of the CPU a request
cost (profiled at 500 requests a second), so every callable on a request path is async.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute

from services.aggregator.app import create_app as aggregator_app
from services.ingest.app import create_app as ingest_app
from shared.natsserver import free_port
from tests.aggregator.harness import settings_for as aggregator_settings
from tests.ingest.support import settings_for as ingest_settings


def callables(dependant: Dependant) -> Iterator[Any]:
    """The route's own function and every dependency under it."""
    yield dependant.call
    for sub in dependant.dependencies:
        yield from callables(sub)


def runs_on_the_loop(call: Any) -> bool:
    if inspect.isfunction(call) or inspect.ismethod(call):
        return inspect.iscoroutinefunction(call)
    return inspect.iscoroutinefunction(type(call).__call__)  # such as HTTPBearer()


def api_routes(routes: list[Any]) -> Iterator[APIRoute]:
    """Every APIRoute, also those of included routers (FastAPI wraps them since 0.16x)."""
    for route in routes:
        if isinstance(route, APIRoute):
            yield route
        elif (router := getattr(route, "original_router", None)) is not None:
            yield from api_routes(router.routes)
        elif (nested := getattr(route, "routes", None)) is not None:
            yield from api_routes(nested)


def threaded(routes: list[APIRoute]) -> list[str]:
    return [
        f"{route.path}: {getattr(call, '__qualname__', type(call).__qualname__)}"
        for route in routes
        for call in callables(route.dependant)
        if not runs_on_the_loop(call)
    ]


@pytest.mark.parametrize("service", ["ingest", "aggregator"])
def test_every_route_and_dependency_is_async(service: str, tmp_path: Path) -> None:
    nats_url = f"nats://127.0.0.1:{free_port()}"
    if service == "ingest":
        app = ingest_app(ingest_settings(nats_url, tmp_path))
    else:
        app = aggregator_app(aggregator_settings(nats_url, f"sqlite:///{tmp_path / 'x.db'}"))
    routes = list(api_routes(app.routes))
    assert "/v1/events" in {r.path for r in routes}, "found no routes: the check proves nothing"
    assert threaded(routes) == []
