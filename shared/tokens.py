"""Bearer tokens for authority systems: random, shown once, kept only as SHA-256 hashes.

The store is one JSON file (``<data dir>/tokens.json``) written atomically by the CLI.
Services re-read it when it changes, so a new token works and a revoked one fails at once.
Tokens carry 256 random bits, so a plain SHA-256 is a sufficient hash (no key stretching
is needed for secrets that cannot be guessed).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
import tempfile
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

TOKEN_PREFIX = "cotn_"
TOKENS_FILE = "tokens.json"


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class TokenRecord:
    token_id: str
    authority: str
    sha256: str
    created_at: str
    revoked_at: str | None = None


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

    def authority_of(self, token: str) -> str | None:
        """The authority a live token belongs to, or None for an unknown or revoked one."""
        if not token.startswith(TOKEN_PREFIX):
            return None
        self._refresh()
        digest = hash_token(token)
        record = self._by_hash.get(digest)
        if record is None or not hmac.compare_digest(record.sha256, digest):
            return None
        return record.authority

    def _write(self, records: list[TokenRecord]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        body = json.dumps({"tokens": [asdict(r) for r in records]}, indent=2)
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=".tokens.")
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(body)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o600)
        os.replace(tmp, self.path)

    def create(self, authority: str) -> tuple[str, TokenRecord]:
        """Make a token for ``authority``; the plain token is returned once and never stored."""
        token = TOKEN_PREFIX + secrets.token_urlsafe(32)
        record = TokenRecord(
            token_id=secrets.token_hex(4),
            authority=authority,
            sha256=hash_token(token),
            created_at=datetime.now(UTC).isoformat(timespec="seconds"),
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
