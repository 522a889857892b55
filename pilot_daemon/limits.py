"""Sizes and durations the daemon and pilotctl agree on.

Kept apart from the code that enforces them so the CLI can check a value before it
ever talks to the daemon, and the daemon can check it again for other API clients.
"""

from __future__ import annotations

#: Largest message body (`send-message`, `reply`). Bigger payloads belong in `send-file`.
#: The network side must accept at least this much per message.
MAX_MESSAGE_BYTES = 1 << 20
#: A trust request's justification travels in a size-limited mailbox note (DESIGN 6).
MAX_JUSTIFICATION_BYTES = 512
#: At most this many pending trust requests are kept; a stranger's identity costs nothing,
#: so beyond it new requesters are refused (and logged) rather than pushing out requests
#: the user may be reviewing.
MAX_PENDING_REQUESTS = 1000
#: Pending trust requests expire after 7 days (DESIGN 8).
PENDING_TTL_SECONDS = 7 * 24 * 3600.0
#: A rejected requester may ask again after this cool-down (DESIGN 8).
REJECT_COOLDOWN_SECONDS = 3600.0
#: Delivery records are the receiver's de-duplication memory; a resend older than this
#: (a sender retrying for a month) would be taken for a new message.
DELIVERY_RECORD_TTL_SECONDS = 30 * 24 * 3600.0
#: How often the daemon forgets what has expired.
HOUSEKEEPING_INTERVAL_SECONDS = 3600.0
#: `send-message` waits this long for the peer's receipt (DESIGN 9).
SEND_TIMEOUT_SECONDS = 30.0

# Local API: a request is a JSON document of modest size; base64 of the largest message
# fits with room to spare. Slow or stuck clients are cut off instead of holding a task.
MAX_REQUEST_HEADER_BYTES = 16 * 1024
MAX_REQUEST_BODY_BYTES = 4 * (1 << 20)
REQUEST_HEADER_TIMEOUT_SECONDS = 10.0
REQUEST_BODY_TIMEOUT_SECONDS = 30.0
MAX_API_CONNECTIONS = 256

#: How long `daemon start` waits for the child to report readiness.
START_TIMEOUT_SECONDS = 30.0
#: How long `daemon stop` waits for the daemon to exit before sending SIGTERM, then SIGKILL.
STOP_TIMEOUT_SECONDS = 15.0
