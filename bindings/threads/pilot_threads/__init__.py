"""pilot_threads: the thread binding of pilot-proto."""
