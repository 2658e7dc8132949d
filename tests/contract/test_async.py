"""The async official clients behave like the sync ones against the same server."""

from __future__ import annotations

import asyncio

import pytest
from trove_sdk import (
    AsyncTroveAdminClient,
    AsyncTroveClient,
    TroveAuthError,
    TroveError,
    TroveExecError,
    TroveNotFoundError,
)

from tests.support.sdk import async_client
from tests.support.server import LiveServer


async def test_async_exec_write_read_and_delete(server: LiveServer, namespace: str) -> None:
    async with async_client(server, namespace) as trove:
        assert await trove.exec("echo hello") == "hello\n"
        result = await trove.exec_detailed("echo e >&2; exit 5")
        assert (result.exit_code, result.stderr) == (5, "e\n")
        with pytest.raises(TroveExecError) as caught:
            await trove.exec("exit 2")
        assert caught.value.exit_code == 2
        chained = await trove.exec_chain(["cd workspace", "V=7", "echo $V"])
        assert chained.stdout == "7\n"
        assert (await trove.exec("wc -c", stdin="abcd")).strip() == "4"

        written = await trove.write("workspace/hello.txt", "hi")
        assert (written.path, written.size_bytes) == ("workspace/hello.txt", 2)
        assert await trove.read_text("hello.txt") == "hi"
        uploaded = await trove.upload("workspace/b/blob.bin", bytes(range(10)))
        assert uploaded.path == "workspace/b/blob.bin"
        assert await trove.read_bytes("workspace/b/blob.bin") == bytes(range(10))
        assert await trove.read("workspace/b/blob.bin") == bytes(range(10))
        full = await trove.read_bytes_full("workspace/b/blob.bin")
        assert (full.truncated, full.size_bytes) == (False, 10)
        assert (await trove.read_file("workspace/b/blob.bin")).encoding == "binary"

        listing = await trove.list_dir()
        assert [(e.name, e.is_dir) for e in listing] == [("b", True), ("hello.txt", False)]
        assert [e.path for e in await trove.list_dir(recursive=True)] == [
            "workspace/b",
            "workspace/b/blob.bin",
            "workspace/hello.txt",
        ]

        assert await trove.delete("workspace/b") == "workspace/b"
        with pytest.raises(TroveNotFoundError):
            await trove.delete("workspace/b")
        with pytest.raises(TroveNotFoundError):
            await trove.read_text("workspace/b/blob.bin")


async def test_async_init_helpers_and_bootstrap(server: LiveServer, namespace: str) -> None:
    async with async_client(server, namespace) as trove:
        cold = await trove.bootstrap()
        assert (cold.file_count, cold.init_script, cold.agent_memory) == (0, None, None)
        assert await trove.get_init() is None
        assert await trove.clear_init() is False
        await trove.write("workspace/data/x.csv", "1,2")
        await trove.set_init("cd workspace/data\n")
        assert await trove.get_init() == "cd workspace/data\n"
        assert await trove.exec("ls") == "x.csv\n"
        await trove.write("workspace/.trove/agent.md", "handoff")
        bs = await trove.bootstrap()
        assert bs.file_count == 1
        assert [f.path for f in bs.recent_files] == ["workspace/data/x.csv"]
        assert (bs.init_script, bs.agent_memory) == ("cd workspace/data\n", "handoff")
        assert await trove.clear_init() is True
        assert await trove.get_init() is None


async def test_async_concurrent_execs_in_one_namespace(server: LiveServer, namespace: str) -> None:
    async with async_client(server, namespace) as trove:
        outputs = await asyncio.gather(
            *(trove.exec(f"echo {i} > workspace/{i}.txt && echo {i}") for i in range(8))
        )
        assert outputs == [f"{i}\n" for i in range(8)]
        names = sorted(e.name for e in await trove.list_dir())
        assert names == sorted(f"{i}.txt" for i in range(8))


async def test_async_errors_map_like_the_sync_client(server: LiveServer, namespace: str) -> None:
    async with async_client(server, namespace, server.admin_key) as as_admin:
        with pytest.raises(TroveAuthError) as caught:
            await as_admin.exec("true")
        assert caught.value.status_code == 403
    async with async_client(server, namespace) as trove:
        with pytest.raises(TroveError) as caught_path:
            await trove.write("../escape", "x")
        assert caught_path.value.status_code == 400


async def test_async_admin_from_api_key_and_key_lifecycle(server: LiveServer, namespace: str) -> None:
    adm = await AsyncTroveAdminClient.from_api_key(server.admin_key, base_url=server.base_url)
    async with adm:
        assert adm._workspace_id == server.workspace_id
        key = await adm.create_key("async-" + namespace, namespace=namespace)
        assert (key.scope, key.namespace) == ("workspace", namespace)
        assert key.key_id in {k.key_id for k in await adm.list_keys()}
        async with AsyncTroveClient(
            api_key=key.api_key, namespace=namespace, base_url=server.base_url
        ) as scoped:
            assert await scoped.exec("echo scoped") == "scoped\n"
            await adm.revoke_key(key.key_id)
            with pytest.raises(TroveAuthError) as caught:
                await scoped.exec("echo scoped")
            assert caught.value.status_code == 401
        assert key.key_id not in {k.key_id for k in await adm.list_keys()}
        with pytest.raises(TroveNotFoundError):
            await adm.revoke_key(key.key_id)


async def test_async_admin_rejects_workspace_key_mutations(server: LiveServer) -> None:
    adm = await AsyncTroveAdminClient.from_api_key(server.workspace_key, base_url=server.base_url)
    async with adm:
        with pytest.raises(TroveAuthError) as caught:
            await adm.create_key("nope")
        assert caught.value.status_code == 403
