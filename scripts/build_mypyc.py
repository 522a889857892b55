"""Compile the core's hot modules with mypyc, in place: the build `make install` makes.

    .venv/bin/python scripts/build_mypyc.py --auto   # make install: compiled if it can be
    .venv/bin/python scripts/build_mypyc.py          # make fast: build, fail loudly
    python3 scripts/build_mypyc.py --pure            # make pure: remove, stay pure
    python3 scripts/build_mypyc.py --clean           # make clean: remove them
    python3 scripts/build_mypyc.py --check           # fail if a source is newer than them

The pure-Python package stays the reference (and what `pip install` gives): a build only
adds extension modules that Python imports before the .py of the same name, gitignored.
`--auto` compiles when mypyc, a C compiler and the Python headers are there and the
compiled modules are missing or older than a source (a .so from an older .py would shadow
the newer source), and otherwise falls back to pure Python with one line saying why.
`make pure` (a `.pure` file in the repository root) or PILOT_PURE=1 keeps it pure.
"""

from __future__ import annotations

import argparse
import glob
import importlib.util
import os
import shlex
import shutil
import subprocess
import sys
import sysconfig
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
#: `make pure`'s choice, kept until `make fast` (gitignored).
PURE_MARKER = ".pure"
#: Where `--auto` keeps the build's output (build/ is gitignored).
BUILD_LOG = "build/mypyc.log"

#: Everything a message exchange runs through, compiled together (one shared library, so
#: calls between them are native calls): the Node, reliable delivery, the session's keys
#: and replay window, paths and packets, and the driver and UDP port the bindings share.
#: Left out: delivery's records (`events`, `config`: mypyc refuses the slots of
#: `@dataclass(slots=True)`, and they are not hot code) and its `__init__` (re-exports; kept
#: pure so that the package exists before the shared library inside it is imported); and
#: `driver/blocking.py`, whose BlockingNode the threads and gevent bindings subclass in
#: Python (a compiled class cannot be) and which runs per call, not per packet.
_DELIVERY_LEFT_OUT = {
    "pilot_proto/delivery/__init__.py",
    "pilot_proto/delivery/config.py",
    "pilot_proto/delivery/events.py",
}
MODULES = [
    *sorted(set(glob.glob("pilot_proto/delivery/*.py", root_dir=ROOT)) - _DELIVERY_LEFT_OUT),
    "pilot_proto/driver/addresses.py",
    "pilot_proto/driver/busy_poll.py",
    "pilot_proto/driver/owner.py",
    "pilot_proto/driver/pending.py",
    "pilot_proto/driver/udp.py",
    "pilot_proto/keypair.py",
    "pilot_proto/node.py",
    "pilot_proto/node_paths.py",
    "pilot_proto/node_state.py",
    "pilot_proto/node_trust.py",
    "pilot_proto/packets.py",
    "pilot_proto/paths.py",
    "pilot_proto/peer.py",
    "pilot_proto/peer_handshakes.py",
    "pilot_proto/rendezvous_sessions.py",
    "pilot_proto/replay.py",
    "pilot_proto/transmit.py",
]
#: The shared library's module (`<group>__mypyc`): inside a package, so that it is found
#: wherever the package is (a top-level one is found only from the repository root).
GROUP = "pilot_proto.delivery._compiled"

def compiled_files() -> list[str]:
    """The extension modules (and the shared library) a build left in the tree."""
    return sorted(glob.glob("pilot_proto/**/*.so", root_dir=ROOT, recursive=True))


def stale_sources() -> list[str]:
    """Sources under pilot_proto/ changed since the last build (none without a build)."""
    built = compiled_files()
    if not built:
        return []
    oldest = min(os.path.getmtime(os.path.join(ROOT, path)) for path in built)
    sources = glob.glob("pilot_proto/**/*.py", root_dir=ROOT, recursive=True)
    return sorted(p for p in sources if os.path.getmtime(os.path.join(ROOT, p)) > oldest)


def stale_advice(stale: list[str]) -> str:
    return (
        f"the mypyc-compiled modules are older than {', '.join(stale[:5])}"
        f"{' ...' if len(stale) > 5 else ''}: Python would run the old compiled code. "
        "Rebuild them with `make install` (or `make fast`), or remove them with `make pure`."
    )


def build() -> None:
    # Imported here so --pure and --auto's checks work without mypy installed.
    from mypyc.build import mypycify
    from setuptools import Distribution

    # A bare Distribution, not setup(): setup() would read pyproject.toml, whose metadata
    # the build needs none of (and which older setuptools cannot parse).
    extensions = mypycify(MODULES, group_name=GROUP)
    dist = Distribution({"name": "pilot-proto-mypyc", "ext_modules": extensions})
    dist.script_args = ["build_ext", "--inplace"]
    dist.parse_command_line()
    dist.run_commands()
    # setuptools copies an extension it found up to date with its old time; the build is
    # current as of now whatever it rebuilt (what `--check` compares sources against).
    for path in compiled_files():
        os.utime(path)
    _verify()


def _verify() -> None:
    """Fail unless a fresh interpreter imports every listed module from its extension."""
    names = [path[: -len(".py")].replace("/", ".") for path in MODULES]
    probe = (
        "import importlib, sys\n"
        f"for name in {names!r}:\n"
        "    origin = importlib.import_module(name).__file__ or ''\n"
        "    if not origin.endswith('.so'):\n"
        "        sys.exit(f'{name} was imported from {origin}, not from its compiled module')\n"
    )
    subprocess.run([sys.executable, "-c", probe], check=True, cwd=ROOT)


def remove_compiled() -> list[str]:
    removed = compiled_files()
    for path in removed:
        os.remove(os.path.join(ROOT, path))
    return removed


def current() -> bool:
    """Whether the tree holds exactly this list's compiled modules, none older than a source."""
    suffix = sysconfig.get_config_var("EXT_SUFFIX") or ".so"
    expected = {path[: -len(".py")] + suffix for path in MODULES}
    expected.add(GROUP.replace(".", "/") + "__mypyc" + suffix)
    return set(compiled_files()) == expected and not stale_sources()


def pure_chosen() -> str | None:
    """Why the build stays pure by the user's choice, if it does."""
    if os.environ.get("PILOT_PURE", "") not in ("", "0"):
        return "PILOT_PURE is set"
    if os.path.exists(PURE_MARKER):
        return "`make pure` chose it; `make fast` compiles"
    return None


def missing_tool() -> str | None:
    """What a mypyc build needs and this machine lacks, said for a person, if anything."""
    for module, package in (("mypyc", "mypy"), ("setuptools", "setuptools")):
        if importlib.util.find_spec(module) is None:
            return f"{module} is not installed (pip install {package} in {sys.prefix})"
    compiler = shlex.split(sysconfig.get_config_var("CC") or "cc")[:1] or ["cc"]
    if shutil.which(compiler[0]) is None:
        return f"no C compiler ({compiler[0]} is not on PATH; e.g. apt install gcc)"
    header = os.path.join(sysconfig.get_paths()["include"], "Python.h")
    if not os.path.exists(header):
        return f"no Python headers ({header} is missing; e.g. apt install python3-dev)"
    return None


def auto() -> None:
    """`make install`: the compiled core when it can be built, else pure Python and why.
    Never leaves a stale or partial build behind: Python would run it silently."""
    retry = "; install it and run `make install` again, or `make pure` to stay pure quietly"
    chosen = pure_chosen()
    if chosen is not None:
        if remove_compiled():
            print(f"pilot-proto: removed the compiled core ({chosen})", file=sys.stderr)
        print(f"pilot-proto: pure Python core ({chosen})", file=sys.stderr)
        return
    if current():
        return
    lacking = missing_tool()
    if lacking is not None:
        remove_compiled()
        print(f"pilot-proto: pure Python core: {lacking}{retry}", file=sys.stderr)
        return
    print(f"pilot-proto: compiling the core with mypyc ({len(MODULES)} modules, about a "
          "minute or two) ...", file=sys.stderr, flush=True)
    started = time.monotonic()
    os.makedirs(os.path.dirname(BUILD_LOG), exist_ok=True)
    with open(BUILD_LOG, "w") as log:
        done = subprocess.run([sys.executable, os.path.abspath(__file__)],
                              stdout=log, stderr=subprocess.STDOUT, cwd=ROOT, check=False)
    if done.returncode != 0:
        remove_compiled()
        print(f"pilot-proto: pure Python core: the mypyc build failed (see {BUILD_LOG}); fix "
              "it and run `make install` again, or `make pure` to stay pure quietly",
              file=sys.stderr)
        return
    print(f"pilot-proto: compiled core built in {time.monotonic() - started:.0f} s "
          "(`make pure` goes back to pure Python)", file=sys.stderr)


def main() -> None:
    parser = argparse.ArgumentParser(prog="scripts/build_mypyc.py")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--auto", action="store_true",
                      help="build if possible and needed, else fall back to pure Python")
    mode.add_argument("--pure", action="store_true",
                      help="remove the compiled modules and keep the tree pure (.pure)")
    mode.add_argument("--clean", action="store_true",
                      help="remove the compiled modules (the next make install builds them)")
    mode.add_argument("--check", action="store_true",
                      help="exit 1 if a source changed since the compiled modules were built")
    args = parser.parse_args()
    os.chdir(ROOT)
    if args.auto:
        auto()
        return
    if args.check:
        stale = stale_sources()
        if stale:
            raise SystemExit(stale_advice(stale))
        return
    if args.clean or args.pure:
        for path in remove_compiled():
            print(f"removed {path}")
        if args.clean:
            return
        with open(PURE_MARKER, "w") as marker:
            marker.write("make pure: the core stays pure Python until `make fast`\n")
        print("pilot-proto: pure Python core from now on (`make fast` compiles it again)")
        return
    if os.path.exists(PURE_MARKER):
        os.remove(PURE_MARKER)
    build()
    print(f"compiled {len(MODULES)} modules; `make pure` goes back to pure Python",
          file=sys.stderr)


if __name__ == "__main__":
    main()
