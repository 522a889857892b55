"""Timers and limits of the rendezvous client and server, each a frozen value.

Defaults suit the internet and are generous enough that loopback tests are never
throttled (DESIGN 6: "every limit is a config value"). Times in seconds, sizes in bytes.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["ClientConfig", "ServerConfig"]


@dataclass(frozen=True, slots=True)
class ClientConfig:
    #: Lifetime written into our identity record: long, so that a node offline for a
    #: while can still be looked up and sent mailbox notes (the record says who we are,
    #: not where). Must not exceed the server's `max_record_lifetime`.
    record_lifetime: float = 3 * 86400.0
    #: Lifetime of our locator (where we are): short, so stale addresses go soon.
    locator_lifetime: float = 3600.0
    #: Re-register when this share of the locator lifetime has passed.
    refresh_fraction: float = 0.5
    #: A PING goes out after this long without any request, so that a restarted or
    #: vanished server is noticed by the session layer (it retransmits, then re-handshakes).
    heartbeat_interval: float = 20.0
    #: A request without an answer fails with "timeout" after this long.
    request_timeout: float = 30.0
    #: Reconnection backoff after the session is lost: doubles from min to max.
    reconnect_min: float = 1.0
    reconnect_max: float = 60.0
    #: A failed registration (rate_limited, timeout) is retried after this long.
    registration_retry: float = 30.0
    #: Mailbox notes seen, remembered to drop duplicates (oldest forgotten first).
    seen_notes: int = 4096
    #: Notes older than this, or stamped further in the future, are refused.
    note_max_age: float = 8 * 86400.0
    note_max_future: float = 600.0
    #: Requests waiting for an answer or for the session, at most.
    max_pending_requests: int = 4096


@dataclass(frozen=True, slots=True)
class ServerConfig:
    #: A record or locator may not claim to stay valid longer than this.
    max_record_lifetime: float = 7 * 86400.0
    #: DESIGN 3: a hostname stays with its key this long after the last renewal.
    hostname_retention: float = 30 * 86400.0
    #: Nodes registered at once from one source IP (DESIGN 6: at least 32).
    max_registrations_per_ip: int = 256
    #: Requests per node: a token bucket of `request_burst`, refilled at this rate.
    requests_per_second: float = 200.0
    request_burst: int = 2000
    #: Largest request accepted, whatever its kind.
    max_request_size: int = 256 * 1024
    max_allow_list_entries: int = 8192
    #: Mailbox: size of one sealed note, notes waiting per target and in total, posts per
    #: sender (bucket), and how long an undelivered note is kept.
    max_note_size: int = 4096
    max_notes_per_target: int = 256
    max_notes_total: int = 100_000
    notes_per_minute: float = 600.0
    note_burst: int = 600
    note_lifetime: float = 7 * 86400.0
    #: Introductions per requester (bucket), and probes per introduction.
    introductions_per_minute: float = 1200.0
    introduction_burst: int = 1200
    max_probes_per_introduction: int = 32
    #: Both sides start punching this long after the later of the two receives its
    #: introduction (each side's delay is adjusted by the path RTTs).
    introduction_delay: float = 0.05
    #: A registered client not heard from for this long counts as offline.
    online_timeout: float = 90.0
    #: How often stale records, claims, notes and rate-limit state are swept.
    sweep_interval: float = 30.0
