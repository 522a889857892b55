"""Reliable delivery with one peer, sans-IO: the object the Node owns per peer.

The Node feeds authenticated plaintext payloads to `receive_payload`, seals and sends what
`payloads_to_send` returns (each payload plus `packet_overhead` fits the path MTU), arms
`get_timer` and hands `next_event` results to the application. Everything else (frames,
streams, messages, loss recovery, congestion, path MTU) is composed here from the modules
next to this one.

Reading streams is a pull API, so an application can stop reading: `StreamReadable` says
data is waiting (once, until a read drains the buffer), `read_stream` takes it, and only
reading returns credit to the peer. Writing is bounded: `send_stream` accepts at most
`stream_send_capacity` bytes and `StreamWritable` says when there is room again.
Messages are pushed whole (`MessageReceived`); their reassembly memory is bounded by the
message window, and a RECEIPT goes back only after `confirm_persisted`.
"""

from __future__ import annotations

import enum
import struct
from collections import Counter, deque
from collections.abc import Callable, Collection
from typing import Any

from ..errors import (
    ConnectionClosedError,
    InvalidMessageType,
    LocalProtocolError,
    MessageTooLarge,
    UnknownMessage,
)
from ..events import Event, TrustAccepted, TrustRejected, TrustRequested
from .acks import AckTracker
from .config import INITIAL_MESSAGE_CREDIT, DeliveryConfig
from .congestion import create_congestion_controller
from .control import KIND_CONTROL, PROBE_CHALLENGE, ControlFrames
from .events import (
    ConnectionClosed,
    DatagramReceived,
    MessageDelivered,
    MessageFailed,
    MessageReceived,
    PeerUnresponsive,
    PongReceived,
    StreamReset,
)
from .frames import (
    CHALLENGE_SIZE,
    COPY_LIMIT,
    MESSAGE_ID_SIZE,
    MESSAGE_TYPES,
    Ack,
    Close,
    Datagram,
    Frame,
    FrameDecodeError,
    ImmediateAck,
    MaxData,
    MaxMessageData,
    MaxStreamData,
    Message,
    Padding,
    Ping,
    Pong,
    Receipt,
    Refused,
    Stream,
    TrustAccept,
    TrustReject,
    TrustRequest,
    decode_ack,
    decode_frames,
    decode_payload,
    encode_frame,
)
from .frames import StreamReset as StreamResetFrame
from .messages import KIND_MESSAGE, IncomingMessages, OutgoingMessage, OutgoingMessages
from .pacing import Pacer
from .pmtu import PathMtu, PmtuState
from .recovery import LossRecovery, SentPacket
from .refusals import RefusalLimiter
from .send_stream import KIND_STREAM, SendStream
from .streams import KIND_MAX_DATA, KIND_MAX_STREAM_DATA, ResetCode, StreamTable
from .varint import MAX_VARINT, encode_varint, varint_size
from .varint import read_varint_unchecked as _read_varint

__all__ = [
    "CONNECTION_TRANSITIONS",
    "Connection",
    "ConnectionEvent",
    "ConnectionState",
    "ResetCode",
]

# Kinds of sent-frame records (first tuple element): KIND_STREAM (send_stream.py),
# KIND_MESSAGE (messages.py), KIND_CONTROL (control.py), KIND_MAX_DATA and
# KIND_MAX_STREAM_DATA (streams.py), and:
KIND_MAX_MESSAGE_DATA = 5

_SEARCHING = PmtuState.SEARCHING
_pack_u16 = struct.Struct(">H").pack
_pack_u32 = struct.Struct(">I").pack
_unpack_u32 = struct.Struct(">I").unpack_from
_unpack_offset_length = struct.Struct(">IH").unpack_from

# How many delivered message ids a connection remembers for duplicate detection.
_RECENT_MESSAGE_IDS = 4096
_ACK_FRAME_RESERVE = 64  # room kept for control frames when sizing data
_ID_BATCH = 32  # message ids drawn from rng at once
# Refused messages of an untrusted peer that may wait out of order (their place only).
_REFUSED_WAITING = 32
# TRUST_REQUESTs with distinct ids one connection passes on (a peer asks a few times at most).
_MAX_TRUST_REQUESTS = 8
# Stands in for refused frames so the packet is still acknowledged like any other:
# a PING with the all-zero challenge is ack-eliciting and never answered.
_ACK_ELICITING_PLACEHOLDER = Ping(PROBE_CHALLENGE)


class ConnectionState(enum.Enum):
    OPEN = "open"
    CLOSING = "closing"  # we sent CLOSE; stray packets get it again (RFC 9000 section 10.2.1)
    DRAINING = "draining"  # the peer sent CLOSE; we send nothing (RFC 9000 section 10.2.2)
    CLOSED = "closed"


# Enum members as module constants: `Enum.MEMBER` is a slow lookup on hot paths.
_CONN_CLOSED = ConnectionState.CLOSED
_CONN_CLOSING = ConnectionState.CLOSING
_CONN_OPEN = ConnectionState.OPEN


class ConnectionEvent(enum.Enum):
    LOCAL_CLOSE = "local_close"
    PEER_CLOSE = "peer_close"
    TIMEOUT = "timeout"  # the closing or draining period ended
    REPLACED = "replaced"  # successor() took over


CONNECTION_TRANSITIONS: dict[tuple[ConnectionState, ConnectionEvent], ConnectionState] = {
    (ConnectionState.OPEN, ConnectionEvent.LOCAL_CLOSE): ConnectionState.CLOSING,
    (ConnectionState.OPEN, ConnectionEvent.PEER_CLOSE): ConnectionState.DRAINING,
    (ConnectionState.OPEN, ConnectionEvent.REPLACED): ConnectionState.CLOSED,
    (ConnectionState.CLOSING, ConnectionEvent.PEER_CLOSE): ConnectionState.DRAINING,
    (ConnectionState.CLOSING, ConnectionEvent.TIMEOUT): ConnectionState.CLOSED,
    (ConnectionState.CLOSING, ConnectionEvent.REPLACED): ConnectionState.CLOSED,
    (ConnectionState.DRAINING, ConnectionEvent.TIMEOUT): ConnectionState.CLOSED,
    (ConnectionState.DRAINING, ConnectionEvent.REPLACED): ConnectionState.CLOSED,
}


class Connection:
    """Reliable, flow- and congestion-controlled delivery to one peer.

    Stream ids: streams we open are even, streams the peer opens are odd (streams.py).
    """

    def __init__(
        self,
        address: str,
        config: DeliveryConfig,
        *,
        rng: Callable[[int], bytes],
        now: float,
        listening_ports: Collection[int] | Callable[[int], bool],
    ) -> None:
        self.address = address
        self.config = config
        #: Bytes the Node adds around each payload (header + AEAD tag; relaying adds more).
        self.packet_overhead = 29
        self._stats: Counter[str] = Counter()
        # The per-packet counters are plain ints (cheaper), folded into `stats` on read.
        self._packets_sent = 0
        self._packets_received = 0
        self._ack_only_sent = 0
        self._rng = rng
        self._id_pool = b""
        self._id_position = 0
        self._listening = listening_ports
        self._events: deque[Event] = deque()
        #: The same queue, public for the Node: it drains events only when there are some
        #: (a test cheaper than a `next_event` call after every packet).
        self.events = self._events
        self._state = _CONN_OPEN
        self._close_frame: bytes | None = None
        self._close_pending = False
        self._close_deadline: float | None = None
        self._last_close_sent = float("-inf")

        # get_timer's answer, kept until something it depends on may have changed: every
        # method that can change a timer input clears `_timer_valid` first.
        self._timer_valid = False
        self._timer_value: float | None = None

        self._next_packet_number = 0
        self._acks = AckTracker(
            config.max_ack_delay, config.ack_eliciting_threshold, config.max_ack_ranges
        )
        self._pmtu = self._new_path_mtu()
        self._recovery = self._new_recovery()
        self._pacer = Pacer(config.pacing, config.pacing_burst_packets)
        self._pacing_until: float | None = None
        self._probes_due = 0
        self._unresponsive = False
        # Unresponsive after as long as that many PTOs with backoff: 1 + 2 + 4 ...
        self._silence_periods = (1 << config.unresponsive_pto_count) - 1

        # The send ring: streams and the message queue with something to send, served
        # round robin, one packet's worth each in turn.
        self._ready: deque[SendStream | OutgoingMessages] = deque()
        self._control = ControlFrames(self._stats, config.datagram_queue_limit)
        self._streams = StreamTable(
            address,
            config,
            listening_ports,
            events=self._events,
            stats=self._stats,
            control=self._control.reliable,
            ready=self._ready,
        )

        self._outgoing = OutgoingMessages(INITIAL_MESSAGE_CREDIT)
        self._incoming = IncomingMessages(
            INITIAL_MESSAGE_CREDIT,
            config.message_receive_window,
            config.max_message_size,
            self._deliver_message,
        )
        self._unconfirmed: set[bytes] = set()
        # Ids of messages delivered lately (carried into a successor): a sender that
        # restarted resends what it had no RECEIPT for; we answer instead of redelivering.
        self._recent_ids: set[bytes] = set()
        self._recent_order: deque[bytes] = deque()

        # Grant our configured window at once (the protocol's initial credit is small).
        self._max_message_data_due = self._incoming.window.update_due()
        #: Made on the first payload from the peer while it is not trusted.
        self._refusals: RefusalLimiter | None = None
        #: Trust frames seen (kind, request id), oldest first; made on the first one.
        self._trust_seen: dict[tuple[type, bytes], None] | None = None

    # ================================================================== construction

    def _new_path_mtu(self) -> PathMtu:
        config = self.config
        return PathMtu(
            base=config.base_datagram_size,
            maximum=config.max_datagram_size,
            forced=config.forced_datagram_size,
            max_probes=config.pmtu_max_probes,
            granularity=config.pmtu_search_granularity,
            raise_interval=config.pmtu_raise_interval,
        )

    def _new_recovery(self) -> LossRecovery:
        config = self.config
        cc = create_congestion_controller(
            config.congestion_control,
            self._pmtu.current,
            config.initial_window_packets,
            config.minimum_window_packets,
            config.loss_reduction_factor,
        )
        return LossRecovery(
            cc,
            initial_rtt=config.initial_rtt,
            max_ack_delay=config.max_ack_delay,
            packet_threshold=config.packet_threshold,
            time_threshold=config.time_threshold,
            granularity=config.timer_granularity,
            max_pto_backoff=config.max_pto_backoff,
        )

    # ================================================================== properties

    @property
    def stats(self) -> Counter[str]:
        """Counters by reason: packets, losses, retransmissions, and every kind of input
        that was dropped (garbage, duplicates, credit violations...)."""
        stats = self._stats
        if self._packets_sent:
            stats["packets_sent"] = self._packets_sent
        if self._packets_received:
            stats["packets_received"] = self._packets_received
        if self._ack_only_sent:
            stats["ack_only_sent"] = self._ack_only_sent
        if self._recovery.spurious_losses:
            stats["spurious_losses"] = self._recovery.spurious_losses
        return stats

    @property
    def state(self) -> ConnectionState:
        return self._state

    @property
    def is_closed(self) -> bool:
        """True once `close` was called or the peer's CLOSE arrived."""
        return self._state is not _CONN_OPEN

    @property
    def peer_unresponsive(self) -> bool:
        """No ACK for `unresponsive_pto_count` backed-off probe timeouts while data was
        outstanding; cleared by the next ACK."""
        return self._unresponsive

    def _unresponsive_deadline(self) -> float | None:
        # As long as `unresponsive_pto_count` PTOs with backoff (1 + 2 + 4 ...), measured
        # from the silence itself: sending more (which defers the PTO) does not defer it.
        if self._unresponsive:
            return None
        start = self._recovery.silence_start()
        if start is None:
            return None
        return start + self._silence_periods * self._recovery.pto_duration()

    @property
    def datagram_size(self) -> int:
        """The confirmed path MTU: UDP payload bytes (payload + packet_overhead)."""
        return self._pmtu.current

    @property
    def max_datagram_payload(self) -> int:
        """The largest `send_datagram` that fits one packet at the current path MTU."""
        space = self._pmtu.current - self.packet_overhead - 8 - 1
        return max(space - varint_size(max(space, 0)), 0)

    @property
    def has_output(self) -> bool:
        """Something is queued that `payloads_to_send` would send now if the window
        allowed: stream or message data, control frames, probes, a CLOSE to repeat. ACKs
        are not counted: they leave on their own timer (`get_timer`). Reading a stream
        changes no timer, so after `read_stream` a driver need only flush when this holds."""
        if self._ready or self._probes_due:
            return True
        control = self._control
        streams = self._streams
        return bool(
            control.reliable
            or control.pongs
            or control.pings_to_send
            or control.datagrams
            or self._max_message_data_due
            or streams.max_data_due
            or streams.max_stream_data_due
            or (self._state is _CONN_CLOSING and self._close_pending)
        )

    @property
    def smoothed_rtt(self) -> float:
        return self._recovery.rtt.smoothed_rtt

    @property
    def rto(self) -> float:
        """The current retransmission timeout (PTO before backoff): the path manager's
        unit for "no ACK within 2 RTOs" (DESIGN 7)."""
        return self._recovery.pto_duration()

    @property
    def silence_start(self) -> float | None:
        """Since when ack-eliciting data has waited for an ACK; None when nothing waits."""
        return self._recovery.silence_start()

    @property
    def congestion_window(self) -> int:
        return self._recovery.cc.congestion_window

    @property
    def bytes_in_flight(self) -> int:
        return self._recovery.cc.bytes_in_flight

    def next_event(self) -> Event | None:
        """The oldest event not yet handed out, or None."""
        return self._events.popleft() if self._events else None

    # ================================================================== application API

    def _check_open(self) -> None:
        if self._state is not _CONN_OPEN:
            raise ConnectionClosedError(f"the connection to {self.address} is closed")

    def send_message(
        self,
        data: bytes,
        now: float,
        type: str = "text",
        reply_to: bytes | None = None,
        *,
        message_id: bytes | None = None,
    ) -> bytes:
        """Queue a message; return its random 128-bit id. Raises MessageTooLarge above
        `max_message_size`.

        `message_id` resends under an id the application used before (an outbox sending
        again after a restart); the receiver then answers a duplicate with a RECEIPT
        instead of delivering it twice, as far as it remembers the id."""
        self._check_open()
        if type not in MESSAGE_TYPES:
            raise InvalidMessageType(
                f"message type {type!r} is not one of {', '.join(MESSAGE_TYPES)}"
            )
        if reply_to is not None and (
            not isinstance(reply_to, bytes) or len(reply_to) != MESSAGE_ID_SIZE
        ):
            raise InvalidMessageType("reply_to must be a 16-byte message id")
        if len(data) > self.config.max_message_size:
            raise MessageTooLarge(len(data), self.config.max_message_size, "message")
        if message_id is None:
            message_id = self._random_message_id()
        elif not isinstance(message_id, bytes) or len(message_id) != MESSAGE_ID_SIZE:
            raise InvalidMessageType("message_id must be 16 bytes")
        elif message_id in self._outgoing.unreceipted:
            raise LocalProtocolError("a message with this id is already being sent")
        message = OutgoingMessage(message_id, MESSAGE_TYPES.index(type), bytes(data), reply_to)
        self._outgoing.add(message)
        self._schedule_messages()
        return message_id

    def _random_message_id(self) -> bytes:
        # Drawn from rng in batches: one call (a system call with os.urandom) per
        # _ID_BATCH messages instead of one per message.
        for _ in range(4):
            pool = self._id_pool
            position = self._id_position
            if position >= len(pool):
                pool = self._id_pool = bytes(self._rng(_ID_BATCH * MESSAGE_ID_SIZE))
                if len(pool) != _ID_BATCH * MESSAGE_ID_SIZE:
                    raise LocalProtocolError("rng returned the wrong number of bytes")
                position = 0
            self._id_position = position + MESSAGE_ID_SIZE
            message_id = pool[position : position + MESSAGE_ID_SIZE]
            if message_id not in self._outgoing.unreceipted:
                return message_id
        raise LocalProtocolError("rng keeps returning message ids already in use")

    def confirm_persisted(self, message_id: bytes, now: float) -> None:
        """The application stored a received message: send its RECEIPT."""
        try:
            self._unconfirmed.remove(message_id)
        except KeyError:
            raise UnknownMessage(
                f"message {bytes(message_id).hex()} is not awaiting confirmation"
            ) from None
        if self._state is _CONN_OPEN:
            self._control.reliable.append(b"\x04" + message_id)  # RECEIPT

    def send_trust_frame(self, frame: TrustRequest | TrustAccept | TrustReject) -> None:
        """Queue a trust frame, resent until acknowledged (DESIGN 5)."""
        self._check_open()
        self._control.reliable.append(encode_frame(frame))

    def open_stream(self, port: int, now: float) -> int:
        """Open a stream to the peer's `port`; return its id (even numbers)."""
        self._check_open()
        return self._streams.open(port)

    def send_stream(
        self, stream_id: int, data: bytes, now: float, end_stream: bool = False
    ) -> None:
        """Queue data (at most `stream_send_capacity`, else StreamBufferFull) and
        optionally end our direction of the stream (half-close)."""
        self._check_open()
        self._streams.write(stream_id, data, end_stream)

    def stream_send_capacity(self, stream_id: int) -> int:
        """Bytes `send_stream` accepts now; 0 after end_stream, a reset or the close."""
        return self._streams.capacity(stream_id)

    def read_stream(self, stream_id: int, max_bytes: int = -1) -> bytes:
        """Up to `max_bytes` (all if negative) in-order bytes; b"" if none are waiting.
        Reading returns credit to the peer. A stream that finished reads as b"" too."""
        return self._streams.read(stream_id, max_bytes)

    def reset_stream(self, stream_id: int, now: float, reason: str = "") -> None:
        """Abort the stream in both directions; the peer gets StreamReset(reason).
        Resetting a stream that already finished or was reset does nothing."""
        self._streams.reset_by_application(stream_id, reason)

    def send_datagram(self, data: bytes, now: float) -> bool:
        """Queue an unreliable datagram. False (and counted) if it cannot fit a packet."""
        self._check_open()
        if len(data) > self.max_datagram_payload:
            self._stats["datagram_too_large"] += 1
            return False
        self._control.datagram(bytes(data))
        return True

    def ping(self, now: float) -> bytes:
        """Send a PING; the matching PongReceived carries the returned challenge."""
        self._check_open()
        challenge = PROBE_CHALLENGE
        for _ in range(4):  # the all-zero challenge means "do not answer"
            challenge = bytes(self._rng(CHALLENGE_SIZE))
            if len(challenge) != CHALLENGE_SIZE:
                raise LocalProtocolError("rng returned the wrong number of bytes")
            if challenge != PROBE_CHALLENGE:
                break
        else:
            raise LocalProtocolError("rng keeps returning zero bytes")
        self._control.ping(challenge, now)
        return challenge

    def close(self, now: float, reason: str = "") -> None:
        """Send CLOSE and stop. ConnectionClosed(by_peer=False) is emitted at once."""
        if self._state is not _CONN_OPEN:
            return
        self._timer_valid = False
        self._transition(ConnectionEvent.LOCAL_CLOSE)
        self._close_frame = encode_frame(Close(0, reason))
        self._close_pending = True
        self._close_deadline = now + self.config.closing_ptos * self._recovery.pto_duration()
        self._events.append(ConnectionClosed(self.address, reason, False))

    def successor(self, now: float) -> Connection:
        """A fresh Connection for the restarted peer: every message not yet receipted is
        queued again, queued datagrams are dropped, open streams get StreamReset."""
        fresh = Connection(
            self.address, self.config, rng=self._rng, now=now, listening_ports=self._listening
        )
        fresh.packet_overhead = self.packet_overhead
        fresh._events.extend(self._events)
        self._events.clear()
        for stream_id in self._streams.announced_open_streams():
            fresh._events.append(StreamReset(self.address, stream_id, "peer restarted"))
        for old in self._outgoing.unreceipted.values():
            fresh._outgoing.add(
                OutgoingMessage(old.message_id, old.type_code, old.data, old.reply_to)
            )
        fresh._schedule_messages()
        fresh._unconfirmed = set(self._unconfirmed)
        fresh._recent_ids = set(self._recent_ids)
        fresh._recent_order = deque(self._recent_order)
        if self._state is not _CONN_CLOSED:
            self._transition(ConnectionEvent.REPLACED)
        self._streams.entries.clear()
        self._ready.clear()
        return fresh

    def path_changed(self, now: float) -> None:
        """The Node moved to a new path or session: everything in flight is resent there,
        and RTT, congestion window and path MTU start afresh (RFC 9000 section 9.4)."""
        self._timer_valid = False
        for packet in self._recovery.discard_all():
            self._requeue(packet[3])
        largest_sent = self._recovery.largest_sent
        self._pmtu = self._new_path_mtu()
        self._recovery = self._new_recovery()
        self._recovery.largest_sent = largest_sent
        self._pacer = Pacer(self.config.pacing, self.config.pacing_burst_packets)
        self._pacing_until = None
        self._unresponsive = False

    # ================================================================== scheduling

    def _schedule_messages(self) -> None:
        outgoing = self._outgoing
        if not outgoing.in_ready and outgoing.has_work():
            outgoing.in_ready = True
            self._ready.append(outgoing)

    def _transition(self, event: ConnectionEvent) -> None:
        self._timer_valid = False
        self._state = CONNECTION_TRANSITIONS[(self._state, event)]

    # ================================================================== receiving

    def receive_payload(self, payload: bytes, now: float) -> None:
        """Take one authenticated plaintext payload. Never raises on remote input."""
        state = self._state
        if state is not _CONN_OPEN:
            self._stats["packet_after_close"] += 1
            if state is _CONN_CLOSING and now >= self._last_close_sent + max(
                self._recovery.rtt.smoothed_rtt, self.config.timer_granularity
            ):
                self._close_pending = True
            return
        # Fast paths for the two packets a bulk transfer is made of: one STREAM frame
        # (maybe with IMMEDIATE_ACK), and one ACK frame. They decode and validate exactly
        # as decode_payload would; anything else takes the general path below.
        end = len(payload)
        try:
            number = payload[0]
            if number < 0x40:
                pos = 1
            elif number < 0x80:
                number = (number & 0x3F) << 8 | payload[1]
                pos = 2
            elif number < 0xC0:
                number = _unpack_u32(payload, 0)[0] & 0x3FFFFFFF
                pos = 4
            else:
                number, pos = _read_varint(payload, 0)
            frame_type = payload[pos]
            if frame_type == 0x12 or frame_type == 0x13:  # STREAM with LEN, without PORT
                stream_id = payload[pos + 1]
                if stream_id < 0x40:
                    pos += 2
                else:
                    stream_id, pos = _read_varint(payload, pos + 1)
                if payload[pos] >> 6 == 2 and payload[pos + 4] >> 6 == 1:
                    # 4-byte offset and 2-byte length: a bulk frame of a small datagram
                    offset, length = _unpack_offset_length(payload, pos)
                    offset &= 0x3FFFFFFF
                    length &= 0x3FFF
                    pos += 6
                else:
                    offset, pos = _read_varint(payload, pos)
                    length, pos = _read_varint(payload, pos)
                stop = pos + length
                if stop == end:
                    immediate = False
                elif stop + 1 == end and payload[stop] == 0x0C:
                    immediate = True
                else:
                    stop = -1
                if stop > 0 and offset + length <= MAX_VARINT:
                    acks = self._acks
                    if number <= acks.largest_received and acks.is_duplicate(number):
                        self._stats["duplicate_packet"] += 1
                        return
                    self._packets_received += 1
                    # A small chunk is copied (it must not pin the packet; copying is
                    # cheaper than a view anyway); most of a large packet is a view.
                    if length <= COPY_LIMIT or 2 * length < end:
                        data: bytes | memoryview = payload[pos:stop]
                    else:
                        data = memoryview(payload)[pos:stop]
                    self._streams.on_stream_frame(stream_id, offset, data, frame_type == 0x13, None)
                    ack_deadline = acks.ack_deadline
                    acks.on_packet(number, True, now, immediate)
                    if acks.ack_deadline != ack_deadline:
                        self._timer_valid = False  # the only timer input STREAM data moves
                    return
            elif frame_type == 0x03:  # ACK
                ranges, delay, pos = decode_ack(payload, pos + 1, end)
                if pos == end:
                    acks = self._acks
                    if number <= acks.largest_received and acks.is_duplicate(number):
                        self._stats["duplicate_packet"] += 1
                        return
                    self._packets_received += 1
                    self._timer_valid = False
                    self._on_ack(ranges, delay, now)
                    acks.on_packet(number, False, now)
                    return
                # More frames follow (a reply, a RECEIPT...): decode them, not the ACK again.
                try:
                    frames = decode_frames(payload, pos, [Ack(ranges, delay)])
                except FrameDecodeError:
                    self._stats["garbage_payload"] += 1
                    return
                self._take_frames(payload, number, frames, now)
                return
        except (IndexError, struct.error, FrameDecodeError):
            pass  # the general path counts it as garbage
        try:
            number, frames = decode_payload(payload)
        except FrameDecodeError:
            self._stats["garbage_payload"] += 1
            return
        self._take_frames(payload, number, frames, now)

    def receive_untrusted(
        self, payload: bytes, packet_number: int, frames: list[Frame], now: float
    ) -> None:
        """Take the decoded frames of a payload from a peer we do not trust (DESIGN 8):
        trust frames, ACKs and the rest of the session's housekeeping as usual; messages,
        streams and datagrams refused (REFUSED, STREAM_RESET NOT_TRUSTED, dropped), each
        counted, none delivered, no data kept. Never raises on remote input."""
        if self._state is not _CONN_OPEN or self._acks.is_duplicate(packet_number):
            self._take_frames(payload, packet_number, frames, now)  # counts and drops it
            return
        stats = self._stats
        messages = sum(1 for frame in frames if type(frame) is Message)
        if messages:
            if self._refusals is None:
                self._refusals = RefusalLimiter(stats)
            if not self._refusals.covers(messages, now):
                # Refusals are rate-limited per peer: this packet comes again later.
                stats["untrusted_packet_deferred"] += 1
                return
        kept: list[Frame] = []
        refused: list[bytes] = []
        eliciting = deferred = False
        for frame in frames:
            kind = type(frame)
            if kind is Message:
                eliciting = True
                outcome = self._incoming.refuse(
                    frame.base,  # type: ignore[union-attr]
                    frame.message_id,  # type: ignore[union-attr]
                    frame.content_type,  # type: ignore[union-attr]
                    frame.total_length,  # type: ignore[union-attr]
                    frame.reply_to,  # type: ignore[union-attr]
                    _REFUSED_WAITING,
                )
                if outcome == "refused":
                    refused.append(frame.message_id)  # type: ignore[union-attr]
                else:
                    stats[f"untrusted_{outcome}"] += 1
                    # No room to note its place: the packet must come again, or the
                    # message sequence would wait for this message for ever.
                    deferred = deferred or outcome == "refusal_backlog_full"
            elif kind is Stream:
                eliciting = True
                count = self._streams.refuse(
                    frame.stream_id,  # type: ignore[union-attr]
                    frame.offset,  # type: ignore[union-attr]
                    frame.data,  # type: ignore[union-attr]
                    frame.fin,  # type: ignore[union-attr]
                )
                if count is None:
                    deferred = True
                else:
                    stats["streams_refused"] += count
            elif kind is Datagram:
                eliciting = True
                stats["untrusted_datagram_dropped"] += 1
            else:
                kept.append(frame)
        if refused and self._refusals is not None:
            self._control.reliable.extend(self._refusals.take(refused))
        if self._incoming.window.update_due():
            self._max_message_data_due = True
        if deferred:
            # Too many refused streams or messages wait: leave the packet unacknowledged,
            # so its frames come again once those are gone. What it carried besides is
            # idempotent (refusals, trust frames, ACKs).
            stats["untrusted_packet_deferred"] += 1
            return
        if eliciting:
            kept.append(_ACK_ELICITING_PLACEHOLDER)
        self._take_frames(payload, packet_number, kept, now)

    def _take_frames(
        self, payload: bytes, packet_number: int, frames: list[Frame], now: float
    ) -> None:
        self._timer_valid = False
        stats = self._stats
        acks = self._acks
        if acks.is_duplicate(packet_number):
            stats["duplicate_packet"] += 1
            return
        self._packets_received += 1
        size = len(payload)
        ack_eliciting = False
        immediate = False
        streams = self._streams
        for frame in frames:
            kind = type(frame)
            if kind is Stream:
                ack_eliciting = True
                data = frame.data  # type: ignore[union-attr]
                if 2 * len(data) < size and type(data) is not bytes:
                    data = bytes(data)
                streams.on_stream_frame(
                    frame.stream_id,  # type: ignore[union-attr]
                    frame.offset,  # type: ignore[union-attr]
                    data,
                    frame.fin,  # type: ignore[union-attr]
                    frame.port,  # type: ignore[union-attr]
                )
            elif kind is Ack:
                self._on_ack(frame.ranges, frame.delay_us, now)  # type: ignore[union-attr]
            elif kind is Message:
                ack_eliciting = True
                self._on_message(frame, size)  # type: ignore[arg-type]
            elif kind is ImmediateAck:
                ack_eliciting = immediate = True
            elif kind is Padding:
                pass
            else:
                ack_eliciting = True
                self._on_control(frame, now)
                if self._state is not _CONN_OPEN:
                    break  # CLOSE: nothing after it matters
        acks.on_packet(packet_number, ack_eliciting, now, immediate)

    def _on_message(self, frame: Message, payload_size: int) -> None:
        data = frame.data
        if 2 * len(data) < payload_size and type(data) is not bytes:
            data = bytes(data)
        dropped = self._incoming.on_chunk(
            frame.base,
            frame.message_id,
            frame.content_type,
            frame.total_length,
            frame.offset,
            data,
            frame.reply_to,
        )
        if dropped is not None:
            self._stats[dropped] += 1
        if self._incoming.window.update_due():
            self._max_message_data_due = True

    def _deliver_message(
        self, message_id: bytes, content_type: str, data: bytes, reply_to: bytes | None
    ) -> None:
        recent = self._recent_ids
        if message_id in recent:
            self._stats["duplicate_message_id"] += 1
            if message_id not in self._unconfirmed:
                self._control.reliable.append(b"\x04" + message_id)  # persisted already
            return
        # A set and a queue, not a dict used as a queue: popping a dict's oldest key
        # costs time proportional to the keys deleted before it.
        recent.add(message_id)
        order = self._recent_order
        order.append(message_id)
        if len(order) > _RECENT_MESSAGE_IDS:
            recent.discard(order.popleft())
        self._events.append(MessageReceived(self.address, message_id, content_type, data, reply_to))
        if self.config.auto_confirm:
            self._control.reliable.append(b"\x04" + message_id)
        else:
            self._unconfirmed.add(message_id)

    def _on_control(self, frame: Any, now: float) -> None:
        kind = type(frame)
        stats = self._stats
        if kind is Receipt:  # the control frame of every request/reply exchange
            message = self._outgoing.on_receipt(frame.message_id)
            if message is None:
                stats["unknown_receipt"] += 1
            else:
                self._events.append(MessageDelivered(self.address, frame.message_id))
        elif kind is MaxData:
            self._streams.on_max_data(frame.maximum)
        elif kind is MaxStreamData:
            self._streams.on_max_stream_data(frame.stream_id, frame.maximum)
        elif kind is MaxMessageData:
            if self._outgoing.credit.raise_limit(frame.maximum):
                self._schedule_messages()
        elif kind is StreamResetFrame:
            self._streams.on_reset_frame(frame)
        elif kind is Ping:
            self._control.on_ping(frame.challenge)
        elif kind is Pong:
            rtt = self._control.on_pong(frame.challenge, now)
            if rtt is not None:
                self._events.append(PongReceived(self.address, rtt, frame.challenge))
        elif kind is Datagram:
            self._events.append(DatagramReceived(self.address, bytes(frame.data)))
        elif kind is Close:
            self._transition(ConnectionEvent.PEER_CLOSE)
            self._close_deadline = now + self.config.closing_ptos * self._recovery.pto_duration()
            self._close_pending = False
            self._events.append(ConnectionClosed(self.address, frame.reason, True))
        elif kind is Refused:
            for message_id in frame.message_ids:
                if self._outgoing.refuse(message_id) is None:
                    stats["unknown_refusal"] += 1
                else:
                    stats["messages_refused_by_peer"] += 1
                    self._events.append(MessageFailed(self.address, message_id, "not_trusted"))
        elif kind is TrustRequest or kind is TrustAccept or kind is TrustReject:
            self._on_trust_frame(frame)

    def _on_trust_frame(self, frame: TrustRequest | TrustAccept | TrustReject) -> None:
        """One event per trust frame, however often it was resent (its ACK may be lost),
        and at most _MAX_TRUST_REQUESTS requests per connection: a peer sending request
        after request makes the application do nothing more."""
        stats = self._stats
        seen = self._trust_seen
        if seen is None:
            seen = self._trust_seen = {}
        key = (type(frame), frame.request_id)
        if key in seen:
            stats["trust_frame_duplicate"] += 1
            return
        if type(frame) is TrustRequest:
            if stats["trust_requests_received"] >= _MAX_TRUST_REQUESTS:
                stats["trust_requests_over_limit"] += 1
                return
            stats["trust_requests_received"] += 1
        seen[key] = None
        if len(seen) > 4 * _MAX_TRUST_REQUESTS:
            del seen[next(iter(seen))]
        if isinstance(frame, TrustRequest):
            self._events.append(TrustRequested(self.address, frame.request_id, frame.justification))
        elif isinstance(frame, TrustAccept):
            self._events.append(TrustAccepted(self.address, frame.request_id))
        else:
            self._events.append(TrustRejected(self.address, frame.request_id))

    # ================================================================== ACKs and loss

    def _on_ack(self, ranges: tuple[tuple[int, int], ...], delay_us: int, now: float) -> None:
        recovery = self._recovery
        result = recovery.on_ack_received(ranges, delay_us * 1e-6, now)
        if result is None:
            self._stats["ack_of_unsent_packet"] += 1
            return
        if not result.acked:
            return
        self._unresponsive = False
        # Consecutive STREAM frames of one stream (a bulk transfer's packets) are acked
        # as one range: on_acked of a union is on_acked of its parts.
        streams_touched: list[SendStream] = []
        send: SendStream | None = None
        start = stop = 0
        fin = False
        for packet in result.acked:
            if packet[4]:
                if self._pmtu.on_probe_acked(packet[0], now):
                    recovery.cc.set_max_datagram_size(self._pmtu.current)
                    self._stats["pmtu_raised"] += 1
                continue
            for record in packet[3]:
                if record[0] == KIND_STREAM:
                    if record[1] is send and record[2] == stop:
                        stop = record[3]
                        fin = record[4]
                        continue
                    if send is not None:
                        send.on_acked(start, stop, fin)
                    send = record[1]
                    start = record[2]
                    stop = record[3]
                    fin = record[4]
                    if send not in streams_touched:
                        streams_touched.append(send)
        if send is not None:
            send.on_acked(start, stop, fin)
            for touched in streams_touched:
                self._streams.after_acked(touched)
        if result.lost:
            self._on_lost(result.lost, now)

    def _on_lost(self, lost: list[SentPacket], now: float) -> None:
        stats = self._stats
        for packet in lost:
            if packet[4]:
                if self._pmtu.on_probe_lost(packet[0], now):
                    stats["pmtu_probes_lost"] += 1
                continue
            stats["lost_packets"] += 1
            self._requeue(packet[3])

    def _requeue(self, records: list[tuple[Any, ...]]) -> None:
        """Queue the frames of a lost (or abandoned) packet again (RFC 9000 section 13.3)."""
        resent = 0
        for record in records:
            kind = record[0]
            if kind == KIND_STREAM:
                send = record[1]
                if send.on_lost(record[2], record[3], record[4]):
                    resent += 1
                    self._streams.schedule(send)
            elif kind == KIND_MESSAGE:
                if self._outgoing.on_lost(record[1], record[2], record[3]):
                    resent += 1
                    self._schedule_messages()
            elif kind == KIND_CONTROL:
                resent += 1
                self._control.reliable.append(record[1])
            elif kind == KIND_MAX_DATA or kind == KIND_MAX_STREAM_DATA:
                self._streams.requeue_flow_control(record)
            elif kind == KIND_MAX_MESSAGE_DATA:
                self._max_message_data_due = True
        if resent:
            self._stats["retransmitted_frames"] += resent

    # ================================================================== timers

    def get_timer(self) -> float | None:
        """The earliest time `handle_timer` must be called, or None."""
        if self._timer_valid:
            return self._timer_value
        self._timer_valid = True
        state = self._state
        if state is not _CONN_OPEN:
            self._timer_value = None if state is _CONN_CLOSED else self._close_deadline
            return self._timer_value
        # Called after every datagram by the Node: keep it to a few attribute reads.
        deadline = self._recovery.deadline(0 if self._unresponsive else self._silence_periods)
        ack_deadline = self._acks.ack_deadline
        if ack_deadline is not None and (deadline is None or ack_deadline < deadline):
            deadline = ack_deadline
        pacing = self._pacing_until
        if pacing is not None and (deadline is None or pacing < deadline):
            deadline = pacing
        pmtu = self._pmtu.timer()
        if pmtu is not None and (deadline is None or pmtu < deadline):
            deadline = pmtu
        self._timer_value = deadline
        return deadline

    def handle_timer(self, now: float) -> None:
        """Run whatever timers are due at `now`."""
        self._timer_valid = False
        state = self._state
        if state is not _CONN_OPEN:
            if (
                state is not _CONN_CLOSED
                and self._close_deadline is not None
                and now >= self._close_deadline
            ):
                self._transition(ConnectionEvent.TIMEOUT)
            return
        if self._pacing_until is not None and now >= self._pacing_until:
            self._pacing_until = None
        if self._pmtu.handle_timer(now):
            self._stats["pmtu_probes_lost"] += 1
        silence = self._unresponsive_deadline()
        if silence is not None and now >= silence:
            self._declare_unresponsive()
        recovery = self._recovery
        deadline = recovery.loss_detection_timer()
        if deadline is None or now < deadline:
            return
        lost, probe_timeout = recovery.on_timeout(now)
        if lost:
            self._on_lost(lost, now)
        if probe_timeout:
            self._stats["probe_timeouts"] += 1
            # RFC 9002 section 6.2.4: one or two ack-eliciting probes, beyond the window.
            self._probes_due = 2
            if recovery.pto_count >= 2 and self._pmtu.on_black_hole(now):
                recovery.cc.set_max_datagram_size(self._pmtu.current)
                self._stats["pmtu_black_hole"] += 1
            if recovery.pto_count >= self.config.unresponsive_pto_count:
                self._declare_unresponsive()

    def _declare_unresponsive(self) -> None:
        if not self._unresponsive:
            self._unresponsive = True
            self._stats["peer_unresponsive"] += 1
            self._events.append(PeerUnresponsive(self.address))

    # ================================================================== sending

    def payloads_to_send(self, now: float) -> list[bytes]:
        """Payloads to seal and send now, one per UDP datagram, in order."""
        if self._state is not _CONN_OPEN:
            return self._closing_payloads(now)
        ready = self._ready
        pmtu = self._pmtu
        if not ready and not self._probes_due:
            # The common answer between ACKs on a receiving connection: nothing at all.
            ack_deadline = self._acks.ack_deadline
            if (ack_deadline is None or ack_deadline > now) and pmtu.state is not _SEARCHING:
                control = self._control
                streams = self._streams
                if not (
                    control.reliable
                    or control.pongs
                    or control.pings_to_send
                    or control.datagrams
                    or self._max_message_data_due
                    or streams.max_data_due
                    or streams.max_stream_data_due
                ):
                    return []
        self._timer_valid = False
        out: list[bytes] = []
        acks = self._acks
        recovery = self._recovery
        cc = recovery.cc
        pacer = self._pacer
        # Neither the path MTU nor whether a probe may be due changes while we build.
        datagram_size = pmtu.current
        max_payload = datagram_size - self.packet_overhead
        may_probe = pmtu.may_probe(now)
        for _ in range(100_000):  # bounded: each round sends a packet or stops
            probe = self._probes_due > 0
            window_open = probe or cc.bytes_in_flight < cc.congestion_window
            if window_open and may_probe:
                size = pmtu.probe_size(now)
                if size is not None and not probe:
                    out.append(self._build_pmtu_probe(now, size))
                    continue
            payload: bytes | None = None
            if window_open and (ready or self._has_control()):
                if not probe and pacer.enabled:
                    until = pacer.delay_until(
                        now, datagram_size, cc.congestion_window, recovery.rtt.smoothed_rtt
                    )
                    if until is not None and until > now:
                        self._pacing_until = until
                        window_open = False
                if window_open:
                    payload = self._build(now, max_payload, True, False)
            if payload is None and probe:
                payload = self._build(now, max_payload, True, True)
            if payload is None and acks.ack_deadline is not None and acks.ack_deadline <= now:
                payload = self._build(now, max_payload, False, False)
            if payload is None:
                break
            if probe:
                self._probes_due -= 1
            out.append(payload)
        return out

    def _has_control(self) -> bool:
        control = self._control
        streams = self._streams
        return bool(
            control.reliable
            or control.pongs
            or control.pings_to_send
            or control.datagrams
            or self._max_message_data_due
            or streams.max_data_due
            or streams.max_stream_data_due
        )

    def _build(
        self, now: float, max_payload: int, eliciting: bool, force_ping: bool
    ) -> bytes | None:
        """Assemble one packet; None if there was nothing to put in it."""
        packet_number = self._next_packet_number
        if 0x4000 <= packet_number < 0x40000000:
            number = _pack_u32(packet_number | 0x80000000)
            space = max_payload - 5  # one byte kept for IMMEDIATE_ACK
        elif 0x40 <= packet_number < 0x4000:
            number = _pack_u16(packet_number | 0x4000)
            space = max_payload - 3
        else:
            number = encode_varint(packet_number)
            space = max_payload - len(number) - 1
        parts: list[bytes | memoryview] = [number]
        records: list[tuple[Any, ...]] = []
        acks = self._acks
        if acks.ack_deadline is not None:
            ack = acks.build_frame(now, self.config.max_ack_ranges)
            parts.append(ack)
            space -= len(ack)
        ack_only_length = len(parts)
        ready = self._ready
        stream_data = False
        if eliciting:
            control = self._control
            streams = self._streams
            if (
                control.reliable
                or control.pongs
                or control.pings_to_send
                or control.datagrams
                or self._max_message_data_due
                or streams.max_data_due
                or streams.max_stream_data_due
            ):
                space = streams.add_flow_frames(parts, records, space)
                if self._max_message_data_due:
                    self._max_message_data_due = False
                    frame = b"\x07" + encode_varint(self._incoming.window.next_limit())
                    parts.append(frame)
                    records.append((KIND_MAX_MESSAGE_DATA,))
                    space -= len(frame)
                space = control.add_frames(parts, records, space, max_payload)
            if ready:
                stalls = 0
                credit = streams.send_credit
                outgoing = self._outgoing
                while ready and space > _ACK_FRAME_RESERVE:
                    item = ready[0]  # a stream, or the message queue: the same interface
                    before = space
                    space, more = item.fill(parts, records, space, credit)
                    if space != before and item is not outgoing:
                        stream_data = True
                    if not more:
                        ready.popleft()
                        item.in_ready = False
                        stalls = 0
                        continue
                    ready.rotate(-1)  # round robin: the next packet starts with the next one
                    if space == before:
                        stalls += 1
                        if stalls >= len(ready):
                            break
                    else:
                        stalls = 0
            if force_ping and len(parts) == ack_only_length:
                parts.append(b"\x01" + PROBE_CHALLENGE)
        if len(parts) == ack_only_length:
            if ack_only_length == 1:
                return None
            # ACK-only packets are neither ack-eliciting nor in flight (RFC 9002 section 2)
            # and carry nothing to resend: not worth remembering.
            self._next_packet_number = packet_number + 1
            self._recovery.largest_sent = packet_number
            self._ack_only_sent += 1
            return b"".join(parts)
        recovery = self._recovery
        cc = recovery.cc
        overhead = self.packet_overhead
        if (
            force_ping
            or (stream_data and not ready)
            or cc.bytes_in_flight + 2 * (max_payload + overhead) > cc.congestion_window
        ):
            # Waiting for the ACK threshold would stall us: the window is about to fill,
            # this is a probe, or this is the last stream data queued (a writer may wait
            # for the ACK to free its send buffer). Messages and control frames do not
            # ask: nothing waits for their ACK, which rides on the peer's next packet (a
            # reply, a RECEIPT) or leaves after max_ack_delay.
            parts.append(b"\x0c")
        payload = b"".join(parts)
        self._next_packet_number = packet_number + 1
        size = len(payload) + overhead
        recovery.on_packet_sent(packet_number, now, size, records)
        pacer = self._pacer
        if pacer.rate:  # pacer.on_packet_sent, inlined
            pacer.tokens -= size
        self._pacing_until = None
        self._packets_sent += 1
        return payload

    def _build_pmtu_probe(self, now: float, size: int) -> bytes:
        """PING + IMMEDIATE_ACK + PADDING filling a datagram of exactly `size` bytes
        (RFC 8899 section 4.1)."""
        packet_number = self._next_packet_number
        self._next_packet_number = packet_number + 1
        head = encode_varint(packet_number) + b"\x01" + PROBE_CHALLENGE + b"\x0c"
        payload = head + bytes(size - self.packet_overhead - len(head))
        recovery = self._recovery
        recovery.on_probe_sent(packet_number, now, size)
        self._pmtu.on_probe_sent(packet_number, size, now + 2 * recovery.pto_duration())
        self._stats["pmtu_probes_sent"] += 1
        return payload

    def _closing_payloads(self, now: float) -> list[bytes]:
        frame = self._close_frame
        if self._state is not _CONN_CLOSING or not self._close_pending or frame is None:
            return []
        self._close_pending = False
        self._last_close_sent = now
        packet_number = self._next_packet_number
        self._next_packet_number = packet_number + 1
        return [encode_varint(packet_number) + frame]
