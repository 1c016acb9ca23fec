"""Schemathesis (v4) against the OpenAPI documents of the running services.

``cotn run`` starts the real stack (nats-server from the wheel, SQLite, the aggregator and
the column services as processes); Schemathesis fetches each service's ``/openapi.json``,
generates requests from it, valid and invalid, and checks every answer: no 5xx, status
codes, content types, headers and bodies as documented, invalid input refused.

One check is left out: ``positive_data_acceptance`` (a schema-valid request must be
accepted). Both services judge what no schema can say: an event against the catalogue and
the sender's rights, a cursor against the positions the API issued. Everything else runs.

Schemathesis lives in an environment of its own (``make install`` builds it under
``.venv/schemathesis`` from ``requirements-schemathesis.lock``): the project's environment
has ``urllib3-future`` (through grafana-client), which replaces the ``urllib3`` that
Schemathesis's ``requests`` transport reads.
"""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from runstack import RunningStack, cotn, start_stack

REPO = Path(__file__).resolve().parent.parent
SCHEMATHESIS = Path(
    os.environ.get("COTN_SCHEMATHESIS", REPO / ".venv" / "schemathesis" / "bin" / "schemathesis")
)
EXAMPLES = 50
SEED = 20261202

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningStack]:
    with start_stack(tmp_path_factory.mktemp("schemathesis")) as running:
        yield running


def token_for(stack: RunningStack, authority: str) -> str:
    created = cotn("token", "create", authority, "--data-dir", str(stack.data_dir))
    assert created.returncode == 0, created.stderr
    match = re.search(r"cotn_[A-Za-z0-9_-]+", created.stdout)
    assert match, created.stdout
    return match.group(0)


@pytest.mark.parametrize("service", ["aggregator", "collaboration"])
def test_the_services_answer_as_their_openapi_documents_say(
    stack: RunningStack, service: str
) -> None:
    assert SCHEMATHESIS.exists(), f"{SCHEMATHESIS} is missing: `make install` builds it"
    url = stack.url if service == "aggregator" else stack.columns[service]
    # A real partner's token: generated events then reach the checks behind authentication.
    token = token_for(stack, "greater-manchester")
    run = subprocess.run(
        [
            str(SCHEMATHESIS), "run", f"{url}/openapi.json",
            "--checks", "all", "--exclude-checks", "positive_data_acceptance",
            "--max-examples", str(EXAMPLES), "--seed", str(SEED),
            "--header", f"Authorization: Bearer {token}",
            "--no-color",
        ],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=stack.data_dir,  # where Schemathesis keeps its example database
        env={**os.environ, "SCHEMATHESIS_HOOKS": ""},
    )  # fmt: skip
    assert run.returncode == 0, run.stdout[-20000:] + run.stderr[-5000:]
    assert re.search(r"\d+ generated, \d+ passed", run.stdout), run.stdout[-5000:]
