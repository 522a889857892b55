"""HandshakeState: runs any HandshakePattern, one message at a time (Noise section 5.3).

A message that fails to read (bad tag, short, low-order key) leaves the state exactly
as it was, so a forged or corrupted datagram cannot kill a handshake in progress: the
genuine message can still be read afterwards.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey

from ..errors import NoiseError
from .cipher_state import CipherState
from .dh import dh, private_key, public_bytes, public_key
from .patterns import PSK_TOKEN, HandshakePattern
from .protocol import NoiseProtocol, parse_protocol_name
from .suite import DHLEN, MAX_MESSAGE_LEN, PSKLEN, TAGLEN
from .symmetric_state import SymmetricState


class HandshakeState:
    """One party's side of a Noise handshake."""

    __slots__ = (
        "_e",
        "_e_public",
        "_index",
        "_initiator",
        "_pattern",
        "_protocol",
        "_psk_index",
        "_psks",
        "_re",
        "_re_public",
        "_rng",
        "_rs",
        "_rs_public",
        "_s",
        "_s_public",
        "_split",
        "_symmetric",
        "_uses_psk",
    )

    def __init__(
        self,
        protocol: str | NoiseProtocol,
        *,
        initiator: bool,
        prologue: bytes = b"",
        s: bytes | X25519PrivateKey | None = None,
        e: bytes | X25519PrivateKey | None = None,
        rs: bytes | None = None,
        re: bytes | None = None,
        psks: Sequence[bytes] = (),
        rng: Callable[[int], bytes] | None = None,
    ) -> None:
        if not isinstance(protocol, NoiseProtocol):
            protocol = parse_protocol_name(protocol)
        pattern = protocol.pattern
        self._protocol = protocol
        self._pattern = pattern
        self._initiator = bool(initiator)
        self._rng = rng
        self._index = 0
        self._split: tuple[CipherState, CipherState] | None = None
        role = "initiator" if initiator else "responder"
        own_pre, peer_pre = (
            (pattern.initiator_pre_messages, pattern.responder_pre_messages)
            if initiator
            else (pattern.responder_pre_messages, pattern.initiator_pre_messages)
        )

        self._s: X25519PrivateKey | None = None
        self._s_public: bytes | None = None
        if s is not None:
            self._s = private_key(s, "s")
            self._s_public = public_bytes(self._s)
        elif _uses_own_static(pattern, self._initiator):
            raise NoiseError(f"{pattern.name} needs the {role}'s static private key s")

        self._e: X25519PrivateKey | None = None
        self._e_public: bytes | None = None
        if e is not None:
            self._e = private_key(e, "e")
            self._e_public = public_bytes(self._e)
        elif "e" in own_pre:
            raise NoiseError(f"{pattern.name} needs the {role}'s pre-shared ephemeral key e")
        elif rng is None and _sends_ephemeral(pattern, self._initiator):
            raise NoiseError("rng is required to generate the ephemeral key")

        self._rs: X25519PublicKey | None = None
        self._rs_public: bytes | None = None
        self._re: X25519PublicKey | None = None
        self._re_public: bytes | None = None
        for token, given in (("s", rs), ("e", re)):
            if given is None and token in peer_pre:
                raise NoiseError(f"{pattern.name} needs the peer's public key r{token}")
            if given is not None and token not in peer_pre:
                raise NoiseError(
                    f"r{token} given, but {pattern.name} has the peer transmit that key"
                )
        if rs is not None:
            self._rs, self._rs_public = public_key(rs, "rs"), bytes(rs)
        if re is not None:
            self._re, self._re_public = public_key(re, "re"), bytes(re)

        # Section 9.2: one 32-byte psk per "psk" token, used in order.
        if len(psks) != pattern.psk_count:
            raise NoiseError(f"{pattern.name} needs {pattern.psk_count} psks, got {len(psks)}")
        for psk in psks:
            if not isinstance(psk, bytes | bytearray) or len(psk) != PSKLEN:
                raise NoiseError(f"each psk must be {PSKLEN} bytes")
        self._psks = tuple(bytes(psk) for psk in psks)
        self._psk_index = 0
        self._uses_psk = pattern.psk_count > 0

        # Section 5.3 Initialize(): protocol name, prologue, then the pre-message keys,
        # the initiator's first.
        symmetric = SymmetricState(protocol.name.encode("ascii"))
        symmetric.mix_hash(bytes(prologue))
        for owner_is_initiator, pre in (
            (True, pattern.initiator_pre_messages),
            (False, pattern.responder_pre_messages),
        ):
            local = owner_is_initiator == self._initiator
            for token in pre:
                if token == "s":
                    key = self._s_public if local else self._rs_public
                else:
                    key = self._e_public if local else self._re_public
                assert key is not None  # guaranteed by the checks above
                symmetric.mix_hash(key)
                if token == "e" and self._uses_psk:
                    # Section 9.2: with psks every "e", pre-message ones too, also MixKeys.
                    symmetric.mix_key(key)
        self._symmetric = symmetric

    # -- state ------------------------------------------------------------------

    @property
    def protocol(self) -> NoiseProtocol:
        return self._protocol

    @property
    def is_initiator(self) -> bool:
        return self._initiator

    @property
    def message_index(self) -> int:
        """How many handshake messages have been written or read so far."""
        return self._index

    @property
    def complete(self) -> bool:
        return self._index == len(self._pattern.messages)

    @property
    def handshake_hash(self) -> bytes:
        """h: after completion, the channel-binding value of section 11.2."""
        return self._symmetric.handshake_hash

    @property
    def remote_static(self) -> bytes | None:
        return self._rs_public

    @property
    def remote_ephemeral(self) -> bytes | None:
        return self._re_public

    @property
    def local_static_public(self) -> bytes | None:
        return self._s_public

    @property
    def local_ephemeral_public(self) -> bytes | None:
        return self._e_public

    def split(self) -> tuple[CipherState, CipherState]:
        """(initiator-to-responder, responder-to-initiator) CipherStates, once complete."""
        if self._split is None:
            raise NoiseError(
                f"handshake not complete: {self._index} of "
                f"{len(self._pattern.messages)} messages processed"
            )
        return self._split

    # -- messages ---------------------------------------------------------------

    def write_message(self, payload: bytes = b"") -> bytes:
        """WriteMessage(payload): the next handshake message, which the caller sends."""
        tokens = self._next_tokens(writing=True)
        symmetric = self._symmetric.copy()
        psk_index = self._psk_index
        parts: list[bytes] = []
        for token in tokens:
            if token == "e":
                ephemeral = self._ephemeral_to_send()
                parts.append(ephemeral)
                symmetric.mix_hash(ephemeral)
                if self._uses_psk:
                    symmetric.mix_key(ephemeral)
            elif token == "s":
                assert self._s_public is not None  # checked at construction
                parts.append(symmetric.encrypt_and_hash(self._s_public))
            elif token == PSK_TOKEN:
                symmetric.mix_key_and_hash(self._psks[psk_index])
                psk_index += 1
            else:
                symmetric.mix_key(self._dh(token, self._re, self._rs))
        parts.append(symmetric.encrypt_and_hash(bytes(payload)))
        message = b"".join(parts)
        if len(message) > MAX_MESSAGE_LEN:
            raise NoiseError(
                f"handshake message of {len(message)} bytes exceeds {MAX_MESSAGE_LEN} bytes"
            )
        self._commit(symmetric, psk_index)
        return message

    def read_message(self, message: bytes) -> bytes:
        """ReadMessage(message): the payload; NoiseError (state unchanged) if it fails."""
        tokens = self._next_tokens(writing=False)
        if len(message) > MAX_MESSAGE_LEN:
            raise NoiseError(f"handshake message of {len(message)} bytes exceeds {MAX_MESSAGE_LEN}")
        message = bytes(message)
        symmetric = self._symmetric.copy()
        psk_index = self._psk_index
        re, re_public = self._re, self._re_public
        rs, rs_public = self._rs, self._rs_public
        offset = 0
        for token in tokens:
            if token == "e":
                re_public = _take(message, offset, DHLEN, "ephemeral key")
                offset += DHLEN
                re = public_key(re_public, "remote ephemeral key")
                symmetric.mix_hash(re_public)
                if self._uses_psk:
                    symmetric.mix_key(re_public)
            elif token == "s":
                # Section 7.1: the static key is encrypted (with a tag) once a key exists.
                size = DHLEN + TAGLEN if symmetric.has_key else DHLEN
                sealed = _take(message, offset, size, "static key")
                offset += size
                rs_public = symmetric.decrypt_and_hash(sealed)
                rs = public_key(rs_public, "remote static key")
            elif token == PSK_TOKEN:
                symmetric.mix_key_and_hash(self._psks[psk_index])
                psk_index += 1
            else:
                symmetric.mix_key(self._dh(token, re, rs))
        payload = symmetric.decrypt_and_hash(message[offset:])
        self._re, self._re_public = re, re_public
        self._rs, self._rs_public = rs, rs_public
        self._commit(symmetric, psk_index)
        return payload

    # -- internals --------------------------------------------------------------

    def _next_tokens(self, *, writing: bool) -> tuple[str, ...]:
        messages = self._pattern.messages
        index = self._index
        if index >= len(messages):
            raise NoiseError("handshake already complete: use the CipherStates from split()")
        ours = self._pattern.sender_is_initiator(index) == self._initiator
        if writing and not ours:
            raise NoiseError(f"cannot write message {index + 1}: it is the peer's to send")
        if not writing and ours:
            raise NoiseError(f"cannot read message {index + 1}: it is ours to send")
        return messages[index]

    def _commit(self, symmetric: SymmetricState, psk_index: int) -> None:
        self._symmetric = symmetric
        self._psk_index = psk_index
        self._index += 1
        if self._index == len(self._pattern.messages):
            self._split = symmetric.split()

    def _ephemeral_to_send(self) -> bytes:
        if self._e_public is None:
            assert self._rng is not None  # checked at construction
            seed = self._rng(DHLEN)
            if len(seed) != DHLEN:
                raise NoiseError(f"rng returned {len(seed)} bytes, wanted {DHLEN}")
            self._e = X25519PrivateKey.from_private_bytes(seed)
            self._e_public = public_bytes(self._e)
        return self._e_public

    def _dh(self, token: str, re: X25519PublicKey | None, rs: X25519PublicKey | None) -> bytes:
        # Section 5.3: in "xy" x is the initiator's key and y the responder's; each side
        # uses its own private half and the peer's public half.
        if token == "ee":
            local, remote = self._e, re
        elif token == "ss":
            local, remote = self._s, rs
        elif (token == "es") == self._initiator:
            local, remote = self._e, rs
        else:
            local, remote = self._s, re
        if local is None or remote is None:  # pragma: no cover - patterns are validated
            raise NoiseError(f"{token!r} before its keys are known")
        return dh(local, remote)


def _take(message: bytes, offset: int, size: int, what: str) -> bytes:
    chunk = message[offset : offset + size]
    if len(chunk) != size:
        raise NoiseError(f"handshake message too short for the {what}")
    return chunk


def _uses_own_static(pattern: HandshakePattern, initiator: bool) -> bool:
    own_pre = pattern.initiator_pre_messages if initiator else pattern.responder_pre_messages
    if "s" in own_pre:
        return True
    # In "xy" x is the initiator's key, y the responder's.
    own_static_dh = ("se", "ss") if initiator else ("es", "ss")
    for index, tokens in enumerate(pattern.messages):
        ours = pattern.sender_is_initiator(index) == initiator
        if any(token in own_static_dh or (ours and token == "s") for token in tokens):
            return True
    return False


def _sends_ephemeral(pattern: HandshakePattern, initiator: bool) -> bool:
    return any(
        "e" in tokens
        for index, tokens in enumerate(pattern.messages)
        if pattern.sender_is_initiator(index) == initiator
    )
