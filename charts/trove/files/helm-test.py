"""`helm test`: through the API Service, mint a key for one namespace, write a file, exec, revoke.

Standard library only (runs in the trove image with `python3 -I`); any failure exits non-zero
with the step and the API's answer, which `kubectl logs` of the test pod shows.
"""

import json
import os
import secrets
import sys
import urllib.error
import urllib.request

URL = os.environ["TROVE_URL"].rstrip("/")
ADMIN = os.environ["TROVE_ADMIN_KEY"]
NAMESPACE = os.environ.get("TROVE_TEST_NAMESPACE", "helm-test")


def call(step, method, path, key, body=None, namespace=None):
    request = urllib.request.Request(URL + path, method=method)
    request.add_header("Authorization", "Bearer " + key)
    if namespace:
        request.add_header("X-Namespace", namespace)
    data = None
    if body is not None:
        data = json.dumps(body).encode()
        request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, data, timeout=90) as response:
            return json.loads(response.read() or b"null")
    except urllib.error.HTTPError as exc:
        sys.exit(f"FAIL {step}: {method} {path} -> {exc.code} {exc.read()[:500]!r}")
    except OSError as exc:
        sys.exit(f"FAIL {step}: {method} {path} -> {exc}")


workspace = call("admin key", "GET", "/v1/me", ADMIN)["workspace_id"]
keys = f"/v1/workspaces/{workspace}/keys"
created = call("mint key", "POST", keys, ADMIN, {"name": "helm-test", "namespace": NAMESPACE, "admin": False})
try:
    token = secrets.token_hex(8)
    call(
        "write", "POST", "/write", created["api_key"], {"path": "helm-test.txt", "content": token}, NAMESPACE
    )
    result = call(
        "exec", "POST", "/v1/exec", created["api_key"], {"command": "cat workspace/helm-test.txt"}, NAMESPACE
    )
    if result.get("exit_code") != 0 or result.get("stdout") != token:
        sys.exit(f"FAIL exec: expected {token!r}, got {result!r}")
    call("delete", "POST", "/delete", created["api_key"], {"path": "helm-test.txt"}, NAMESPACE)
finally:
    call("revoke key", "DELETE", f"{keys}/{created['key_id']}", ADMIN)
print(f"OK: wrote and read back a file through exec in namespace {NAMESPACE} at {URL}")
