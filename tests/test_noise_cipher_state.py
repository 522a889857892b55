"""CipherState: AES-256-GCM with the Noise nonce layout, checked against cryptography directly."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from hypothesis import given, settings
from hypothesis import strategies as st

from pilot_proto.errors import NoiseError
from pilot_proto.noise import MAX_MESSAGE_LEN, CipherState

KEY = bytes(range(32))


def _reference_nonce(n: int) -> bytes:
    return b"\x00" * 4 + n.to_bytes(8, "big")


@settings(max_examples=50, deadline=None)
@given(
    nonce=st.integers(min_value=0, max_value=2**64 - 2),
    ad=st.binary(max_size=64),
    plaintext=st.binary(max_size=256),
)
def test_encrypt_uses_zero_prefixed_big_endian_counter(
    nonce: int, ad: bytes, plaintext: bytes
) -> None:
    cipher = CipherState(KEY)
    cipher.nonce = nonce
    ciphertext = cipher.encrypt_with_ad(ad, plaintext)
    assert ciphertext == AESGCM(KEY).encrypt(_reference_nonce(nonce), plaintext, ad)
    assert cipher.nonce == nonce + 1
    receiver = CipherState(KEY)
    receiver.nonce = nonce
    assert receiver.decrypt_with_ad(ad, ciphertext) == plaintext
    assert receiver.nonce == nonce + 1


def test_counter_advances_per_message() -> None:
    sender, receiver = CipherState(KEY), CipherState(KEY)
    for n in range(5):
        ciphertext = sender.encrypt_with_ad(b"ad", b"message %d" % n)
        assert ciphertext == AESGCM(KEY).encrypt(_reference_nonce(n), b"message %d" % n, b"ad")
        assert receiver.decrypt_with_ad(b"ad", ciphertext) == b"message %d" % n


def test_failed_decrypt_does_not_advance_nonce() -> None:
    sender, receiver = CipherState(KEY), CipherState(KEY)
    ciphertext = sender.encrypt_with_ad(b"", b"hello")
    tampered = bytes([ciphertext[0] ^ 1]) + ciphertext[1:]
    for bad_ad, bad_ct in ((b"", tampered), (b"other ad", ciphertext), (b"", ciphertext[:10])):
        with pytest.raises(NoiseError):
            receiver.decrypt_with_ad(bad_ad, bad_ct)
        assert receiver.nonce == 0
    assert receiver.decrypt_with_ad(b"", ciphertext) == b"hello"
    assert receiver.nonce == 1


def test_without_key_data_passes_through() -> None:
    cipher = CipherState()
    assert not cipher.has_key
    assert cipher.key is None
    assert cipher.encrypt_with_ad(b"ad", b"plain") == b"plain"
    assert cipher.decrypt_with_ad(b"ad", b"plain") == b"plain"
    assert cipher.nonce == 0
    with pytest.raises(NoiseError):
        cipher.rekey()


def test_reserved_nonce_is_never_used() -> None:
    cipher = CipherState(KEY)
    cipher.nonce = 2**64 - 2
    cipher.encrypt_with_ad(b"", b"last")
    assert cipher.nonce == 2**64 - 1
    with pytest.raises(NoiseError, match="exhausted"):
        cipher.encrypt_with_ad(b"", b"one too many")
    with pytest.raises(NoiseError, match="exhausted"):
        cipher.decrypt_with_ad(b"", bytes(32))
    for bad in (-1, 2**64):
        with pytest.raises(NoiseError):
            cipher.nonce = bad


def test_rekey_follows_section_11_3_and_keeps_nonce() -> None:
    sender, receiver = CipherState(KEY), CipherState(KEY)
    old = sender.encrypt_with_ad(b"", b"before")
    receiver.decrypt_with_ad(b"", old)
    expected_key = AESGCM(KEY).encrypt(b"\x00" * 4 + b"\xff" * 8, bytes(32), b"")[:32]
    sender.rekey()
    receiver.rekey()
    assert sender.key == receiver.key == expected_key
    assert sender.nonce == receiver.nonce == 1
    new = sender.encrypt_with_ad(b"", b"after")
    assert new == AESGCM(expected_key).encrypt(_reference_nonce(1), b"after", b"")
    assert receiver.decrypt_with_ad(b"", new) == b"after"
    stale = CipherState(KEY)
    stale.nonce = 2
    with pytest.raises(NoiseError):
        stale.decrypt_with_ad(b"", sender.encrypt_with_ad(b"", b"x"))


def test_message_size_limit() -> None:
    sender, receiver = CipherState(KEY), CipherState(KEY)
    largest = sender.encrypt_with_ad(b"", bytes(MAX_MESSAGE_LEN - 16))
    assert len(largest) == MAX_MESSAGE_LEN
    assert receiver.decrypt_with_ad(b"", largest) == bytes(MAX_MESSAGE_LEN - 16)
    with pytest.raises(NoiseError, match="65535"):
        sender.encrypt_with_ad(b"", bytes(MAX_MESSAGE_LEN - 15))
    with pytest.raises(NoiseError, match="65535"):
        receiver.decrypt_with_ad(b"", bytes(MAX_MESSAGE_LEN + 1))
    assert sender.nonce == receiver.nonce == 1


def test_bad_key_length() -> None:
    with pytest.raises(NoiseError):
        CipherState(bytes(31))


@settings(max_examples=200, deadline=None)
@given(ad=st.binary(max_size=40), data=st.binary(max_size=200))
def test_any_bytes_into_decrypt_raise_only_noise_error(ad: bytes, data: bytes) -> None:
    cipher = CipherState(KEY)
    with pytest.raises(NoiseError):
        cipher.decrypt_with_ad(ad, data)
    assert cipher.nonce == 0
