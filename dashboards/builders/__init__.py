"""The dashboard builders and the JSON they generate into ``dashboards/json``.

``cotn dashboards build`` writes the files; a test fails when the committed files differ
from what :func:`generate` returns. Grafana provisions them from that folder.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from grafana_foundation_sdk.builders.dashboard import Dashboard
from grafana_foundation_sdk.cog.encoder import JSONEncoder

from dashboards.builders import column, kpis, operations, overview, reporting

JSON_DIR = Path(__file__).resolve().parent.parent / "json"
"""Where the generated dashboards are committed and provisioned from."""

BUILDERS: dict[str, Callable[[], Dashboard]] = {
    overview.UID: overview.build,
    column.UID: column.build,
    kpis.UID: kpis.build,
    operations.UID: operations.build,
    reporting.UID: reporting.build,
}
"""Dashboard uid -> its builder; the uid is also the file name."""


def render(builder: Dashboard) -> str:
    """The dashboard as JSON text: sorted keys and a final newline, so builds are stable."""
    return JSONEncoder(sort_keys=True, indent=2).encode(builder.build()) + "\n"


def generate() -> dict[str, str]:
    """File name -> JSON text of every dashboard."""
    return {f"{uid}.json": render(build()) for uid, build in BUILDERS.items()}


def write(out_dir: Path = JSON_DIR) -> list[Path]:
    """Write every dashboard into ``out_dir``; return the files written."""
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for name, text in generate().items():
        path = out_dir / name
        path.write_text(text, encoding="utf-8")
        written.append(path)
    return written


def load(path: Path) -> dict:
    """A generated dashboard file as a dict (what ``publish`` uploads)."""
    return dict(json.loads(path.read_text(encoding="utf-8")))
