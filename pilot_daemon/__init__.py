"""pilot_daemon: the reference daemon and the pilotctl CLI (asyncio binding)."""
