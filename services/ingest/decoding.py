"""From an HTTP request to decoded JSON events: content mode, size cap, strict JSON.

CloudEvents over HTTP comes in three shapes: structured (the whole event as the body),
batch (a JSON array of structured events) and binary (attributes in ``ce-*`` headers, the
data as the body). Everything here is independent of the catalogue and the bus.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterable, Mapping
from enum import Enum
from typing import Any
from urllib.parse import unquote

from services.ingest.problems import ProblemError

STRUCTURED_TYPES = ("application/cloudevents+json", "application/json")
BATCH_TYPE = "application/cloudevents-batch+json"
BINARY_DATA_TYPE = "application/json"
MAX_DEPTH = 32


class Mode(Enum):
    STRUCTURED = "structured"
    BATCH = "batch"
    BINARY = "binary"


def content_mode(content_type: str | None, headers: Mapping[str, str]) -> Mode:
    """Which CloudEvents content mode a request uses, or 415.

    ``application/json`` with a ``ce-specversion`` header is binary mode (its body is the
    data); without one it is a structured event, as most clients send it.
    """
    media, charset = _parse_content_type(content_type or "")
    if charset not in (None, "utf-8", "utf8"):
        raise _unsupported(f"JSON bodies must be UTF-8, not {charset}")
    binary = "ce-specversion" in headers
    if media == BATCH_TYPE:
        return Mode.BATCH
    if media == BINARY_DATA_TYPE and binary:
        return Mode.BINARY
    if media in STRUCTURED_TYPES:
        return Mode.STRUCTURED
    if binary:
        raise _unsupported(f"binary-mode data must be {BINARY_DATA_TYPE}, not {media or 'none'}")
    accepted = ", ".join((*STRUCTURED_TYPES, BATCH_TYPE))
    raise _unsupported(f"Content-Type {media or 'missing'}: use one of {accepted}")


def _parse_content_type(value: str) -> tuple[str, str | None]:
    media, *params = value.split(";")
    charset = None
    for param in params:
        name, _, arg = param.partition("=")
        if name.strip().lower() == "charset":
            charset = arg.strip().strip('"').lower()
    return media.strip().lower(), charset


def _unsupported(detail: str) -> ProblemError:
    return ProblemError(415, "unsupported_media_type", detail)


def check_declared_length(content_length: str | None, limit: int) -> None:
    """Refuse at once a body whose declared length is over the limit."""
    if content_length is not None and content_length.isdigit() and int(content_length) > limit:
        raise too_large(limit)


async def read_capped(chunks: AsyncIterator[bytes], limit: int) -> bytes:
    """Read a body chunk by chunk, stopping with 413 as soon as it exceeds ``limit`` bytes.

    Content-Length can be absent (chunked transfer) or wrong, so the count is what was read.
    """
    body = bytearray()
    async for chunk in chunks:
        body += chunk
        if len(body) > limit:
            raise too_large(limit)
    return bytes(body)


def too_large(limit: int) -> ProblemError:
    return ProblemError(413, "too_large", f"the body is larger than {limit} bytes")


class _DuplicateKey(ValueError):
    pass


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = dict(pairs)
    if len(obj) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise _DuplicateKey(f"duplicate object key {key!r}")
            seen.add(key)
    return obj


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON value")


def decode_json(body: bytes) -> Any:
    """Decode a UTF-8 JSON body strictly, or raise 400.

    Refused: invalid UTF-8, lone surrogates, NaN and Infinity, duplicate object keys (which
    parsers resolve differently) and nesting deeper than :data:`MAX_DEPTH`.
    """
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise _not_json(f"the body is not valid UTF-8 ({exc.reason} at byte {exc.start})") from None
    try:
        value = json.loads(text, object_pairs_hook=_unique_keys, parse_constant=_no_constant)
    except RecursionError:
        raise _not_json(f"the body is nested more than {MAX_DEPTH} levels deep") from None
    except ValueError as exc:
        raise _not_json(f"the body is not JSON: {exc}") from None
    if _deeper_than(value, MAX_DEPTH):
        raise _not_json(f"the body is nested more than {MAX_DEPTH} levels deep")
    # Only a \u escape can produce a lone surrogate, which no UTF-8 consumer could store.
    if "\\u" in text:
        try:
            json.dumps(value, ensure_ascii=False).encode("utf-8")
        except UnicodeEncodeError:
            raise _not_json("the body holds an unpaired UTF-16 surrogate escape") from None
    return value


def _not_json(detail: str) -> ProblemError:
    return ProblemError(400, "not_json", detail)


def _deeper_than(value: Any, limit: int) -> bool:
    stack = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        children: Iterable[Any]
        if isinstance(node, dict):
            children = node.values()
        elif isinstance(node, list):
            children = node
        else:
            continue
        if depth > limit:
            return True
        stack.extend((child, depth + 1) for child in children)
    return False


def binary_event(headers: Mapping[str, str], data: Any) -> dict[str, Any]:
    """A structured event from binary mode: ``ce-<name>`` headers become attributes.

    Header values are percent-decoded as the CloudEvents HTTP binding prescribes; the
    Content-Type (already checked to be JSON) is the event's ``datacontenttype``.
    """
    event: dict[str, Any] = {
        name[3:].lower(): unquote(value)
        for name, value in headers.items()
        if name.lower().startswith("ce-")
    }
    event["datacontenttype"] = BINARY_DATA_TYPE
    event["data"] = data
    return event
