"""Compile the hot core modules with mypyc, in place (the opt-in accelerated build).

    .venv/bin/python scripts/build_mypyc.py          # build: .so files beside the .py files
    .venv/bin/python scripts/build_mypyc.py --clean  # remove them: back to pure Python
    python3 scripts/build_mypyc.py --check           # fail if they are older than a source

(`make fast`, `make pure`; `make test` runs the check.)

The pure-Python package stays the reference and the default; this only adds extension
modules that Python imports before the .py of the same name. They are gitignored, so a
clean clone (and CI) never sees them. A .so compiled from an older .py shadows the newer
source, and compiled code checks the types of what it gets from the rest of the package,
so after any change under pilot_proto/ rebuild (or clean): `--check` says when.
"""

from __future__ import annotations

import argparse
import glob
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

#: Everything a message exchange runs through, compiled together (one shared library, so
#: calls between them are native calls): reliable delivery, the session's keys and replay
#: window, paths and packets, and the driver the bindings share.
#: Left out: delivery's records (`events`, `config`: mypyc refuses the slots of
#: `@dataclass(slots=True)`, and they are not hot code) and its `__init__` (re-exports; kept
#: pure so that the package exists before the shared library inside it is imported); and
#: the Node (`node*.py`, `peer_handshakes`, `rendezvous_sessions`): one class built from
#: mixins whose `if TYPE_CHECKING:` class-body declarations mypyc does not support.
_DELIVERY_LEFT_OUT = {
    "pilot_proto/delivery/__init__.py",
    "pilot_proto/delivery/config.py",
    "pilot_proto/delivery/events.py",
}
MODULES = [
    *sorted(set(glob.glob("pilot_proto/delivery/*.py", root_dir=ROOT)) - _DELIVERY_LEFT_OUT),
    "pilot_proto/driver/owner.py",
    "pilot_proto/driver/pending.py",
    "pilot_proto/keypair.py",
    "pilot_proto/packets.py",
    "pilot_proto/paths.py",
    "pilot_proto/peer.py",
    "pilot_proto/replay.py",
    "pilot_proto/transmit.py",
]
#: The shared library's module (`<group>__mypyc`): inside a package, so that it is found
#: wherever the package is (a top-level one is found only from the repository root).
GROUP = "pilot_proto.delivery._compiled"

def compiled_files() -> list[str]:
    """The extension modules (and the shared library) a build left in the tree."""
    return sorted(glob.glob("pilot_proto/**/*.so", recursive=True))


def stale_sources() -> list[str]:
    """Sources under pilot_proto/ changed since the last build (none without a build)."""
    built = compiled_files()
    if not built:
        return []
    oldest = min(os.path.getmtime(path) for path in built)
    sources = glob.glob("pilot_proto/**/*.py", recursive=True)
    return sorted(path for path in sources if os.path.getmtime(path) > oldest)


def build() -> None:
    # Imported here so --clean works without mypy installed.
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


def main() -> None:
    parser = argparse.ArgumentParser(prog="scripts/build_mypyc.py")
    parser.add_argument("--clean", action="store_true", help="remove the compiled modules")
    parser.add_argument("--check", action="store_true",
                        help="exit 1 if a source changed since the compiled modules were built")
    args = parser.parse_args()
    os.chdir(ROOT)
    if args.check:
        stale = stale_sources()
        if stale:
            raise SystemExit(
                f"the mypyc-compiled modules (make fast) are older than {', '.join(stale[:5])}"
                f"{' ...' if len(stale) > 5 else ''}: Python would run the old compiled code. "
                "Rebuild them with `make fast`, or remove them with `make pure`."
            )
        return
    if args.clean:
        for path in compiled_files():
            os.remove(path)
            print(f"removed {path}")
        return
    build()
    print(f"compiled {len(MODULES)} modules; `{sys.executable} scripts/build_mypyc.py "
          "--clean` goes back to pure Python", file=sys.stderr)


if __name__ == "__main__":
    main()
