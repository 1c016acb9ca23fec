"""``cotn dashboards build|publish``: the Grafana dashboards built as code.

``build`` regenerates the JSON that Grafana provisions (``dashboards/json``); ``publish``
uploads the dashboards to a running Grafana through its HTTP API (``POST
/api/dashboards/db``), for a Grafana that is not provisioned from this repository. The
builders live in the source tree's ``dashboards`` package, imported only when a command
runs, so the rest of ``cotn`` works where only the services are installed.
"""

from __future__ import annotations

import json
from pathlib import Path
from types import ModuleType
from typing import Annotated, Any

import typer

from services.cli.common import EXIT_BAD_INPUT, EXIT_FAILED, EXIT_UNAVAILABLE, fail

PUBLISH_MESSAGE = "Published by cotn dashboards publish"

app = typer.Typer(
    help="Build the Grafana dashboards from code, or upload them to a Grafana.",
    no_args_is_help=True,
)


def register(parent: typer.Typer) -> None:
    """Add ``cotn dashboards ...`` to the ``cotn`` app."""
    parent.add_typer(app, name="dashboards")


def _builders() -> ModuleType:
    try:
        import dashboards.builders as builders
    except ModuleNotFoundError:
        fail(
            "the dashboard builders are not installed: run this from a source checkout "
            "(pip install -e .)",
            EXIT_FAILED,
        )
    return builders


@app.command()
def build(
    out: Annotated[
        Path | None,
        typer.Option(
            metavar="DIR",
            help="Where to write the JSON files.",
            show_default="dashboards/json of the source tree",
        ),
    ] = None,
) -> None:
    """Regenerate the dashboards' JSON from the builders and print each file written."""
    builders = _builders()
    for path in builders.write(out or builders.JSON_DIR):
        typer.echo(str(path))


def _credential(token: str | None, user: str | None, password: str | None) -> Any:
    """A token, a (user, password) pair, or None; refuses half a pair or both kinds."""
    if token and (user or password):
        fail("give either --token or --user and --password, not both", EXIT_BAD_INPUT)
    if (user is None) != (password is None):
        fail("--user and --password go together", EXIT_BAD_INPUT)
    if token:
        return token
    return (user, password) if user is not None else None


def _dashboards(source: Path | None) -> list[dict[str, Any]]:
    """The dashboards to upload: the JSON files of ``source``, or freshly generated."""
    if source is None:
        return [json.loads(text) for text in _builders().generate().values()]
    files = sorted(source.glob("*.json"))
    if not files:
        fail(f"no dashboard JSON files in {source}", EXIT_BAD_INPUT)
    try:
        return [json.loads(f.read_text(encoding="utf-8")) for f in files]
    except (OSError, ValueError) as exc:
        fail(f"cannot read the dashboards in {source}: {exc}", EXIT_BAD_INPUT)


def upload(api: Any, dashboard: dict[str, Any], folder_uid: str | None) -> dict[str, Any]:
    """Create or replace one dashboard (matched by uid) and return Grafana's answer."""
    body: dict[str, Any] = {
        # No id: Grafana matches by uid, so publishing twice updates, never duplicates.
        "dashboard": {k: v for k, v in dashboard.items() if k != "id"},
        "overwrite": True,
        "message": PUBLISH_MESSAGE,
    }
    if folder_uid:
        body["folderUid"] = folder_uid
    return dict(api.dashboard.update_dashboard(body))


@app.command()
def publish(
    grafana_url: Annotated[
        str,
        typer.Option(
            envvar="GRAFANA_URL", metavar="URL", help="Grafana's base URL.", show_default=False
        ),
    ],
    token: Annotated[
        str | None,
        typer.Option(
            envvar="GRAFANA_TOKEN",
            help="Service account token (better from $GRAFANA_TOKEN than on the command line).",
            show_default=False,
        ),
    ] = None,
    user: Annotated[
        str | None, typer.Option(help="User for basic authentication.", show_default=False)
    ] = None,
    password: Annotated[
        str | None,
        typer.Option(
            envvar="GRAFANA_PASSWORD",
            help="Password for basic authentication (better from $GRAFANA_PASSWORD).",
            show_default=False,
        ),
    ] = None,
    folder_uid: Annotated[
        str | None,
        typer.Option(help="Folder to put the dashboards in; default: General.", show_default=False),
    ] = None,
    source: Annotated[
        Path | None,
        typer.Option(
            "--from",
            metavar="DIR",
            help="Upload the JSON files of DIR instead of generating them.",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Upload every dashboard to Grafana, replacing those with the same uid."""
    from grafana_client import GrafanaApi
    from grafana_client.client import GrafanaClientError, GrafanaException

    credential = _credential(token, user, password)
    dashboards = _dashboards(source)
    api = GrafanaApi.from_url(grafana_url, credential=credential)
    for dashboard in dashboards:
        uid = dashboard.get("uid", "?")
        try:
            answer = upload(api, dashboard, folder_uid)
        except GrafanaClientError as exc:
            fail(f"Grafana refused dashboard {uid}: {exc}", EXIT_FAILED)
        # Connection failures surface as the HTTP library's errors, which are OSErrors.
        except (GrafanaException, OSError) as exc:
            fail(f"Grafana at {grafana_url} did not answer: {exc}", EXIT_UNAVAILABLE)
        typer.echo(f"{uid}: {answer.get('status', 'success')} {answer.get('url', '')}".rstrip())
