"""Run a module with `pilot_proto` imported from its .py sources, even where the opt-in
mypyc build (`make fast`) left compiled modules beside them: the same-run pure baseline
of a compiled figure.

    .venv/bin/python -m bench.pure bench.exchange --trips 2000

Python imports an extension module before the .py of the same name; the finder below,
placed first, offers only the source loader for `pilot_proto` and its submodules, so
every other extension (cryptography's) still loads.
"""

from __future__ import annotations

import runpy
import sys
from collections.abc import Sequence
from importlib.machinery import SOURCE_SUFFIXES, FileFinder, ModuleSpec, SourceFileLoader
from types import ModuleType

PACKAGE = "pilot_proto"


class SourceOnlyFinder:
    """A meta path finder for `pilot_proto.*` that never returns an extension module."""

    @staticmethod
    def find_spec(
        name: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> ModuleSpec | None:
        if name != PACKAGE and not name.startswith(PACKAGE + "."):
            return None
        for entry in path if path is not None else sys.path:
            spec = FileFinder(entry or ".", (SourceFileLoader, SOURCE_SUFFIXES)).find_spec(name)
            if spec is not None:
                return spec
        return None


def install() -> None:
    """Import `pilot_proto` from source from now on (call before it is first imported)."""
    if any(name == PACKAGE or name.startswith(PACKAGE + ".") for name in sys.modules):
        raise RuntimeError("pilot_proto is already imported: install the finder first")
    sys.meta_path.insert(0, SourceOnlyFinder())


def active() -> bool:
    """Whether this process imports `pilot_proto` from source only (runs under this module)."""
    return any(isinstance(finder, SourceOnlyFinder) for finder in sys.meta_path)


def main() -> None:
    if len(sys.argv) < 2:
        raise SystemExit("usage: python -m bench.pure MODULE [ARGS...]")
    # This file runs as __main__; install the finder of the importable `bench.pure`, the
    # class whose instances `active()` (called from the module run) looks for.
    from bench import pure

    pure.install()
    module = sys.argv[1]
    sys.argv = sys.argv[1:]
    runpy.run_module(module, run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
