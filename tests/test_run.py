"""``cotn run`` and ``cotn serve``: the embedded pipeline, supervised, started and stopped whole."""

from __future__ import annotations

import os
import signal
import socket
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
from runstack import RunningStack, cotn, free_base_port, start_stack, wait_until
from typer.testing import CliRunner

from services.cli.common import EXIT_BAD_INPUT, EXIT_FAILED
from services.cli.main import app
from services.cli.run import NotReady, wait_ready
from services.cli.supervisor import Part, RestartLimitExceeded, Supervisor, port_is_free
from shared.natsserver import NatsServer, free_port


def alive(pid: int) -> bool:
    """Whether ``pid`` is a live process (a zombie is not: it has exited)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def ready(url: str) -> bool:
    try:
        return httpx.get(url + "/readyz", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


# -- the supervisor alone: fast, with stand-in children -------------------------------------


def stand_in(tmp_path: Path, name: str, code: str) -> Part:
    return Part(
        name=name,
        argv=[sys.executable, "-c", code],
        log=tmp_path / f"{name}.log",
        port=0,
        ready_path=None,
    )


def test_a_part_that_keeps_dying_stops_the_supervisor(tmp_path: Path) -> None:
    lines: list[str] = []
    part = stand_in(tmp_path, "flaky", "raise SystemExit(3)")
    supervisor = Supervisor([part], report=lines.append, max_restarts=2)
    supervisor.start_all()

    def gives_up() -> RestartLimitExceeded | None:
        try:
            supervisor.check()
        except RestartLimitExceeded as exc:
            return exc
        return None

    error = wait_until(gives_up, "the restart limit", timeout=20, every=0.05)
    assert str(error).startswith("flaky died 3 times within 60s (last: exit code 3)")
    assert sum("flaky (pid" in line and "died with exit code 3" in line for line in lines) == 3
    assert sum(line.startswith("restarted flaky (pid") for line in lines) == 2
    supervisor.stop_all()


def test_stop_kills_a_part_that_ignores_sigterm(tmp_path: Path) -> None:
    code = (
        "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
        "print('ignoring', flush=True); time.sleep(60)"
    )
    part = stand_in(tmp_path, "stubborn", code)
    supervisor = Supervisor([part], report=lambda line: None)
    supervisor.start_all()
    pid = part.pid
    assert pid is not None
    wait_until(lambda: "ignoring" in part.log.read_text(), "the handler", timeout=10)
    supervisor.stop_all(timeout=0.5)
    assert not alive(pid)
    assert part.process is None


async def test_a_part_that_never_answers_is_named_by_its_address(tmp_path: Path) -> None:
    # A port that accepts connections but never answers: the first round of probes is still
    # waiting when the time is up, and the message must say where it was waiting.
    with socket.create_server(("127.0.0.1", 0)) as silent:
        port = silent.getsockname()[1]
        part = Part(name="mute", argv=[], log=tmp_path / "mute.log", port=port)
        with pytest.raises(NotReady) as refused:
            await wait_ready([part], within=0.3)
    assert str(refused.value) == (
        f"not ready after 0.3s: mute: http://127.0.0.1:{port}/readyz has not been probed yet"
    )


# -- the commands' help and bad input --------------------------------------------------------


@pytest.mark.parametrize(
    "command",
    [["run"], ["serve"], ["serve", "ingest"], ["serve", "aggregator"], ["status"]],
)
def test_help(command: list[str]) -> None:
    result = CliRunner().invoke(app, [*command, "--help"])
    assert result.exit_code == 0, result.output
    assert "Usage:" in result.stdout


def test_run_refuses_a_bad_catalogue(tmp_path: Path) -> None:
    broken = tmp_path / "catalogue.yaml"
    broken.write_text("programme: [unclosed\n")
    data_dir = tmp_path / "data"
    result = CliRunner().invoke(
        app, ["run", "--catalogue", str(broken), "--data-dir", str(data_dir)]
    )
    assert result.exit_code == EXIT_BAD_INPUT
    assert result.stderr.startswith(f"cotn: error: catalogue {broken} is not usable")
    assert not data_dir.exists()


def test_run_refuses_a_port_out_of_range() -> None:
    result = CliRunner().invoke(app, ["run", "--port", "65535"])
    assert result.exit_code == 2
    assert "--port" in result.output


def test_serve_ingest_needs_a_known_column() -> None:
    missing = CliRunner().invoke(app, ["serve", "ingest"], env={"COTN_INGEST_COLUMN": ""})
    assert missing.exit_code == EXIT_BAD_INPUT
    unknown = CliRunner().invoke(app, ["serve", "ingest", "--column", "nowhere"])
    assert unknown.exit_code == EXIT_BAD_INPUT
    assert "column 'nowhere' is not in the catalogue" in unknown.stderr


def test_serve_refuses_bad_settings_naming_option_and_variable() -> None:
    result = CliRunner().invoke(app, ["serve", "aggregator", "--nats-url", "http://127.0.0.1:4222"])
    assert result.exit_code == EXIT_BAD_INPUT
    assert result.stderr.startswith(
        "cotn: error: invalid settings: --nats-url (COTN_AGGREGATOR_NATS_URL):"
    )


def test_serve_refuses_a_busy_port() -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        result = CliRunner().invoke(
            app, ["serve", "ingest", "--column", "business", "--port", str(port)]
        )
    assert result.exit_code == EXIT_FAILED
    assert f"port {port} on 127.0.0.1 is busy" in result.stderr


# -- the whole pipeline ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningStack]:
    with start_stack(tmp_path_factory.mktemp("run")) as running:
        yield running


@pytest.mark.slow
def test_every_part_is_ready_and_listed(stack: RunningStack) -> None:
    for url in [stack.url, *stack.columns.values(), stack.office]:
        assert ready(url), url
    parts = stack.parts()
    assert set(parts) == {
        "nats-server",
        "aggregator",
        *(f"ingest-{c}" for c in stack.columns),
        "office",
    }
    # The web board's address is the first thing the run prints, and again once ready.
    assert stack.lines[0] == f"Web board: {stack.office}/ (starting)\n"
    ready_at = stack.output.index("COTN delivery monitor is running")
    assert stack.output[:ready_at].rstrip().endswith(f"Web board: {stack.office}/")
    assert httpx.get(stack.office + "/", timeout=5).status_code == 200
    assert all(alive(pid) for pid, _ in parts.values())
    assert (stack.data_dir / "logs" / "aggregator.log").exists()
    assert (stack.data_dir / "cotn.db").exists()
    assert (stack.data_dir / "nats").is_dir()


@pytest.mark.slow
def test_an_event_posted_with_a_token_reaches_the_board(stack: RunningStack) -> None:
    issued = cotn("token", "create", "greater-manchester", "--data-dir", str(stack.data_dir))
    assert issued.returncode == 0, issued.stderr
    token = issued.stdout.strip()
    note = "Signed off by the leaders' board [not markup]"
    event = {
        "specversion": "1.0",
        "id": "run-test-1",
        "source": "greater-manchester",
        "type": "org.cotn.milestone.v1",
        "time": datetime.now(UTC).isoformat(),
        "data": {
            "proposal": "1a",
            "milestone": "joint-position",
            "status": "completed",
            "note": note,
        },
    }
    response = httpx.post(
        stack.columns["devolution"] + "/v1/events",
        json=event,
        headers={"Authorization": f"Bearer {token}"},
        timeout=10,
    )
    assert response.status_code == 202, response.text
    assert response.json()["accepted"] == ["run-test-1"]

    def stored() -> dict | None:
        board = httpx.get(stack.url + "/v1/programme", timeout=5).json()
        proposal = next(p for c in board["columns"] for p in c["proposals"] if p["id"] == "1a")
        return proposal if proposal["milestone_counts"]["completed"] == 1 else None

    proposal = wait_until(stored, "the event on /v1/programme", timeout=20)
    assert proposal["milestones"][0]["note"] == note
    shown = cotn("status", "--url", stack.url)
    assert shown.returncode == 0, shown.stderr
    assert "1 done" in shown.stdout
    assert note in shown.stdout


@pytest.mark.slow
def test_a_second_run_on_busy_ports_names_the_port(stack: RunningStack, tmp_path: Path) -> None:
    second = cotn("run", "--no-board", "--port", str(stack.port), "--data-dir", str(tmp_path))
    assert second.returncode == EXIT_FAILED
    assert second.stderr.strip().splitlines() == [
        f"cotn: error: port {stack.port} on 127.0.0.1 is busy (needed by aggregator): stop "
        "what uses it or choose another --port"
    ]
    assert list(tmp_path.iterdir()) == []


@pytest.mark.fault
@pytest.mark.slow
def test_a_killed_part_is_reported_and_restarted(stack: RunningStack) -> None:
    pid, port = stack.parts()["ingest-business"]
    os.kill(pid, signal.SIGKILL)
    stack.wait_for_output(f"ingest-business (pid {pid}) died with exit code -9 (killed by SIGKILL)")
    output = stack.wait_for_output("restarted ingest-business (pid")
    new_pid, _ = stack.parts()["ingest-business"]
    assert new_pid != pid and alive(new_pid)
    assert "restart 1 of 5 allowed per 60s" in output
    wait_until(lambda: ready(f"http://127.0.0.1:{port}"), "the restarted service", timeout=30)


@pytest.mark.slow
def test_sigterm_leaves_no_process_and_no_port(tmp_path: Path) -> None:
    with start_stack(tmp_path) as running:
        parts = running.parts()
        code = running.stop(signal.SIGTERM)
    assert code == 0, running.output
    assert "stopped; nothing left running" in running.output
    for name, (pid, port) in parts.items():
        assert not alive(pid), name
        assert port is not None and port_is_free("127.0.0.1", port), name


@pytest.mark.slow
def test_replay_rebuilds_the_running_stacks_projections(stack: RunningStack) -> None:
    url = f"sqlite+aiosqlite:///{stack.data_dir / 'cotn.db'}"
    result = cotn("replay", "--database-url", url)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("Replayed ")
    assert " events into the projections of " in result.stdout


@pytest.mark.slow
def test_parts_that_never_get_ready_are_named(tmp_path: Path) -> None:
    nowhere = f"nats://127.0.0.1:{free_port()}"
    result = cotn(
        "run",
        "--no-board",
        "--port",
        str(free_base_port()),
        "--data-dir",
        str(tmp_path),
        "--nats-url",
        nowhere,
        "--ready-timeout",
        "3",
        timeout=60,
    )
    assert result.returncode == EXIT_FAILED
    [line] = result.stderr.splitlines()
    assert "stopping: not ready after 3s: aggregator: http://127.0.0.1:" in line
    for column in ("collaboration", "devolution", "business"):
        assert f"; ingest-{column}: http://127.0.0.1:" in line
    assert "stopped; nothing left running" in result.stdout


@pytest.mark.slow
def test_a_server_list_whose_first_seed_is_down_serves_the_run(
    tmp_path: Path, fresh_nats: NatsServer
) -> None:
    seeds = f"nats://127.0.0.1:{free_port()},{fresh_nats.url}"
    with start_stack(tmp_path / "run", "--nats-url", seeds) as running:
        assert f"NATS {seeds};" in running.output
        issued = cotn("token", "create", "greater-manchester", "--data-dir", str(running.data_dir))
        assert issued.returncode == 0, issued.stderr
        event = {
            "specversion": "1.0",
            "id": "seeds-1",
            "source": "greater-manchester",
            "type": "org.cotn.milestone.v1",
            "time": datetime.now(UTC).isoformat(),
            "data": {"proposal": "1a", "milestone": "joint-position", "status": "completed"},
        }
        response = httpx.post(
            running.columns["devolution"] + "/v1/events",
            json=event,
            headers={"Authorization": f"Bearer {issued.stdout.strip()}"},
            timeout=10,
        )
        assert response.status_code == 202, response.text

        def stored() -> bool:
            page = httpx.get(running.url + "/v1/events", timeout=5).json()
            return any(e["id"] == "seeds-1" for e in page["events"])

        wait_until(stored, "the event stored by the aggregator", timeout=20)


@pytest.mark.fault
@pytest.mark.slow
def test_a_part_that_keeps_dying_stops_the_run(tmp_path: Path) -> None:
    with start_stack(tmp_path) as running:
        for kills in range(1, 7):
            pid, _ = running.parts()["ingest-devolution"]
            os.kill(pid, signal.SIGKILL)
            if kills < 6:
                running.wait_for_output(f"restart {kills} of 5 allowed")
        running.process.wait(30)
    assert running.process.returncode == EXIT_FAILED
    assert "stopping: ingest-devolution died 6 times within 60s" in running.output
    assert "stopped; nothing left running" in running.output


@pytest.mark.fault
@pytest.mark.slow
def test_parts_do_not_outlive_a_killed_supervisor(tmp_path: Path) -> None:
    with start_stack(tmp_path) as running:
        parts = running.parts()
        running.stop(signal.SIGKILL)
    for name, (pid, _) in parts.items():
        wait_until(lambda pid=pid: not alive(pid), f"{name} to exit", timeout=20)
