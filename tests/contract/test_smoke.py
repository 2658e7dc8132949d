"""Smoke: the official client can exec and write against a live server."""

from tests.support.sdk import client
from tests.support.server import LiveServer


def test_exec_and_write_round_trip(server: LiveServer, namespace: str) -> None:
    with client(server, namespace) as trove:
        assert trove.exec("echo hi") == "hi\n"
        result = trove.write("workspace/a/b.txt", "hé")
        assert (result.path, result.size_bytes) == ("workspace/a/b.txt", 3)
        assert trove.read_text("a/b.txt") == "hé"
