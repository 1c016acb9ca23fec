"""The aggregator's read API as the office reads it: plain JSON over HTTP, never an import.

Every failure (the aggregator down, an error answer, not JSON) is one
:class:`AggregatorUnavailable` with a sentence a page can show. The exports are bytes the
office passes on as they are (:meth:`AggregatorClient.download`), with the same failures.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NamedTuple
from urllib.parse import quote

import httpx

Document = dict[str, Any]


class AggregatorUnavailable(RuntimeError):
    """The aggregator could not be asked or did not answer with what was asked for."""


class NotFound(LookupError):
    """The aggregator answered 404: no such proposal (the detail says so)."""


class UnknownQuery(ValueError):
    """The aggregator answered 422 to a query: its problem document's errors, as sentences."""


class Download(NamedTuple):
    """An export as the aggregator answered it: its bytes and their content type."""

    body: bytes
    content_type: str


def _problem(response: httpx.Response) -> tuple[str, list[str]]:
    try:
        doc = response.json()
    except ValueError:
        return response.reason_phrase, []
    if not isinstance(doc, dict):
        return response.reason_phrase, []
    errors = [f"{e.get('field')}: {e.get('reason')}" for e in doc.get("errors") or []]
    return str(doc.get("detail") or response.reason_phrase), errors


class AggregatorClient:
    """GETs on the read API (``/v1/programme``, ``/v1/proposals/{id}`` and its history,
    ``/v1/kpis`` and ``/v1/kpis/{id}``, ``/v1/events``, ``/v1/reporting`` and
    ``/v1/reporting/{authority}``, ``/v1/reviews``) and its exports (``/v1/exports/…``).

    ``export_timeout`` (seconds) is the exports' own: at scale the aggregator takes seconds
    to build one, far longer than a page's read may wait."""

    def __init__(self, client: httpx.AsyncClient, base_url: str, export_timeout: float = 60.0):
        self._client = client
        self.base_url = base_url.rstrip("/")
        self.export_timeout = export_timeout

    async def _answer(
        self,
        path: str,
        params: Mapping[str, str | int] | None,
        wait_seconds: float | None = None,
        etag: str | None = None,
    ) -> httpx.Response:
        """The aggregator's 200 answer to a GET (waiting the client's timeout, unless
        ``wait_seconds``), or its 304 when ``etag`` is still its answer's tag; anything else
        as this module's errors."""
        url = self.base_url + path
        waits = httpx.USE_CLIENT_DEFAULT if wait_seconds is None else wait_seconds
        headers = {} if etag is None else {"If-None-Match": etag}
        try:
            response = await self._client.get(url, params=params, timeout=waits, headers=headers)
        except httpx.HTTPError as exc:
            raise AggregatorUnavailable(f"cannot reach the aggregator at {url}: {exc!s}") from exc
        if response.status_code == 304 and etag is not None:
            return response
        if response.status_code == 404:
            raise NotFound(_problem(response)[0])
        if response.status_code == 422:
            detail, errors = _problem(response)
            raise UnknownQuery("; ".join(errors) or detail)
        if response.status_code != 200:
            detail, _ = _problem(response)
            raise AggregatorUnavailable(
                f"the aggregator answered {response.status_code} for {path}: {detail}"
            )
        return response

    async def get(self, path: str, params: Mapping[str, str | int] | None = None) -> Document:
        return self._document(path, await self._answer(path, params))

    def _document(self, path: str, response: httpx.Response) -> Document:
        try:
            doc = response.json()
        except ValueError as exc:
            raise AggregatorUnavailable(f"the aggregator did not answer {path} with JSON") from exc
        if not isinstance(doc, dict):
            raise AggregatorUnavailable(f"the aggregator answered {path} with no document")
        return doc

    async def download(self, path: str, params: Mapping[str, str] | None = None) -> Download:
        """An export's bytes and content type as the aggregator sent them: the office hands
        on exactly what it made. Failures as :meth:`get`'s."""
        response = await self._answer(path, params, wait_seconds=self.export_timeout)
        content_type = response.headers.get("content-type")
        if not content_type:
            raise AggregatorUnavailable(f"the aggregator answered {path} with no content type")
        return Download(response.content, content_type)

    async def programme(self, view: Mapping[str, str] | None = None) -> Document:
        """The board; ``view`` (as_at, known_at) for the board at a past instant."""
        return await self.get("/v1/programme", view)

    async def live_programme(self, etag: str | None) -> tuple[Document | None, str | None]:
        """The live board and its ETag; (None, ``etag``) when the board is still the one
        ``etag`` tags (a 304: nothing sent, nothing to decode)."""
        response = await self._answer("/v1/programme", None, etag=etag)
        if response.status_code == 304:
            return None, etag
        return self._document("/v1/programme", response), response.headers.get("etag")

    async def proposal(self, proposal_id: str, view: Mapping[str, str] | None = None) -> Document:
        return await self.get("/v1/proposals/" + quote(proposal_id, safe=""), view)

    async def history(self, proposal_id: str, view: Mapping[str, str] | None = None) -> Document:
        """Each change of the proposal's rating, oldest first, up to the view's instant."""
        return await self.get("/v1/proposals/" + quote(proposal_id, safe="") + "/history", view)

    async def kpis(self, view: Mapping[str, str] | None = None) -> Document:
        return await self.get("/v1/kpis", view)

    async def kpi(self, kpi_id: str, view: Mapping[str, str] | None = None) -> Document:
        """One KPI with every period (reporter, corrections, expected) and its trajectory."""
        return await self.get("/v1/kpis/" + quote(kpi_id, safe=""), view)

    async def events(self, params: Mapping[str, str | int]) -> Document:
        return await self.get("/v1/events", params)

    async def reporting(self, params: Mapping[str, str]) -> Document:
        """Completeness by authority and period, and the silent reporters."""
        return await self.get("/v1/reporting", params)

    async def authority_reporting(self, authority: str) -> Document:
        """What one authority owes next, what was late, missing, returned for correction."""
        return await self.get("/v1/reporting/" + quote(authority, safe=""))

    async def reviews(self, params: Mapping[str, str]) -> Document:
        """The review queue: waiting, returned for correction, kept aside by a lock."""
        return await self.get("/v1/reviews", params)

    async def iati_activities(self, as_at: str | None = None) -> Download:
        """IATI 2.03 activities (XML) as at an instant (RFC 3339); None for now."""
        return await self.download(
            "/v1/exports/iati-activities.xml", {"as_at": as_at} if as_at else None
        )

    async def gmpp(self, quarter: str, form: str) -> Download:
        """The GMPP-style return for ``quarter`` as ``form``: ``csv`` or ``json``."""
        return await self.download(f"/v1/exports/gmpp.{form}", {"quarter": quarter})
