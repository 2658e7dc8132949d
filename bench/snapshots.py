"""`python -m bench.snapshots`: snapshot create and restore of a 100 MB mixed namespace vs tar.

Runs its own `trove-server serve` (directory snapshot store), fills one namespace with
~100 MB (random binaries, compressible text, 2,000 small files) through exec, then times
create and restore through the official client against `tar czf` / `tar xzf` of the same
tree on the host in the same run (median of 3 each). Target: each ratio ≤ 1.3.
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from trove_sdk import TroveClient

from bench.common import Result, ServerProcess, header, launch_server, ratio

NAME = "snapshots"
ROUNDS = 3
TARGET = 1.3
NAMESPACE = "bench-snap"
FILL = [
    "mkdir -p workspace/bin workspace/text workspace/small",
    "for i in 1 2 3 4; do head -c 10000000 /dev/urandom > workspace/bin/r$i.bin; done",
    "for i in 1 2 3 4; do head -c 7500000 /dev/urandom | base64 > workspace/text/t$i.txt; done",
    "cd workspace/small && for d in $(seq 20); do mkdir d$d; for i in $(seq 100);"
    " do head -c 7500 /dev/urandom | base64 > d$d/f$i.txt; done; done",
]


def _timed(action: Callable[[], object]) -> float:
    started = time.perf_counter()
    action()
    return time.perf_counter() - started


def _tar(*args: str) -> Callable[[], object]:
    return lambda: subprocess.run(["tar", *args], check=True)


def _tree_bytes(root: Path) -> int:
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file() and not p.is_symlink())


def run(server: ServerProcess) -> Result:
    header("snapshots: create/restore of a 100 MB mixed namespace vs tar czf / tar xzf")
    with TroveClient(
        api_key=server.workspace_key, namespace=NAMESPACE, base_url=server.base_url, timeout=600
    ) as trove:
        for step in FILL:
            trove.exec(step)
        tree = server.data_dir / "namespaces" / server.workspace_id / NAMESPACE
        size = _tree_bytes(tree)
        files = int(trove.exec("find workspace -type f | wc -l"))
        print(f"  namespace: {size / 1e6:.1f} MB in {files} files", flush=True)
        create, restore, tar_c, tar_x = [], [], [], []
        snapshot_ids: list[str] = []
        with tempfile.TemporaryDirectory(prefix="trove-bench-tar-", dir="/tmp") as scratch:
            archive = Path(scratch) / "tree.tgz"
            for _ in range(ROUNDS):
                create.append(_timed(lambda: snapshot_ids.append(trove.create_snapshot().snapshot_id)))
                tar_c.append(
                    _timed(
                        lambda: subprocess.run(["tar", "czf", str(archive), "-C", str(tree), "."], check=True)
                    )
                )
                restore.append(_timed(lambda: trove.restore_snapshot(snapshot_ids[-1])))
                target = Path(tempfile.mkdtemp(dir=scratch))
                tar_x.append(_timed(_tar("xzf", str(archive), "-C", str(target))))
                subprocess.run(["rm", "-rf", str(target)], check=True)
            tar_size = archive.stat().st_size
        snap_size = trove.list_snapshots()[0].size_bytes
    medians = {
        k: statistics.median(v)
        for k, v in {"create": create, "tar_czf": tar_c, "restore": restore, "tar_xzf": tar_x}.items()
    }
    create_ratio = ratio(medians["create"], medians["tar_czf"])
    restore_ratio = ratio(medians["restore"], medians["tar_xzf"])
    print(f"  create  {medians['create']:.2f} s vs tar czf {medians['tar_czf']:.2f} s  ratio {create_ratio}")
    print(
        f"  restore {medians['restore']:.2f} s vs tar xzf {medians['tar_xzf']:.2f} s  ratio {restore_ratio}"
    )
    print(f"  tarball {snap_size / 1e6:.1f} MB (tar czf: {tar_size / 1e6:.1f} MB)")
    return Result(
        name=NAME,
        figure=f"create {medians['create']:.2f} s, restore {medians['restore']:.2f} s "
        f"({size / 1e6:.0f} MB, {files} files)",
        baseline=f"tar czf {medians['tar_czf']:.2f} s, tar xzf {medians['tar_xzf']:.2f} s",
        ratio=f"create {create_ratio}, restore {restore_ratio}",
        target=f"each ≤ {TARGET}",
        passed=create_ratio <= TARGET and restore_ratio <= TARGET,
        details={
            "bytes": size,
            "files": files,
            "rounds": {"create": create, "tar_czf": tar_c, "restore": restore, "tar_xzf": tar_x},
            "snapshot_bytes": snap_size,
            "tar_czf_bytes": tar_size,
        },
    )


def main() -> int:
    with launch_server() as server:
        result = run(server)
    result.show()
    print(f"  saved {result.save()}")
    return 0 if result.passed else 1


if __name__ == "__main__":
    sys.exit(main())
