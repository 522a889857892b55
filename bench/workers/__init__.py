"""The second processes of the two-process benchmarks.

Each module here runs as `python -m bench.workers.NAME ROLE ARGS` from the repository root.
A worker talks to the benchmark that started it over lines: it prints `READY <port>` once it
listens (servers) and `RESULT <json>` when it has measured something (clients); it exits
when its stdin reaches end of file (the parent went away) or its lifetime runs out, so no
worker can outlive a benchmark run. `parent` is the benchmark side of that conversation.
"""
