"""Claims: each accepted (``source``, ``id``) and its content, held for ever on the bus.

JetStream's duplicate window tells a resend from a new event for two minutes only, and the
aggregator, which keeps every event, is not asked before a column service answers. So before
it publishes, a column service *claims* each event's identity in the key-value bucket
``COTN_EVENT_IDS`` (:data:`shared.bus.CLAIMS_BUCKET`), create-only, a request's claims in
one atomic batch (all made, or none if any id has a claim; then this module's
:func:`claim` reads them one by one):

- no claim yet: the claim is made and the event published (``accepted``);
- a claim with the same content digest: a resend (``duplicates``), published again so an
  event whose first publish was cut short still lands (the stream or the aggregator drops it
  otherwise);
- a claim with another digest: a conflict, answered ``409`` naming the time of the event
  that holds the id; nothing of the request is published.

A request refused before anything of it was published (a conflict elsewhere in the batch,
or claims the bus did not acknowledge) withdraws the claims it made, so a corrected resend
of an event that was never published is not a conflict. Once publishing began the claims
stay, whatever the answer: an event may have landed without its ack. A service that dies
between claim and publish leaves its claim too: the same event sent again is published
then; another with that id is a 409 (the README's Guarantees say so).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

from nats.js.api import Header
from nats.js.errors import APIError, KeyNotFoundError, KeyWrongLastSequenceError
from nats.js.kv import KeyValue

from shared.bus import CLAIMS_BUCKET

CLAIMS_PREFIX = f"$KV.{CLAIMS_BUCKET}."
CREATE_ONLY: dict[str, str] = {Header.EXPECTED_LAST_SUBJECT_SEQUENCE.value: "0"}
"""The header that makes a publish to a key a create: refused if the key has a value."""
_WRONG_LAST_SEQUENCE = (10071, 10164)


@dataclass(frozen=True, slots=True)
class Claim:
    """What the bucket keeps of an accepted event: its content digest and its ``time``."""

    digest: str
    time: str
    """The event's ``time`` (RFC 3339, UTC), which the 409 names."""

    def encode(self) -> bytes:
        return json.dumps({"digest": self.digest, "time": self.time}).encode()

    @classmethod
    def decode(cls, value: bytes | None) -> Claim:
        raw = json.loads(value or b"{}")
        return cls(digest=str(raw.get("digest", "")), time=str(raw.get("time", "unknown")))


def claim_key(msg_id: str) -> str:
    """The bucket key of an event identity: key-value keys are subject tokens, ids any text."""
    return hashlib.sha256(msg_id.encode()).hexdigest()


def claim_subject(msg_id: str) -> str:
    """Where a create-only publish (with :data:`CREATE_ONLY`) claims ``msg_id``."""
    return CLAIMS_PREFIX + claim_key(msg_id)


def is_taken(error: object) -> bool:
    """Whether a create-only publish was refused because the key has (or had) a value."""
    return isinstance(error, APIError) and error.err_code in _WRONG_LAST_SEQUENCE


@dataclass(frozen=True, slots=True)
class Claimed:
    """The outcome of one claim: made now (``revision``), or held already (``held``)."""

    revision: int | None = None
    held: Claim | None = None


async def claim(bucket: KeyValue, msg_id: str, wanted: Claim) -> Claimed:
    """The claim that holds ``msg_id``, or ``wanted`` made now if none does.

    The slow path, after a create-only publish was refused: the key holds a claim (read it)
    or only the marker of a withdrawn one (claim it over the marker)."""
    key = claim_key(msg_id)
    while True:
        try:
            entry = await bucket.get(key)
        except KeyNotFoundError:  # never claimed, or withdrawn
            try:
                return Claimed(revision=await bucket.create(key, wanted.encode()))
            except KeyWrongLastSequenceError:
                continue  # claimed meanwhile: read that claim
        return Claimed(held=Claim.decode(entry.value))


async def claim_of(bucket: KeyValue, msg_id: str) -> Claim | None:
    """The claim that holds ``msg_id``, or None (never claimed, or withdrawn)."""
    try:
        entry = await bucket.get(claim_key(msg_id))
    except KeyNotFoundError:
        return None
    return Claim.decode(entry.value) if entry.value else None


async def withdraw(bucket: KeyValue, msg_id: str, revision: int) -> None:
    """Withdraw a claim made by this request, unless another has replaced it since."""
    await bucket.delete(claim_key(msg_id), last=revision)
