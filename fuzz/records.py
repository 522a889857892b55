"""Harness: identity records and locators (records.py), as a rendezvous and every client
decode them.

`decode` raises only `InvalidRecord`; what decodes re-encodes to the same bytes (the
encodings are canonical) and `verify` never raises.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pilot_proto.errors import InvalidRecord
from pilot_proto.records import IdentityRecord, Locator

if TYPE_CHECKING:
    from .traffic import Traffic



def test_one_input(data: bytes) -> None:
    for codec in (IdentityRecord, Locator):
        try:
            record = codec.decode(data)
        except InvalidRecord:
            continue
        assert record.encode() == data, "decode accepted a non-canonical encoding"
        record.verify()
        record.verify(now_wall=1_700_000_000.0)
        record.address  # noqa: B018 - the property derives the address: must not raise


def seeds(traffic: Traffic) -> list[bytes]:
    return [*traffic.identity_records, *traffic.locators]
