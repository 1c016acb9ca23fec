"""The bare peer of a column service, for figure 2's single-event baseline (issue 16).

A Starlette app with one route, ``POST /v1/events``, that publishes the body as it came to
the events stream with a JetStream acknowledgement and answers ``202``: no token, no
parsing, no validation, no claim, no rate limit. It runs as a process of its own under
uvicorn with the column service's settings (``cotn serve``), so the two differ only by what
the column service does per request.

    python -m bench.peer --port P --nats-url URL
"""

from __future__ import annotations

import argparse
import itertools
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import nats
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from shared.bus import EVENTS_STREAM, MSG_ID_HEADER, StreamSettings, ensure_streams, event_subject

SUBJECT = event_subject("collaboration", "2a", "milestone")
"""Every body goes here: the peer reads nothing of it."""


def create_app(nats_url: str) -> Starlette:
    state: dict[str, object] = {}
    ids = itertools.count()

    @asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        connection = await nats.connect(nats_url)
        js = connection.jetstream(timeout=5)
        await ensure_streams(js, StreamSettings())
        state["js"] = js
        try:
            yield
        finally:
            await connection.close()

    async def post(request: Request) -> Response:
        js = state["js"]
        body = await request.body()
        headers = {MSG_ID_HEADER: f"peer:{next(ids)}"}
        await js.publish(SUBJECT, body, stream=EVENTS_STREAM, headers=headers)  # type: ignore[attr-defined]
        return Response(b'{"accepted":1}', status_code=202, media_type="application/json")

    async def ready(_request: Request) -> Response:
        return Response(b"ok")

    return Starlette(
        routes=[Route("/v1/events", post, methods=["POST"]), Route("/readyz", ready)],
        lifespan=lifespan,
    )


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.peer", description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--nats-url", required=True)
    args = parser.parse_args()
    uvicorn.run(create_app(args.nats_url), host="127.0.0.1", port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
