"""pilotctl's command line: usage errors (exit 2), the --json envelope everywhere, value
checks (exit 1), not_running, help and `context`. No daemon runs in these tests."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pilot_daemon.cli import main
from pilot_daemon.limits import MAX_MESSAGE_BYTES

ADDR = "3fa1:09bc:0000:0000:0000:0000:0000:0001"

# Every command name of DESIGN 9.
DESIGN_COMMANDS = {
    "info",
    "find",
    "set-hostname",
    "clear-hostname",
    "context",
    "handshake",
    "pending",
    "approve",
    "reject",
    "trust",
    "untrust",
    "send-message",
    "reply",
    "inbox",
    "send-file",
    "received",
    "peers",
    "ping",
    "bench",
    "connect",
    "listen",
    "send",
    "recv",
    "publish",
    "subscribe",
    "outbox",
    "rendezvous serve",
    "daemon start",
    "daemon stop",
    "daemon status",
}


@pytest.fixture(autouse=True)
def empty_home(monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="pilot-cli-") as root:
        monkeypatch.setenv("PILOT_HOME", os.path.join(root, "home"))
        yield Path(root) / "home"


def pilotctl(*args: str, capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def envelope(out: str) -> dict[str, Any]:
    lines = out.strip().splitlines()
    assert len(lines) == 1, out  # exactly one JSON document on stdout
    value = json.loads(lines[0])
    assert isinstance(value, dict)
    return value


# --- usage errors: exit 2, code invalid_argument, envelope under --json ---


@pytest.mark.parametrize(
    "args",
    [
        ["--json", "no-such-command"],
        ["no-such-command", "--json"],
        ["--json", "info", "--bogus"],
        ["info", "--bogus", "--json"],
        ["--json", "--bogus", "info"],
        ["--json", "send-message", "agent-b"],  # missing --data/--file
        ["send-message", "agent-b", "--data", "x", "--file", "y", "--json"],  # conflicting
        ["--json", "send-message", "--data", "x"],  # missing target
        ["--json", "send-message", "agent-b", "--data", "x", "--type", "yaml"],
        ["--json", "approve"],
        ["--json", "daemon"],
        ["--json", "daemon", "restart"],
        ["--json", "daemon", "status", "--verbose"],
        ["--json", "rendezvous", "serve"],  # --listen is required
        ["--json", "inbox", "show"],
        ["--json", "inbox", "show", "abcd", "--clear"],
        ["--json", "inbox", "abcd"],
        ["--json", "ping", "agent-b", "--count", "zero"],
        ["--json", "send-message", "agent-b", "--data", "x", "--wait", "soon"],
        ["--json"],
    ],
)
def test_usage_errors_exit_2_with_envelope(
    args: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = pilotctl(*args, capsys=capsys)
    assert code == 2
    body = envelope(out)
    assert body["status"] == "error" and body["code"] == "invalid_argument"
    assert body["message"] and body["hint"]
    assert err == ""


def test_usage_errors_in_human_mode_go_to_stderr(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = pilotctl("infoo", capsys=capsys)
    assert code == 2 and out == ""
    assert "usage: pilotctl" in err
    assert "unknown command 'infoo' (did you mean 'info'?)" in err
    code, out, err = pilotctl("send-message", "agent-b", capsys=capsys)
    assert code == 2 and "usage: pilotctl send-message" in err
    assert "one of the arguments --data --file is required" in err


def test_usage_error_in_a_real_process(tmp_path: Path) -> None:
    env = dict(os.environ, PILOT_HOME=str(tmp_path / "h"))
    done = subprocess.run(
        [sys.executable, "-m", "pilot_daemon", "info", "--nope", "--json"],
        capture_output=True,
        text=True,
        env=env,
        timeout=30,
    )
    assert done.returncode == 2
    assert envelope(done.stdout)["code"] == "invalid_argument"


# --- the daemon is not running ---


@pytest.mark.parametrize(
    "args",
    [
        ["info"],
        ["pending"],
        ["trust"],
        ["inbox"],
        ["received"],
        ["outbox"],
        ["peers"],
        ["send-message", "agent-b", "--data", "hi"],
        ["daemon", "status"],
        ["daemon", "stop"],
    ],
)
def test_not_running_with_start_hint(args: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = pilotctl("--json", *args, capsys=capsys)
    assert code == 1
    body = envelope(out)
    assert body["code"] == "not_running"
    assert "pilotctl daemon start" in body["hint"] or body["hint"] == "nothing to stop"


def test_not_running_human(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = pilotctl("info", capsys=capsys)
    assert code == 1 and out == ""
    assert err.startswith("error: the pilot daemon is not running")
    assert "hint: start it with: pilotctl daemon start" in err


def test_status_check_is_silent(capsys: pytest.CaptureFixture[str]) -> None:
    assert pilotctl("daemon", "status", "--check", capsys=capsys) == (1, "", "")
    assert pilotctl("--json", "daemon", "status", "--check", capsys=capsys) == (1, "", "")


# --- value checks: exit 1, before the daemon is asked ---


def test_invalid_json_is_invalid_argument_exit_1(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = pilotctl(
        "--json", "send-message", "agent-b", "--type", "json", "--data", "{not json", capsys=capsys
    )
    assert code == 1
    body = envelope(out)
    assert body["code"] == "invalid_argument" and "JSON" in body["message"]


def test_data_over_the_limit_is_too_large(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    big = "x" * (MAX_MESSAGE_BYTES + 1)
    code, out, _ = pilotctl("--json", "send-message", "agent-b", "--data", big, capsys=capsys)
    assert code == 1 and envelope(out)["code"] == "too_large"
    path = tmp_path / "big.bin"
    path.write_bytes(b"\0" * (MAX_MESSAGE_BYTES + 1))
    code, out, _ = pilotctl(
        "--json", "send-message", "agent-b", "--file", str(path), "--type", "binary", capsys=capsys
    )
    assert code == 1 and envelope(out)["code"] == "too_large"
    code, out, _ = pilotctl("--json", "reply", "abcd", "--data", big, capsys=capsys)
    assert code == 1 and envelope(out)["code"] == "too_large"


@pytest.mark.parametrize(
    ("args", "code_"),
    [
        (["handshake", "Not_A_Name"], "invalid_argument"),
        (["handshake", "agent-b", "--justification", "j" * 600], "too_large"),
        (["approve", "not-an-address"], "invalid_argument"),
        (["untrust", ADDR.upper()], "invalid_argument"),
        (["set-hostname", "bad-"], "invalid_argument"),
        (["send-message", "agent-b", "--file", "/no/such/file"], "not_found"),
        (["send-message", "agent-b", "--file", "/"], "invalid_argument"),
        (["send-message", "agent-b", "--data", "\udcff"], "invalid_argument"),
        (["send-file", "agent-b", "/no/such/file"], "not_found"),
        (["reply", "xyz!", "--data", "x"], "invalid_argument"),
        (["inbox", "show", "zz"], "invalid_argument"),
        (["find", "UPPER"], "invalid_argument"),
        (["daemon", "start", "--listen", "nowhere"], "invalid_argument"),
        (["rendezvous", "serve", "--listen", "nowhere"], "invalid_argument"),
    ],
)
def test_value_errors_exit_1(
    args: list[str], code_: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = pilotctl("--json", *args, capsys=capsys)
    assert code == 1
    assert envelope(out)["code"] == code_


# --- help and context ---


def test_help_reads_well(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as done:
        main(["--help"])
    assert done.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: pilotctl [--json] COMMAND [ARGS...]")
    for name in ("send-message", "handshake", "daemon", "inbox", "context"):
        assert f"\n    {name} " in out
    assert "Exit status: 0 ok, 1 error, 2 usage error." in out
    with pytest.raises(SystemExit):
        main(["send-message", "--help"])
    out = capsys.readouterr().out
    assert out.startswith("usage: pilotctl send-message")
    assert "--wait [SECS]" in out and "examples:" in out


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = pilotctl("--json", "--version", capsys=capsys)
    assert code == 0 and envelope(out)["data"]["version"]


def test_context_is_the_whole_schema(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = pilotctl("context", "--json", capsys=capsys)
    assert code == 0
    schema = envelope(out)["data"]

    def names(commands: list[dict[str, Any]]) -> set[str]:
        found = set()
        for command in commands:
            found.add(command["name"])
            found |= names(command.get("subcommands", []))
        return found

    assert DESIGN_COMMANDS <= names(schema["commands"])
    assert schema["error_codes"] == [
        "invalid_argument",
        "not_found",
        "already_exists",
        "not_running",
        "not_trusted",
        "connection_failed",
        "timeout",
        "too_large",
        "key_changed",
        "internal",
    ]
    assert schema["exit_codes"] == {
        "0": "ok",
        "1": "error (see code)",
        "2": "usage error (code invalid_argument)",
    }
    send = next(c for c in schema["commands"] if c["name"] == "send-message")
    flags = {a["name"]: a for a in send["arguments"]}
    assert flags["--type"]["choices"] == ["text", "json", "binary"]
    assert flags["--type"]["default"] == "text"
    assert flags["--wait"]["value_optional"] is True
    assert send["mutually_exclusive"] == [{"required": True, "options": ["--data", "--file"]}]
    daemon = next(c for c in schema["commands"] if c["name"] == "daemon")
    start = next(c for c in daemon["subcommands"] if c["name"] == "daemon start")
    assert {a["name"] for a in start["arguments"]} == {
        "--hostname",
        "--rendezvous",
        "--listen",
        "--public",
        "--trust-auto-approve",
        "--foreground",
    }
    assert [o["name"] for o in schema["global_options"]] == ["--json", "--version"]
    # Human mode prints the same schema, pretty.
    code, out, _ = pilotctl("context", capsys=capsys)
    assert code == 0 and json.loads(out) == schema


def test_json_flag_after_double_dash_is_data(capsys: pytest.CaptureFixture[str]) -> None:
    # `--` ends option parsing: what follows is a value, even if it reads "--json".
    code, out, err = pilotctl("find", "--", "--json", capsys=capsys)
    assert code == 1 and out == "" and "neither a hostname" in err


def test_info_path_imports_only_what_it_needs(tmp_path: Path) -> None:
    # CLI start-up budget: no asyncio, no cryptography, no sqlite on the `info` path.
    probe = (
        "import sys\n"
        "from pilot_daemon.cli import main\n"
        "main(['--json', 'info'])\n"
        "heavy = [m for m in ('asyncio', 'cryptography', 'pilot_proto', 'sqlite3', "
        "'dataclasses', 'subprocess', 'http', 'shutil') if m in sys.modules]\n"
        "print('HEAVY', heavy)\n"
    )
    env = dict(os.environ, PILOT_HOME=str(tmp_path / "h"))
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, env=env, timeout=30
    )
    assert done.stdout.strip().splitlines()[-1] == "HEAVY []"


def test_non_ascii_digits_in_a_port_are_a_usage_error_not_a_crash(tmp_path: Path) -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pilot_daemon",
            "--json",
            "daemon",
            "start",
            "--listen",
            "127.0.0.1:³",
            "--rendezvous",
            "127.0.0.1:9",
        ],
        capture_output=True,
        text=True,
        env={**os.environ, "PILOT_HOME": str(tmp_path / "h")},
        timeout=30,
    )
    assert "Traceback" not in result.stderr
    assert result.returncode in (1, 2)
    assert json.loads(result.stdout)["status"] == "error"
