"""No secret in the repository: nothing tracked (or about to be) looks like a real token or a
private key. Tests make their tokens at run time; deployment files name environment variables
and a documented placeholder, never a password."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from shared.tokens import TokenStore

REPO = Path(__file__).resolve().parents[2]

# Built from parts, so this file does not match itself.
PATTERNS = {
    "cotn token": re.compile(rb"cotn" + rb"_[A-Za-z0-9_-]{43}(?![A-Za-z0-9_-])"),
    "private key": re.compile(rb"-----BEGIN [A-Z ]*" + rb"PRIVATE KEY-----"),
    "NATS nkey seed": re.compile(rb"\bS[UOANCA]" + rb"[A-Z2-7]{56}\b"),
    "GitHub token": re.compile(rb"\bgh[pousr]" + rb"_[A-Za-z0-9]{36,}\b"),
    "AWS access key": re.compile(rb"\bAKIA" + rb"[0-9A-Z]{16}\b"),
}


def repository_files() -> list[Path]:
    """Tracked files and new ones not ignored (what the next commit could hold)."""
    if shutil.which("git") is None or not (REPO / ".git").exists():
        pytest.skip("not a git checkout")
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=REPO,
        capture_output=True,
        check=True,
        timeout=30,
    ).stdout
    return [REPO / name for name in listed.decode().split("\0") if name]


def test_no_file_holds_a_token_or_a_private_key() -> None:
    files = [path for path in repository_files() if path.is_file()]
    assert len(files) > 50  # the listing worked
    found = [
        f"{path.relative_to(REPO)}: {kind}"
        for path in files
        for kind, pattern in PATTERNS.items()
        if pattern.search(path.read_bytes())
    ]
    assert not found


def test_the_patterns_catch_what_they_are_for(tmp_path: Path) -> None:
    token, _ = TokenStore.in_dir(tmp_path).create("greater-manchester")

    assert PATTERNS["cotn token"].search(token.encode())
    assert PATTERNS["private key"].search(b"-----BEGIN OPENSSH " + b"PRIVATE KEY-----")
    assert not PATTERNS["cotn token"].search(b"cotn_ingest_events_total")
