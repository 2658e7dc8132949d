"""`python -m bench`: run the foundation benchmarks (each on a fresh server) and summarise them.

`python -m bench exec_latency memory` runs only the named ones.
"""

from __future__ import annotations

import sys
from collections.abc import Callable

from bench import concurrency, exec_latency, first_exec, memory, sandbox_memory, throughput
from bench.common import Result, ServerProcess, launch_server, summary_table

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
    results: list[Result] = []
    for name, run in FOUNDATION.items():
        if argv and name not in argv:
            continue
        # A fresh server each: no benchmark inherits another's heap, caches or namespaces.
        with launch_server(env=SERVER_ENV.get(name)) as server:
            result = run(server)
        print(f"  saved {result.save()}")
        results.append(result)
    print("\n== summary ==")
    print(summary_table(results))
    return 0 if all(r.passed for r in results) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
