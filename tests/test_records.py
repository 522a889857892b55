"""Identity records and locators: encoding, decoding, signatures, expiry, hostnames."""

from __future__ import annotations

import dataclasses
import hashlib
import ipaddress
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pilot_proto.errors import InvalidRecord
from pilot_proto.identity import (
    DOMAIN_IDENTITY_RECORD,
    DOMAIN_LOCATOR,
    Identity,
    verify_signature,
)
from pilot_proto.records import (
    MAX_ENDPOINTS,
    IdentityRecord,
    Locator,
    is_valid_hostname,
)

ALICE = Identity.from_private_bytes(hashlib.sha256(b"alice").digest())
BOB = Identity.from_private_bytes(hashlib.sha256(b"bob").digest())
EXPIRES = 1_900_000_000
NOW = 1_800_000_000.0

hostnames = st.from_regex(r"\A[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\Z")
u64 = st.integers(min_value=0, max_value=2**64 - 1)
ipv4_hosts = st.ip_addresses(v=4).map(str)


def _unmapped_ipv6_text(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str:
    # IPv4-mapped addresses are canonicalised to IPv4; test_locator_canonicalises_hosts
    # covers them, the round trip wants hosts that come back unchanged.
    assert isinstance(ip, ipaddress.IPv6Address)
    return "2001:db8::1" if ip.ipv4_mapped is not None else str(ip)


ipv6_hosts = st.ip_addresses(v=6).map(_unmapped_ipv6_text)
endpoints = st.tuples(st.one_of(ipv4_hosts, ipv6_hosts), st.integers(1, 65535))
endpoint_lists = st.lists(endpoints, max_size=MAX_ENDPOINTS, unique=True)


def alice_record(**changes: object) -> IdentityRecord:
    fields: dict[str, object] = {"hostname": "alice", "sequence": 7, "expires_at": EXPIRES}
    fields.update(changes)
    return IdentityRecord.create(ALICE, **fields)  # type: ignore[arg-type]


def alice_locator(**changes: object) -> Locator:
    fields: dict[str, object] = {
        "endpoints": [("192.0.2.1", 4000), ("2001:db8::7", 4001)],
        "sequence": 3,
        "expires_at": EXPIRES,
    }
    fields.update(changes)
    return Locator.create(ALICE, **fields)  # type: ignore[arg-type]


# --- hostnames ---


@pytest.mark.parametrize("name", ["a", "alice", "a-b", "0", "123", "x" * 63, "a1-2b", "9lives"])
def test_valid_hostnames(name: str) -> None:
    assert is_valid_hostname(name)


@pytest.mark.parametrize(
    "name",
    [
        "",
        "-a",
        "a-",
        "-",
        "Alice",
        "a.b",
        "a_b",
        "a b",
        "x" * 64,
        "caf\u00e9",
        "\u0661\u0662",  # Arabic-Indic digits: \d would take them
        "a\n",
        "a\x00",
        None,
        42,
        b"alice",
    ],
)
def test_invalid_hostnames(name: object) -> None:
    assert not is_valid_hostname(name)


@pytest.mark.parametrize("name", ["", "Alice", "a-", "x" * 64, "a.b"])
def test_create_refuses_invalid_hostname(name: str) -> None:
    with pytest.raises(InvalidRecord, match="hostname"):
        alice_record(hostname=name)


# --- identity records ---


def test_identity_record_fields_and_layout() -> None:
    record = alice_record()
    assert record.public_key == ALICE.public_key
    assert record.static_public == ALICE.static_public
    assert record.static_binding == ALICE.static_binding
    assert record.address == ALICE.address
    data = record.encode()
    # version, ed25519, x25519, binding, sequence, expires_at, hostname length, hostname, sig
    assert len(data) == 1 + 32 + 32 + 64 + 8 + 8 + 1 + len("alice") + 64
    assert data[0] == 1
    assert data[1:33] == ALICE.public_key
    assert data[33:65] == ALICE.static_public
    assert data[65:129] == ALICE.static_binding
    assert struct.unpack(">QQB", data[129:146]) == (7, EXPIRES, 5)
    assert data[146:151] == b"alice"
    assert data[151:] == record.signature
    # The signature covers the domain and every byte before it, version included.
    assert verify_signature(ALICE.public_key, DOMAIN_IDENTITY_RECORD, data[:151], data[151:])


def test_identity_record_without_hostname() -> None:
    record = alice_record(hostname=None)
    data = record.encode()
    assert data[145] == 0
    assert len(data) == 146 + 64
    decoded = IdentityRecord.decode(data)
    assert decoded.hostname is None
    assert decoded.verify(NOW)


@settings(deadline=None, max_examples=50)
@given(st.one_of(st.none(), hostnames), u64, u64)
def test_identity_record_round_trip(hostname: str | None, sequence: int, expires_at: int) -> None:
    record = IdentityRecord.create(
        ALICE, hostname=hostname, sequence=sequence, expires_at=expires_at
    )
    data = record.encode()
    decoded = IdentityRecord.decode(data)
    assert decoded == record
    assert decoded.encode() == data
    assert decoded.verify()


def test_identity_record_expiry() -> None:
    record = alice_record(expires_at=1000)
    assert record.verify()
    assert record.verify(999.999)
    assert not record.verify(1000)
    assert not record.verify(1000.5)
    assert not record.verify(float("nan"))


def test_tampered_identity_record_fails_verify() -> None:
    record = alice_record()
    assert record.verify(NOW)
    for tampered in (
        dataclasses.replace(record, hostname="mallory"),
        dataclasses.replace(record, hostname=None),
        dataclasses.replace(record, sequence=8),
        dataclasses.replace(record, expires_at=EXPIRES + 1),
        dataclasses.replace(record, static_public=BOB.static_public),
        dataclasses.replace(record, public_key=BOB.public_key),
        dataclasses.replace(record, signature=bytes(64)),
    ):
        assert not tampered.verify(NOW)


def test_every_flipped_bit_of_an_identity_record_is_caught() -> None:
    data = alice_record().encode()
    for index in range(len(data)):
        for bit in (0, 7):
            damaged = bytearray(data)
            damaged[index] ^= 1 << bit
            try:
                record = IdentityRecord.decode(bytes(damaged))
            except InvalidRecord:
                continue
            assert not record.verify(), f"byte {index} bit {bit}"


def test_record_with_a_foreign_binding_fails() -> None:
    # Alice claims Bob's X25519 key with Bob's binding: the binding names Bob's Ed25519 key.
    unsigned = IdentityRecord(
        public_key=ALICE.public_key,
        static_public=BOB.static_public,
        static_binding=BOB.static_binding,
        hostname=None,
        sequence=1,
        expires_at=EXPIRES,
        signature=bytes(64),
    )
    signed = dataclasses.replace(
        unsigned,
        signature=ALICE.sign(DOMAIN_IDENTITY_RECORD, unsigned.encode()[:-64]),
    )
    assert verify_signature(
        ALICE.public_key, DOMAIN_IDENTITY_RECORD, signed.encode()[:-64], signed.signature
    )
    assert not signed.verify()


def test_identity_record_signature_is_domain_separated() -> None:
    record = alice_record()
    signed_part = record.encode()[:-64]
    forged = dataclasses.replace(record, signature=ALICE.sign(DOMAIN_LOCATOR, signed_part))
    assert not forged.verify()


@pytest.mark.parametrize(
    ("cut", "extra"),
    [(1, b""), (64, b""), (100, b""), (0, b"\x00"), (0, b"trailing")],
)
def test_identity_record_length_errors(cut: int, extra: bytes) -> None:
    data = alice_record().encode()
    with pytest.raises(InvalidRecord):
        IdentityRecord.decode(data[: len(data) - cut] + extra)


def _with_hostname_bytes(name: bytes) -> bytes:
    data = alice_record(hostname=None).encode()
    return data[:145] + bytes([len(name)]) + name + data[146:]


@pytest.mark.parametrize("name", [b"Alice", b"a-", b"x" * 64, b"\xff\xfe", b"a.b", b"\xc3\xa9"])
def test_identity_record_bad_hostname_bytes(name: bytes) -> None:
    with pytest.raises(InvalidRecord):
        IdentityRecord.decode(_with_hostname_bytes(name))


def test_identity_record_unknown_version() -> None:
    data = alice_record().encode()
    with pytest.raises(InvalidRecord, match="version"):
        IdentityRecord.decode(b"\x02" + data[1:])


@pytest.mark.parametrize(
    "changes",
    [
        {"sequence": -1},
        {"sequence": 2**64},
        {"expires_at": -1},
        {"expires_at": 2**64},
        {"sequence": True},
        {"sequence": 1.0},
    ],
)
def test_identity_record_create_range_checks(changes: dict[str, object]) -> None:
    with pytest.raises(InvalidRecord):
        alice_record(**changes)


def test_identity_record_constructor_checks_sizes() -> None:
    record = alice_record()
    with pytest.raises(InvalidRecord):
        dataclasses.replace(record, public_key=bytes(31))
    with pytest.raises(InvalidRecord):
        dataclasses.replace(record, signature=bytes(63))
    with pytest.raises(InvalidRecord):
        dataclasses.replace(record, static_binding=bytearray(64))  # type: ignore[arg-type]


@settings(max_examples=300)
@given(st.binary(max_size=300))
def test_any_bytes_decode_as_identity_record_or_raise_invalid_record(data: bytes) -> None:
    try:
        record = IdentityRecord.decode(data)
    except InvalidRecord:
        return
    assert record.encode() == data


@settings(max_examples=200)
@given(st.binary(min_size=146 - 1, max_size=146 + 63 + 64 + 1), st.integers(0, 63))
def test_near_valid_identity_records_raise_only_invalid_record(data: bytes, length: int) -> None:
    # Version 1 and a plausible hostname length, so decoding gets past the first checks.
    candidate = b"\x01" + data[1:145] + bytes([length]) + data[146:]
    try:
        record = IdentityRecord.decode(candidate)
    except InvalidRecord:
        return
    assert record.encode() == candidate
    assert record.verify() is False


# --- locators ---


def test_locator_fields_and_layout() -> None:
    locator = alice_locator()
    assert locator.address == ALICE.address
    assert locator.endpoints == (("192.0.2.1", 4000), ("2001:db8::7", 4001))
    data = locator.encode()
    assert data[0] == 1
    assert data[1:33] == ALICE.public_key
    assert struct.unpack(">QQB", data[33:50]) == (3, EXPIRES, 2)
    assert data[50:57] == b"\x04" + bytes([192, 0, 2, 1]) + struct.pack(">H", 4000)
    v6 = ipaddress.IPv6Address("2001:db8::7").packed
    assert data[57:76] == b"\x06" + v6 + struct.pack(">H", 4001)
    assert data[76:] == locator.signature
    assert len(data) == 76 + 64
    assert verify_signature(ALICE.public_key, DOMAIN_LOCATOR, data[:76], data[76:])


@settings(deadline=None, max_examples=50)
@given(endpoint_lists, u64, u64)
def test_locator_round_trip(
    endpoint_list: list[tuple[str, int]], sequence: int, expires_at: int
) -> None:
    locator = Locator.create(
        ALICE, endpoints=endpoint_list, sequence=sequence, expires_at=expires_at
    )
    assert locator.endpoints == tuple(endpoint_list)
    data = locator.encode()
    decoded = Locator.decode(data)
    assert decoded == locator
    assert decoded.encode() == data
    assert decoded.verify()


def test_locator_canonicalises_hosts() -> None:
    locator = alice_locator(
        endpoints=[("::ffff:192.0.2.9", 1), ("2001:DB8:0:0::1", 2), ("2001:db8::0:2", 3)]
    )
    assert locator.endpoints == (("192.0.2.9", 1), ("2001:db8::1", 2), ("2001:db8::2", 3))
    assert Locator.decode(locator.encode()) == locator


@pytest.mark.parametrize(
    "bad",
    [
        [("example.com", 1)],
        [("192.0.2.1", 0)],
        [("192.0.2.1", 65536)],
        [("192.0.2.1", -1)],
        [("192.0.2.1", True)],
        [("192.0.2.1", "80")],
        [("fe80::1%eth0", 1)],
        [("192.0.2.256", 1)],
        [("192.0.2.1", 1), ("192.0.2.1", 1)],
        [("192.0.2.1", 1), ("::ffff:192.0.2.1", 1)],  # the same endpoint twice
        [("192.0.2.1",)],
        [(b"192.0.2.1", 1)],
        [("192.0.2.1", 1, 2)],
        [(f"192.0.2.{i}", 1) for i in range(MAX_ENDPOINTS + 1)],
    ],
)
def test_locator_create_refuses_bad_endpoints(bad: list[tuple[object, ...]]) -> None:
    with pytest.raises(InvalidRecord):
        alice_locator(endpoints=bad)


def test_locator_allows_empty_and_maximum() -> None:
    assert Locator.decode(alice_locator(endpoints=[]).encode()).endpoints == ()
    many = [(f"198.51.100.{i}", 1000 + i) for i in range(MAX_ENDPOINTS)]
    assert Locator.decode(alice_locator(endpoints=many).encode()).verify()


def test_locator_constructor_refuses_non_canonical_hosts() -> None:
    locator = alice_locator()
    with pytest.raises(InvalidRecord, match="canonical"):
        dataclasses.replace(locator, endpoints=(("2001:DB8::7", 4001),))
    with pytest.raises(InvalidRecord):
        dataclasses.replace(locator, endpoints=[("192.0.2.1", 4000)])  # type: ignore[arg-type]


def test_locator_expiry_and_tampering() -> None:
    locator = alice_locator(expires_at=500)
    assert locator.verify(499)
    assert not locator.verify(500)
    fresh = alice_locator()
    assert fresh.verify(NOW)
    for tampered in (
        dataclasses.replace(fresh, endpoints=(("192.0.2.66", 4000),)),
        dataclasses.replace(fresh, endpoints=fresh.endpoints[:1]),
        dataclasses.replace(fresh, sequence=4),
        dataclasses.replace(fresh, expires_at=EXPIRES + 1),
        dataclasses.replace(fresh, public_key=BOB.public_key),
    ):
        assert not tampered.verify(NOW)


def test_locator_signature_is_domain_separated() -> None:
    locator = alice_locator()
    signed_part = locator.encode()[:-64]
    forged = dataclasses.replace(locator, signature=ALICE.sign(DOMAIN_IDENTITY_RECORD, signed_part))
    assert not forged.verify()


def test_every_flipped_bit_of_a_locator_is_caught() -> None:
    data = alice_locator().encode()
    for index in range(len(data)):
        damaged = bytearray(data)
        damaged[index] ^= 0x01
        try:
            locator = Locator.decode(bytes(damaged))
        except InvalidRecord:
            continue
        assert not locator.verify(), f"byte {index}"


def _locator_with_entries(entries: bytes, count: int) -> bytes:
    head = alice_locator(endpoints=[]).encode()[:49]
    return head + bytes([count]) + entries + bytes(64)


@pytest.mark.parametrize(
    ("entries", "count"),
    [
        (b"\x05" + bytes(6), 1),  # unknown family
        (b"\x04" + bytes(5), 1),  # truncated IPv4 entry
        (b"\x06" + bytes(17), 1),  # truncated IPv6 entry
        (b"\x04" + bytes(6), 2),  # fewer entries than the count
        (b"\x04" + bytes(6) + b"\x04", 1),  # more bytes than the count
        (b"\x06" + ipaddress.IPv6Address("::ffff:192.0.2.1").packed + b"\x00\x01", 1),
        (b"\x04\xc0\x00\x02\x01\x00\x00", 1),  # port 0
        (b"\x04\xc0\x00\x02\x01\x00\x01" * 2, 2),  # repeated endpoint
        (b"", MAX_ENDPOINTS + 1),
        (b"", 255),
    ],
)
def test_locator_decode_errors(entries: bytes, count: int) -> None:
    with pytest.raises(InvalidRecord):
        Locator.decode(_locator_with_entries(entries, count))


def test_locator_decode_wrong_version_and_truncation() -> None:
    data = alice_locator().encode()
    with pytest.raises(InvalidRecord, match="version"):
        Locator.decode(b"\x00" + data[1:])
    for cut in range(1, len(data)):
        with pytest.raises(InvalidRecord):
            Locator.decode(data[:cut])
    with pytest.raises(InvalidRecord):
        Locator.decode(data + b"\x00")


@settings(max_examples=300)
@given(st.binary(max_size=400))
def test_any_bytes_decode_as_locator_or_raise_invalid_record(data: bytes) -> None:
    try:
        locator = Locator.decode(data)
    except InvalidRecord:
        return
    assert locator.encode() == data


@settings(max_examples=300)
@given(
    st.integers(0, 17),
    st.lists(
        st.tuples(st.sampled_from([4, 6, 0, 5]), st.binary(min_size=4, max_size=16), u64),
        max_size=18,
    ),
    st.binary(max_size=70),
)
def test_structured_locator_garbage_raises_only_invalid_record(
    count: int, entries: list[tuple[int, bytes, int]], tail: bytes
) -> None:
    body = b"".join(
        bytes([family]) + raw + (port % 65536).to_bytes(2, "big") for family, raw, port in entries
    )
    data = b"\x01" + bytes(48) + bytes([count]) + body + tail
    try:
        locator = Locator.decode(data)
    except InvalidRecord:
        return
    assert locator.encode() == data
    assert locator.verify() is False
