"""The office web board app: pages over the aggregator's read API, live updates, login.

:func:`create_app` builds everything from settings and connects nothing: the HTTP client
to the aggregator and the board poller start in the app's lifespan. The office never
writes the database; actions it will take (reviews) are to be published as events.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles
from starlette.middleware.sessions import SessionMiddleware

from services.office.client import AggregatorClient
from services.office.live import BoardWatcher
from services.office.metrics import OfficeMetrics
from services.office.routes import build_router
from services.office.settings import OfficeSettings
from shared.catalogue import load_catalogue
from shared.tokens import TokenStore

HERE = Path(__file__).parent
SESSION_COOKIE = "cotn_office_session"


class Office:
    """What the routes share: settings, the aggregator client, the poller, the token store,
    the programme's start."""

    def __init__(self, settings: OfficeSettings):
        self.settings = settings
        self.metrics = OfficeMetrics()
        self.http = httpx.AsyncClient(timeout=settings.request_timeout_seconds)
        self.aggregator = AggregatorClient(
            self.http, settings.aggregator, settings.export_timeout_seconds
        )
        # The read API does not give the programme's start, which the exports page needs
        # for its quarters: it is read from the catalogue file, as the aggregator reads it.
        self.programme_start = load_catalogue(settings.catalogue).programme_start
        self.watcher = BoardWatcher(
            self.aggregator,
            settings.poll_interval_seconds,
            settings.stale_after_seconds,
            on_read=lambda ok: self.metrics.reads.labels("ok" if ok else "failed").inc(),
        )
        self.tokens = TokenStore.in_dir(settings.data_dir)

        def board_age() -> float:
            age = self.watcher.snapshot.age()
            return math.nan if age is None else age

        self.metrics.board_age.set_function(board_age)


def create_app(settings: OfficeSettings) -> FastAPI:
    """The office board for ``settings``; nothing is connected until the app starts."""
    office = Office(settings)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        poller = asyncio.create_task(office.watcher.run(), name="board-poller")
        try:
            yield
        finally:
            poller.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await poller
            await office.http.aclose()

    app = FastAPI(
        title="COTN programme office",
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )
    app.state.office = office
    app.add_middleware(
        SessionMiddleware,
        secret_key=settings.secret_key,
        session_cookie=SESSION_COOKIE,
        max_age=settings.session_max_age_seconds,
        same_site="strict",
        https_only=not settings.development,
    )
    app.mount("/static", StaticFiles(directory=HERE / "static"), name="static")
    app.include_router(build_router(office))
    return app
