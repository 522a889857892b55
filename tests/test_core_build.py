"""`make install`'s core build (scripts/build_mypyc.py --auto, issue 4): compiled where it
can be, else pure Python with one line saying why and how to retry; never a stale or
partial compiled module left for Python to import instead of the source.

Each test runs the script in a scratch tree with a placeholder compiled module, so no
test compiles anything (`make test` itself runs on the real build, which the script
verifies module by module)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = "scripts/build_mypyc.py"


def _tree(tmp_path: Path) -> Path:
    """A scratch checkout: the script, one source and a compiled module built after it."""
    (tmp_path / "scripts").mkdir()
    shutil.copy(ROOT / SCRIPT, tmp_path / "scripts")
    package = tmp_path / "pilot_proto"
    package.mkdir()
    (package / "node.py").write_text("")
    compiled = package / "node.cpython-311-x86_64-linux-gnu.so"
    compiled.write_bytes(b"")
    os.utime(package / "node.py", (1_000, 1_000))
    os.utime(compiled, (2_000, 2_000))
    return compiled


def _auto(tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, SCRIPT, "--auto"], cwd=tmp_path, capture_output=True, text=True,
        timeout=300, env={**os.environ, **env},
    )


def test_without_a_c_compiler_the_core_stays_pure_and_says_how_to_retry(tmp_path: Path) -> None:
    compiled = _tree(tmp_path)
    done = _auto(tmp_path, PATH=str(tmp_path / "no-such-dir"), PILOT_PURE="")
    assert done.returncode == 0, done.stderr
    (line,) = done.stderr.splitlines()
    assert "pure Python core: no C compiler" in line
    assert "make install" in line and "make pure" in line
    assert not compiled.exists()  # a partial or old build is never left to shadow sources


def test_a_failed_build_falls_back_to_pure_python_and_keeps_the_log(tmp_path: Path) -> None:
    compiled = _tree(tmp_path)  # the listed modules do not exist here: mypyc fails
    done = _auto(tmp_path, PILOT_PURE="")
    assert done.returncode == 0, done.stderr
    last = done.stderr.splitlines()[-1]
    assert "pure Python core:" in last and "make install" in last
    if "the mypyc build failed" in last:
        assert (tmp_path / "build" / "mypyc.log").read_text()
    assert not compiled.exists()


def test_pilot_pure_keeps_the_core_pure(tmp_path: Path) -> None:
    compiled = _tree(tmp_path)
    done = _auto(tmp_path, PILOT_PURE="1")
    assert done.returncode == 0, done.stderr
    assert "pure Python core (PILOT_PURE is set)" in done.stderr
    assert not compiled.exists()


def test_make_pure_is_remembered_until_make_fast(tmp_path: Path) -> None:
    compiled = _tree(tmp_path)
    chosen = subprocess.run([sys.executable, SCRIPT, "--pure"], cwd=tmp_path,
                            capture_output=True, text=True, timeout=60)
    assert chosen.returncode == 0 and not compiled.exists()
    done = _auto(tmp_path, PILOT_PURE="")
    assert done.returncode == 0, done.stderr
    assert "`make pure` chose it" in done.stderr and "make fast" in done.stderr
    assert not list((tmp_path / "pilot_proto").glob("*.so"))


def test_pytest_refuses_to_run_against_compiled_modules_older_than_a_source(
    tmp_path: Path,
) -> None:
    compiled = _tree(tmp_path)
    (tmp_path / "tests").mkdir()
    shutil.copy(ROOT / "tests" / "conftest.py", tmp_path / "tests")
    (tmp_path / "tests" / "test_one.py").write_text("def test_one() -> None:\n    pass\n")
    pytest = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests"]
    fresh = subprocess.run(pytest, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert fresh.returncode == 0, fresh.stdout
    os.utime(tmp_path / "pilot_proto" / "node.py", (3_000, 3_000))  # edited since the build
    stale = subprocess.run(pytest, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert stale.returncode == 4
    assert "older than pilot_proto/node.py" in stale.stdout + stale.stderr
    assert compiled.exists()
