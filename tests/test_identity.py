"""Identity: addresses, signing domains, static bindings, the binding cache, key files."""

from __future__ import annotations

import hashlib
import itertools
import os
import stat
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from hypothesis import given, settings
from hypothesis import strategies as st

from pilot_proto.errors import InvalidIdentity, KeyFilePermissionError
from pilot_proto.identity import (
    ADDRESS_LABEL,
    DOMAIN_ALLOW_LIST,
    DOMAIN_IDENTITY_RECORD,
    DOMAIN_LOCATOR,
    DOMAIN_MAILBOX,
    DOMAIN_STATIC_BINDING,
    SIGNING_DOMAINS,
    BindingCache,
    Identity,
    address_bytes,
    address_from_bytes,
    address_from_public_key,
    is_address,
    is_usable_public_key,
    verify_signature,
    verify_static_binding,
)

ZERO_SEED = bytes(32)
# Pinned once from the implementation; test_zero_seed_address re-derives it with hashlib.
ZERO_SEED_ADDRESS = "0239:0f61:f662:2eaa:3583:ef12:2a4b:a93e"


def make_identity(n: int) -> Identity:
    return Identity.from_private_bytes(hashlib.sha256(b"identity %d" % n).digest())


# --- addresses ---


def test_zero_seed_address_matches_the_formula() -> None:
    public = (
        Ed25519PrivateKey.from_private_bytes(ZERO_SEED)
        .public_key()
        .public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    )
    digest = hashlib.sha256(b"pilot-address-v1" + public).hexdigest()[:32]
    expected = ":".join(digest[i : i + 4] for i in range(0, 32, 4))
    assert expected == ZERO_SEED_ADDRESS
    identity = Identity.from_private_bytes(ZERO_SEED)
    assert identity.address == ZERO_SEED_ADDRESS
    assert address_from_public_key(public) == ZERO_SEED_ADDRESS
    assert ADDRESS_LABEL == b"pilot-address-v1"


@given(st.binary(min_size=32, max_size=32))
def test_address_is_canonical_and_deterministic(public: bytes) -> None:
    address = address_from_public_key(public)
    assert address == address_from_public_key(public)
    groups = address.split(":")
    assert len(groups) == 8
    assert all(len(g) == 4 and g == g.lower() for g in groups)
    assert is_address(address)
    raw = address_bytes(address)
    assert len(raw) == 16
    assert raw == hashlib.sha256(ADDRESS_LABEL + public).digest()[:16]
    assert address_from_bytes(raw) == address


def test_address_never_compressed() -> None:
    assert address_from_bytes(bytes(16)) == "0000:0000:0000:0000:0000:0000:0000:0000"
    assert not is_address("::")
    assert not is_address("0:0:0:0:0:0:0:0")


@pytest.mark.parametrize(
    "text",
    [
        "",
        "0239:0f61:f662:2eaa:3583:ef12:2a4b",  # seven groups
        "0239:0f61:f662:2eaa:3583:ef12:2a4b:a93e:0000",  # nine groups
        "0239:0F61:f662:2eaa:3583:ef12:2a4b:a93e",  # uppercase
        "0239:0f61:f662:2eaa:3583:ef12:2a4b:a93e\n",  # trailing newline
        " 0239:0f61:f662:2eaa:3583:ef12:2a4b:a93e",
        "0239:0f61:f662:2eaa:3583:ef12:2a4b:a93g",
        "0239:0f61:f662:2eaa:3583:ef12:2a4b:a9٣e",  # non-ASCII digit
        "0239-0f61-f662-2eaa-3583-ef12-2a4b-a93e",
        "alice",
    ],
)
def test_bad_address_text(text: str) -> None:
    assert not is_address(text)
    with pytest.raises(InvalidIdentity):
        address_bytes(text)


@pytest.mark.parametrize("size", [0, 15, 17, 32])
def test_address_from_bytes_wrong_length(size: int) -> None:
    with pytest.raises(InvalidIdentity):
        address_from_bytes(bytes(size))


@pytest.mark.parametrize("size", [0, 31, 33])
def test_address_from_public_key_wrong_length(size: int) -> None:
    with pytest.raises(InvalidIdentity):
        address_from_public_key(bytes(size))


# --- the identity ---


def test_identity_derives_everything_from_the_seed() -> None:
    seed = hashlib.sha256(b"seed").digest()
    identity = Identity.from_private_bytes(seed)
    again = Identity.from_private_bytes(seed)
    assert identity.private_bytes() == seed
    assert identity.public_key == again.public_key
    assert identity.static_public == again.static_public
    assert identity.static_binding == again.static_binding
    # X25519 key: HKDF-SHA256(seed, info="pilot-x25519-static-v1"), computed independently.
    expected_private = HKDF(
        algorithm=hashes.SHA256(), length=32, salt=None, info=b"pilot-x25519-static-v1"
    ).derive(seed)
    assert identity.static_private == expected_private
    expected_public = (
        X25519PrivateKey.from_private_bytes(expected_private)
        .public_key()
        .public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    )
    assert identity.static_public == expected_public
    assert len(identity.public_key) == 32
    assert identity.address == address_from_public_key(identity.public_key)


def test_generate_uses_the_rng() -> None:
    requests: list[int] = []
    seed = bytes(range(32))

    def rng(n: int) -> bytes:
        requests.append(n)
        return seed[:n]

    identity = Identity.generate(rng)
    assert requests == [32]
    assert identity.private_bytes() == seed
    assert Identity.generate(os.urandom).address != identity.address


def test_generate_rejects_a_short_rng() -> None:
    with pytest.raises(InvalidIdentity):
        Identity.generate(lambda n: bytes(n - 1))


@pytest.mark.parametrize("seed", [b"", bytes(31), bytes(33), bytes(64)])
def test_from_private_bytes_rejects_wrong_sizes(seed: bytes) -> None:
    with pytest.raises(InvalidIdentity):
        Identity.from_private_bytes(seed)


def test_repr_does_not_show_the_private_key() -> None:
    identity = make_identity(1)
    text = repr(identity) + str(identity)
    assert identity.address in text
    for secret in (identity.private_bytes(), identity.static_private):
        assert secret.hex() not in text
        assert repr(secret) not in text


# --- signatures ---


def test_domains_are_distinct_and_prefix_free() -> None:
    assert DOMAIN_STATIC_BINDING == b"pilot-noise-static-v1"
    assert DOMAIN_IDENTITY_RECORD == b"pilot-identity-record-v1"
    assert DOMAIN_LOCATOR == b"pilot-locator-v1"
    assert DOMAIN_ALLOW_LIST == b"pilot-allow-list-v1"
    assert DOMAIN_MAILBOX == b"pilot-mailbox-v1"
    assert len(set(SIGNING_DOMAINS)) == 5
    for a, b in itertools.permutations(SIGNING_DOMAINS, 2):
        assert not b.startswith(a)


def test_signature_covers_domain_then_message() -> None:
    identity = make_identity(2)
    signature = identity.sign(DOMAIN_MAILBOX, b"hello")
    public = Ed25519PrivateKey.from_private_bytes(identity.private_bytes()).public_key()
    public.verify(signature, b"pilot-mailbox-v1hello")  # raises if not
    assert verify_signature(identity.public_key, DOMAIN_MAILBOX, b"hello", signature)


def test_signature_under_one_domain_fails_under_every_other() -> None:
    identity = make_identity(3)
    message = b"the same message"
    for signing_domain in SIGNING_DOMAINS:
        signature = identity.sign(signing_domain, message)
        for checking_domain in SIGNING_DOMAINS:
            ok = verify_signature(identity.public_key, checking_domain, message, signature)
            assert ok == (checking_domain == signing_domain)


def test_signature_fails_for_another_key_or_message() -> None:
    alice, bob = make_identity(4), make_identity(5)
    signature = alice.sign(DOMAIN_LOCATOR, b"m")
    assert not verify_signature(bob.public_key, DOMAIN_LOCATOR, b"m", signature)
    assert not verify_signature(alice.public_key, DOMAIN_LOCATOR, b"n", signature)
    flipped = bytes([signature[0] ^ 1]) + signature[1:]
    assert not verify_signature(alice.public_key, DOMAIN_LOCATOR, b"m", flipped)


def test_sign_refuses_an_empty_domain() -> None:
    with pytest.raises(InvalidIdentity):
        make_identity(6).sign(b"", b"message")


@given(st.binary(max_size=40), st.binary(max_size=80), st.binary(max_size=20))
def test_verify_signature_never_raises_on_garbage(
    public: bytes, signature: bytes, message: bytes
) -> None:
    assert verify_signature(public, DOMAIN_MAILBOX, message, signature) is False


FIELD_PRIME = 2**255 - 19


def _field_sqrt(value: int) -> int | None:
    # p = 5 mod 8: candidate value**((p+3)/8), fixed up by sqrt(-1) (RFC 8032 5.1.3).
    root = pow(value, (FIELD_PRIME + 3) // 8, FIELD_PRIME)
    if root * root % FIELD_PRIME != value % FIELD_PRIME:
        root = root * pow(2, (FIELD_PRIME - 1) // 4, FIELD_PRIME) % FIELD_PRIME
    return root if root * root % FIELD_PRIME == value % FIELD_PRIME else None


def _small_order_encodings() -> list[bytes]:
    """Every 32-byte encoding of a point of order 1, 2, 4 or 8, derived from the curve."""
    p = FIELD_PRIME
    d = -121665 * pow(121666, -1, p) % p
    # Doubling an order-8 point gives y = 0, i.e. y**2 = -x**2; with the curve equation
    # -x**2 + y**2 = 1 + d*x**2*y**2 that is d*y**4 + 2*y**2 - 1 = 0.
    root = _field_sqrt((1 + d) % p)
    assert root is not None
    order_8_ys = []
    for y_squared in ((-1 + root) * pow(d, -1, p) % p, (-1 - root) * pow(d, -1, p) % p):
        y = _field_sqrt(y_squared)
        if y is not None:
            order_8_ys += [y, p - y]
    assert len(order_8_ys) == 2
    ys = [1, p - 1, 0, *order_8_ys, p, p + 1]  # p and p + 1: non-canonical 0 and 1
    return [(y | sign << 255).to_bytes(32, "little") for y in ys for sign in (0, 1)]


def test_small_order_keys_are_unusable() -> None:
    messages = [b"", b"a", b"hello", b"pilot"]
    for public in _small_order_encodings():
        assert not is_usable_public_key(public)
        # Trivial signatures OpenSSL alone accepts for some of these keys and messages.
        for signature in (bytes(64), (1).to_bytes(32, "little") + bytes(32), public + bytes(32)):
            for message in messages:
                assert not verify_signature(public, DOMAIN_MAILBOX, message, signature)
                assert not verify_static_binding(public, bytes(32), signature)


@given(st.integers(min_value=FIELD_PRIME, max_value=2**255 - 1), st.booleans())
def test_non_canonical_keys_are_unusable(y: int, sign: bool) -> None:
    assert not is_usable_public_key((y | sign << 255).to_bytes(32, "little"))


def test_real_keys_are_usable() -> None:
    for n in range(20):
        assert is_usable_public_key(make_identity(n).public_key)
    assert not is_usable_public_key(bytes(31))


# --- static binding ---


def test_static_binding_verifies() -> None:
    identity = make_identity(7)
    assert verify_static_binding(
        identity.public_key, identity.static_public, identity.static_binding
    )
    # DESIGN 4: the binding is a signature over the domain || x25519 || ed25519.
    assert verify_signature(
        identity.public_key,
        DOMAIN_STATIC_BINDING,
        identity.static_public + identity.public_key,
        identity.static_binding,
    )


def test_static_binding_rejects_mixups() -> None:
    alice, bob = make_identity(8), make_identity(9)
    assert not verify_static_binding(alice.public_key, bob.static_public, alice.static_binding)
    assert not verify_static_binding(bob.public_key, alice.static_public, alice.static_binding)
    assert not verify_static_binding(alice.public_key, alice.static_public, bob.static_binding)
    # A binding is not a signature under any other domain.
    assert not verify_signature(
        alice.public_key,
        DOMAIN_MAILBOX,
        alice.static_public + alice.public_key,
        alice.static_binding,
    )
    assert not verify_static_binding(alice.public_key, alice.static_public[:31], bytes(64))


def test_binding_cache_caches_only_successes() -> None:
    cache = BindingCache(max_entries=2)
    a, b, c = make_identity(10), make_identity(11), make_identity(12)
    assert cache.check(a.public_key, a.static_public, a.static_binding)
    assert len(cache) == 1
    assert not cache.check(a.public_key, b.static_public, a.static_binding)
    assert not cache.check(a.public_key, b.static_public, a.static_binding)
    assert len(cache) == 1
    assert cache.check(b.public_key, b.static_public, b.static_binding)
    # Touch a so b is the least recently used, then c evicts b, not a.
    assert cache.check(a.public_key, a.static_public, a.static_binding)
    assert cache.check(c.public_key, c.static_public, c.static_binding)
    assert len(cache) == 2
    assert cache.check(a.public_key, a.static_public, a.static_binding)
    assert cache.check(b.public_key, b.static_public, b.static_binding)
    assert len(cache) == 2


def test_binding_cache_does_not_confuse_triples() -> None:
    cache = BindingCache()
    a, b = make_identity(13), make_identity(14)
    assert cache.check(a.public_key, a.static_public, a.static_binding)
    assert not cache.check(b.public_key, a.static_public, a.static_binding)
    assert not cache.check(a.public_key, b.static_public, a.static_binding)
    assert not cache.check(a.public_key, a.static_public, b.static_binding)


def test_binding_cache_needs_room() -> None:
    with pytest.raises(ValueError):
        BindingCache(max_entries=0)


# --- key file ---


def test_key_file_round_trip(tmp_path: Path) -> None:
    identity = make_identity(15)
    path = tmp_path / "identity"
    identity.save(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    loaded = Identity.load(path)
    assert loaded.private_bytes() == identity.private_bytes()
    assert loaded.address == identity.address
    assert loaded.static_public == identity.static_public
    assert [p.name for p in tmp_path.iterdir()] == ["identity"]  # no temp file left


def test_key_file_save_replaces_and_ignores_umask(tmp_path: Path) -> None:
    path = tmp_path / "identity"
    make_identity(16).save(path)
    old_umask = os.umask(0)
    try:
        make_identity(17).save(path)
    finally:
        os.umask(old_umask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert Identity.load(path).address == make_identity(17).address


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o620, 0o602, 0o660])
def test_key_file_refused_when_others_can_access_it(tmp_path: Path, mode: int) -> None:
    path = tmp_path / "identity"
    make_identity(18).save(path)
    path.chmod(mode)
    with pytest.raises(KeyFilePermissionError) as caught:
        Identity.load(path)
    message = str(caught.value)
    assert str(path) in message
    assert f"{mode:04o}" in message
    assert f"chmod 600 {path}" in message


def test_key_file_mode_0400_is_fine(tmp_path: Path) -> None:
    path = tmp_path / "identity"
    make_identity(19).save(path)
    path.chmod(0o400)
    assert Identity.load(path).address == make_identity(19).address


def test_missing_key_file(tmp_path: Path) -> None:
    with pytest.raises(InvalidIdentity, match="no identity key file"):
        Identity.load(tmp_path / "absent")


def _write_private(path: Path, data: bytes) -> None:
    path.write_bytes(data)
    path.chmod(0o600)


def _good_key_file() -> str:
    identity = make_identity(20)
    return (
        "pilot-identity v1\n"
        f"ed25519-seed {identity.private_bytes().hex()}\n"
        f"address {identity.address}\n"
    )


def test_documented_key_file_format_loads(tmp_path: Path) -> None:
    path = tmp_path / "identity"
    _write_private(path, _good_key_file().encode())
    assert Identity.load(path).address == make_identity(20).address
    make_identity(20).save(tmp_path / "saved")
    assert (tmp_path / "saved").read_text() == _good_key_file()


@pytest.mark.parametrize(
    "contents",
    [
        b"",
        b"\x00" * 100,
        b"\xff\xfe garbage",
        b"pilot-identity v2\n",
        _good_key_file().replace("v1", "v9").encode(),
        _good_key_file().replace("ed25519-seed ", "ed25519-seed zz").encode(),
        _good_key_file().replace("ed25519-seed ", "ed25519-seed 00").encode(),  # too long
        _good_key_file().encode()[:60],  # truncated seed
        "\n".join(_good_key_file().split("\n")[:2]).encode(),  # no address line
        (_good_key_file() + "extra line\n").encode(),
        # a valid seed that does not match the address line
        _good_key_file()
        .replace(make_identity(20).private_bytes().hex(), make_identity(99).private_bytes().hex())
        .encode(),
        b"x" * 5000,
    ],
)
def test_corrupt_key_files(tmp_path: Path, contents: bytes) -> None:
    path = tmp_path / "identity"
    _write_private(path, contents)
    with pytest.raises(InvalidIdentity) as caught:
        Identity.load(path)
    assert not isinstance(caught.value, KeyFilePermissionError)
    assert str(path) in str(caught.value)


@settings(max_examples=50, deadline=None)
@given(st.binary(max_size=300))
def test_any_key_file_bytes_raise_only_invalid_identity(
    tmp_path_factory: pytest.TempPathFactory, data: bytes
) -> None:
    directory = tmp_path_factory.mktemp("keys")
    path = directory / "identity"
    _write_private(path, data)
    try:
        Identity.load(path)
    except InvalidIdentity:
        pass
