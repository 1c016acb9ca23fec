"""CloudEvents 1.0 as its official Python SDK (``cloudevents``) writes it, in both HTTP modes,
through a real column service, nats-server and aggregator: extension attributes are kept with
the event and shown in the audit trail; an empty batch is fine; invalid events are refused.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
from cloudevents.core.bindings.http import to_binary, to_structured
from cloudevents.core.formats.json import JSONFormat
from cloudevents.core.v1.event import CloudEvent

from shared.natsserver import NatsServer
from tests.aggregator.harness import eventually
from tests.pipeline import pipeline

TIME = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=1)


def sdk_event(event_id: str, **extensions: Any) -> CloudEvent:
    return CloudEvent(
        attributes={
            "id": event_id,
            "source": "greater-manchester",
            "type": "org.cotn.milestone.v1",
            "time": TIME,
            "datacontenttype": "application/json",
            **extensions,
        },
        data={"proposal": "1a", "milestone": "joint-position", "status": "in_progress"},
    )


async def test_the_official_sdk_in_both_modes_with_extensions(
    fresh_nats: NatsServer, database_url: str, tmp_path: Path
) -> None:
    structured = to_structured(
        sdk_event("sdk-structured", knativearrivaltime="2025-07-01T09:30:01Z", sampled=True),
        JSONFormat(),
    )
    binary = to_binary(sdk_event("sdk-binary", traceid="abc123", partitionkey="gm"), JSONFormat())
    async with (
        pipeline(fresh_nats.url, database_url, tmp_path) as (app, devolution),
        httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://agg") as read,
    ):
        for message in (structured, binary):
            answer = await devolution.post(
                message.body, content_type=None, headers=dict(message.headers)
            )
            assert answer.status_code == 202, answer.text
        empty = await devolution.post([], content_type="application/cloudevents-batch+json")
        assert (empty.status_code, empty.json()) == (202, {"accepted": [], "duplicates": []})

        async def audit() -> dict[str, dict[str, Any]] | None:
            page = (await read.get("/v1/events", params={"proposal": "1a"})).json()
            events = {e["id"]: e for e in page.get("events", [])}
            return events if len(events) == 2 else None

        events = await eventually(audit, "both SDK events in the audit trail")
    assert events["sdk-structured"]["extensions"] == {
        "knativearrivaltime": "2025-07-01T09:30:01Z",
        "sampled": True,
    }
    # Binary mode carries every attribute as a header: its extensions arrive as strings.
    assert events["sdk-binary"]["extensions"] == {"traceid": "abc123", "partitionkey": "gm"}
    for event in events.values():
        assert datetime.fromisoformat(event["event_time"]) == TIME
        assert event["data"]["status"] == "in_progress"


async def test_what_the_specification_calls_valid_is_accepted_and_invalid_refused(
    fresh_nats: NatsServer, database_url: str, tmp_path: Path
) -> None:
    base = {
        "specversion": "1.0",
        "source": "greater-manchester",
        "type": "org.cotn.milestone.v1",
        "data": {"proposal": "1a", "milestone": "joint-position", "status": "in_progress"},
    }
    valid = [
        base | {"id": "ns", "time": "2025-07-01T09:30:00.123456789Z"},
        base | {"id": "offset", "time": "2025-07-01T23:30:00.5+14:00"},
        base | {"id": "nulls", "time": "2025-07-01T09:30:00-09:30", "subject": None,
                "dataschema": None, "datacontenttype": None, "traceid": None},
        base | {"id": "ext", "time": "2025-07-01T09:30:00Z", "a1": 2**31 - 1, "b": False},
    ]  # fmt: skip
    invalid = {
        "Upper": base | {"id": "i1", "time": "2025-07-01T09:30:00Z", "Upper": "x"},
        "under_score": base | {"id": "i2", "time": "2025-07-01T09:30:00Z", "under_score": 1},
        "toolongextensionname1": base
        | {"id": "i3", "time": "2025-07-01T09:30:00Z", "toolongextensionname1": 1},
        "ratio": base | {"id": "i4", "time": "2025-07-01T09:30:00Z", "ratio": 0.5},
        "big": base | {"id": "i5", "time": "2025-07-01T09:30:00Z", "big": 2**31},
        "nested": base | {"id": "i6", "time": "2025-07-01T09:30:00Z", "nested": {"a": 1}},
        "time": base | {"id": "i7", "time": "2025-07-01T09:30Z"},
    }
    async with pipeline(fresh_nats.url, database_url, tmp_path) as (_, devolution):
        answer = await devolution.post(valid, content_type="application/cloudevents-batch+json")
        assert answer.status_code == 202, answer.text
        assert sorted(answer.json()["accepted"]) == sorted(e["id"] for e in valid)
        for attribute, event in invalid.items():
            refused = await devolution.post(event)
            assert refused.status_code == 422, (attribute, refused.text)
            assert [e["field"] for e in refused.json()["errors"]] == [attribute]
