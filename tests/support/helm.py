"""`helm template` / `helm lint` for the chart tests: run, parse, pick objects (skips without helm)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import yaml

from tests.support.cluster import skip_or_fail

ROOT = Path(__file__).parents[2]
CHART = ROOT / "charts" / "trove"
CI_VALUES = sorted((CHART / "ci").glob("*-values.yaml"))
Doc = dict[str, Any]


def helm_run(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    if shutil.which("helm") is None:
        skip_or_fail("helm is not installed (../shared/k8s/tools.sh installs it)")
    done = subprocess.run(["helm", *args], capture_output=True, text=True, timeout=120, check=False)
    if check and done.returncode != 0:
        raise AssertionError(f"helm {' '.join(args)} failed:\n{done.stderr}")
    return done


def render(*args: str, chart: Path = CHART) -> list[Doc]:
    out = helm_run("template", "t", str(chart), "--namespace", "trove", *args).stdout
    return [doc for doc in yaml.safe_load_all(out) if doc]


def render_error(*args: str) -> str:
    done = helm_run("template", "t", str(CHART), "--namespace", "trove", *args, check=False)
    assert done.returncode != 0, "expected helm template to fail"
    return done.stderr


def find(docs: list[Doc], kind: str, suffix: str = "") -> Doc:
    found = [d for d in docs if d["kind"] == kind and d["metadata"]["name"].endswith(suffix)]
    assert len(found) == 1, f"{kind} *{suffix}: {[d['metadata']['name'] for d in found]}"
    return found[0]


def kinds(docs: list[Doc]) -> set[str]:
    return {d["kind"] for d in docs}


def env_of(deployment: Doc) -> dict[str, Any]:
    [container] = deployment["spec"]["template"]["spec"]["containers"]
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container["env"]}


def rules(role: Doc) -> set[tuple[str, str, str]]:
    return {
        (group, resource, verb)
        for rule in role["rules"]
        for group in rule["apiGroups"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
    }
