"""The committed AsyncAPI and OpenAPI documents are exactly what the code generates."""

from __future__ import annotations

import pytest

from services.cli.apidocs import DOCS_DIR, GENERATORS, generated


@pytest.fixture(scope="module")
def documents() -> dict[str, str]:
    return generated()


@pytest.mark.parametrize("name", sorted(GENERATORS))
def test_committed_document_matches_the_code(name: str, documents: dict[str, str]) -> None:
    committed = (DOCS_DIR / name).read_text(encoding="utf-8")
    assert committed == documents[name], f"docs/{name} is stale: run `cotn docs build`"


def test_the_documents_name_the_contract_surfaces(documents: dict[str, str]) -> None:
    assert "cotn.events.>" in documents["asyncapi.yaml"]
    assert '"/v1/events"' in documents["openapi-ingest.json"]
    for path in ("/v1/programme", "/v1/proposals/{proposal_id}", "/v1/kpis", "/v1/events"):
        assert f'"{path}"' in documents["openapi-aggregator.json"], path
