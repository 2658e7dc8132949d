"""``files.rename`` through the e2b SDK in Trove's events: the old path ``file.deleted``
(``renamed_to``), every file at the new one ``file.written`` (``renamed_from``)."""

from __future__ import annotations

from typing import Any

import httpx
from e2b import Sandbox

from tests.e2b import WAIT_S
from tests.support.server import LiveServer


def file_events(server: LiveServer, namespace: str) -> list[tuple[str, str, Any]]:
    """(type, path, the other end of a rename) of the namespace's file events, oldest first."""
    r = httpx.get(
        f"{server.base_url}/v1/workspaces/{server.workspace_id}/events",
        params={"namespace": namespace, "types": "file.written,file.deleted", "limit": 200},
        headers={"Authorization": f"Bearer {server.workspace_key}"},
        timeout=WAIT_S,
    )
    assert r.status_code == 200, r.text
    return [
        (e["type"], e["data"]["path"], e["data"].get("renamed_to") or e["data"].get("renamed_from"))
        for e in reversed(r.json()["events"])
    ]


def test_rename_of_a_file_and_of_a_directory_emits_trove_events(e2b_env: LiveServer) -> None:
    sbx = Sandbox.create()
    try:
        sbx.files.write("a/one.txt", "1")
        sbx.files.write_files([{"path": "d/x.txt", "data": "xx"}, {"path": "d/sub/y.bin", "data": b"yyy"}])
        before = len(file_events(e2b_env, sbx.sandbox_id))
        sbx.files.rename("a/one.txt", "b/uno.txt")
        assert file_events(e2b_env, sbx.sandbox_id)[before:] == [
            ("file.deleted", "workspace/a/one.txt", "workspace/b/uno.txt"),
            ("file.written", "workspace/b/uno.txt", "workspace/a/one.txt"),
        ]
        before += 2
        sbx.files.rename("/home/user/d", "/home/user/e")
        after = file_events(e2b_env, sbx.sandbox_id)[before:]
        assert after[0] == ("file.deleted", "workspace/d", "workspace/e")
        assert sorted(after[1:]) == [
            ("file.written", "workspace/e/sub/y.bin", "workspace/d/sub/y.bin"),
            ("file.written", "workspace/e/x.txt", "workspace/d/x.txt"),
        ]
    finally:
        sbx.kill()
