"""The README's install for clusters like ours, run as written: values-bare.yaml, `--wait`, `helm test`.

The commands are read from the README's ``bare-install`` block (``make images`` is what the e2e
run did before; the images are already in the node). Only the namespace is made unique, so the
run cannot meet a user's or an earlier run's release. A release whose API cannot write its volume
fails the install loudly, with the fix in the check container's log (issue 16, item 4).
"""

from __future__ import annotations

import re
import secrets
import shlex
from collections.abc import Iterator
from contextlib import contextmanager

from tests.support.helm_release import (
    ROOT,
    SANDBOX_IMAGE,
    TROVE_IMAGE,
    kubectl,
    require_cluster,
    run,
)

README = ROOT / "README.md"


def readme_commands() -> list[list[str]]:
    text = README.read_text()
    block = re.search(r"<!-- bare-install:[^>]*-->\n```sh\n(.*?)```", text, re.S)
    assert block, "README.md lost its bare-install block"
    return [shlex.split(line) for line in block.group(1).splitlines() if line.strip()]


def localised(argv: list[str], namespace: str) -> list[str]:
    """The README's command in our own namespace (and sandbox namespace), with this run's images."""
    out = [namespace if i and argv[i - 1] == "-n" else arg for i, arg in enumerate(argv)]
    if argv[:2] == ["helm", "install"]:
        out += ["--set-string", f"sandbox.namespace.name={namespace}-sandboxes"]
        for key, ref in (("image", TROVE_IMAGE), ("sandbox.image", SANDBOX_IMAGE)):
            repository, _, tag = ref.rpartition(":")
            out += ["--set-string", f"{key}.repository={repository}", "--set-string", f"{key}.tag={tag}"]
    return out


@contextmanager
def fresh_namespace() -> Iterator[str]:
    require_cluster()
    namespace = f"trove-bare-{secrets.token_hex(4)}"
    try:
        yield namespace
    finally:
        run("helm", "uninstall", "trove", "-n", namespace, "--wait", "--timeout", "120s", check=False)
        kubectl("delete", "namespace", namespace, f"{namespace}-sandboxes", "--wait=false", check=False)


def test_the_readme_bare_install_works_as_written_and_helm_test_passes() -> None:
    commands = readme_commands()
    assert commands[0] == ["make", "images"]
    install, test = commands[1], commands[2]
    assert install[:3] == ["helm", "install", "trove"]
    assert "--wait" in install
    assert "charts/trove/values-bare.yaml" in install
    assert test[:3] == ["helm", "test", "trove"]
    with fresh_namespace() as namespace:
        installed = run(*localised(install, namespace), timeout=400)
        assert "STATUS: deployed" in installed.stdout
        assert f"helm test trove --namespace {namespace}" in installed.stdout
        done = run(*localised(test, namespace), timeout=300)
        assert re.search(r"TEST SUITE:\s+trove-test", done.stdout), done.stdout
        assert "Phase:          Succeeded" in done.stdout
        # Run twice: the test pod and its namespace's key come and go cleanly.
        again = run(*localised(test, namespace), timeout=300)
        assert "Phase:          Succeeded" in again.stdout


def test_a_volume_the_api_cannot_write_fails_the_install_with_the_fix() -> None:
    """host-path volumes are root-owned: without the chown, `--wait` fails and the log says why."""
    install = readme_commands()[1]
    with fresh_namespace() as namespace:
        timeout_at = install.index("--timeout") + 1
        argv = [*localised(install, namespace), "--set", "volumePermissions.enabled=false"]
        argv[timeout_at] = "45s"
        failed = run(*argv, check=False, timeout=200)
        assert failed.returncode != 0
        assert "STATUS: deployed" not in failed.stdout
        log = kubectl(
            "logs", "-n", namespace, "deploy/trove-api", "-c", "check-data-volume", check=False
        ).stdout
        assert "is not writable by uid 10001: set volumePermissions.enabled=true" in log
