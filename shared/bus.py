"""Streams and subjects, defined once beside the event models (CONTRACT §4)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple

from nats.js import JetStreamContext
from nats.js.api import DiscardPolicy, RetentionPolicy, StorageType, StreamConfig
from nats.js.errors import NotFoundError

from shared.reviews import LOCKS_STREAM, LOCKS_SUBJECTS

EVENTS_STREAM = "COTN_EVENTS"
EVENTS_SUBJECTS = "cotn.events.>"
DLQ_STREAM = "COTN_DLQ"
DLQ_SUBJECTS = "cotn.dlq.>"
STATUS_STREAM = "COTN_STATUS"
STATUS_SUBJECTS = "cotn.status.>"
AGGREGATOR_DURABLE = "cotn-aggregator"
CLAIMS_BUCKET = "COTN_EVENT_IDS"
"""Key-value bucket of every accepted (source, id) and its content digest, kept for ever."""
CLAIMS_STREAM = f"KV_{CLAIMS_BUCKET}"
CLAIMS_SUBJECTS = f"$KV.{CLAIMS_BUCKET}.>"

MSG_ID_HEADER = "Nats-Msg-Id"
CONTENT_TYPE = "application/cloudevents+json"


class EventSubject(NamedTuple):
    """Where an accepted event is filed: ``cotn.events.<column>.<proposal>.<kind>``."""

    column: str
    proposal: str
    kind: str
    """The subject token of the event's kind (``milestone``, ``kpi``: see shared.kinds)."""

    def __str__(self) -> str:
        return f"cotn.events.{self.column}.{self.proposal}.{self.kind}"


def event_subject(column: str, proposal: str, kind: str) -> str:
    """``cotn.events.<column>.<proposal>.<kind>``."""
    return str(EventSubject(column, proposal, kind))


def parse_event_subject(subject: str) -> EventSubject:
    """The parts of an events subject; ValueError if ``subject`` is not one."""
    tokens = subject.split(".")
    if len(tokens) != 5 or tokens[:2] != ["cotn", "events"] or not all(tokens[2:]):
        raise ValueError(f"{subject} is not cotn.events.<column>.<proposal>.<kind>")
    return EventSubject(tokens[2], tokens[3], tokens[4])


def status_subject(column: str, proposal: str) -> str:
    return f"cotn.status.{column}.{proposal}"


def dlq_subject(reason: str) -> str:
    return f"cotn.dlq.{reason}"


def msg_id(source: str, event_id: str) -> str:
    """JetStream de-duplication id from the event identity (source ids hold no ``:``)."""
    return f"{source}:{event_id}"


@dataclass(frozen=True)
class StreamSettings:
    """How the streams are made; replicas > 1 needs a JetStream cluster."""

    replicas: int = 1
    duplicate_window_seconds: float = 120.0
    max_bytes: int = 8 * 1024**3
    # The database is the permanent record; the stream is a durable buffer and a replay
    # source for 30 days, so a full disk cannot stop ingestion for good.
    max_age_seconds: float = 30 * 86400
    # A claim takes about 300 bytes on disk: 512 MiB hold some 1.7 million events' ids.
    claims_max_bytes: int = 512 * 1024**2
    # A lock takes a few hundred bytes: 64 MiB hold far more returns than the programme has.
    locks_max_bytes: int = 64 * 1024**2


def events_stream_config(settings: StreamSettings) -> StreamConfig:
    return StreamConfig(
        name=EVENTS_STREAM,
        description="Every accepted COTN programme event",
        subjects=[EVENTS_SUBJECTS],
        retention=RetentionPolicy.LIMITS,
        storage=StorageType.FILE,
        discard=DiscardPolicy.NEW,
        duplicate_window=settings.duplicate_window_seconds,
        num_replicas=settings.replicas,
        max_bytes=settings.max_bytes,
        max_age=settings.max_age_seconds,
    )


def side_stream_configs(settings: StreamSettings) -> list[StreamConfig]:
    """Dead letters and status changes, kept so a late subscriber can read them."""
    return [
        StreamConfig(
            name=name,
            description=description,
            subjects=[subjects],
            retention=RetentionPolicy.LIMITS,
            storage=StorageType.FILE,
            discard=DiscardPolicy.OLD,
            num_replicas=settings.replicas,
            max_bytes=512 * 1024**2,
            duplicate_window=settings.duplicate_window_seconds,
        )
        for name, subjects, description in (
            (DLQ_STREAM, DLQ_SUBJECTS, "Events the aggregator could never store"),
            (STATUS_STREAM, STATUS_SUBJECTS, "Proposal health and stall changes"),
        )
    ]


def bucket_stream_config(
    settings: StreamSettings, name: str, subjects: str, description: str, **limits: Any
) -> StreamConfig:
    """The stream behind a key-value bucket, as nats-py's ``create_key_value`` makes one: one
    value per key, direct gets, rollups, no age limit; ``limits`` are the bucket's own."""
    return StreamConfig(
        name=name,
        description=description,
        subjects=[subjects],
        retention=RetentionPolicy.LIMITS,
        storage=StorageType.FILE,
        discard=DiscardPolicy.NEW,
        max_msgs_per_subject=1,
        num_replicas=settings.replicas,
        duplicate_window=settings.duplicate_window_seconds,
        allow_direct=True,
        allow_rollup_hdrs=True,
        **limits,
    )


def claims_bucket_config(settings: StreamSettings) -> StreamConfig:
    """The stream behind the claims bucket.

    One value per key (``max_msgs_per_subject=1``) and no age limit: a column service
    answers 409 to a changed resend of an id for as long as the programme runs, long after
    the events stream's duplicate window and ``max_age``. Bounded in bytes like the other
    streams (and within nats-server's ``max_file_store``): when full it refuses new claims,
    and so new events, with 503s rather than forget old ones.
    """
    return bucket_stream_config(
        settings,
        CLAIMS_STREAM,
        CLAIMS_SUBJECTS,
        "Each accepted (source, id) with its content digest: changed resends are 409s",
        max_msg_size=1024,
        max_bytes=settings.claims_max_bytes,
        deny_delete=True,
        # A request's claims are one atomic batch (nats-server 2.12+): one synced write.
        allow_atomic=True,
    )


def locks_bucket_config(settings: StreamSettings) -> StreamConfig:
    """The stream behind the locks bucket (:data:`shared.reviews.LOCKS_BUCKET`).

    One value per key, the lock now: the column services watch the latest of each key, and
    the history of reviews is the events stream's. Deletes are allowed, unlike the claims
    bucket's, because a reopen deletes its key. No age limit: a lock holds until reopened.
    """
    return bucket_stream_config(
        settings,
        LOCKS_STREAM,
        LOCKS_SUBJECTS,
        "Locked returns (approved KPI returns, verified completions), by target",
        max_msg_size=4096,
        max_bytes=settings.locks_max_bytes,
        deny_delete=False,
    )


async def ensure_streams(js: JetStreamContext, settings: StreamSettings) -> None:
    """Create the project's streams and the claims and locks buckets, or bring their
    configuration up to date."""
    configs = [events_stream_config(settings), *side_stream_configs(settings)]
    for config in [*configs, claims_bucket_config(settings), locks_bucket_config(settings)]:
        assert config.name is not None
        try:
            await js.stream_info(config.name)
        except NotFoundError:
            await js.add_stream(config)
        else:
            await js.update_stream(config)
