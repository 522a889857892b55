"""Keep freed datagram buffers in the process instead of handing them back to the OS.

A stream at the path MTU seals, sends and frees tens of 64 KB buffers per wake-up. glibc's
malloc gives the top of its heap back to the kernel as soon as more than 128 KiB of it is
free, and allocations of 128 KiB and more (a 256 KiB write, a 1 MiB read) are mmapped and
unmapped each time: every new buffer then starts with a page fault per 4 KiB page, about
30 per datagram sent. On loopback those faults cost more than encrypting and sending the
datagram (a sender spent 0.53 s of CPU on 200 MiB, 0.33 s with the thresholds below).

`keep_freed_memory` raises both thresholds once per process, so the buffers of the last
wake-ups are reused: the process keeps up to TRIM_THRESHOLD bytes of freed heap. It does
nothing off glibc, or when the user chose the thresholds (glibc's MALLOC_TRIM_THRESHOLD_ or
MALLOC_MMAP_THRESHOLD_ environment variables, or PILOT_MALLOC_TUNING=0).
"""

from __future__ import annotations

import ctypes
import os
import platform

__all__ = ["MMAP_THRESHOLD", "TRIM_THRESHOLD", "keep_freed_memory"]

#: Freed heap kept before glibc trims it (its default: 128 KiB).
TRIM_THRESHOLD = 32 << 20
#: Allocations from this size up are mmapped (default: 128 KiB, then adjusted upwards by
#: glibc itself; setting any threshold stops that adjustment, so this one is set too).
MMAP_THRESHOLD = 4 << 20
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_USER_CHOICES = ("MALLOC_TRIM_THRESHOLD_", "MALLOC_MMAP_THRESHOLD_")

_done: str | None = None


def keep_freed_memory() -> str:
    """Raise glibc's trim and mmap thresholds (once per process); say what was done."""
    global _done
    if _done is None:
        _done = _tune()
    return _done


def _tune() -> str:
    if os.environ.get("PILOT_MALLOC_TUNING") == "0":
        return "left alone: PILOT_MALLOC_TUNING=0"
    chosen = [name for name in _USER_CHOICES if name in os.environ]
    if chosen:
        return f"left alone: {', '.join(chosen)} set by the user"
    if platform.libc_ver()[0] != "glibc":
        return "left alone: not glibc"
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return "left alone: no mallopt"
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    if not (
        mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD) and mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)
    ):
        return "left alone: mallopt refused"
    return (
        f"glibc keeps {TRIM_THRESHOLD >> 20} MiB of freed heap, "
        f"mmaps from {MMAP_THRESHOLD >> 20} MiB"
    )
