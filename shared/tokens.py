"""Bearer tokens for authority systems and the programme office: random, shown once, kept
only as SHA-256 hashes.

The store is one JSON file (``<data dir>/tokens.json``) written atomically by the CLI.
Services re-read it when it changes, so a new token works and a revoked one fails at once.
Tokens carry 256 random bits, so a plain SHA-256 is a sufficient hash (no key stretching
is needed for secrets that cannot be guessed).

When a token was last used is kept apart, in ``<data dir>/tokens-last-used.json``: each
service notes uses in memory and merges them into that file at most every N seconds
(:class:`TokenUsage`), so a request never writes the token file and the CLI, which owns it,
never races a service.

A token has a **role**: an authority's system sends events to the column services; an office
identity (``office/<name>``) reviews returns through the aggregator and sends no events. An
office person who also works for an authority is ``member_of`` it, so they do not review
that authority's returns.
"""

from __future__ import annotations

import fcntl
import hashlib
import hmac
import json
import os
import re
import secrets
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

from shared.reviews import office_source

TOKEN_PREFIX = "cotn_"
TOKENS_FILE = "tokens.json"
LAST_USED_FILE = "tokens-last-used.json"

Role = Literal["authority", "office"]
AUTHORITY_ROLE: Role = "authority"
OFFICE_ROLE: Role = "office"
OFFICE_NAME = re.compile(r"[a-z0-9]+(?:-[a-z0-9]+)*")
"""An office identity's name: a lowercase slug, as it becomes ``office/<name>`` in events."""


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class TokenRecord:
    token_id: str
    authority: str
    sha256: str
    created_at: str
    revoked_at: str | None = None
    # Token files written before roles existed have neither field: they are authorities'.
    role: Role = AUTHORITY_ROLE
    member_of: str | None = None
    """The authority an office identity also belongs to (it does not review its returns)."""

    @property
    def is_office(self) -> bool:
        """Whether the token is an office identity's: it reviews, it sends no events."""
        return self.role == OFFICE_ROLE


def check_office_name(name: str) -> None:
    """Raise ValueError unless ``name`` can name an office identity (a lowercase slug)."""
    if not OFFICE_NAME.fullmatch(name):
        raise ValueError(
            f"office name {name!r} must be a lowercase slug: letters a-z, digits and single "
            "hyphens between them, e.g. jane-doe"
        )


class TokenStore:
    """Reads and writes the token file; cheap to ask on every request."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._stamp: tuple[int, int] | None = None
        self._by_hash: dict[str, TokenRecord] = {}

    @classmethod
    def in_dir(cls, data_dir: str | Path) -> TokenStore:
        return cls(Path(data_dir) / TOKENS_FILE)

    def _records(self) -> list[TokenRecord]:
        try:
            raw = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return []
        return [TokenRecord(**r) for r in raw.get("tokens", [])]

    def _refresh(self) -> None:
        try:
            st = self.path.stat()
            stamp = (st.st_mtime_ns, st.st_size)
        except FileNotFoundError:
            stamp = (0, 0)
        if stamp != self._stamp:
            self._by_hash = {r.sha256: r for r in self._records() if r.revoked_at is None}
            self._stamp = stamp

    def record_of(self, token: str) -> TokenRecord | None:
        """The record of a live token, or None for an unknown or revoked one."""
        if not token.startswith(TOKEN_PREFIX):
            return None
        self._refresh()
        digest = hash_token(token)
        record = self._by_hash.get(digest)
        # The dict lookup finds the candidate; the comparison that decides is constant-time.
        if record is None or not hmac.compare_digest(record.sha256, digest):
            return None
        return record

    def authority_of(self, token: str) -> str | None:
        """The authority a live token belongs to, or None for an unknown or revoked one."""
        record = self.record_of(token)
        return record.authority if record else None

    def _write(self, records: list[TokenRecord]) -> None:
        body = json.dumps({"tokens": [asdict(r) for r in records]}, indent=2)
        write_atomically(self.path, body)

    def create(self, authority: str) -> tuple[str, TokenRecord]:
        """Make a token for ``authority``; the plain token is returned once and never stored."""
        return self._issue(authority, AUTHORITY_ROLE, None)

    def create_office(self, name: str, *, member_of: str | None = None) -> tuple[str, TokenRecord]:
        """Make a token for the office identity ``office/<name>``, returned once like
        :meth:`create`; ValueError for a name that is not a lowercase slug."""
        check_office_name(name)
        return self._issue(office_source(name), OFFICE_ROLE, member_of)

    def _issue(self, authority: str, role: Role, member_of: str | None) -> tuple[str, TokenRecord]:
        token = TOKEN_PREFIX + secrets.token_urlsafe(32)
        record = TokenRecord(
            token_id=secrets.token_hex(4),
            authority=authority,
            sha256=hash_token(token),
            created_at=datetime.now(UTC).isoformat(timespec="seconds"),
            role=role,
            member_of=member_of,
        )
        self._write([*self._records(), record])
        return token, record

    def revoke(self, token_or_id: str) -> TokenRecord | None:
        """Revoke by the token itself or by its id; returns the revoked record."""
        digest = hash_token(token_or_id)
        records = self._records()
        now = datetime.now(UTC).isoformat(timespec="seconds")
        hit = None
        for i, r in enumerate(records):
            if r.revoked_at is None and (r.token_id == token_or_id or r.sha256 == digest):
                hit = records[i] = TokenRecord(**{**asdict(r), "revoked_at": now})
        if hit is not None:
            self._write(records)
        return hit

    def list(self) -> list[TokenRecord]:
        return self._records()


def write_atomically(path: Path, text: str) -> None:
    """Replace ``path`` with ``text`` in one step, readable by its owner only."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.")
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)


def read_last_used(data_dir: str | Path) -> dict[str, str]:
    """Token id -> when it was last used (ISO 8601, UTC), as the services last wrote it."""
    try:
        raw = json.loads((Path(data_dir) / LAST_USED_FILE).read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    used = raw.get("last_used", {}) if isinstance(raw, dict) else {}
    return {str(k): str(v) for k, v in used.items()} if isinstance(used, dict) else {}


def _merge(old: Mapping[str, str], new: Mapping[str, str]) -> dict[str, str]:
    # ISO 8601 UTC stamps of one format sort as text: the later one wins.
    merged = dict(old)
    for token_id, stamp in new.items():
        if stamp > merged.get(token_id, ""):
            merged[token_id] = stamp
    return merged


class TokenUsage:
    """When each token was last used: noted in memory, written at most every ``every`` seconds.

    Several services share a data dir, so a flush merges with the file under a lock (the
    later time wins) instead of overwriting what another service wrote.
    """

    def __init__(
        self,
        data_dir: str | Path,
        every: float,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.path = Path(data_dir) / LAST_USED_FILE
        self.every = every
        self._monotonic = monotonic
        self._pending: dict[str, str] = {}
        self._flushed_at = monotonic()

    def touch(self, token_id: str, when: datetime | None = None) -> None:
        """Note a use of the token ``token_id`` at ``when`` (now by default)."""
        when = when or datetime.now(UTC)
        self._pending[token_id] = when.astimezone(UTC).isoformat(timespec="seconds")

    def due(self) -> bool:
        """Whether uses are waiting and the last flush is ``every`` seconds old."""
        return bool(self._pending) and self._monotonic() - self._flushed_at >= self.every

    def flush(self) -> None:
        """Merge the noted uses into the file; a no-op when nothing was used since."""
        pending, self._pending = self._pending, {}
        self._flushed_at = self._monotonic()
        if not pending:
            return
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with open(self.path.with_name(f".{LAST_USED_FILE}.lock"), "a") as lock:
                fcntl.flock(lock, fcntl.LOCK_EX)
                merged = _merge(read_last_used(self.path.parent), pending)
                write_atomically(self.path, json.dumps({"last_used": merged}, indent=2))
        except OSError:
            self._pending = _merge(pending, self._pending)  # kept for the next flush
            raise
