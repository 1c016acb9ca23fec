"""Bearer tokens: random and prefixed, shown once, kept as hashes, revocable, and when each
was last used, without writing the token file on every request."""

from __future__ import annotations

import asyncio
import json
import re
import stat
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from click.testing import Result
from typer.testing import CliRunner

from services.cli.common import EXIT_BAD_INPUT
from services.cli.main import app
from shared.natsserver import NatsServer
from shared.reviews import office_source
from shared.tokens import (
    LAST_USED_FILE,
    TOKEN_PREFIX,
    TokenStore,
    TokenUsage,
    hash_token,
    read_last_used,
)
from tests.ingest.support import SOURCE, assert_problem, milestone, running, settings_for

TOKEN = re.compile(r"^cotn_[A-Za-z0-9_-]{43}$")


def test_a_token_is_256_random_bits_with_a_prefix_and_only_its_hash_is_kept(
    tmp_path: Path,
) -> None:
    store = TokenStore.in_dir(tmp_path)
    token, record = store.create(SOURCE)
    other, _ = store.create(SOURCE)

    assert TOKEN.match(token) and token.startswith(TOKEN_PREFIX)
    assert len(token.removeprefix(TOKEN_PREFIX)) * 6 >= 256  # 43 base64url characters
    assert token != other
    text = store.path.read_text()
    assert token not in text and record.sha256 == hash_token(token) and record.sha256 in text
    assert stat.S_IMODE(store.path.stat().st_mode) == 0o600
    assert store.authority_of(token) == SOURCE
    assert store.authority_of(token[:-1] + ("A" if token[-1] != "A" else "B")) is None
    assert store.authority_of(record.sha256) is None  # the stored hash is no token


def test_a_revoked_token_is_refused(tmp_path: Path) -> None:
    store = TokenStore.in_dir(tmp_path)
    token, record = store.create(SOURCE)
    store.revoke(record.token_id)
    assert store.record_of(token) is None


def test_uses_are_merged_by_every_service_and_the_later_time_wins(tmp_path: Path) -> None:
    monotonic = [0.0]
    one = TokenUsage(tmp_path, every=60, monotonic=lambda: monotonic[0])
    two = TokenUsage(tmp_path, every=60, monotonic=lambda: monotonic[0])
    early = datetime(2026, 1, 1, 9, 0, tzinfo=UTC)
    one.touch("aaaa", early)
    one.touch("bbbb", early)
    two.touch("aaaa", early + timedelta(hours=1))

    assert not one.due()  # within a minute of the last flush: nothing is written
    monotonic[0] = 61.0
    assert one.due()
    two.flush()
    one.flush()  # older for aaaa: must not overwrite what the other service wrote

    assert read_last_used(tmp_path) == {
        "aaaa": "2026-01-01T10:00:00+00:00",
        "bbbb": "2026-01-01T09:00:00+00:00",
    }
    assert stat.S_IMODE((tmp_path / LAST_USED_FILE).stat().st_mode) == 0o600
    assert not one.due()  # nothing new since


async def test_the_service_notes_uses_apart_from_the_token_file(
    nats_server: NatsServer, tmp_path: Path
) -> None:
    store = TokenStore.in_dir(tmp_path)
    token, record = store.create(SOURCE)
    tokens_before = (store.path.read_bytes(), store.path.stat().st_mtime_ns)
    settings = settings_for(nats_server.url, tmp_path, last_used_flush_seconds=3600)
    async with running(settings, token) as service:
        for _ in range(3):
            assert (await service.post(milestone())).status_code == 202
        # Within the flush interval: in memory only.
        assert read_last_used(tmp_path) == {}
    # The service wrote its uses out as it stopped; the token file was never touched.
    used = read_last_used(tmp_path)
    assert set(used) == {record.token_id}
    assert datetime.now(UTC) - datetime.fromisoformat(used[record.token_id]) < timedelta(minutes=1)
    assert (store.path.read_bytes(), store.path.stat().st_mtime_ns) == tokens_before


async def test_uses_are_written_while_running_once_the_interval_has_passed(
    nats_server: NatsServer, tmp_path: Path
) -> None:
    token, record = TokenStore.in_dir(tmp_path).create(SOURCE)
    settings = settings_for(nats_server.url, tmp_path, last_used_flush_seconds=0.01)
    async with running(settings, token) as service:
        await asyncio.sleep(0.02)  # the interval since start-up
        await service.post(milestone())
        assert set(read_last_used(tmp_path)) == {record.token_id}


def test_token_list_shows_when_each_token_was_last_used(tmp_path: Path) -> None:
    store = TokenStore.in_dir(tmp_path)
    _, used = store.create(SOURCE)
    _, idle = store.create("lancashire")
    usage = TokenUsage(tmp_path, every=0)
    usage.touch(used.token_id, datetime(2026, 2, 3, 4, 5, 6, tzinfo=UTC))
    usage.flush()

    result = CliRunner().invoke(
        app, ["token", "list", "--data-dir", str(tmp_path)], env={"COLUMNS": "200"}
    )

    assert result.exit_code == 0, result.output
    rows = {
        cells[1]: cells
        for line in result.stdout.splitlines()
        if line.startswith("│")
        for cells in [[c.strip() for c in line.strip("│").split("│")]]
    }
    assert "last used (UTC)" in result.stdout
    assert rows[SOURCE][3] == "2026-02-03 04:05:06"
    assert rows["lancashire"][3] == "never"
    assert idle.token_id in rows["lancashire"][0]


# -- office tokens ----------------------------------------------------------------------------


def test_an_office_token_is_an_office_identity_and_old_token_files_still_load(
    tmp_path: Path,
) -> None:
    store = TokenStore.in_dir(tmp_path)
    old = {"token_id": "0a0b0c0d", "authority": SOURCE, "sha256": "0" * 64, "created_at": "x"}
    store.path.write_text(json.dumps({"tokens": [old]}))  # written before roles existed
    [legacy] = store.list()
    assert (legacy.role, legacy.member_of, legacy.is_office) == ("authority", None, False)

    token, record = store.create_office("jane-doe", member_of="lancashire")

    assert store.record_of(token) == record
    assert record.authority == office_source("jane-doe") == "office/jane-doe"
    assert (record.role, record.member_of, record.is_office) == ("office", "lancashire", True)
    assert [r.role for r in TokenStore.in_dir(tmp_path).list()] == ["authority", "office"]


@pytest.mark.parametrize("name", ["Jane", "jane doe", "-jane", "jane--doe", "office/jane", ""])
def test_an_office_name_is_a_lowercase_slug(tmp_path: Path, name: str) -> None:
    with pytest.raises(ValueError, match="lowercase slug"):
        TokenStore.in_dir(tmp_path).create_office(name)
    assert not TokenStore.in_dir(tmp_path).path.exists()


def cotn_token(*args: str) -> Result:
    return CliRunner().invoke(app, ["token", *args], env={"COLUMNS": "200"})


def test_token_create_office_issues_an_office_token(tmp_path: Path) -> None:
    result = cotn_token(
        "create", "--office", "jane", "--member-of", "cumbria", "--data-dir", str(tmp_path)
    )

    assert result.exit_code == 0, result.output
    record = TokenStore.in_dir(tmp_path).record_of(result.stdout.strip())
    assert record is not None and record.is_office
    assert (record.authority, record.member_of) == ("office/jane", "cumbria")
    assert "office/jane (member of cumbria)" in result.stderr

    listed = cotn_token("list", "--data-dir", str(tmp_path))
    assert "office (member of cumbria)" in listed.stdout


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--office", "Jane"], "lowercase slug"),
        (["--office", "jane", "--member-of", "atlantis"], "unknown authority 'atlantis'"),
        (["cumbria", "--office", "jane"], "exactly one"),
        ([], "exactly one"),
        (["cumbria", "--member-of", "lancashire"], "--member-of goes with --office"),
    ],
)
def test_token_create_refuses_a_wrong_office(tmp_path: Path, args: list[str], says: str) -> None:
    result = cotn_token("create", *args, "--data-dir", str(tmp_path))
    assert result.exit_code == EXIT_BAD_INPUT
    assert says in result.stderr
    assert not TokenStore.in_dir(tmp_path).path.exists()


async def test_a_column_service_refuses_an_office_token(
    nats_server: NatsServer, tmp_path: Path
) -> None:
    store = TokenStore.in_dir(tmp_path)
    office, _ = store.create_office("jane")
    async with running(settings_for(nats_server.url, tmp_path), office) as service:
        refused = await service.post(milestone(source="office/jane"))

        body = assert_problem(refused, 403, "forbidden")
        [error] = body["errors"]
        assert error["field"] == "Authorization"
        assert "POST /v1/reviews" in error["reason"] and "send no events" in error["reason"]
        assert service.metric("cotn_ingest_rejections_total", authority="office") == 1


async def test_a_review_sent_with_an_authority_token_is_refused(
    nats_server: NatsServer, tmp_path: Path
) -> None:
    token, _ = TokenStore.in_dir(tmp_path).create(SOURCE)
    review = {
        **milestone(),
        "type": "org.cotn.review.v1",
        "data": {"action": "verify", "proposal": "2a", "milestone": "adoption-priorities"},
    }
    async with running(settings_for(nats_server.url, tmp_path), token) as service:
        body = assert_problem(await service.post(review), 403, "forbidden")
        assert [e["field"] for e in body["errors"]] == ["source"]
        assert "office/<name>" in body["errors"][0]["reason"]
