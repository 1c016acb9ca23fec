"""A generated corpus of malformed requests against a real column service.

Every request of the corpus must be answered with a 4xx RFC 9457 problem document (never a
5xx), and none may put anything on the bus. The collaboration column service runs
in-process (its own lifespan, httpx over ASGI) on a nats-server of this module's own, so
"nothing published" is exact: the streams stay empty through the corpus, and the one valid
event posted at the end is the only message they ever hold.

Conflicting resends reuse ids the fixture claims up front in the claims bucket, as if
events of other content had been accepted under them: each is a 409, and a batch holding
one withdraws the claims of its other events, so the bucket ends with the fixture's claims
only.

Hypothesis generates the requests, derandomized and with a bounded number of examples per
kind of mistake, so the corpus is the same on every run; the last test checks that it held
at least 500 requests and every kind.
"""

from __future__ import annotations

import json
import math
import string
from collections import Counter
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import nats
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from services.ingest.claims import Claim, claim_key
from shared.bus import CLAIMS_BUCKET, DLQ_STREAM, EVENTS_STREAM, STATUS_STREAM, msg_id
from shared.catalogue import load_catalogue
from shared.events import CloudEvent
from shared.kinds import KINDS as EVENT_KINDS
from shared.natsserver import NatsServer
from shared.tokens import TokenStore
from tests.ingest.support import CE_BATCH, CE_JSON, Ingest, running, settings_for

CATALOGUE = load_catalogue()
REPORTER = "greater-manchester"  # a partner of 2a
KPI_REPORTER = "northern-gritstone"  # may report early-stage-finance (evidences 2b)
MAX_BATCH = 500
MAX_BODY = 256 * 1024
EXAMPLES = 32
"""Examples per kind of mistake: 23 kinds x 32 = 736 requests."""
MINIMUM_CORPUS = 500

CLOUD_EVENT_ATTRIBUTES = set(CloudEvent.model_fields)
HELD = tuple(f"held-{n}" for n in range(8))
"""Ids claimed before the corpus runs, by an event of other content accepted at HELD_TIME."""
HELD_TIME = "2025-06-01T09:00:00Z"

SENT: Counter[str] = Counter()
"""Requests sent per kind, for the last test."""

HYPOTHESIS = settings(
    derandomize=True,
    database=None,
    deadline=None,
    max_examples=EXAMPLES,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


# -- the service under test ---------------------------------------------------------------


@dataclass
class Corpus:
    """The service, its tokens and a JetStream view of the module's nats-server."""

    service: Ingest
    tokens: dict[str, str]
    js: Any


@pytest.fixture(scope="module")
async def corpus(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Corpus]:
    tmp = tmp_path_factory.mktemp("bad-input")
    server = NatsServer(store_dir=tmp / "nats").start()
    store = TokenStore.in_dir(tmp)
    tokens = {a: store.create(a)[0] for a in (REPORTER, KPI_REPORTER)}
    # The limit would answer 429 before the checks under test: lift it here (it is tested
    # in test_rate_limit.py).
    config = settings_for(
        server.url,
        Path(tmp),
        max_body_bytes=MAX_BODY,
        max_batch=MAX_BATCH,
        rate_limit_per_second=1e9,
        rate_limit_burst=10**9,
    )
    try:
        async with running(config, tokens[REPORTER]) as service:
            connection = await nats.connect(server.url)
            try:
                js = connection.jetstream()
                bucket = await js.key_value(CLAIMS_BUCKET)
                held = Claim(digest="0" * 64, time=HELD_TIME)
                for event_id in HELD:
                    await bucket.create(claim_key(msg_id(REPORTER, event_id)), held.encode())
                yield Corpus(service, tokens, js)
            finally:
                await connection.close()
    finally:
        server.stop()


async def stream_messages(js: Any) -> dict[str, int]:
    """Messages held by each of the project's streams."""
    return {
        name: (await js.stream_info(name)).state.messages
        for name in (EVENTS_STREAM, DLQ_STREAM, STATUS_STREAM)
    }


# -- one malformed request ----------------------------------------------------------------


@dataclass(frozen=True)
class Bad:
    """A request that must be refused with one of ``expect``."""

    body: bytes
    expect: frozenset[int]
    content_type: str | None = CE_JSON
    headers: tuple[tuple[str, str], ...] = ()
    authority: str = REPORTER
    chunks: int = 0
    """If set, the body is sent this many times over, chunked, without a Content-Length."""
    authorization: str | None = field(default=None)
    """Sent as is instead of the authority's bearer token."""


def bad(event: Any, *expect: int, **more: Any) -> Bad:
    """A JSON body refused with ``expect`` (422 unless told)."""
    return Bad(json.dumps(event).encode(), frozenset(expect or (422,)), **more)


async def _chunked(body: bytes, times: int) -> AsyncIterator[bytes]:
    for _ in range(times):
        yield body


async def send(corpus: Corpus, kind: str, request: Bad) -> None:
    """Send ``request`` and check the answer is the problem document it deserves."""
    SENT[kind] += 1
    headers = dict(request.headers)
    if request.content_type is not None:
        headers["content-type"] = request.content_type
    headers["authorization"] = request.authorization or (
        f"Bearer {corpus.tokens[request.authority]}"
    )
    content: Any = request.body
    if request.chunks:
        content = _chunked(request.body, request.chunks)
    response = await corpus.service.client.post("/v1/events", content=content, headers=headers)
    assert_problem(response, request.expect, kind)


def assert_problem(response: httpx.Response, expect: frozenset[int], kind: str) -> None:
    status = response.status_code
    assert 400 <= status < 500, f"{kind}: {status} {response.text[:500]}"
    assert status in expect, f"{kind}: {status} not in {sorted(expect)}: {response.text[:500]}"
    assert response.headers["content-type"] == "application/problem+json", kind
    problem = response.json()
    assert problem["status"] == status
    assert isinstance(problem["title"], str) and problem["title"]
    assert isinstance(problem["errors"], list)
    if status in (403, 409, 422) and problem["errors"]:
        assert all({"index", "id", "field", "reason"} <= set(e) for e in problem["errors"])


# -- valid events, to be broken -----------------------------------------------------------

ids = st.text(string.ascii_lowercase + string.digits, min_size=6, max_size=16).map(
    lambda s: f"bad-{s}"
)


def recent() -> str:
    return (datetime.now(UTC) - timedelta(minutes=1)).isoformat()


def milestone(event_id: str, **data: Any) -> dict[str, Any]:
    """A valid milestone event for the collaboration column, from a partner."""
    return {
        "specversion": "1.0",
        "id": event_id,
        "source": REPORTER,
        "type": "org.cotn.milestone.v1",
        "time": recent(),
        "data": {
            "proposal": "2a",
            "milestone": "adoption-priorities",
            "status": "in_progress",
            **data,
        },
    }


def kpi(event_id: str, **data: Any) -> dict[str, Any]:
    """A valid KPI event for the collaboration column, from a reporter of the KPI."""
    return {
        "specversion": "1.0",
        "id": event_id,
        "source": KPI_REPORTER,
        "type": "org.cotn.kpi.v1",
        "time": recent(),
        "data": {"kpi": "early-stage-finance", "value": 175.0, "period": "2025-Q3", **data},
    }


def at_path(event: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    """``event`` with the attribute at dotted ``path`` set to ``value`` (deep-copied)."""
    copy = json.loads(json.dumps(event))
    *parents, last = path.split(".")
    node = copy
    for name in parents:
        node = node[name]
    node[last] = value
    return copy


def without(event: dict[str, Any], path: str) -> dict[str, Any]:
    copy = json.loads(json.dumps(event))
    *parents, last = path.split(".")
    node = copy
    for name in parents:
        node = node[name]
    del node[last]
    return copy


REQUIRED = ("specversion", "id", "source", "type", "time", "data")
REQUIRED_DATA = ("data.proposal", "data.milestone", "data.status")
REQUIRED_KPI_DATA = ("data.kpi", "data.value", "data.period")
# Text that is not plain, one-line or UTF-8-safe: ANSI escapes, NUL, other C0 controls.
CONTROL = st.sampled_from(["\x1b[31m", "\x1b]8;;x\x07", "\x00", "\x07", "\x08", "\x7f", "\x1b"])
# Any JSON value but a string (what a "wrong type" for a text attribute is).
NOT_TEXT = st.one_of(
    st.integers(),
    st.floats(allow_nan=False, allow_infinity=False),
    st.booleans(),
    st.lists(st.integers(), max_size=3),
    st.dictionaries(st.sampled_from("abc"), st.integers(), max_size=2),
)
TEXT = st.text(st.characters(blacklist_categories=("Cs",)), max_size=40)


# -- the kinds of mistake -----------------------------------------------------------------


@st.composite
def missing_attribute(draw: st.DrawFn) -> Bad:
    path = draw(st.sampled_from(REQUIRED + REQUIRED_DATA))
    event = without(milestone(draw(ids)), path)
    if draw(st.booleans()):  # the same mistake in the middle of a batch
        return bad([milestone(draw(ids)), event], content_type=CE_BATCH)
    return bad(event)


@st.composite
def empty_attribute(draw: st.DrawFn) -> Bad:
    path = draw(st.sampled_from(("specversion", "id", "source", "type", "time", *REQUIRED_DATA)))
    empty = draw(st.sampled_from(["", None, {}, []]))
    status = 403 if path == "source" and empty == "" else 422  # "" is not the token's id
    return bad(at_path(milestone(draw(ids)), path, empty), status, 422)


@st.composite
def wrong_specversion(draw: st.DrawFn) -> Bad:
    version = draw(
        st.one_of(
            TEXT.filter(lambda v: v != "1.0"),
            st.sampled_from(["0.3", "1.0.0", "1", " 1.0", "1.0 ", "v1.0", "2.0"]),
            st.sampled_from([1, 1.0, 0.3, True, None]),
        )
    )
    return bad(at_path(milestone(draw(ids)), "specversion", version))


@st.composite
def bad_time(draw: st.DrawFn) -> Bad:
    naive = draw(st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2030, 1, 1)))
    when = draw(
        st.one_of(
            st.just(naive.isoformat()),  # no offset
            st.just(naive.date().isoformat()),
            st.integers(0, 2**40),  # seconds since 1970, a unit mistake
            st.integers(0, 2**40).map(str),
            st.sampled_from(
                [
                    "yesterday",
                    "2025-13-01T00:00:00Z",
                    "2025-02-30T00:00:00Z",
                    "2025-06-01T25:00:00Z",
                    "2025-06-01T10:00Z",
                    "20250601T100000Z",
                    "2025-06-01T10:00:00+25:00",
                    "",
                ]
            ),
            TEXT,
        )
    )
    return bad(at_path(milestone(draw(ids)), "time", when))


@st.composite
def future_time(draw: st.DrawFn) -> Bad:
    # Beyond the 5 minutes allowed, with a margin for the time the corpus takes.
    ahead = draw(st.integers(6 * 60, 20 * 365 * 86400))
    when = (datetime.now(UTC) + timedelta(seconds=ahead)).isoformat()
    event = draw(st.sampled_from([milestone, kpi]))(draw(ids))
    authority = REPORTER if event["source"] == REPORTER else KPI_REPORTER
    return bad(at_path(event, "time", when), authority=authority)


@st.composite
def wrong_type(draw: st.DrawFn) -> Bad:
    if draw(st.booleans()):
        path = draw(st.sampled_from(("id", "type", "time", *REQUIRED_DATA, "data.note")))
        return bad(at_path(milestone(draw(ids)), path, draw(NOT_TEXT)))
    path, value = draw(
        st.one_of(
            st.tuples(st.just("data.value"), st.one_of(TEXT, st.booleans(), st.none())),
            st.tuples(st.just("data.period"), st.integers()),
            st.tuples(st.just("data.unit"), NOT_TEXT),
            st.tuples(st.just("data"), st.one_of(NOT_TEXT, TEXT, st.none())),
        )
    )
    return bad(at_path(kpi(draw(ids)), path, value), authority=KPI_REPORTER)


def _unknown_ref(known: set[str]) -> st.SearchStrategy[str]:
    return st.text(string.ascii_lowercase + string.digits + "-", min_size=1, max_size=20).filter(
        lambda ref: ref[0] != "-" and ref not in known
    )


@st.composite
def unknown_reference(draw: st.DrawFn) -> Bad:
    proposals = set(CATALOGUE.proposal_by_id)
    milestones = {m.id for m in CATALOGUE.proposal_by_id["2a"].milestones}
    kpis = set(CATALOGUE.kpi_by_id)
    which = draw(st.sampled_from(["proposal", "milestone", "kpi", "other-column"]))
    if which == "proposal":
        return bad(milestone(draw(ids), proposal=draw(_unknown_ref(proposals))))
    if which == "milestone":
        return bad(milestone(draw(ids), milestone=draw(_unknown_ref(milestones))))
    if which == "kpi":
        return bad(kpi(draw(ids), kpi=draw(_unknown_ref(kpis))), authority=KPI_REPORTER)
    other = draw(
        st.sampled_from([p for p in proposals if CATALOGUE.column_of[p] != "collaboration"])
    )
    first = CATALOGUE.proposal_by_id[other].milestones[0].id
    return bad(milestone(draw(ids), proposal=other, milestone=first), 403, 422)


@st.composite
def unknown_type(draw: st.DrawFn) -> Bad:
    kind = draw(TEXT.filter(lambda t: t not in EVENT_KINDS.by_type))
    return bad(at_path(milestone(draw(ids)), "type", kind))


@st.composite
def non_finite_number(draw: st.DrawFn) -> Bad:
    literal = draw(st.sampled_from(["NaN", "Infinity", "-Infinity", "1e400", "-1e999"]))
    body = json.dumps(kpi(draw(ids))).replace('"value": 175.0', f'"value": {literal}')
    assert literal in body
    # NaN and Infinity are not JSON (400); 1e400 is JSON but no finite number (422).
    status = 422 if "e" in literal else 400
    if draw(st.booleans()):
        body = f"[{json.dumps(kpi(draw(ids)))}, {body}]"
        return Bad(body.encode(), frozenset({status}), CE_BATCH, authority=KPI_REPORTER)
    return Bad(body.encode(), frozenset({status}), authority=KPI_REPORTER)


@st.composite
def huge_string(draw: st.DrawFn) -> Bad:
    where = draw(st.sampled_from(["note", "id", "subject", "traceparent", "body"]))
    event = milestone(draw(ids))
    if where == "note":
        return bad(at_path(event, "data.note", "n" * draw(st.integers(2001, 100_000))))
    if where == "id":
        return bad(at_path(event, "id", "i" * draw(st.integers(257, 100_000))))
    if where in ("subject", "traceparent"):
        return bad(at_path(event, where, "s" * draw(st.integers(513, 100_000))))
    # The whole body over the cap: refused from its Content-Length, before it is read.
    size = draw(st.integers(MAX_BODY + 1, MAX_BODY + 4096))
    return bad(at_path(event, "data.note", "n" * size), 413)


@st.composite
def invalid_utf8(draw: st.DrawFn) -> Bad:
    garbage = draw(
        st.sampled_from(
            [b"\xff", b"\xfe\xff", b"\xc3\x28", b"\xc0\xaf", b"\xed\xa0\x80", b"\xf8\x88\x80\x80"]
        )
    )
    body = json.dumps(milestone(draw(ids), note="ABC")).encode()
    cut = body.index(b"ABC") + draw(st.integers(0, 3))
    return Bad(body[:cut] + garbage + body[cut:], frozenset({400}))


@st.composite
def duplicate_key(draw: st.DrawFn) -> Bad:
    event = milestone(draw(ids))
    key = draw(st.sampled_from(["id", "source", "type", "time", "data", "specversion"]))
    text = json.dumps(event)
    repeat = json.dumps(event[key])
    if draw(st.booleans()):  # a different value: parsers disagree on which one wins
        repeat = json.dumps("other")
    body = text[:-1] + f", {json.dumps(key)}: {repeat}" + "}"
    if draw(st.booleans()):
        body = body.replace('"status": "in_progress"', '"status": "in_progress", "status": "x"')
    return Bad(body.encode(), frozenset({400}))


CONTENT_TYPES = ["application/cloudevents+json", "application/json", CE_BATCH]


def _not_accepted(media: str) -> bool:
    """Whether the service must refuse this Content-Type (a JSON type with another charset
    is refused too)."""
    bare = media.split(";")[0].strip().lower()
    return bare not in CONTENT_TYPES or "charset" in media


@st.composite
def wrong_content_type(draw: st.DrawFn) -> Bad:
    media = draw(
        st.one_of(
            st.sampled_from(
                [
                    "text/plain",
                    "application/xml",
                    "application/cloudevents+xml",
                    "multipart/form-data; boundary=x",
                    "application/x-www-form-urlencoded",
                    "application/octet-stream",
                    "text/json",
                    "application/cloudevents+json; charset=latin-1",
                    "application/json; charset=utf-16",
                    "",
                ]
            ),
            st.tuples(
                st.sampled_from(["text", "image", "application", "audio", "multipart"]),
                st.text(string.ascii_lowercase + "+-.", min_size=1, max_size=20),
            ).map("/".join),
        ).filter(_not_accepted)
    )
    binary = draw(st.booleans())
    headers = (("ce-specversion", "1.0"),) if binary else ()
    return bad(milestone(draw(ids)), 415, content_type=media or None, headers=headers)


@st.composite
def bad_batch(draw: st.DrawFn) -> Bad:
    which = draw(st.sampled_from(["not-an-array", "over-the-cap", "single-as-batch"]))
    if which == "not-an-array":
        value = draw(st.one_of(NOT_TEXT.filter(lambda v: not isinstance(v, list)), TEXT))
        return bad(value, content_type=CE_BATCH)
    if which == "single-as-batch":
        return bad([milestone(draw(ids))], content_type=CE_JSON)
    extra = draw(st.integers(1, 200))
    return bad(
        [milestone(f"big-{i}") for i in range(MAX_BATCH + extra)], 413, content_type=CE_BATCH
    )


@st.composite
def oversized_chunked(draw: st.DrawFn) -> Bad:
    chunk = draw(st.integers(1024, 64 * 1024))
    times = math.ceil((MAX_BODY + 1) / chunk) + draw(st.integers(0, 50))
    return Bad(b" " * chunk, frozenset({413}), chunks=times)


@st.composite
def deep_nesting(draw: st.DrawFn) -> Bad:
    depth = draw(st.integers(33, 5000))
    opener, closer = draw(st.sampled_from([("[", "]"), ('{"a":', "}")]))
    nested = opener * depth + "1" + closer * depth
    if draw(st.booleans()):  # deep inside an otherwise valid event
        body = json.dumps(milestone(draw(ids), note="NESTED")).replace('"NESTED"', nested)
        return Bad(body.encode(), frozenset({400}))
    return Bad(nested.encode(), frozenset({400}))


@st.composite
def not_an_event(draw: st.DrawFn) -> Bad:
    value = draw(
        st.one_of(
            NOT_TEXT,
            TEXT,
            st.none(),
            st.dictionaries(TEXT, st.integers(), max_size=3),
        )
    )
    return bad(value)


@st.composite
def control_characters(draw: st.DrawFn) -> Bad:
    path = draw(st.sampled_from(["data.note", "id", "subject", "traceparent", "tracestate"]))
    text = draw(TEXT) + draw(CONTROL) + draw(TEXT)
    return bad(at_path(milestone(draw(ids)), path, text))


@st.composite
def unknown_attribute(draw: st.DrawFn) -> Bad:
    # No attribute of the model ends in "x": these are all unknown.
    name = draw(st.text(string.ascii_lowercase, min_size=1, max_size=12)) + "x"
    event = milestone(draw(ids))
    if draw(st.booleans()):  # data is closed: no attribute of its own may be added
        return bad(at_path(event, f"data.{name}", draw(st.one_of(TEXT, NOT_TEXT))))
    # At the top an unknown name is an extension attribute: refused when no extension may
    # have that name, or when its value is of no CloudEvents type.
    if draw(st.booleans()):
        odd = draw(st.sampled_from(["-", "_", "A", ".", " ", "é"]))
        name = draw(st.sampled_from([odd + name, name + odd, name * 2 + "x" * 20]))
        return bad(at_path(event, name, draw(st.one_of(TEXT, NOT_TEXT))))
    value = draw(
        st.one_of(
            st.floats(allow_nan=False, allow_infinity=False),
            st.lists(st.integers(), max_size=3),
            st.dictionaries(st.sampled_from("abc"), st.integers(), max_size=2),
            st.integers().filter(lambda n: not -(2**31) <= n < 2**31),
            TEXT.map(lambda t: t + "\n"),
            st.just("x" * 1025),
        )
    )
    return bad(at_path(event, name[:20], value))


@st.composite
def too_many_extensions(draw: st.DrawFn) -> Bad:
    event = milestone(draw(ids))
    count = draw(st.integers(min_value=17, max_value=40))
    return bad(event | {f"ext{i}": "x" for i in range(count)})


@st.composite
def extension_attributes(draw: st.DrawFn) -> Bad:
    """Valid extensions (as a broker adds them) beside one fault elsewhere: still refused."""
    extensions = draw(
        st.dictionaries(
            st.text(string.ascii_lowercase + string.digits, min_size=1, max_size=20).filter(
                lambda n: n not in CLOUD_EVENT_ATTRIBUTES
            ),
            st.one_of(st.booleans(), st.integers(-(2**31), 2**31 - 1), TEXT, st.none()),
            max_size=8,
        )
    )
    fault = draw(st.sampled_from(["data.status", "data.proposal", "time", "specversion"]))
    return bad(at_path(milestone(draw(ids)), fault, "nonsense") | extensions)


@st.composite
def conflicting_resend(draw: st.DrawFn) -> Bad:
    """A held id sent with other content: alone, or in a batch of otherwise new events."""
    note = draw(st.text(string.ascii_letters + string.digits + " ", max_size=40))
    event = milestone(draw(st.sampled_from(HELD)), note=note)
    if draw(st.booleans()):
        return bad(event, 409)
    others = [milestone(draw(ids)) for _ in range(draw(st.integers(1, 5)))]
    at = draw(st.integers(0, len(others)))
    return bad([*others[:at], event, *others[at:]], 409, content_type=CE_BATCH)


@st.composite
def bad_token(draw: st.DrawFn) -> Bad:
    secret = draw(st.text(string.ascii_letters + string.digits + "-_", min_size=0, max_size=60))
    authorization = draw(
        st.sampled_from(
            [f"Bearer cotn_{secret}", f"Bearer {secret}", f"Basic {secret}", f"bearer  {secret}"]
        )
    )
    return bad(milestone(draw(ids)), 401, authorization=authorization or "Bearer")


BINARY_MISTAKES = {
    "ce-specversion": ["", "2.0", "0.3", "1"],
    "ce-id": ["", "%00", "%1b%5b31m", "a%0Ab"],
    "ce-source": ["", "%00", "liverpool-city-region"],
    "ce-type": ["", "x", "org.cotn.milestone.v2"],
    "ce-time": ["", "yesterday", "1700000000", "2025-06-01T10:00:00"],
}


@st.composite
def bad_binary_mode(draw: st.DrawFn) -> Bad:
    headers = {
        "ce-specversion": "1.0",
        "ce-id": draw(ids),
        "ce-source": REPORTER,
        "ce-type": "org.cotn.milestone.v1",
        "ce-time": recent(),
    }
    name = draw(st.sampled_from(sorted(headers)))
    if draw(st.booleans()):
        # (Without ce-specversion, application/json is a structured event: the data alone.)
        del headers[name]
    else:
        headers[name] = draw(st.sampled_from(BINARY_MISTAKES[name]))
    data = {"proposal": "2a", "milestone": "adoption-priorities", "status": "in_progress"}
    # A source that is not the token's authority is a 403, an empty one a 422.
    expect = {422, 403} if name == "ce-source" else {422}
    return bad(
        data, *expect, content_type="application/json", headers=tuple(sorted(headers.items()))
    )


KINDS: dict[str, Callable[[], st.SearchStrategy[Bad]]] = {
    "missing attribute": missing_attribute,
    "empty attribute": empty_attribute,
    "wrong specversion": wrong_specversion,
    "bad time": bad_time,
    "future time": future_time,
    "wrong type": wrong_type,
    "unknown proposal, milestone or KPI": unknown_reference,
    "unknown event type": unknown_type,
    "non-finite number": non_finite_number,
    "huge string": huge_string,
    "invalid UTF-8": invalid_utf8,
    "duplicate JSON key": duplicate_key,
    "wrong content type": wrong_content_type,
    "not an array, or an oversized batch": bad_batch,
    "oversized chunked body": oversized_chunked,
    "deeply nested JSON": deep_nesting,
    "not an event": not_an_event,
    "control characters": control_characters,
    "unknown attribute": unknown_attribute,
    "too many extensions": too_many_extensions,
    "valid extensions beside a fault": extension_attributes,
    "conflicting resend": conflicting_resend,
    "unknown or malformed token": bad_token,
    "bad binary mode": bad_binary_mode,
}


def _kinds() -> list[Any]:
    return [pytest.param(name, id=name.replace(" ", "-").replace(",", "")) for name in KINDS]


# -- the tests ----------------------------------------------------------------------------


@pytest.mark.parametrize("kind", _kinds())
@HYPOTHESIS
@given(data=st.data())
async def test_every_malformed_request_is_a_4xx_problem_and_publishes_nothing(
    corpus: Corpus, kind: str, data: st.DataObject
) -> None:
    request = data.draw(KINDS[kind](), label="request")

    await send(corpus, kind, request)

    events = await corpus.js.stream_info(EVENTS_STREAM)
    assert events.state.messages == 0, f"{kind}: a refused request published something"


async def test_nothing_reached_any_stream(corpus: Corpus) -> None:
    assert await stream_messages(corpus.js) == {EVENTS_STREAM: 0, DLQ_STREAM: 0, STATUS_STREAM: 0}


async def test_refused_requests_left_no_claim(corpus: Corpus) -> None:
    bucket = await corpus.js.key_value(CLAIMS_BUCKET)
    expected = {claim_key(msg_id(REPORTER, event_id)) for event_id in HELD}
    assert set(await bucket.keys()) == expected


async def test_the_corpus_covered_every_kind_and_at_least_500_requests(corpus: Corpus) -> None:
    assert set(SENT) == set(KINDS), "run the whole module: the corpus is the sum of its kinds"
    assert sum(SENT.values()) >= MINIMUM_CORPUS, SENT


async def test_a_valid_event_after_the_corpus_is_the_only_message(corpus: Corpus) -> None:
    # The control: the same harness does see a publish, so the zeros above mean something.
    response = await corpus.service.post(milestone("control-1"))

    assert response.status_code == 202, response.text
    assert await stream_messages(corpus.js) == {EVENTS_STREAM: 1, DLQ_STREAM: 0, STATUS_STREAM: 0}
