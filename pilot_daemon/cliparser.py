"""pilotctl's command line: every command and flag of DESIGN 9, and the schema `context`
prints (generated from this parser, so it can never drift from what is accepted).

Parse failures raise `UsageError` (exit 2, code `invalid_argument`) instead of argparse's
own exit, so `--json` callers get the envelope for them too.
"""

from __future__ import annotations

import argparse
import os
import re
import sys

from .errors import ErrorCode, UsageError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Sequence
    from typing import Any, NoReturn

PROG = "pilotctl"

#: (command, group) in the order `pilotctl --help` lists them.
GROUPS = ("Node", "Trust", "Messages and files", "Streams and events", "Diagnostics",
          "Services")


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Keeps descriptions as written; sizes itself without importing `shutil`.

    argparse builds a formatter on every add_argument (to check the metavar), and the
    stock one imports shutil to ask for the terminal width: a few ms of start-up for
    nothing, since only --help output needs the width.
    """

    def __init__(self, prog: str, indent_increment: int = 2, max_help_position: int = 30,
                 width: int | None = None) -> None:
        super().__init__(prog, indent_increment, max_help_position,
                         width if width is not None else min(_terminal_width() - 2, 98))

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        # Prose lines are wrapped; indented lines (examples) and headings stay as written.
        import textwrap

        out = []
        for line in text.splitlines():
            if line.startswith(" ") or line.endswith(":") or not line:
                out.append(indent + line)
            else:
                out.append(textwrap.fill(line, width, initial_indent=indent,
                                         subsequent_indent=indent))
        return "\n".join(out)


def _terminal_width() -> int:
    columns = os.environ.get("COLUMNS", "")
    if columns.isdecimal():
        return int(columns)
    try:
        return os.get_terminal_size(sys.__stdout__.fileno() if sys.__stdout__ else 1).columns
    except (OSError, ValueError):
        return 80


class UsageParser(argparse.ArgumentParser):
    """An ArgumentParser that raises instead of exiting on bad input."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", HelpFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> NoReturn:
        error = UsageError(_rephrase(message), usage=self.format_usage())
        error.hint = f"see: {self.prog} --help"
        raise error


def _rephrase(message: str) -> str:
    # argparse's wording is fine except the wall of choices for an unknown command.
    found = re.match(r"argument (\w+): invalid choice: '([^']*)' \(choose from (.*)\)$",
                     message)
    if found and found.group(1).lower() in ("command", "action"):
        import difflib

        choices = re.findall(r"'([^']*)'", found.group(3))
        close = difflib.get_close_matches(found.group(2), choices, n=1)
        return f"unknown command {found.group(2)!r}" + (
            f" (did you mean {close[0]!r}?)" if close else "")
    return message


def duration(text: str) -> float:
    """Seconds: `30`, `2.5`, `30s`, `5m`, `1h`."""
    found = re.fullmatch(r"(\d+(?:\.\d+)?)(ms|s|m|h)?", text.strip())
    if not found:
        raise argparse.ArgumentTypeError(f"invalid duration {text!r} (e.g. 30, 30s, 5m)")
    scale = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}[found.group(2) or "s"]
    return float(found.group(1)) * scale


def count(text: str) -> int:
    if not text.isdecimal() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"invalid count {text!r} (a whole number >= 1)")
    return int(text)


def port(text: str) -> int:
    if not text.isdecimal() or not 0 < int(text) < 65536:
        raise argparse.ArgumentTypeError(f"invalid port {text!r} (1-65535)")
    return int(text)


_FORMATTER = HelpFormatter


class _Skipped:
    """Stands in for the parser of a command that is not being run: building every
    command's parser on every call would cost pilotctl most of its start-up budget."""

    def __getattr__(self, name: str) -> Any:
        return self._ignore

    def _ignore(self, *args: Any, **kwargs: Any) -> _Skipped:
        return self
TARGET_HELP = "hostname (e.g. agent-b) or node address (eight groups of four hex digits)"


def build_parser(only: str | None = None) -> UsageParser:
    """The pilotctl parser. With `only`, just that command's arguments are built (the
    others are still listed in --help); `None` builds everything (help, `context`)."""
    parser = UsageParser(
        prog=PROG,
        formatter_class=_FORMATTER,
        description="Control a pilot daemon: an encrypted peer-to-peer node for software "
        "agents.\nState lives in $PILOT_HOME (default ~/.pilot).",
        usage=f"{PROG} [--json] COMMAND [ARGS...]",
        add_help=True,
    )
    parser.add_argument("--json", action="store_true",
                        help="machine-readable output: a {\"status\",...} envelope on stdout "
                             "(accepted anywhere on the command line)")
    parser.add_argument("--version", action="store_true", help="print the version and exit")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=UsageParser,
                                     help=argparse.SUPPRESS, prog=PROG)
    listing: dict[str, list[tuple[str, str]]] = {g: [] for g in GROUPS}

    def command(name: str, group: str, summary: str, description: str = "",
                examples: tuple[str, ...] = ()) -> Any:
        listing[group].append((name, summary))
        if only is not None and name != only:
            return _Skipped()
        epilog = ("examples:\n" + "\n".join(f"  {e}" for e in examples)) if examples else None
        sub: UsageParser = commands.add_parser(
            name, help=summary, description=(description or summary), epilog=epilog,
            formatter_class=_FORMATTER,
        )
        return sub

    # --- Node ---
    command("info", "Node", "show this node: node_id, hostname, listen address, rendezvous",
            examples=(f"{PROG} info", f"{PROG} --json info"))
    sub = command("find", "Node", "look up a node by hostname at the rendezvous",
                  examples=(f"{PROG} find agent-b",))
    sub.add_argument("name", metavar="NAME", help=TARGET_HELP)
    sub = command("set-hostname", "Node", "claim a hostname for this node",
                  "Claim NAME at the rendezvous. The first key to claim a name keeps it "
                  "for 30 days after its last renewal.",
                  examples=(f"{PROG} set-hostname agent-a",))
    sub.add_argument("hostname", metavar="NAME",
                     help="1-63 lowercase letters, digits and hyphens")
    command("clear-hostname", "Node", "release this node's hostname")
    command("context", "Node", "print every command, flag and error code as JSON (for agents)",
            "Print the whole command schema as JSON: commands, arguments, flags, defaults, "
            "exit and error codes. Generated from the parser itself.")

    # --- Daemon ---
    daemon = command("daemon", "Services", "start, stop or check the local daemon",
                     examples=(f"{PROG} daemon start --hostname agent-a "
                               "--rendezvous 127.0.0.1:7000",
                               f"{PROG} daemon status --check && echo up",
                               f"{PROG} daemon stop"))
    actions = daemon.add_subparsers(dest="action", metavar="ACTION", required=True,
                                    parser_class=UsageParser, prog=f"{PROG} daemon")
    start = actions.add_parser(
        "start", help="start the daemon (returns once it is up)",
        description="Start the daemon in the background and return once it is up. "
        "Failures (port in use, rendezvous unreachable, name taken) are reported with "
        "their code.\nThe rendezvous comes from --rendezvous, else $PILOT_RENDEZVOUS, "
        "else the one saved at the last start. The UDP port defaults to the one saved in "
        "the state dir (a free one on the first start).",
        formatter_class=_FORMATTER,
        epilog="examples:\n"
        f"  {PROG} daemon start --hostname agent-a --rendezvous 127.0.0.1:7000\n"
        f"  PILOT_HOME=/tmp/b {PROG} daemon start --listen 0.0.0.0:4000\n"
        f"  {PROG} daemon start --foreground      # for systemd and containers",
    )
    start.add_argument("--hostname", metavar="NAME", help="hostname to claim (saved)")
    start.add_argument("--rendezvous", metavar="HOST:PORT[#KEY]",
                       help="rendezvous server, with its public key to pin (saved)")
    start.add_argument("--listen", metavar="HOST:PORT",
                       help="UDP address to bind (saved; port 0 picks a free one)")
    start.add_argument("--public", action="store_true",
                       help="accept introductions from anyone, not only trusted peers")
    start.add_argument("--trust-auto-approve", action="store_true",
                       help="approve every trust request automatically (service agents)")
    start.add_argument("--foreground", action="store_true",
                       help="run in the foreground (logs also on stderr) until SIGTERM")
    actions.add_parser("stop", help="stop the daemon (returns once it has exited)",
                              description="Stop the daemon. Returns once it has exited and "
                              "released its UDP port and its socket.")
    status = actions.add_parser("status", help="is the daemon running and responsive?",
                                description="Report whether the daemon runs and answers.")
    status.add_argument("--check", action="store_true",
                        help="print nothing; exit 0 when responsive, 1 otherwise")

    sub = command("rendezvous", "Services", "run a rendezvous server",
                  examples=(f"{PROG} rendezvous serve --listen 127.0.0.1:7000",))
    rv = sub.add_subparsers(dest="action", metavar="ACTION", required=True,
                            parser_class=UsageParser, prog=f"{PROG} rendezvous")
    serve = rv.add_parser("serve", help="serve in the foreground until SIGTERM/SIGINT",
                          description="Run a rendezvous server in the foreground. Prints "
                          "HOST:PORT#KEY (its bound address and public key) once ready.")
    serve.add_argument("--listen", metavar="HOST:PORT", required=True,
                       help="UDP address to serve on")
    serve.add_argument("--listen2", metavar="HOST:PORT",
                       help="second address, so nodes can classify their NAT (RFC 5780)")

    # --- Trust ---
    sub = command("handshake", "Trust", "ask a node for trust",
                  "Send a trust request to NAME|ADDR. It shows up in the other node's "
                  "`pending` list; once approved, this node trusts it without any further "
                  "command.",
                  examples=(f'{PROG} handshake agent-b --justification "task routing"',))
    sub.add_argument("target", metavar="NAME|ADDR", help=TARGET_HELP)
    sub.add_argument("--justification", metavar="TEXT",
                     help="why you ask (shown to the other side; at most 512 bytes)")
    command("pending", "Trust", "list trust requests waiting for approve/reject",
            "List incoming trust requests (they expire after 7 days).")
    sub = command("approve", "Trust", "approve a pending trust request",
                  examples=(f"{PROG} approve 3fa1:09bc:...",))
    sub.add_argument("node_id", metavar="ADDR", help="node address from `pending`")
    sub = command("reject", "Trust", "reject a pending trust request",
                  "Reject a request. The requester may ask again only after a cool-down "
                  "(1 hour).")
    sub.add_argument("node_id", metavar="ADDR", help="node address from `pending`")
    command("trust", "Trust", "list trusted peers")
    sub = command("untrust", "Trust", "stop trusting a peer",
                  "Remove a peer from the trust store, close its sessions and update the "
                  "allow list.")
    sub.add_argument("node_id", metavar="ADDR", help="node address from `trust`")

    # --- Messages and files ---
    sub = command("send-message", "Messages and files", "send a message to a trusted peer",
                  "Send a message and return once the peer's daemon has it on disk (its "
                  "receipt), or fail with `timeout` after 30 s. With --wait, also wait for "
                  "the peer's reply and print it.",
                  examples=(f"{PROG} send-message agent-b --data 'run subtask: analyze "
                            "document X'",
                            f"{PROG} send-message agent-b --type json --data '{{\"task\":1}}'",
                            f"{PROG} send-message agent-b --file report.bin --type binary",
                            f"{PROG} send-message agent-b --data 'status?' --wait 60"))
    sub.add_argument("target", metavar="NAME|ADDR", help=TARGET_HELP)
    _add_body(sub)
    sub.add_argument("--wait", metavar="SECS", nargs="?", const=60.0, type=duration,
                     help="also wait for the reply (default 60 s when SECS is omitted)")
    sub = command("reply", "Messages and files", "reply to a message in the inbox",
                  examples=(f"{PROG} reply 5d41402abc4b2a76b9719d911017c592 "
                            "--data 'done: 3 findings'",))
    sub.add_argument("message_id", metavar="MESSAGE_ID",
                     help="id from `inbox` (a unique prefix of 4+ digits is enough)")
    _add_body(sub)
    sub = command("inbox", "Messages and files", "list, show or clear received messages",
                  "Without arguments, list the inbox. `inbox show ID` prints one message; "
                  "`inbox --clear` deletes them all. Each message is a JSON file in "
                  "$PILOT_HOME/inbox/.",
                  examples=(f"{PROG} inbox", f"{PROG} inbox show 5d41", f"{PROG} inbox --clear"))
    sub.add_argument("action", metavar="show", nargs="?", choices=["show"],
                     help="show one message")
    sub.add_argument("message_id", metavar="ID", nargs="?", help="message id (or prefix)")
    sub.add_argument("--clear", action="store_true", help="delete every message in the inbox")
    sub = command("send-file", "Messages and files", "send a file to a trusted peer",
                  "Send a file; returns once the receiver has it whole, hash-checked, on "
                  "disk (in its received/ directory).",
                  examples=(f"{PROG} send-file agent-b ./report.pdf",))
    sub.add_argument("target", metavar="NAME|ADDR", help=TARGET_HELP)
    sub.add_argument("path", metavar="PATH", help="file to send")
    command("received", "Messages and files", "list files received from peers")
    command("outbox", "Messages and files", "list messages queued for sending")

    # --- Streams and events ---
    sub = command("connect", "Streams and events", "send to a peer's port and print its answer",
                  "Open a stream to the peer's PORT, send TEXT (or stdin), end it, and print "
                  "what the peer writes back before it ends its side (a `listen` there "
                  "echoes).",
                  examples=(f"{PROG} connect agent-b 2000 --message hello",
                            f"echo hello | {PROG} connect agent-b 2000"))
    sub.add_argument("target", metavar="NAME|ADDR", help=TARGET_HELP)
    sub.add_argument("port", metavar="PORT", nargs="?", type=port, default=1000,
                     help="port (default 1000)")
    sub.add_argument("--message", metavar="TEXT", help="send TEXT (default: read stdin)")
    sub.add_argument("--timeout", metavar="SECS", type=duration, default=30.0,
                     help="give up after SECS (default 30)")
    sub = command("listen", "Streams and events", "accept streams on a local port, echo them",
                  "Accept streams peers open to PORT, print each one's data and echo it "
                  "back; until N streams arrived or the timeout (default 30 s).",
                  examples=(f"{PROG} listen 2000 --count 1",))
    sub.add_argument("port", metavar="PORT", type=port, help="port 1-65535")
    sub.add_argument("--count", metavar="N", type=count, help="stop after N streams")
    sub.add_argument("--timeout", metavar="SECS", type=duration,
                     help="stop waiting after SECS (default 30)")
    sub = command("send", "Streams and events", "send data to a peer's port",
                  "Open a stream to the peer's PORT, write the data and end it; returns "
                  "once the peer's daemon has read it all (someone runs `recv PORT` there).",
                  examples=(f"{PROG} send agent-b 1000 --data 'hello'",))
    sub.add_argument("target", metavar="NAME|ADDR", help=TARGET_HELP)
    sub.add_argument("port", metavar="PORT", type=port, help="port 1-65535")
    sub.add_argument("--data", metavar="STR", required=True, help="the data to send")
    sub.add_argument("--timeout", metavar="SECS", type=duration, default=30.0,
                     help="give up after SECS (default 30)")
    sub = command("recv", "Streams and events", "receive data peers send to a local port",
                  "Wait for N streams (default 1) peers send to PORT and print their data; "
                  "returns what arrived at the timeout (default 30 s).",
                  examples=(f"{PROG} recv 1000 --count 3 --timeout 60",))
    sub.add_argument("port", metavar="PORT", type=port, help="port 1-65535")
    sub.add_argument("--count", metavar="N", type=count, default=1,
                     help="streams to wait for (default 1)")
    sub.add_argument("--timeout", metavar="SECS", type=duration,
                     help="stop waiting after SECS (default 30)")
    sub = command("publish", "Streams and events", "publish an event on a peer's topic "
                  "(later issue)")
    sub.add_argument("target", metavar="NAME|ADDR", help=TARGET_HELP)
    sub.add_argument("topic", metavar="TOPIC")
    sub.add_argument("--data", metavar="STR", required=True, help="the data to send")
    sub = command("subscribe", "Streams and events", "follow a topic on a peer (later issue)")
    sub.add_argument("target", metavar="NAME|ADDR", help=TARGET_HELP)
    sub.add_argument("topic", metavar="TOPIC", help="topic, or * for all")
    sub.add_argument("--count", metavar="N", type=count)
    sub.add_argument("--timeout", metavar="SECS", type=duration,
                     help="stop waiting after SECS (default 30)")

    # --- Diagnostics ---
    command("peers", "Diagnostics", "list trusted peers with their path and RTT",
            "List every trusted peer: path direct (with endpoint and RTT) while a session "
            "exists, else none with the reason (probing, no-candidates, punch-timeout).")
    sub = command("ping", "Diagnostics", "measure round-trip time to a trusted peer",
                  examples=(f"{PROG} ping agent-b --count 5",))
    sub.add_argument("target", metavar="NAME|ADDR", help=TARGET_HELP)
    sub.add_argument("--count", metavar="N", type=count, default=4)
    sub.add_argument("--timeout", metavar="SECS", type=duration, default=10.0)
    sub = command("bench", "Diagnostics", "measure throughput to a trusted peer",
                  "Stream MB MiB to the peer's daemon (which discards them) and report the "
                  "throughput.",
                  examples=(f"{PROG} bench agent-b 10",))
    sub.add_argument("target", metavar="NAME|ADDR", help=TARGET_HELP)
    sub.add_argument("megabytes", metavar="MB", nargs="?", type=count, default=1,
                     help="megabytes to send (default 1)")

    parser.epilog = _command_listing(listing) + (
        "\n\nRun `pilotctl COMMAND --help` for a command's flags, `pilotctl context` for all "
        "of them as JSON.\nExit status: 0 ok, 1 error, 2 usage error."
    )
    return parser


def command_word(words: Sequence[str]) -> str | None:
    """The command a command line names (its first non-option word), if any."""
    for word in words:
        if word == "--":
            return None
        if not word.startswith("-"):
            return word
    return None


def _add_body(sub: argparse.ArgumentParser) -> None:
    body = sub.add_mutually_exclusive_group(required=True)
    body.add_argument("--data", metavar="STR", help="the message body")
    body.add_argument("--file", metavar="PATH", help="read the message body from PATH")
    sub.add_argument("--type", choices=["text", "json", "binary"], default="text",
                     help="text (default), json (checked to be valid JSON) or binary")


def _command_listing(listing: dict[str, list[tuple[str, str]]]) -> str:
    width = max(len(name) for entries in listing.values() for name, _ in entries) + 2
    blocks = []
    for group in GROUPS:
        lines = [f"    {name.ljust(width)}{summary}" for name, summary in listing[group]]
        blocks.append(f"  {group.lower()}:\n" + "\n".join(lines))
    return "commands:\n" + "\n\n".join(blocks)


# --- the schema `context` prints ---


def command_schema(parser: argparse.ArgumentParser) -> dict[str, Any]:
    """Commands, arguments and codes as data, read from the parser itself."""
    from .errors import HTTP_STATUS

    return {
        "program": PROG,
        "usage": f"{PROG} [--json] COMMAND [ARGS...]",
        "global_options": [_argument(a) for a in parser._actions
                           if a.option_strings and a.dest not in ("help",)],
        "commands": _subcommands(parser, prefix=""),
        "output": {
            "ok": {"status": "ok", "data": "..."},
            "error": {"status": "error", "code": "CODE", "message": "...", "hint": "..."},
        },
        "exit_codes": {"0": "ok", "1": "error (see code)",
                       "2": "usage error (code invalid_argument)"},
        "error_codes": [code.value for code in ErrorCode],
        "http_status": {code.value: status for code, status in HTTP_STATUS.items()},
        "environment": {
            "PILOT_HOME": "state directory (default ~/.pilot)",
            "PILOT_RENDEZVOUS": "rendezvous HOST:PORT[#KEY] when --rendezvous is not given",
            "PILOT_PATH_TIMERS": "path timers for daemon start, a JSON object of PathConfig "
                                 "fields plus rendezvous_heartbeat (tests and labs)",
            "PILOT_BUSY_POLL_US": "longest busy-poll after a send for daemon start, "
                                  "microseconds (default 200; 0 never spins)",
        },
    }


def _subcommands(parser: argparse.ArgumentParser, prefix: str) -> list[dict[str, Any]]:
    found = []
    for action in parser._actions:
        if not isinstance(action, argparse._SubParsersAction):
            continue
        for name, sub in action.choices.items():
            full = f"{prefix}{name}"
            help_text = next((c.help for c in action._choices_actions if c.dest == name), None)
            entry: dict[str, Any] = {
                "name": full,
                "summary": help_text,
                "description": sub.description,
                "usage": " ".join(sub.format_usage().split())[len("usage: "):],
                "arguments": [_argument(a) for a in sub._actions
                              if a.help != argparse.SUPPRESS
                              and not isinstance(a, argparse._SubParsersAction)
                              and a.dest != "help"],
                "mutually_exclusive": [
                    {"required": g.required,
                     "options": [a.option_strings[-1] for a in g._group_actions]}
                    for g in sub._mutually_exclusive_groups
                ],
            }
            nested = _subcommands(sub, prefix=f"{full} ")
            if nested:
                entry["subcommands"] = nested
            found.append(entry)
    return found


def _argument(action: argparse.Action) -> dict[str, Any]:
    positional = not action.option_strings
    kind = "flag" if action.nargs == 0 else getattr(action.type, "__name__", None) or "str"
    entry: dict[str, Any] = {
        "name": action.option_strings[-1] if action.option_strings else action.dest,
        "kind": "positional" if positional else "option",
        "type": {"duration": "seconds", "count": "int", "port": "int"}.get(kind, kind),
        "required": bool(action.required) or (positional and action.nargs is None),
        "help": action.help,
    }
    if action.metavar:
        entry["metavar"] = action.metavar
    if action.choices:
        entry["choices"] = list(action.choices)
    if action.nargs == "?":
        entry["value_optional"] = True
        if action.const is not None:
            entry["const"] = action.const
    if action.default not in (None, False, argparse.SUPPRESS):
        entry["default"] = action.default
    return entry
