"""Every knob of reliable delivery, with defaults that suit a LAN and the internet alike."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "INITIAL_CONNECTION_CREDIT",
    "INITIAL_MESSAGE_CREDIT",
    "INITIAL_STREAM_CREDIT",
    "MESSAGE_ACCOUNTING_OVERHEAD",
    "DeliveryConfig",
]

MiB = 1 << 20

# Protocol constants (docs/PROTOCOL.md section 6): the credit each side may use before the
# peer's first MAX_* frame arrives. Each side then grants its configured window at once,
# so the two ends need not be configured alike.
INITIAL_STREAM_CREDIT = 64 * 1024
INITIAL_CONNECTION_CREDIT = 1 * MiB
INITIAL_MESSAGE_CREDIT = 1 * MiB
#: Each message occupies its length plus this in the message credit space: it keeps
#: message bases distinct (empty messages) and accounts for per-message bookkeeping.
MESSAGE_ACCOUNTING_OVERHEAD = 64


@dataclass(frozen=True, slots=True)
class DeliveryConfig:
    """Configuration of one `Connection`. Times in seconds, sizes in bytes."""

    # Messages
    max_message_size: int = 16 * MiB
    auto_confirm: bool = False
    #: Reassembly memory the receiver lets one peer fill with messages not yet delivered.
    message_receive_window: int = 32 * MiB

    # Streams and flow control
    stream_receive_window: int = 2 * MiB
    connection_receive_window: int = 16 * MiB
    stream_send_buffer: int = 4 * MiB
    max_incoming_streams: int = 1024

    # Datagrams
    datagram_queue_limit: int = 256

    # Acknowledgements (RFC 9000 section 13.2; see acks.py for the threshold)
    max_ack_delay: float = 0.025
    ack_eliciting_threshold: int = 20
    max_ack_ranges: int = 32

    # Loss recovery (RFC 9002 section 6)
    initial_rtt: float = 0.333
    packet_threshold: int = 3
    time_threshold: float = 9 / 8
    timer_granularity: float = 0.001
    max_pto_backoff: int = 6
    #: Consecutive probe timeouts without any ACK after which the peer counts as unresponsive.
    unresponsive_pto_count: int = 3

    # Congestion control (RFC 9002 section 7)
    congestion_control: str = "newreno"
    initial_window_packets: int = 10
    minimum_window_packets: int = 2
    loss_reduction_factor: float = 0.5
    pacing: bool = True
    pacing_burst_packets: int = 10

    # Path MTU (RFC 8899): sizes are UDP payload bytes (a datagram is payload + overhead).
    base_datagram_size: int = 1200
    max_datagram_size: int = 65507
    #: Use exactly this datagram size and never probe (e.g. 1200).
    forced_datagram_size: int | None = None
    pmtu_max_probes: int = 3
    pmtu_search_granularity: int = 32
    pmtu_raise_interval: float = 600.0

    # Closing
    #: After close, answer stray packets with CLOSE for this many probe timeouts.
    closing_ptos: int = 3

    def __post_init__(self) -> None:
        if self.message_receive_window < self.max_message_size + MESSAGE_ACCOUNTING_OVERHEAD:
            raise ValueError("message_receive_window must hold a whole max_message_size message")
        if self.message_receive_window < INITIAL_MESSAGE_CREDIT:
            raise ValueError("message_receive_window is below the protocol's initial credit")
        if self.stream_receive_window < INITIAL_STREAM_CREDIT:
            raise ValueError("stream_receive_window is below the protocol's initial credit")
        if self.connection_receive_window < INITIAL_CONNECTION_CREDIT:
            raise ValueError("connection_receive_window is below the protocol's initial credit")
        if self.base_datagram_size < 1200 or self.max_datagram_size < self.base_datagram_size:
            raise ValueError("need 1200 <= base_datagram_size <= max_datagram_size")
        if self.max_datagram_size > 65527:
            raise ValueError("max_datagram_size above the largest UDP payload")
        if self.forced_datagram_size is not None and not (
            576 <= self.forced_datagram_size <= 65527
        ):
            raise ValueError("forced_datagram_size must be between 576 and 65527")
        if self.ack_eliciting_threshold < 1 or self.max_ack_ranges < 1:
            raise ValueError("ack_eliciting_threshold and max_ack_ranges must be positive")
        if self.stream_send_buffer < 1 or self.max_incoming_streams < 0:
            raise ValueError("stream_send_buffer must be positive")
        if self.congestion_control != "newreno":
            raise ValueError("congestion_control must be 'newreno'")
