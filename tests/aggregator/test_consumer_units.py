"""The consumer's pure parts: decoding a message, dead-letter records, settings."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

import nats
import nats.errors
import pytest
from nats.aio.msg import Msg
from nats.errors import NotJSMessageError
from pydantic import ValidationError

from services.aggregator.consumer import (
    Unstorable,
    consumer_config,
    dead_letter_message,
    dead_letter_row,
    decode,
    stream_position,
)
from services.aggregator.pulling import take_queued_messages_at_once
from services.aggregator.settings import AggregatorSettings, async_database_url
from shared.bus import EVENTS_SUBJECTS
from shared.catalogue import Catalogue
from shared.kinds import KINDS
from shared.natsserver import NatsServer

from .harness import T0, eventually, js_reply, kpi, milestone, subject_of

STORED_AT = datetime(2025, 6, 1, 9, 0, 1, tzinfo=UTC)


def js_message(
    payload: bytes | dict[str, Any], subject: str | None = None, seq: int = 7, delivered: int = 1
) -> Msg:
    """A JetStream message as nats-py hands it over: its metadata is in the reply subject."""
    if isinstance(payload, dict):
        subject = subject or subject_of(payload)
        payload = json.dumps(payload).encode()
    return Msg(
        _client=None,  # type: ignore[arg-type]
        subject=subject or "cotn.events.collaboration.2a.milestone",
        reply=js_reply(seq, STORED_AT, delivered),
        data=payload,
        headers={"Nats-Msg-Id": "greater-manchester:x"},
    )


@pytest.mark.parametrize(
    "reply",
    [
        "$JS.ACK.COTN_EVENTS.cotn-aggregator.3.1042.77.1748768401123456789.12",
        "$JS.ACK._.ACCHASH.COTN_EVENTS.cotn-aggregator.3.1042.77.1748768401123456789.12.x9",
        "$JS.ACK.hub.ACCHASH.COTN_EVENTS.cotn-aggregator.3.1042.77.1748768401123456789.12",
    ],
    ids=["v1", "v2-no-domain", "v2-domain-no-token"],
)
def test_stream_position_is_what_nats_py_reads_from_the_reply(reply: str) -> None:
    msg = Msg(_client=None, subject="s", reply=reply, data=b"")  # type: ignore[arg-type]
    meta = msg.metadata
    assert (
        stream_position(msg)
        == (meta.sequence.stream, meta.timestamp)
        == (
            1042,
            datetime(2025, 6, 1, 9, 0, 1, 123457, tzinfo=UTC),
        )
    )


def test_a_reply_that_is_not_jetstreams_is_refused_as_nats_py_refuses_it() -> None:
    msg = Msg(_client=None, subject="s", reply="_INBOX.abc", data=b"")  # type: ignore[arg-type]
    with pytest.raises(NotJSMessageError):
        stream_position(msg)


def reason_of(msg: Msg, catalogue: Catalogue) -> str:
    with pytest.raises(Unstorable) as caught:
        decode(msg, catalogue)
    return caught.value.reason


def test_a_milestone_event_becomes_its_rows(catalogue: Catalogue) -> None:
    body = milestone("e1", "2a", "adoption-priorities", "at_risk", note="waiting on partners")
    new = decode(js_message(body, seq=42), catalogue)
    assert new.key == ("greater-manchester", "e1")
    assert new.row | {"digest": "-"} == {
        "source": "greater-manchester",
        "event_id": "e1",
        "stream_seq": 42,
        "type": "org.cotn.milestone.v1",
        "column": "collaboration",
        "proposal": "2a",
        "milestone": "adoption-priorities",
        "kpi": None,
        "period": "2025-06",
        "target": "milestone.2a.adoption-priorities",
        "held": None,
        "event_time": T0,
        "received_at": STORED_AT,
        "data": body["data"],
        "extensions": None,
        "digest": "-",
    }


def test_a_kpi_event_is_filed_under_its_subjects_proposal(catalogue: Catalogue) -> None:
    body = kpi("k1", "exports", 130, "2025-Q2")
    new = decode(js_message(body, "cotn.events.business.3a.kpi"), catalogue)
    assert (new.row["type"], new.row["proposal"], new.row["column"], new.row["kpi"]) == (
        "org.cotn.kpi.v1",
        "3a",
        "business",
        "exports",
    )
    assert new.row["data"] == body["data"]


@pytest.mark.parametrize(
    ("payload", "subject", "reason"),
    [
        (b"{not json", None, "invalid_json"),
        (b"\xff\xfe", None, "invalid_json"),
        (b"[1, 2]", None, "invalid_event"),
        (json.dumps({"specversion": "1.0", "id": "x"}).encode(), None, "invalid_event"),
        # A number too large for a float: not a ValidationError inside pydantic.
        (
            json.dumps(kpi("big", "exports", 1, "2025"))
            .replace('"value": 1', '"value": ' + "9" * 400)
            .encode(),
            "cotn.events.business.3a.kpi",
            "invalid_event",
        ),
        (milestone("e", "2a", "adoption-priorities", "done"), None, "invalid_event"),
        (milestone("e", "2a", "adoption-priorities", "completed"), "cotn.events.2a", "bad_subject"),
        (
            milestone("e", "2a", "adoption-priorities", "completed"),
            "cotn.events.collaboration.2a.kpi",
            "bad_subject",
        ),
        (
            milestone("e", "2a", "adoption-priorities", "completed"),
            "cotn.events.collaboration.2b.milestone",
            "bad_subject",
        ),
        (
            milestone("e", "9z", "m", "completed"),
            "cotn.events.collaboration.9z.milestone",
            "unknown_proposal",
        ),
        (milestone("e", "2a", "no-such-milestone", "completed"), None, "unknown_milestone"),
        (kpi("k", "no-such-kpi", 1, "2025"), "cotn.events.business.3a.kpi", "unknown_kpi"),
        (kpi("k", "exports", 1, "2062"), "cotn.events.business.3a.kpi", "future_period"),
    ],
)
def test_what_can_never_be_stored(
    catalogue: Catalogue, payload: Any, subject: str | None, reason: str
) -> None:
    if isinstance(payload, dict) and subject is None:
        payload = json.dumps(payload).encode()
    assert reason_of(js_message(payload, subject), catalogue) == reason


def test_the_digest_ignores_how_the_event_was_written() -> None:
    body = milestone("e1", "2a", "adoption-priorities", "completed")
    same = dict(body, time=T0.astimezone(UTC).isoformat())
    shifted = dict(body, time=T0.astimezone(ZoneInfo("Europe/London")).isoformat())
    with_null = dict(body, data={**body["data"], "note": None})
    digests = {KINDS.parse(b).digest for b in (body, same, shifted, with_null)}
    assert len(digests) == 1
    other = dict(body, data={**body["data"], "status": "blocked"})
    assert KINDS.parse(other).digest not in digests


def test_a_dead_letter_keeps_the_message_as_it_arrived() -> None:
    msg = js_message(b"{not json", "cotn.events.collaboration.2a.milestone", seq=9)
    row = dead_letter_row(msg, Unstorable("invalid_json", "Expecting\nproperty name"), STORED_AT)
    assert row["payload"] == b"{not json"
    assert row["detail"] == "Expecting property name"  # one line: it travels in a header
    assert (row["stream_seq"], row["received_at"], row["reason"]) == (9, STORED_AT, "invalid_json")
    subject, body, headers = dead_letter_message(row)
    assert subject == "cotn.dlq.invalid_json"
    assert body == b"{not json"
    assert headers["Cotn-Reason"] == "invalid_json"
    assert headers["Cotn-Subject"] == "cotn.events.collaboration.2a.milestone"
    assert headers["Cotn-Stream-Seq"] == "9"
    assert headers["Cotn-Original-Msg-Id"] == "greater-manchester:x"
    assert headers["Nats-Msg-Id"].startswith("COTN_EVENTS:9:")


def test_the_consumer_never_terminates_and_holds_two_batches() -> None:
    settings = AggregatorSettings(batch_size=500)
    config = consumer_config(settings)
    assert config.max_deliver == -1
    assert config.max_ack_pending == 2000 >= 2 * settings.batch_size
    assert config.filter_subject == EVENTS_SUBJECTS
    assert config.durable_name == "cotn-aggregator"
    with pytest.raises(ValidationError, match="at least twice"):
        AggregatorSettings(batch_size=800, max_ack_pending=1000)


def test_settings_take_plain_database_urls() -> None:
    assert async_database_url("postgresql://u@h/db") == "postgresql+asyncpg://u@h/db"
    assert async_database_url("sqlite:///x.db") == "sqlite+aiosqlite:///x.db"
    assert AggregatorSettings(database_url="postgres://h/db").database_url.startswith(
        "postgresql+asyncpg://"
    )


def test_settings_read_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COTN_AGGREGATOR_BATCH_SIZE", "100")
    monkeypatch.setenv("COTN_AGGREGATOR_STATUS_INTERVAL_SECONDS", "5")
    settings = AggregatorSettings()
    assert (settings.batch_size, settings.status_interval_seconds) == (100, 5)
    assert settings.database_url == "sqlite+aiosqlite:///./.cotn/cotn.db"


async def test_queued_messages_are_taken_in_order_then_next_msg_waits(
    nats_server: NatsServer,
) -> None:
    nc = await nats.connect(nats_server.url)
    try:
        sub = await nc.subscribe("cotn.test.queued")
        assert take_queued_messages_at_once(sub)  # this nats-py keeps its queue as expected
        for n in range(3):
            await nc.publish("cotn.test.queued", f"m{n}".encode())
        await nc.flush()

        async def queued() -> bool:
            return sub.pending_msgs == 3

        await eventually(queued, "three messages queued")
        assert sub.pending_bytes == 6
        taken = [(await sub.next_msg(timeout=0.5)).data for _ in range(3)]
        assert taken == [b"m0", b"m1", b"m2"]
        assert (sub.pending_msgs, sub.pending_bytes) == (0, 0)
        with pytest.raises(nats.errors.TimeoutError):  # nothing queued: nats-py's own wait
            await sub.next_msg(timeout=0.1)
        await nc.publish("cotn.test.queued", b"late")
        assert (await sub.next_msg(timeout=2)).data == b"late"
    finally:
        await nc.close()
