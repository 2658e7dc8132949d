"""`python -m bench`: run the foundation benchmarks (each on a fresh server) and summarise them.

`python -m bench exec_latency memory` runs only the named ones.
"""

from __future__ import annotations

import sys
from collections.abc import Callable

from bench import concurrency, exec_latency, first_exec, memory, sandbox_memory, throughput
from bench.common import Result, ServerProcess, run_each

FOUNDATION: dict[str, Callable[[ServerProcess], Result]] = {
    exec_latency.NAME: exec_latency.run,
    first_exec.NAME: first_exec.run,
    throughput.NAME: throughput.run,
    concurrency.NAME: concurrency.run,
    memory.NAME: memory.run,
    sandbox_memory.NAME: sandbox_memory.run,
}
# Settings a benchmark's server needs beyond the defaults.
SERVER_ENV: dict[str, dict[str, str]] = {sandbox_memory.NAME: sandbox_memory.SERVER_ENV}


def main(argv: list[str]) -> int:
    unknown = [name for name in argv if name not in FOUNDATION]
    if unknown:
        print(f"unknown benchmark(s) {unknown}; choose from {list(FOUNDATION)}", file=sys.stderr)
        return 2
    chosen = [(run, SERVER_ENV.get(name)) for name, run in FOUNDATION.items() if not argv or name in argv]
    return run_each(chosen)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
