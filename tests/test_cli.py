"""The ``cotn`` command for people: tokens, the catalogue and posting events."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import typer
import yaml
from typer.testing import CliRunner, Result

from services.cli import post as post_module
from services.cli.main import app
from shared.catalogue import DEFAULT_CATALOGUE, Catalogue, check_catalogue
from shared.natsserver import free_port
from shared.tokens import TOKENS_FILE, TokenStore, hash_token

EVENT = {
    "specversion": "1.0",
    "id": "evt-1",
    "source": "greater-manchester",
    "type": "org.cotn.milestone.v1",
    "time": "2025-06-01T12:00:00Z",
    "data": {"proposal": "2a", "milestone": "adoption-priorities", "status": "in_progress"},
}

runner = CliRunner()


@pytest.fixture(autouse=True)
def _isolated_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No setting leaks in from the machine: each test names its files and URLs."""
    for name in ("COTN_CATALOGUE", "COTN_DATA_DIR", "COTN_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)


def cotn(*args: str, input: str | bytes | None = None) -> Result:
    return runner.invoke(app, list(args), input=input)


def assert_one_line_error(result: Result, code: int, *fragments: str) -> str:
    """The command failed with ``code`` and said why in one line on stderr, no traceback."""
    assert result.exit_code == code, (result.stdout, result.stderr)
    assert isinstance(result.exception, SystemExit | None)
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("cotn: error: ")
    for fragment in fragments:
        assert fragment in lines[0]
    assert "Traceback" not in result.output
    return lines[0]


# --- help ------------------------------------------------------------------------------


def _command_paths(command: Any, path: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    yield path
    for name, sub in getattr(command, "commands", {}).items():
        yield from _command_paths(sub, (*path, name))


def _command(path: tuple[str, ...]) -> Any:
    """The (Typer-vendored) click command at ``path``."""
    command = typer.main.get_command(app)
    for name in path:
        command = command.commands[name]  # type: ignore[attr-defined]
    return command


COMMAND_PATHS = list(_command_paths(typer.main.get_command(app)))


def test_the_commands_people_rely_on_are_there() -> None:
    expected = {
        ("token", "create"),
        ("token", "revoke"),
        ("token", "list"),
        ("catalogue", "check"),
        ("catalogue", "show"),
        ("post",),
    }
    assert expected <= set(COMMAND_PATHS)


@pytest.mark.parametrize("path", COMMAND_PATHS, ids=lambda p: " ".join(p) or "cotn")
def test_every_command_explains_itself(path: tuple[str, ...]) -> None:
    command = _command(path)
    assert command.help, f"cotn {' '.join(path)} has no help text"

    result = cotn(*path, "--help")

    assert result.exit_code == 0, result.output
    text = " ".join(result.stdout.split())
    assert f"Usage: cotn {' '.join(path)}".strip() in text
    assert " ".join(command.help.splitlines()[0].split()) in text


# --- tokens ----------------------------------------------------------------------------


def test_token_create_prints_only_a_token_that_authenticates(tmp_path: Path) -> None:
    data = tmp_path / "data"
    result = cotn("token", "create", "greater-manchester", "--data-dir", str(data))

    assert result.exit_code == 0, result.stderr
    token = result.stdout.removesuffix("\n")
    assert result.stdout == token + "\n"
    assert "\n" not in token
    assert token.startswith("cotn_")
    assert TokenStore.in_dir(data).authority_of(token) == "greater-manchester"
    assert token not in result.stderr
    stored = (data / TOKENS_FILE).read_text()
    assert token not in stored
    assert hash_token(token) in stored


def test_each_token_is_new(tmp_path: Path) -> None:
    first = cotn("token", "create", "np11", "--data-dir", "d").stdout.strip()
    second = cotn("token", "create", "np11", "--data-dir", "d").stdout.strip()
    assert first != second
    store = TokenStore.in_dir("d")
    assert store.authority_of(first) == store.authority_of(second) == "np11"


def test_token_data_dir_defaults_to_dot_cotn_or_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    token = cotn("token", "create", "tees-valley").stdout.strip()
    assert TokenStore.in_dir(tmp_path / ".cotn").authority_of(token) == "tees-valley"

    monkeypatch.setenv("COTN_DATA_DIR", str(tmp_path / "elsewhere"))
    token = cotn("token", "create", "cumbria").stdout.strip()
    assert TokenStore.in_dir(tmp_path / "elsewhere").authority_of(token) == "cumbria"


@pytest.mark.parametrize("by", ["token", "id"])
def test_token_revoke_makes_it_fail(tmp_path: Path, by: str) -> None:
    token = cotn("token", "create", "north-east", "--data-dir", "d").stdout.strip()
    store = TokenStore.in_dir("d")
    token_id = store.list()[0].token_id

    result = cotn("token", "revoke", token if by == "token" else token_id, "--data-dir", "d")

    assert result.exit_code == 0, result.stderr
    assert token_id in result.stdout
    assert token not in result.stdout
    assert store.authority_of(token) is None


def test_revoking_an_unknown_or_revoked_token_fails_without_echoing_it(tmp_path: Path) -> None:
    token = cotn("token", "create", "north-east", "--data-dir", "d").stdout.strip()
    assert cotn("token", "revoke", token, "--data-dir", "d").exit_code == 0

    again = cotn("token", "revoke", token, "--data-dir", "d")

    line = assert_one_line_error(again, 1, "no live token")
    assert token not in line
    assert_one_line_error(cotn("token", "revoke", "deadbeef", "--data-dir", "d"), 1)


def test_token_list_hides_secrets(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "200")
    live = cotn("token", "create", "west-yorkshire", "--data-dir", "d").stdout.strip()
    gone = cotn("token", "create", "lancashire", "--data-dir", "d").stdout.strip()
    cotn("token", "revoke", gone, "--data-dir", "d")
    records = {r.authority: r for r in TokenStore.in_dir("d").list()}

    result = cotn("token", "list", "--data-dir", "d")

    assert result.exit_code == 0, result.stderr
    for secret in (live, gone, hash_token(live), hash_token(gone)):
        assert secret not in result.stdout
    cells = [
        [cell.strip() for cell in line.strip().strip("│").split("│")]
        for line in result.stdout.splitlines()
        if line.startswith("│")
    ]
    rows = {row[1]: row for row in cells}
    assert set(rows) == {"west-yorkshire", "lancashire"}
    assert rows["west-yorkshire"][0] == records["west-yorkshire"].token_id
    assert rows["west-yorkshire"][3] == "never"  # last used
    assert rows["west-yorkshire"][4] == "-"
    revoked_at = records["lancashire"].revoked_at
    assert revoked_at is not None
    assert rows["lancashire"][4] == revoked_at[:19].replace("T", " ")


def test_token_list_when_there_are_none(tmp_path: Path) -> None:
    result = cotn("token", "list", "--data-dir", "d")
    assert result.exit_code == 0
    assert "No tokens" in result.stdout


def test_token_create_refuses_an_unknown_authority(tmp_path: Path) -> None:
    result = cotn("token", "create", "atlantis", "--data-dir", "d")
    assert_one_line_error(result, 2, "unknown authority 'atlantis'", "greater-manchester")
    assert result.stdout == ""
    assert not (tmp_path / "d" / TOKENS_FILE).exists()


def test_token_create_checks_against_the_chosen_catalogue(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    raw = yaml.safe_load(DEFAULT_CATALOGUE.read_text(encoding="utf-8"))
    raw["authorities"].append({"id": "isle-of-man", "name": "Isle of Man", "kind": "body"})
    other = tmp_path / "other.yaml"
    other.write_text(yaml.safe_dump(raw), encoding="utf-8")

    assert cotn("token", "create", "isle-of-man", "--catalogue", str(other)).exit_code == 0
    monkeypatch.setenv("COTN_CATALOGUE", str(other))
    assert cotn("token", "create", "isle-of-man").exit_code == 0
    monkeypatch.delenv("COTN_CATALOGUE")
    assert_one_line_error(cotn("token", "create", "isle-of-man"), 2, "unknown authority")


def test_token_create_refuses_an_unusable_catalogue(tmp_path: Path) -> None:
    result = cotn("token", "create", "np11", "--catalogue", "absent.yaml")
    assert_one_line_error(result, 2, "absent.yaml", "cannot read", "cotn catalogue check")
    assert result.stdout == ""


def test_a_damaged_token_file_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / TOKENS_FILE).write_text("not json", encoding="utf-8")
    assert_one_line_error(cotn("token", "list", "--data-dir", "d"), 2, "damaged")
    assert_one_line_error(cotn("token", "create", "np11", "--data-dir", "d"), 2, "damaged")


def test_an_unwritable_data_dir_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("", encoding="utf-8")
    result = cotn("token", "create", "np11", "--data-dir", "file")
    assert_one_line_error(result, 2, "cannot use the token file")
    assert result.stdout == ""


# --- catalogue -------------------------------------------------------------------------


def _broken_catalogue(tmp_path: Path) -> Path:
    raw = yaml.safe_load(DEFAULT_CATALOGUE.read_text(encoding="utf-8"))
    raw["columns"][2]["proposals"].remove("3b")
    raw["kpis"][0]["reporters"].append("atlantis")
    path = tmp_path / "broken.yaml"
    path.write_text(yaml.safe_dump(raw), encoding="utf-8")
    return path


def test_catalogue_check_ok() -> None:
    result = cotn("catalogue", "check")
    assert result.exit_code == 0, result.output
    assert result.stdout == (
        f"OK {DEFAULT_CATALOGUE}: 3 columns, 5 proposals and 2 gamechangers, 7 KPIs, "
        "15 authorities\n"
    )


def test_catalogue_check_lists_every_problem(tmp_path: Path) -> None:
    path = _broken_catalogue(tmp_path)

    result = cotn("catalogue", "check", str(path))

    assert result.stdout.splitlines() == [
        "proposals[3b]: in no column",
        "kpis[life-sciences-jobs].reporters: 'atlantis' is not a known authority",
    ]
    assert result.stdout.splitlines() == check_catalogue(path)[1]
    assert_one_line_error(result, 1, "2 problem(s)", str(path))


def test_catalogue_check_follows_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COTN_CATALOGUE", str(_broken_catalogue(tmp_path)))
    assert cotn("catalogue", "check").exit_code == 1


@pytest.mark.parametrize(
    ("content", "problem"),
    [(None, "cannot read"), ("columns: [unclosed\n", "not valid YAML")],
)
def test_catalogue_check_of_an_unusable_file(
    tmp_path: Path, content: str | None, problem: str
) -> None:
    path = tmp_path / "catalogue.yaml"
    if content is not None:
        path.write_text(content, encoding="utf-8")
    result = cotn("catalogue", "check", str(path))
    assert result.exit_code == 1
    assert problem in result.stdout


def test_catalogue_show_is_readable(catalogue: Catalogue, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "250")
    result = cotn("catalogue", "show")

    assert result.exit_code == 0, result.stderr
    out = result.stdout
    for column in catalogue.columns:
        assert f"{column.title} [{column.id}]" in out
    assert "1a  Devolution of innovation support  (priority 1, 10 partners, stalls after 60d" in out
    assert "ai-cluster  Northern cluster of AI excellence  (gamechanger, 12 partners" in out
    for proposal in catalogue.proposals:
        for milestone in proposal.milestones:
            assert f"{milestone.due}  {milestone.id}: {milestone.title}" in out
    assert "54,100 -> 118,700 jobs, 2020-12-31 to 2040-12-31 (compound, up is good)" in out
    for kpi in catalogue.kpis:
        assert kpi.id in out
    # Out of order would mean the column view is not the catalogue's.
    assert out.index("[collaboration]") < out.index("[devolution]") < out.index("[business]")


def test_catalogue_show_json_is_the_validated_catalogue(catalogue: Catalogue) -> None:
    result = cotn("catalogue", "show", "--json")
    assert result.exit_code == 0, result.stderr
    shown = json.loads(result.stdout)
    assert shown == catalogue.model_dump(mode="json")
    assert shown["proposals"][0]["stall_threshold"] == "60d"
    assert Catalogue.model_validate(shown).model_dump() == catalogue.model_dump()


def test_catalogue_show_refuses_a_broken_catalogue(tmp_path: Path) -> None:
    path = _broken_catalogue(tmp_path)
    result = cotn("catalogue", "show", "--catalogue", str(path))
    assert_one_line_error(result, 2, str(path), "proposals[3b]: in no column", "1 more")
    assert result.stdout == ""


# --- post ------------------------------------------------------------------------------


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class FakeColumnService:
    """A loopback HTTP server standing in for a column service: records and answers."""

    url: str
    requests: list[Received] = field(default_factory=list)
    status: int = 202
    answer: Any = field(default_factory=lambda: {"accepted": ["evt-1"], "duplicates": []})
    content_type: str = "application/json"
    headers: dict[str, str] = field(default_factory=dict)
    release: threading.Event = field(default_factory=threading.Event)
    hold: bool = False


def _handler(service: FakeColumnService) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            service.requests.append(Received(self.path, dict(self.headers.items()), body))
            if service.hold:
                service.release.wait(5)
            payload = (
                service.answer.encode()
                if isinstance(service.answer, str)
                else json.dumps(service.answer).encode()
            )
            self.send_response(service.status)
            self.send_header("Content-Type", service.content_type)
            self.send_header("Content-Length", str(len(payload)))
            for name, value in service.headers.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    return Handler


class _QuietServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # a client that gave up (the timeout test) is not a test failure


@pytest.fixture
def service() -> Iterator[FakeColumnService]:
    fake = FakeColumnService(url="")
    server = _QuietServer(("127.0.0.1", 0), _handler(fake))
    fake.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, args=(0.02,), daemon=True)
    thread.start()
    yield fake
    fake.release.set()
    server.shutdown()
    server.server_close()
    thread.join(5)


@pytest.fixture
def event_file(tmp_path: Path) -> Path:
    path = tmp_path / "event.json"
    path.write_text(json.dumps(EVENT, indent=1), encoding="utf-8")
    return path


def test_post_one_event(service: FakeColumnService, event_file: Path) -> None:
    result = cotn(
        "post", str(event_file), "--column", "collaboration", "--token", "tok", "--url", service.url
    )

    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout) == service.answer
    (received,) = service.requests
    assert received.path == "/v1/events"
    assert received.headers["Content-Type"] == "application/cloudevents+json"
    assert received.headers["Authorization"] == "Bearer tok"
    # The column goes with the request, so a --url of another column's service refuses it.
    assert received.headers["Cotn-Column"] == "collaboration"
    assert received.body == event_file.read_bytes()


def test_post_a_batch_from_stdin_with_the_token_from_the_environment(
    service: FakeColumnService, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COTN_TOKEN", "from-env")
    batch = json.dumps([EVENT, {**EVENT, "id": "evt-2"}])

    result = cotn("post", "-", "-c", "collaboration", "--url", service.url + "/", input=batch)

    assert result.exit_code == 0, result.stderr
    (received,) = service.requests
    assert received.path == "/v1/events"
    assert received.headers["Content-Type"] == "application/cloudevents-batch+json"
    assert received.headers["Authorization"] == "Bearer from-env"
    assert received.body == batch.encode()


@pytest.mark.parametrize(("column", "offset"), [("collaboration", 1), ("business", 3)])
def test_post_goes_to_the_columns_own_port_by_default(
    service: FakeColumnService,
    event_file: Path,
    monkeypatch: pytest.MonkeyPatch,
    column: str,
    offset: int,
) -> None:
    port = int(service.url.rsplit(":", 1)[1])
    monkeypatch.setattr(post_module, "BASE_PORT", port - offset)
    result = cotn("post", str(event_file), "--column", column, "--token", "tok")
    assert result.exit_code == 0, result.stderr
    assert len(service.requests) == 1


def test_default_urls_follow_the_catalogues_column_order(catalogue: Catalogue) -> None:
    urls = {c.id: post_module.default_url(catalogue, c.id) for c in catalogue.columns}
    assert urls == {
        "collaboration": "http://127.0.0.1:8001",
        "devolution": "http://127.0.0.1:8002",
        "business": "http://127.0.0.1:8003",
    }


PROBLEM = {
    "type": "about:blank",
    "title": "Unprocessable event",
    "status": 422,
    "detail": "1 of 1 events is invalid",
    "errors": [{"index": 0, "id": "evt-1", "field": "data.milestone", "reason": "unknown"}],
}


@pytest.mark.parametrize(
    ("status", "answer", "headers", "code", "said"),
    [
        (422, PROBLEM, {}, 1, "422 Unprocessable Entity: 1 of 1 events is invalid"),
        (401, {"title": "No or unknown token"}, {}, 1, "401 Unauthorized: No or unknown token"),
        (403, {"detail": "source is not yours"}, {}, 1, "403 Forbidden: source is not yours"),
        (415, "not JSON at all", {}, 1, "415 Unsupported Media Type"),
        (503, {"detail": "bus unavailable"}, {"Retry-After": "2"}, 3, "retry after 2 s"),
        (500, "<html>oops</html>", {}, 3, "500 Internal Server Error"),
        (200, {"accepted": []}, {}, 1, "200 OK"),
    ],
)
def test_post_rejected(
    service: FakeColumnService,
    event_file: Path,
    status: int,
    answer: Any,
    headers: dict[str, str],
    code: int,
    said: str,
) -> None:
    service.status, service.answer, service.headers = status, answer, headers
    if status == 422:
        service.content_type = "application/problem+json"

    result = cotn("post", str(event_file), "-c", "devolution", "-t", "tok", "--url", service.url)

    assert_one_line_error(result, code, said, f"{service.url}/v1/events")
    if isinstance(answer, dict):
        assert json.loads(result.stdout) == answer
    else:
        assert result.stdout.strip() == answer


def test_post_to_an_unreachable_service(event_file: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    result = cotn("post", str(event_file), "-c", "business", "-t", "tok", "--url", url)
    assert_one_line_error(result, 3, "cannot reach", f"{url}/v1/events")
    assert result.stdout == ""


def test_post_to_a_service_that_does_not_answer(
    service: FakeColumnService, event_file: Path
) -> None:
    service.hold = True
    result = cotn(
        "post", str(event_file), "-c", "business", "-t", "tok", "--url", service.url,
        "--timeout", "0.2",
    )  # fmt: skip
    assert_one_line_error(result, 3, "did not answer within 0.2 s")


@pytest.mark.parametrize(
    ("args", "input", "said"),
    [
        (["absent.json"], None, "cannot read absent.json: No such file or directory"),
        (["."], None, "cannot read .: Is a directory"),
        (["-"], "{not json", "stdin is not valid JSON"),
        (["-"], "", "stdin is not valid JSON"),
        (["-"], '"an event"', "stdin must hold a JSON object (one event) or an array"),
        (["-", "--column", "nowhere"], "{}", "unknown column 'nowhere'; known: collaboration"),
        (["-", "--url", "ftp://example.org"], "{}", "invalid URL ftp://example.org/v1/events"),
    ],
)
def test_post_refuses_bad_input(args: list[str], input: str | None, said: str) -> None:
    defaults = {"--token": "tok", "--url": "http://127.0.0.1:9", "--column": "collaboration"}
    for option, value in defaults.items():
        if option not in args:
            args = [*args, option, value]
    result = cotn("post", *args, input=input)
    assert_one_line_error(result, 2, said)
    assert result.stdout == ""


def test_post_with_a_file_that_is_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "event.json"
    path.write_bytes(b'{"id": "\xff"}')
    result = cotn("post", str(path), "-c", "business", "-t", "tok", "--url", "http://127.0.0.1:9")
    assert_one_line_error(result, 2, "is not valid JSON")


def test_post_unknown_column_is_refused_before_anything_is_sent(
    service: FakeColumnService, event_file: Path
) -> None:
    result = cotn("post", str(event_file), "-c", "nowhere", "-t", "tok", "--url", service.url)
    assert_one_line_error(result, 2, "unknown column")
    assert service.requests == []


def test_post_needs_a_token(event_file: Path) -> None:
    result = cotn("post", str(event_file), "-c", "business")
    assert result.exit_code == 2
    assert "--token" in result.stderr


def test_batch_is_sent_as_read(service: FakeColumnService, tmp_path: Path) -> None:
    # Whitespace and key order are the client's: the CLI forwards the bytes it read.
    body = '[ {"b": 1, "a": 2} ]\n'
    path = tmp_path / "batch.json"
    path.write_text(body, encoding="utf-8")
    result = cotn("post", str(path), "-c", "business", "-t", "tok", "--url", service.url)
    assert result.exit_code == 0, result.stderr
    assert service.requests[0].body == body.encode()
