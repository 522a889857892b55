"""pilot_asyncio: the asyncio (uvloop) binding of pilot-proto."""
