"""`python -m tests.chaos [--cases a,b]`: run the fault and load cases, print what each found.

Exit status 1 when any invariant failed or a case could not finish; a skipped case (e.g. the
full-disk case when not root) does not fail the run.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import traceback
from collections.abc import Callable

from tests.chaos import crash, disk_full, http_abuse, load, restore, webhooks
from tests.chaos.report import CaseReport, render, summary

CASES: dict[str, tuple[str, Callable[[CaseReport], None]]] = {
    "upload": ("kill -9 mid-upload", crash.kill_mid_upload),
    "restore": ("kill -9 mid-restore", restore.kill_mid_restore),
    "burst": ("kill -9 mid-burst of writes, execs and deletes", crash.kill_mid_burst),
    "disk-full": ("a full data disk", disk_full.fill_the_disk),
    "slowloris": ("slowloris connections", http_abuse.slowloris),
    "cut-bodies": ("uploads whose connection drops mid-body", http_abuse.cut_bodies),
    "webhooks": ("webhook receiver outage across a kill -9", webhooks.receiver_outage),
    "load": ("100 concurrent clients", load.concurrent_clients),
}


def run_case(name: str) -> CaseReport:
    title, case = CASES[name]
    report = CaseReport(name=name, title=title)
    started = time.monotonic()
    try:
        case(report)
    except Exception as exc:  # the harness reports a misbehaving server, it never dies of one
        report.error = f"{type(exc).__name__}: {exc}"
        if os.environ.get("CHAOS_DEBUG") == "1":
            traceback.print_exc()
    report.seconds = time.monotonic() - started
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.chaos", description=__doc__)
    parser.add_argument(
        "--cases", default="", help=f"comma-separated subset of: {', '.join(CASES)} (default: all)"
    )
    args = parser.parse_args(argv)
    names = [n.strip() for n in args.cases.split(",") if n.strip()] or list(CASES)
    unknown = [n for n in names if n not in CASES]
    if unknown:
        parser.error(f"unknown case(s) {unknown}; choose from {', '.join(CASES)}")
    reports = []
    for name in names:
        print(f"-- running {name} ...", file=sys.stderr, flush=True)
        report = run_case(name)
        reports.append(report)
        print(render(report), flush=True)
    print(summary(reports), flush=True)
    return 1 if any(r.failed for r in reports) else 0


if __name__ == "__main__":
    sys.exit(main())
