"""docker-compose.yml agrees with the repository, the CLI and the Prometheus targets.

There is no Docker in the test environment, so the file is read with PyYAML and checked
against what it refers to: files it mounts or builds, the ``cotn`` command lines it runs
(parsed by the real CLI), the settings variables it sets (the services' settings classes),
and the ports Prometheus scrapes.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import typer.main
from pydantic import ValidationError
from pydantic_settings import BaseSettings
from typer.testing import CliRunner

from dashboards.builders import JSON_DIR
from dashboards.builders.common import DATASOURCE_UID
from services.aggregator.settings import AggregatorSettings
from services.cli.common import EXIT_BAD_INPUT
from services.cli.main import app
from services.cli.nats import ADMIN_URL_ENV
from services.ingest.settings import IngestSettings
from services.office.settings import OfficeSettings
from shared.catalogue import CATALOGUE_ENV, Catalogue
from shared.natsauth import (
    ADMIN_USER,
    AGGREGATOR_USER,
    ENVIRONMENT_VARIABLE,
    PLACEHOLDER_SECRET,
    ingest_user,
    password_of,
    password_variable,
    user_of,
)

from .support import COMPOSE_FILE, PROMETHEUS_CONFIG, REPO, load_yaml

COMPOSE = load_yaml(COMPOSE_FILE)
SERVICES: dict[str, dict[str, Any]] = COMPOSE["services"]
GRAFANA_PROVISIONING = REPO / "deploy" / "grafana" / "provisioning"
SETTINGS: dict[str, type[BaseSettings]] = {
    "COTN_INGEST_": IngestSettings,
    "COTN_AGGREGATOR_": AggregatorSettings,
    "COTN_OFFICE_": OfficeSettings,
}
OTHER_COTN_VARIABLES = {CATALOGUE_ENV, "COTN_DATA_DIR", ENVIRONMENT_VARIABLE, ADMIN_URL_ENV}
DEFAULTED = re.compile(r"\$\{[A-Z_]+:-([^}]*)\}")


def interpolate(value: str) -> str:
    """Compose's ``${VAR:-default}`` with the variable unset; a bare ``${VAR}`` is refused."""
    value = DEFAULTED.sub(lambda m: m.group(1), str(value))
    assert "${" not in value, f"{value}: give every variable a default"
    return value


def cotn_services() -> dict[str, dict[str, Any]]:
    """Services run from the project's image with the ``cotn`` entrypoint."""
    return {name: s for name, s in SERVICES.items() if "build" in s and "entrypoint" not in s}


def bind_mounts(service: dict[str, Any]) -> list[tuple[Path, str]]:
    """(repository path, container path) of every ``./`` bind mount of a service."""
    mounts = []
    for volume in service.get("volumes", []):
        source, target, *_ = volume.split(":")
        if source.startswith("./"):
            mounts.append((REPO / source, target))
    return mounts


def host_path(service: str, container_path: str) -> Path:
    """The repository file a container path of ``service`` comes from (through its mounts)."""
    for source, target in bind_mounts(SERVICES[service]):
        if container_path == target or container_path.startswith(target.rstrip("/") + "/"):
            return source / Path(container_path).relative_to(target)
    raise AssertionError(f"{container_path} is not mounted into {service}")


def parse_cotn(args: list[str]) -> Any:
    """Parse a ``cotn`` command line with the real CLI, without running it.

    Raises the CLI's usage error for an unknown command or option or a bad value. (Typer
    ships its own click, so groups are recognised by what they do, not by class.)
    """
    command: Any = typer.main.get_command(app)
    name = "cotn"
    while hasattr(command, "list_commands"):
        name, *args = args
        found = command.get_command(command.make_context(name, [], resilient_parsing=True), name)
        assert found is not None, f"cotn has no command {name!r}"
        command = found
    return command.make_context(name, list(args))


def option(args: list[str], name: str) -> str:
    return args[args.index(name) + 1]


def scrape_targets() -> list[tuple[str, str, dict[str, str]]]:
    """(job, host:port, target labels) of every static target of the Prometheus config."""
    return [
        (job["job_name"], target, static.get("labels", {}))
        for job in load_yaml(PROMETHEUS_CONFIG)["scrape_configs"]
        for static in job.get("static_configs", [])
        for target in static["targets"]
    ]


def listen_port(service: str) -> int:
    """The port a service listens on inside the network, from its command line."""
    spec = SERVICES[service]
    command = [str(c) for c in spec.get("command", [])]
    if "--port" in command:
        return int(option(command, "--port"))
    for arg in command:
        if arg.startswith("--web.listen-address="):
            return int(arg.rsplit(":", 1)[1])
    raise AssertionError(f"{service} states no port")


# -- files ------------------------------------------------------------------------------------


@pytest.mark.parametrize("service", sorted(SERVICES))
def test_every_mounted_file_exists(service: str) -> None:
    for source, _ in bind_mounts(SERVICES[service]):
        assert source.exists(), f"{service} mounts {source}, which is not in the repository"
    named = [v.split(":")[0] for v in SERVICES[service].get("volumes", [])]
    for volume in (n for n in named if not n.startswith(("./", "/"))):
        assert volume in COMPOSE["volumes"], f"{service}: volume {volume} is not declared"


def test_the_image_builds_from_files_that_exist() -> None:
    builds = {(s["build"]["context"], s["build"]["dockerfile"]) for s in cotn_services().values()}
    [(context, dockerfile)] = builds
    root = REPO / context
    assert (root / dockerfile).is_file()
    for line in (root / dockerfile).read_text().splitlines():
        if line.startswith("COPY "):
            *sources, _ = line.split()[1:]
            for source in sources:
                assert (root / source).exists(), f"{dockerfile} copies {source}, which is missing"


def test_prometheus_grafana_and_alertmanager_read_the_repositorys_config() -> None:
    assert host_path("prometheus", "/etc/prometheus/prometheus.yml") == PROMETHEUS_CONFIG
    rules = load_yaml(PROMETHEUS_CONFIG)["rule_files"]
    assert all(list(PROMETHEUS_CONFIG.parent.glob(pattern)) for pattern in rules)
    assert host_path("alertmanager", "/etc/alertmanager/alertmanager.yml").is_file()
    provider = load_yaml(GRAFANA_PROVISIONING / "dashboards" / "cotn.yml")["providers"][0]
    assert host_path("grafana", provider["options"]["path"]) == JSON_DIR
    assert host_path("grafana", "/etc/grafana/provisioning") == GRAFANA_PROVISIONING
    assert host_path("nats", "/etc/nats/nats.conf").is_file()


def test_nats_syncs_every_write_before_acknowledging() -> None:
    conf = host_path("nats", "/etc/nats/nats.conf").read_text()
    assert re.search(r"^\s*sync_interval:\s*always\s*$", conf, re.MULTILINE)
    assert SERVICES["nats"]["command"] == ["-c", "/etc/nats/nats.conf"]


# -- the cotn command lines and settings -------------------------------------------------------


@pytest.mark.parametrize("service", sorted(cotn_services()))
def test_every_cotn_command_line_is_accepted_by_the_cli(service: str) -> None:
    command = [str(c) for c in SERVICES[service]["command"]]
    parse_cotn(command)  # raises click.UsageError on an unknown command or option


@pytest.mark.parametrize(
    "args", [["serve", "ingest", "--colum", "x"], ["serve", "aggregator", "--port", "http"]]
)
def test_the_command_line_check_refuses_what_the_cli_refuses(args: list[str]) -> None:
    with pytest.raises(Exception, match=r"No such option|valid integer"):
        parse_cotn(args)


@pytest.mark.parametrize("service", sorted(cotn_services()))
def test_cotn_variables_are_real_settings(
    service: str, monkeypatch: pytest.MonkeyPatch, catalogue: Catalogue
) -> None:
    environment = {k: interpolate(v) for k, v in SERVICES[service]["environment"].items()}
    for key, value in environment.items():
        known = [
            (p, kind)
            for p, kind in SETTINGS.items()
            if key.startswith(p) and key.removeprefix(p).lower() in kind.model_fields
        ]
        assert known or key in OTHER_COTN_VARIABLES, f"{service}: {key} is read by nothing"
        monkeypatch.setenv(key, value)
    command = [str(c) for c in SERVICES[service]["command"]]
    if command == ["nats", "setup"]:
        assert user_of(environment[ADMIN_URL_ENV]) == ADMIN_USER
        return
    if command[1] == "office":
        # The web board reads the aggregator over HTTP and the tokens for its login: no
        # bus, no catalogue.
        office = OfficeSettings(aggregator_url=option(command, "--aggregator-url"))
        host, port = office.aggregator.removeprefix("http://").split(":")
        assert host in SERVICES and listen_port(host) == int(port)
        assert "tokens:/data:ro" in SERVICES[service]["volumes"]
        return
    # The catalogue the services read is the repository's, mounted read-only.
    assert host_path(service, environment[CATALOGUE_ENV]).is_file()
    # Each service logs in to NATS as its own user and leaves the streams to nats-setup.
    if command[1] == "ingest":
        ingest = IngestSettings(column=option(command, "--column"))
        assert ingest.column in catalogue.column_by_id
        assert user_of(str(ingest.nats_url)) == ingest_user(ingest.column)
        assert ingest.manage_streams is False
    else:
        aggregator = AggregatorSettings()
        assert aggregator.database_url.startswith("postgresql+asyncpg://")
        assert aggregator.migrate_on_start is False
        assert user_of(str(aggregator.nats_url)) == AGGREGATOR_USER
        assert aggregator.manage_streams is False


def test_every_nats_password_reaches_the_server_and_its_service() -> None:
    """nats.conf reads each user's password from a variable of the nats service; every
    service's URL carries the same variable (with the same default)."""
    conf = host_path("nats", "/etc/nats/nats.conf").read_text()
    server_env = SERVICES["nats"]["environment"]
    assert set(re.findall(r"password: \$([A-Z_]+)", conf)) == set(server_env)
    urls = [
        value
        for spec in cotn_services().values()
        for key, value in spec["environment"].items()
        if key.endswith("NATS_URL") or key == ADMIN_URL_ENV
    ]
    assert len(urls) == len(server_env)  # the administrator, the aggregator, three columns
    for url in urls:
        variable = password_variable(str(user_of(interpolate(url))))
        assert f"${{{variable}:-" in url
        assert password_of(interpolate(url)) == interpolate(server_env[variable])


def test_every_default_password_is_the_placeholder_that_is_refused() -> None:
    """PostgreSQL's and Grafana's passwords default to the placeholder, as NATS's do."""
    defaults = dict(re.findall(r"\$\{([A-Z_]*PASSWORD):-([^}]*)\}", COMPOSE_FILE.read_text()))
    assert {"COTN_POSTGRES_PASSWORD", "GRAFANA_ADMIN_PASSWORD"} <= set(defaults)
    assert set(defaults.values()) == {PLACEHOLDER_SECRET}, defaults


@pytest.mark.parametrize("service", ["aggregator", "migrations"])
def test_the_database_placeholder_is_refused_outside_development(
    service: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = interpolate(SERVICES[service]["environment"]["COTN_AGGREGATOR_DATABASE_URL"])
    monkeypatch.setenv(ENVIRONMENT_VARIABLE, "production")
    with pytest.raises(ValidationError, match="placeholder"):
        AggregatorSettings(database_url=url)
    # (Checked first: a `cotn serve` that does not refuse would serve, and not return.)
    started = CliRunner().invoke(app, ["serve", "aggregator", "--database-url", url])
    assert started.exit_code == EXIT_BAD_INPUT, started.output
    assert "the database password is the placeholder 'change-me'" in started.stderr
    if service == "migrations":  # the alembic command reads the same variable
        result = subprocess.run(
            [
                str(REPO / ".venv" / "bin" / "alembic"),
                "-c",
                "services/aggregator/alembic.ini",
                "upgrade",
                "head",
            ],
            cwd=REPO,
            env={"COTN_AGGREGATOR_DATABASE_URL": url, "COTN_ENV": "production"},
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert result.returncode == 1
        assert "the database password is the placeholder" in result.stderr
    monkeypatch.setenv(ENVIRONMENT_VARIABLE, "development")
    assert AggregatorSettings(database_url=url).environment == "development"


@pytest.mark.parametrize(
    ("environment", "password", "refused"),
    [
        ("production", PLACEHOLDER_SECRET, True),
        ("development", PLACEHOLDER_SECRET, False),
        ("production", "a-real-one", False),
    ],
)
def test_grafana_does_not_start_with_the_placeholder_outside_development(
    environment: str, password: str, refused: bool
) -> None:
    grafana = SERVICES["grafana"]
    _shell, flag, script = grafana["entrypoint"]
    script = script.replace("$$", "$")  # compose's escape of a literal $
    assert interpolate(grafana["environment"]["GF_SECURITY_ADMIN_PASSWORD"]) == PLACEHOLDER_SECRET
    # Here there is no /run.sh: getting as far as exec-ing it means the check let it start.
    result = subprocess.run(
        ["/bin/sh", flag, script],
        env={"COTN_ENV": environment, "GF_SECURITY_ADMIN_PASSWORD": password},
        capture_output=True,
        text=True,
        timeout=10,
    )
    if refused:
        assert result.returncode == 1
        assert "GRAFANA_ADMIN_PASSWORD is the placeholder change-me" in result.stderr
    else:
        assert result.returncode == 127, result.stderr  # /run.sh: not found


def test_migrations_run_once_before_the_aggregator() -> None:
    migrations = SERVICES["migrations"]
    entrypoint = migrations["entrypoint"]
    assert entrypoint[:2] == ["alembic", "-c"] and entrypoint[3:] == ["upgrade", "head"]
    assert (REPO / entrypoint[2]).is_file()
    assert migrations["restart"] == "no"
    url = interpolate(migrations["environment"]["COTN_AGGREGATOR_DATABASE_URL"])
    aggregator_url = SERVICES["aggregator"]["environment"]["COTN_AGGREGATOR_DATABASE_URL"]
    assert url == interpolate(aggregator_url)
    condition = SERVICES["aggregator"]["depends_on"]["migrations"]["condition"]
    assert condition == "service_completed_successfully"


def one_shot(service: str) -> bool:
    """A service that runs to completion before others start (migrations, nats-setup)."""
    return SERVICES[service].get("restart") == "no"


@pytest.mark.parametrize("service", sorted(SERVICES))
def test_dependencies_wait_for_health(service: str) -> None:
    for dependency, spec in SERVICES[service].get("depends_on", {}).items():
        expected = "service_completed_successfully" if one_shot(dependency) else "service_healthy"
        assert spec["condition"] == expected, f"{service} -> {dependency}"
        if expected == "service_healthy":
            assert "healthcheck" in SERVICES[dependency], dependency
    if not one_shot(service):
        assert "healthcheck" in SERVICES[service]


def test_the_streams_are_set_up_before_any_service_uses_them() -> None:
    for name, spec in cotn_services().items():
        if name != "nats-setup" and spec["command"][:2] != ["serve", "office"]:  # no bus
            condition = SERVICES[name]["depends_on"]["nats-setup"]["condition"]
            assert condition == "service_completed_successfully", name


# -- ports ------------------------------------------------------------------------------------


def test_every_catalogue_column_has_a_column_service_and_a_target(catalogue: Catalogue) -> None:
    targets = {labels.get("column") for job, _, labels in scrape_targets() if job == "cotn-ingest"}
    assert targets == set(catalogue.column_by_id)
    assert {f"ingest-{c}" for c in catalogue.column_by_id} <= set(cotn_services())


@pytest.mark.parametrize(
    ("job", "target", "labels"),
    [t for t in scrape_targets() if not t[1].startswith("localhost:")],
    ids=lambda value: value if isinstance(value, str) else "",
)
def test_ports_match_the_prometheus_targets(job: str, target: str, labels: dict) -> None:
    host, port = target.rsplit(":", 1)
    assert host in SERVICES, f"{job} scrapes {host}, which compose does not run"
    assert listen_port(host) == int(port)
    spec = SERVICES[host]
    assert f"{port}:{port}" in spec.get("ports", [])
    assert f"127.0.0.1:{port}/" in " ".join(spec["healthcheck"]["test"])
    if "column" in labels:
        assert option([str(c) for c in spec["command"]], "--column") == labels["column"]


def test_prometheus_grafana_and_alertmanager_find_each_other() -> None:
    alerting = load_yaml(PROMETHEUS_CONFIG)["alerting"]["alertmanagers"][0]["static_configs"]
    [target] = alerting[0]["targets"]
    assert target == f"alertmanager:{listen_port('alertmanager')}"
    sources = load_yaml(GRAFANA_PROVISIONING / "datasources" / "prometheus.yml")["datasources"]
    prometheus = next(s for s in sources if s["type"] == "prometheus")
    assert prometheus["uid"] == DATASOURCE_UID
    assert prometheus["url"] == f"http://prometheus:{listen_port('prometheus')}"
    assert prometheus["isDefault"] is True
