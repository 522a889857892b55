"""The cacophony test vectors, through the runner's library API and its command line."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from pilot_proto.noise.vectors import run_vector, run_vector_file, summary_line

VECTOR_FILE = Path(__file__).parent / "vectors" / "noise" / "cacophony_25519_AESGCM_SHA256.json"


def _vectors() -> list[dict[str, Any]]:
    vectors: list[dict[str, Any]] = json.loads(VECTOR_FILE.read_text())["vectors"]
    return vectors


def _by_name(name: str) -> dict[str, Any]:
    return copy.deepcopy(next(v for v in _vectors() if v["protocol_name"] == name))


def test_every_vector_passes() -> None:
    results = run_vector_file(VECTOR_FILE)
    failures = [r.describe() for r in results if r.outcome != "passed"]
    assert failures == []
    assert summary_line(results) == "59 passed, 0 failed, 0 skipped"
    names = {r.protocol_name for r in results}
    # The file covers deferred and psk patterns, one-way patterns included.
    for name in (
        "Noise_X1K1_25519_AESGCM_SHA256",
        "Noise_XXpsk3_25519_AESGCM_SHA256",
        "Noise_Npsk0_25519_AESGCM_SHA256",
        "Noise_I1X1_25519_AESGCM_SHA256",
    ):
        assert name in names


def _tamper_hex(value: str) -> str:
    raw = bytearray.fromhex(value)
    raw[-1] ^= 1
    return raw.hex()


@pytest.mark.parametrize(
    ("name", "message_index", "field"),
    [
        ("Noise_IK_25519_AESGCM_SHA256", 0, "ciphertext"),  # handshake, initiator
        ("Noise_XX_25519_AESGCM_SHA256", 1, "ciphertext"),  # handshake, responder
        ("Noise_XX_25519_AESGCM_SHA256", 3, "ciphertext"),  # transport, responder->initiator
        ("Noise_N_25519_AESGCM_SHA256", 3, "ciphertext"),  # one-way transport
        ("Noise_NN_25519_AESGCM_SHA256", 4, "payload"),
        ("Noise_KK_25519_AESGCM_SHA256", None, "handshake_hash"),
    ],
)
def test_any_wrong_expectation_fails(name: str, message_index: int | None, field: str) -> None:
    vector = _by_name(name)
    if message_index is None:
        vector[field] = _tamper_hex(vector[field])
    else:
        message = vector["messages"][message_index]
        message[field] = _tamper_hex(message[field])
    result = run_vector(vector)
    assert result.outcome == "failed"
    assert result.reason


def test_fail_vectors_pass_only_when_something_fails() -> None:
    good = _by_name("Noise_XK_25519_AESGCM_SHA256")
    bad = copy.deepcopy(good)
    bad["resp_prologue"] = "00"
    bad["fail"] = True
    assert run_vector(bad).outcome == "passed"
    good["fail"] = True
    assert run_vector(good).outcome == "failed"


def test_other_suites_and_patterns_are_skipped() -> None:
    vector = _by_name("Noise_NN_25519_AESGCM_SHA256")
    for name in (
        "Noise_NN_25519_ChaChaPoly_BLAKE2s",
        "Noise_NN_448_AESGCM_SHA256",
        "Noise_XXfallback_25519_AESGCM_SHA256",
    ):
        vector["protocol_name"] = name
        result = run_vector(vector)
        assert result.outcome == "skipped"
        assert result.reason


def _cli(*files: Path | str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pilot_proto.noise", *map(str, files)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_cli_passes_the_vector_file() -> None:
    done = _cli(VECTOR_FILE)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.splitlines() == ["59 passed, 0 failed, 0 skipped"]


def test_cli_reports_failures_and_skips(tmp_path: Path) -> None:
    vectors = _vectors()[:3]
    vectors[0]["messages"][0]["ciphertext"] = _tamper_hex(vectors[0]["messages"][0]["ciphertext"])
    vectors[1]["protocol_name"] = "Noise_NN_25519_ChaChaPoly_SHA256"
    path = tmp_path / "vectors.json"
    path.write_text(json.dumps({"vectors": vectors}))
    done = _cli(path)
    lines = done.stdout.splitlines()
    assert done.returncode == 1
    assert lines[-1] == "1 passed, 1 failed, 1 skipped"
    assert len(lines) == 3
    assert lines[0].startswith("FAILED") and "ciphertext" in lines[0]
    assert lines[1].startswith("SKIPPED") and "ChaChaPoly" in lines[1]

    only_skipped = tmp_path / "skipped.json"
    only_skipped.write_text(json.dumps({"vectors": [vectors[1]]}))
    done = _cli(only_skipped)
    assert done.returncode == 1
    assert done.stdout.splitlines()[-1] == "0 passed, 0 failed, 1 skipped"


def test_cli_unreadable_file(tmp_path: Path) -> None:
    path = tmp_path / "broken.json"
    path.write_text("{not json")
    done = _cli(path)
    assert done.returncode == 1
    assert done.stdout.splitlines()[-1] == "0 passed, 1 failed, 0 skipped"
