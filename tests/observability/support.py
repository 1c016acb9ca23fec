"""What the observability tests share: the repository's files and the Prometheus tools.

The tools come from Debian's ``prometheus`` and ``prometheus-alertmanager`` packages, which
``.ci/run`` installs. Without them these tests skip with the install command, except under
CI (``CI`` set), where a missing tool fails the run instead of hiding the tests.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
PROMETHEUS_DIR = REPO / "deploy" / "prometheus"
PROMETHEUS_CONFIG = PROMETHEUS_DIR / "prometheus.yml"
RULES_FILE = PROMETHEUS_DIR / "rules" / "cotn.rules.yml"
RULE_TESTS = sorted((PROMETHEUS_DIR / "tests").glob("*.yml"))
ALERTMANAGER_CONFIG = REPO / "deploy" / "alertmanager" / "alertmanager.yml"
RUNBOOK = REPO / "docs" / "runbook.md"
COMPOSE_FILE = REPO / "docker-compose.yml"
INSTALL_HINT = "apt-get install -y prometheus prometheus-alertmanager (as .ci/run does)"

TOOLS = {
    "promtool": ("promtool",),
    "prometheus": ("prometheus",),
    "amtool": ("amtool",),
    # Debian names the Alertmanager binary prometheus-alertmanager.
    "alertmanager": ("alertmanager", "prometheus-alertmanager"),
}


def tool(name: str) -> str:
    """The path of a Prometheus tool; skip (or fail under CI) when it is not installed."""
    for candidate in TOOLS[name]:
        found = shutil.which(candidate) or (
            f"/usr/bin/{candidate}" if Path(f"/usr/bin/{candidate}").exists() else None
        )
        if found:
            return found
    message = f"{name} is not installed: {INSTALL_HINT}"
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


def run_tool(*argv: str, cwd: Path = REPO, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """Run a tool and capture its output (both streams, for the assertion message)."""
    return subprocess.run(
        list(argv), cwd=cwd, capture_output=True, text=True, timeout=timeout, check=False
    )


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def alert_rules() -> dict[str, dict[str, Any]]:
    """Alert name -> its rule, from the shipped rule file."""
    return {
        rule["alert"]: rule
        for group in load_yaml(RULES_FILE)["groups"]
        for rule in group["rules"]
        if "alert" in rule
    }


def heading_anchors(markdown: str) -> set[str]:
    """GitHub-style anchors of a Markdown file's headings."""
    anchors = set()
    for line in markdown.splitlines():
        match = re.match(r"^#{1,6}\s+(.*)$", line)
        if match:
            text = match.group(1).strip().lower()
            anchors.add(re.sub(r"[^\w\- ]", "", text).replace(" ", "-"))
    return anchors
