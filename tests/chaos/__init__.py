"""Fault and load cases against a real `trove-server serve` (`make chaos`, `python -m tests.chaos`).

Each case starts the server on its own data dir and port, makes calls through the official
trove-sdk, httpx or raw sockets, injects a fault (SIGKILL, a full disk, slow or cut
connections, a receiver outage, load), restarts where the fault calls for it, and reports what
was acknowledged and what was found after recovery. Modules are not named ``test_*``: pytest
does not collect them; ``tests/unit/test_chaos_invariants.py`` checks the pure audit.

Knobs (environment): CHAOS_LOAD_S (60), CHAOS_LOAD_CLIENTS (100), CHAOS_SLOWLORIS_S (40),
CHAOS_KEEP_DATA=1 keeps data dirs and server logs in /tmp, CHAOS_DEBUG=1 prints tracebacks.
"""
