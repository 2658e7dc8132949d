#!/usr/bin/env python3
"""trove-agent: runs in the sandbox pod behind one long-lived exec session and multiplexes
many commands and file transfers over its stdin/stdout.

Frames in both directions: a 9-byte header ``>IIB`` (payload length, request id, type), then
the payload. Client → agent: OPEN (JSON op), DATA (stdin or file bytes), EOF, CANCEL.
Agent → client: HELLO (id 0), DATA (file bytes), STDOUT, STDERR, RESULT (JSON; ends the id).

Each command runs in its own process group with its own timeout; everything it started
(found by a marker in the environment, so ``setsid`` cannot escape) is killed when it ends.
File operations resolve paths with realpath and refuse any that leave the workspace root,
then walk the resolved path with O_NOFOLLOW, so a symlink swapped in meanwhile is not followed.
Standard library only: it must run on any image with python3.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import ctypes
import errno
import fcntl
import json
import os
import secrets
import shutil
import signal
import stat
import struct
import sys
import time
from collections.abc import Callable

HEADER = struct.Struct(">IIB")
OPEN, DATA, EOF, CANCEL, STDOUT, STDERR, RESULT, HELLO = 1, 2, 3, 4, 5, 6, 7, 8
VERSION = 1
CHUNK = 256 * 1024
PIPE_BYTES = 1024 * 1024
DRAIN_GRACE_S = 2.0
KILL_WAIT_S = 1.0
WRITEBACK_BYTES = 8 * 1024 * 1024
MARKER = "TROVE_EXEC_TAG"
DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
TEMP_PREFIX = ".trove-upload-"
# This agent's uploads in progress, by temp name: the start-up sweep leaves them alone.
OWN_UPLOADS: set[str] = set()
SANDBOX_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
# Set by the operator on the pod: RLIMIT_NPROC of every command. It counts the processes of the
# uid, and each sandbox pod runs as its own uid, so a fork bomb stops at the cap, not at the
# node's PID table.
MAX_PROCESSES_ENV = "TROVE_MAX_PROCESSES"


def process_cap() -> str:
    """`` ulimit -u N`` for the command's shell, or nothing when the pod sets no cap."""
    value = os.environ.get(MAX_PROCESSES_ENV, "")
    return f"ulimit -u {int(value)} || exit 125; " if value.isdigit() and int(value) > 0 else ""


class OpError(Exception):
    def __init__(self, code: str, rel: str, message: str = "") -> None:
        super().__init__(message or code)
        self.code = code
        self.rel = rel
        self.message = message


def translate(exc: OSError, rel: str) -> OpError:
    codes = {
        errno.ENOENT: "path_not_found",
        errno.ENOTDIR: "not_a_directory",
        errno.EISDIR: "is_a_directory",
        errno.ELOOP: "path_rejected",
        errno.EMLINK: "path_rejected",
        errno.ENOSPC: "storage_full",
        errno.EDQUOT: "storage_full",
        errno.ENAMETOOLONG: "path_rejected",
        errno.EFBIG: "payload_too_large",
    }
    return OpError(codes.get(exc.errno or 0, "io_error"), rel, exc.strerror or str(exc))


# -- paths ----------------------------------------------------------------------------------


class Root:
    def __init__(self, path: str) -> None:
        self.path = os.path.realpath(path)

    def inside(self, path: str) -> bool:
        return path == self.path or path.startswith(self.path.rstrip("/") + "/")

    def resolve(self, rel: str, *, follow_last: bool = True) -> str:
        if not rel:
            return ""
        if follow_last:
            real = os.path.realpath(os.path.join(self.path, rel))
        else:
            # As the local runtime: a symlink as the last name is the link itself.
            head, _, last = rel.rpartition("/")
            real = os.path.join(os.path.realpath(os.path.join(self.path, head)), last)
        if not self.inside(real):
            raise OpError("path_rejected", rel, "resolves outside the namespace")
        return "" if real == self.path else os.path.relpath(real, self.path)

    def open_dir(self, rel: str, *, create: bool = False) -> int:
        fd = os.open(self.path, DIR_FLAGS)
        try:
            for part in [p for p in rel.split("/") if p]:
                try:
                    next_fd = os.open(part, DIR_FLAGS, dir_fd=fd)
                except FileNotFoundError:
                    if not create:
                        raise
                    with contextlib.suppress(FileExistsError):
                        os.mkdir(part, 0o755, dir_fd=fd)
                        os.fsync(fd)  # the new entry is durable before anything lands in it
                    next_fd = os.open(part, DIR_FLAGS, dir_fd=fd)
                os.close(fd)
                fd = next_fd
            return fd
        except OSError as exc:
            os.close(fd)
            raise translate(exc, rel) from exc


def entry(rel: str, st: os.stat_result) -> list[object]:
    is_dir = stat.S_ISDIR(st.st_mode)
    return [rel, is_dir, 0 if is_dir else st.st_size, st.st_mtime_ns]


# -- the session ----------------------------------------------------------------------------


class Agent:
    def __init__(self, root: str, writer: asyncio.StreamWriter, cwd: str = "/") -> None:
        self.root = Root(root)
        self.cwd = cwd
        self.writer = writer
        self.inbox: dict[int, asyncio.Queue[tuple[int, bytes]]] = {}
        self.handles: dict[int, int] = {}
        self.tasks: set[asyncio.Task[None]] = set()
        self.session = f"{os.getpid()}-{secrets.token_hex(4)}"

    def send(self, rid: int, kind: int, payload: bytes = b"") -> None:
        self.writer.write(HEADER.pack(len(payload), rid, kind) + payload)

    async def flush(self) -> None:
        await self.writer.drain()

    def result(self, rid: int, body: dict[str, object]) -> None:
        self.send(rid, RESULT, json.dumps(body).encode())

    async def serve(self, frames: FrameInput) -> None:
        await self.flush()
        await frames.closed
        for task in list(self.tasks):
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)

    def deliver(self, rid: int, kind: int, payload: bytes) -> None:
        if kind == OPEN:
            queue: asyncio.Queue[tuple[int, bytes]] = asyncio.Queue()
            self.inbox[rid] = queue
            task = asyncio.create_task(self.run(rid, json.loads(payload), queue))
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)
        elif rid in self.inbox:
            self.inbox[rid].put_nowait((kind, payload))

    async def run(
        self, rid: int, request: dict[str, object], queue: asyncio.Queue[tuple[int, bytes]]
    ) -> None:
        op = str(request.get("op"))
        try:
            handler = getattr(self, f"op_{op}", None)
            if handler is None:
                raise OpError("bad_request", "", f"unknown op {op}")
            body = await handler(rid, request, queue)
            self.result(rid, {"ok": True, **body})
        except OpError as exc:
            self.result(rid, {"ok": False, "code": exc.code, "rel": exc.rel, "message": exc.message})
        except OSError as exc:
            err = translate(exc, str(request.get("path", "")))
            self.result(rid, {"ok": False, "code": err.code, "rel": err.rel, "message": err.message})
        except Exception as exc:  # report, never die: other requests share this session
            self.result(rid, {"ok": False, "code": "internal", "rel": "", "message": repr(exc)})
        finally:
            self.inbox.pop(rid, None)
            with contextlib.suppress(ConnectionError):
                await self.flush()

    # -- exec -----------------------------------------------------------------------------

    async def op_exec(
        self, rid: int, req: dict[str, object], queue: asyncio.Queue[tuple[int, bytes]]
    ) -> dict[str, object]:
        script = str(req["script"])
        timeout = float(req.get("timeout", 30))  # type: ignore[arg-type]
        limit = int(req.get("limit", 1 << 20))  # type: ignore[call-overload]
        # bash counts ``ulimit -f`` in 1024-byte blocks (dash: 512).
        file_blocks = max(1, int(req.get("file_bytes", 100 << 20)) // 1024)  # type: ignore[call-overload]
        tag = f"{self.session}-{rid}"
        env = {
            "PATH": SANDBOX_PATH,
            "HOME": self.root.path,
            "LANG": "C.UTF-8",
            "TERM": "dumb",
            "USER": "agent",
            MARKER: tag,
        }
        started = time.monotonic()
        # The limit (soft and hard) is set by the same bash before the script's own lines are
        # parsed, so the script cannot lift it; one exec fewer than a wrapper shell. Same line:
        # line numbers in bash's error messages stay those of the script.
        # CPU seconds per command (the local sandbox): set here, since on the long-lived agent
        # itself RLIMIT_CPU would add up over every call.
        cpu = f"ulimit -t {int(req['cpu_s'])} || exit 125; " if req.get("cpu_s") else ""  # type: ignore[call-overload]
        limited = f"ulimit -f {file_blocks} || exit 125; {cpu}{process_cap()}{script}"
        proc = await asyncio.create_subprocess_exec(
            "/bin/bash", "--noprofile", "--norc", "-c", limited,
            stdin=asyncio.subprocess.PIPE if req.get("stdin") else asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            start_new_session=True,
            cwd=self.cwd,
            env=env,
        )  # fmt: skip
        assert proc.stdout is not None
        assert proc.stderr is not None
        cut = {STDOUT: False, STDERR: False}

        async def pump(stream: asyncio.StreamReader, kind: int) -> None:
            kept = 0
            while chunk := await stream.read(65536):
                room = limit - kept
                if room > 0:
                    self.send(rid, kind, chunk[:room])
                    kept += min(room, len(chunk))
                    await self.flush()
                if len(chunk) > room:
                    cut[kind] = True

        async def feed() -> None:
            assert proc.stdin is not None
            try:
                while True:
                    kind, payload = await queue.get()
                    if kind == DATA:
                        proc.stdin.write(payload)
                        await proc.stdin.drain()
                    elif kind == EOF:
                        break
                    elif kind == CANCEL:
                        kill_tree(proc.pid, tag)
                        break
            except (BrokenPipeError, ConnectionResetError):
                pass
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                proc.stdin.close()

        async def watch_cancel() -> None:
            while True:
                kind, _payload = await queue.get()
                if kind == CANCEL:
                    kill_tree(proc.pid, tag)
                    return

        tasks = [
            asyncio.create_task(pump(proc.stdout, STDOUT)),
            asyncio.create_task(pump(proc.stderr, STDERR)),
        ]
        side = asyncio.create_task(feed() if req.get("stdin") else watch_cancel())
        timed_out = False
        try:
            await asyncio.wait_for(exited(proc), timeout)
        except TimeoutError:
            timed_out = True
        finally:
            # Whatever happened, nothing this call started may outlive it.
            kill_tree(proc.pid, tag)
            if proc.returncode is None:
                await proc.wait()
            side.cancel()
        _done, pending = await asyncio.wait(tasks, timeout=DRAIN_GRACE_S)
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, side, return_exceptions=True)
        kill_tree(proc.pid, tag)
        code = proc.returncode if proc.returncode is not None else -signal.SIGKILL
        return {
            "exit_code": code if code >= 0 else 128 - code,
            "timed_out": timed_out,
            "stdout_truncated": cut[STDOUT],
            "stderr_truncated": cut[STDERR],
            "duration_ms": int((time.monotonic() - started) * 1000),
        }

    # -- files ----------------------------------------------------------------------------

    async def op_write(
        self, rid: int, req: dict[str, object], queue: asyncio.Queue[tuple[int, bytes]]
    ) -> dict[str, object]:
        rel = str(req["path"])
        max_bytes = int(req.get("max_bytes", 1 << 62))  # type: ignore[call-overload]
        real = self.root.resolve(rel)
        if not real:
            raise OpError("is_a_directory", rel)
        head, _, last = real.rpartition("/")
        parent = self.root.open_dir(head, create=True)
        temp = f"{TEMP_PREFIX}{secrets.token_hex(8)}"
        OWN_UPLOADS.add(temp)
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644, dir_fd=parent)
        fcntl.flock(fd, fcntl.LOCK_EX)  # a live upload: ``sweep`` leaves it alone
        size = written_back = 0
        done = False
        try:
            while True:
                kind, payload = await queue.get()
                if kind == CANCEL:
                    raise OpError("cancelled", rel)
                if kind == EOF:
                    break
                size += len(payload)
                if size > max_bytes:
                    raise OpError("payload_too_large", rel)
                view = memoryview(payload)
                while view:
                    view = view[os.write(fd, view) :]
                if size - written_back >= WRITEBACK_BYTES:
                    await asyncio.to_thread(start_writeback, fd, written_back, size - written_back)
                    written_back = size
            with contextlib.suppress(FileNotFoundError):
                if stat.S_ISDIR(os.stat(last, dir_fd=parent, follow_symlinks=False).st_mode):
                    raise OpError("is_a_directory", rel)
            os.fsync(fd)
            # rename() replaces the name itself: a symlink swapped in here is replaced, not followed.
            os.rename(temp, last, src_dir_fd=parent, dst_dir_fd=parent)
            done = True
            os.fsync(parent)
            return {"size": size}
        except OSError as exc:
            raise translate(exc, rel) from exc
        finally:
            os.close(fd)
            if not done:
                with contextlib.suppress(OSError):
                    os.unlink(temp, dir_fd=parent)
            os.close(parent)
            OWN_UPLOADS.discard(temp)

    async def op_open(
        self, rid: int, req: dict[str, object], queue: asyncio.Queue[tuple[int, bytes]]
    ) -> dict[str, object]:
        rel = str(req["path"])
        real = self.root.resolve(rel)
        if not real:
            raise OpError("is_a_directory", rel)
        head, _, last = real.rpartition("/")
        parent = self.root.open_dir(head)
        try:
            # O_NONBLOCK: opening a FIFO must not wait for a writer; it is refused just below.
            fd = os.open(last, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK, dir_fd=parent)
        except OSError as exc:
            raise translate(exc, rel) from exc
        finally:
            os.close(parent)
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            os.close(fd)
            raise OpError("is_a_directory", rel, "not a regular file")
        os.set_blocking(fd, True)
        self.handles[rid] = fd
        return {"handle": rid, "size": st.st_size, "mtime_ns": st.st_mtime_ns}

    async def op_pread(
        self, rid: int, req: dict[str, object], queue: asyncio.Queue[tuple[int, bytes]]
    ) -> dict[str, object]:
        fd = self.handles.get(int(req["handle"]))  # type: ignore[call-overload]
        if fd is None:
            raise OpError("handle_lost", "")
        position, end = int(req["start"]), int(req["end"])  # type: ignore[call-overload]
        # Read straight in behind the frame's header; the writer has copied whatever the pipe
        # did not take by the time write() returns, so the buffer is reused.
        frame = memoryview(bytearray(HEADER.size + CHUNK))
        while position < end:
            n = os.preadv(fd, [frame[HEADER.size : HEADER.size + min(CHUNK, end - position)]], position)
            if not n:
                break
            position += n
            HEADER.pack_into(frame, 0, n, rid, DATA)
            self.writer.write(frame[: HEADER.size + n])
            await self.flush()
        return {}

    async def op_close(
        self, rid: int, req: dict[str, object], queue: asyncio.Queue[tuple[int, bytes]]
    ) -> dict[str, object]:
        fd = self.handles.pop(int(req["handle"]), None)  # type: ignore[call-overload]
        if fd is not None:
            os.close(fd)
        return {}

    async def op_list(
        self, rid: int, req: dict[str, object], queue: asyncio.Queue[tuple[int, bytes]]
    ) -> dict[str, object]:
        rel = str(req.get("path", ""))
        return await asyncio.to_thread(
            self.list_sync,
            rel,
            bool(req.get("recursive")),
            int(req.get("max_entries", 1000)),  # type: ignore[call-overload]
            int(req.get("max_depth", 32)),  # type: ignore[call-overload]
        )

    def list_sync(self, rel: str, recursive: bool, max_entries: int, max_depth: int) -> dict[str, object]:
        real = self.root.resolve(rel)
        dir_fd = self.root.open_dir(real)
        entries: list[list[object]] = []
        truncated = False
        # Entries carry the caller's spelling of the path, not a symlink's target.
        base = f"{rel}/" if rel else ""

        def walk(fd: int, prefix: str, depth: int) -> None:
            nonlocal truncated
            dirs: list[tuple[str, os.stat_result]] = []
            files: list[tuple[str, os.stat_result]] = []
            with os.scandir(fd) as it:
                for item in it:
                    if item.name.startswith(TEMP_PREFIX):  # an upload in progress, or cut off
                        continue
                    try:
                        st = item.stat(follow_symlinks=False)
                    except FileNotFoundError:
                        continue
                    (dirs if stat.S_ISDIR(st.st_mode) else files).append((item.name, st))
            dirs.sort()
            files.sort()
            for name, st in dirs:
                if len(entries) >= max_entries:
                    truncated = True
                    return
                entries.append(entry(prefix + name, st))
                if recursive:
                    if depth >= max_depth:
                        truncated = True
                        continue
                    try:
                        child = os.open(name, DIR_FLAGS, dir_fd=fd)
                    except OSError:
                        continue
                    try:
                        walk(child, prefix + name + "/", depth + 1)
                    finally:
                        os.close(child)
                    if truncated and len(entries) >= max_entries:
                        return
            for name, st in files:
                if len(entries) >= max_entries:
                    truncated = True
                    return
                entries.append(entry(prefix + name, st))

        try:
            walk(dir_fd, base, 1)
        finally:
            os.close(dir_fd)
        return {"entries": entries, "truncated": truncated}

    async def op_delete(
        self, rid: int, req: dict[str, object], queue: asyncio.Queue[tuple[int, bytes]]
    ) -> dict[str, object]:
        rel = str(req["path"])
        real = self.root.resolve(rel, follow_last=False)
        if not real:
            raise OpError("root_delete_refused", rel)
        head, _, last = real.rpartition("/")
        parent = self.root.open_dir(head)
        try:
            st = os.stat(last, dir_fd=parent, follow_symlinks=False)
            if stat.S_ISDIR(st.st_mode):
                await asyncio.to_thread(shutil.rmtree, last, dir_fd=parent)
            else:
                os.unlink(last, dir_fd=parent)
        except OSError as exc:
            raise translate(exc, rel) from exc
        finally:
            os.close(parent)
        return {}

    async def op_export(
        self, rid: int, req: dict[str, object], queue: asyncio.Queue[tuple[int, bytes]]
    ) -> dict[str, object]:
        """``tar czf -`` of the root, paced by the client's acknowledgements (cumulative bytes)."""
        window = int(req.get("window", 8 << 20))  # type: ignore[call-overload]
        proc = await asyncio.create_subprocess_exec(
            "tar", "-C", self.root.path, "--format=gnu", f"--exclude={TEMP_PREFIX}*", "-czf", "-",
            "--null", "--files-from=-",
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
            start_new_session=True,
        )  # fmt: skip
        assert proc.stdin is not None
        assert proc.stdout is not None
        assert proc.stderr is not None
        # Top-level names, not ".": members read "a/b.txt" as in the local runtime's tarballs.
        names = sorted(n for n in os.listdir(self.root.path) if not n.startswith(TEMP_PREFIX))
        proc.stdin.write(b"".join(os.fsencode(n) + b"\0" for n in names))
        proc.stdin.close()
        errors = asyncio.create_task(proc.stderr.read())
        sent = acked = 0
        try:
            while chunk := await proc.stdout.read(CHUNK):
                self.send(rid, DATA, chunk)
                sent += len(chunk)
                await self.flush()
                while sent - acked > window:
                    kind, payload = await queue.get()
                    if kind == DATA:
                        acked = int(payload)
                    elif kind == CANCEL:
                        raise OpError("cancelled", "")
            code = await proc.wait()
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            await proc.wait()
        stderr = (await errors).decode(errors="replace")
        # GNU tar exits 1 when a file changed while it was read: the archive is still valid.
        if code not in (0, 1):
            raise OpError("io_error", "", f"tar failed ({code}): {stderr.strip()[:500]}")
        return {"size": sent}

    async def op_import(
        self, rid: int, req: dict[str, object], queue: asyncio.Queue[tuple[int, bytes]]
    ) -> dict[str, object]:
        """Extract a streamed gzip tar beside the tree, then swap it in; the old tree goes only after."""
        token = secrets.token_hex(6)
        staging = os.path.join(self.root.path, f".trove-restore-{token}")
        os.mkdir(staging, 0o700)
        # Held until the end: another agent on this namespace (another API replica's, in another
        # pid namespace) sees the restore is alive and leaves it to this one (``finish_swaps``).
        owned = os.open(staging, DIR_FLAGS)
        fcntl.flock(owned, fcntl.LOCK_EX)
        proc = await asyncio.create_subprocess_exec(
            "tar", "-xzf", "-", "-C", staging, "--no-same-owner", "--delay-directory-restore",
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
            start_new_session=True,
        )  # fmt: skip
        assert proc.stdin is not None
        assert proc.stderr is not None
        errors = asyncio.create_task(proc.stderr.read())
        swapped = False
        try:
            while True:
                kind, payload = await queue.get()
                if kind == CANCEL:
                    raise OpError("cancelled", "")
                if kind == EOF:
                    break
                proc.stdin.write(payload)
                await proc.stdin.drain()
            proc.stdin.close()
            code = await proc.wait()
            if code != 0:
                message = (await errors).decode(errors="replace").strip()[:500]
                if any(s in message for s in ("No space left", "Disk quota exceeded", "Wrote only")):
                    raise OpError("storage_full", "", message)
                raise OpError("snapshot_corrupt", "", f"tar could not extract it: {message}")
            # tar does not fsync: the extracted tree goes to disk before it is swapped in, and
            # the swap's renames before the restore is answered (acknowledged means durable).
            await asyncio.to_thread(sync_filesystem, staging)
            await asyncio.to_thread(self.swap_in, staging, token)
            swapped = True
            await asyncio.to_thread(sync_filesystem, self.root.path)
            return {}
        except (BrokenPipeError, ConnectionResetError) as exc:
            message = (await errors).decode(errors="replace").strip()[:500]
            raise OpError("snapshot_corrupt", "", f"tar stopped early: {message}") from exc
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            await proc.wait()
            if not swapped:
                await asyncio.to_thread(shutil.rmtree, staging, True)
            os.close(owned)

    def swap_in(self, staging: str, token: str) -> None:
        # The root is a mount point and cannot be renamed, so its entries move: the old ones
        # aside first, then the new tree is renamed to .trove-new-* (the commit point: a crash
        # after it rolls forward, before it back; ``finish_swaps``), then its entries move in.
        old = os.path.join(self.root.path, f".trove-old-{token}")
        new = os.path.join(self.root.path, f".trove-new-{token}")
        os.mkdir(old, 0o700)
        keep = {os.path.basename(staging), os.path.basename(old)}
        for name in os.listdir(self.root.path):
            if name not in keep:
                os.rename(os.path.join(self.root.path, name), os.path.join(old, name))
        os.rename(staging, new)
        move_entries(new, self.root.path)
        os.rmdir(new)
        shutil.rmtree(old, ignore_errors=True)

    async def op_ping(
        self, rid: int, req: dict[str, object], queue: asyncio.Queue[tuple[int, bytes]]
    ) -> dict[str, object]:
        return {"pong": True}


async def exited(proc: asyncio.subprocess.Process) -> None:
    """Return when the shell itself has exited.

    ``Process.wait()`` on some Python versions (Debian's 3.11.2) also waits for the output
    pipes to close, which a leftover background job holds open; a pidfd says "exited" alone.
    """
    if proc.returncode is not None:
        return
    try:
        pidfd = os.pidfd_open(proc.pid)
    except ProcessLookupError:
        # Exited and already reaped (a fast command): the child watcher is about to report it,
        # and nothing else signals that without also waiting for the pipes.
        while proc.returncode is None:  # noqa: ASYNC110
            await asyncio.sleep(0.002)
        return
    except (AttributeError, OSError):
        await proc.wait()
        return
    loop = asyncio.get_running_loop()
    done: asyncio.Future[None] = loop.create_future()

    def exited_now() -> None:
        if not done.done():
            done.set_result(None)

    loop.add_reader(pidfd, exited_now)
    try:
        await done
    finally:
        loop.remove_reader(pidfd)
        os.close(pidfd)


def kill_tree(pgid: int, tag: str) -> None:
    """Kill the command's process group, then anything else carrying its marker (setsid'd children).

    Returns once none of them is alive: SIGKILL is only delivered when the target next runs,
    which on a busy node can be after the caller has its answer and looks (``ps``) again.
    A killed process whose parent has not reaped it yet has no environment left, so it no
    longer matches.
    """
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)
    needle = f"{MARKER}={tag}".encode()
    deadline = time.monotonic() + KILL_WAIT_S
    while True:
        found = False
        for name in os.listdir("/proc"):
            if not name.isdigit():
                continue
            try:
                with open(f"/proc/{name}/environ", "rb") as f:
                    environ = f.read()
            except OSError:
                continue
            if needle + b"\x00" in environ or environ.endswith(needle):
                found = True
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(int(name), signal.SIGKILL)
        if not found or time.monotonic() > deadline:
            return
        time.sleep(0.002)


class FrameInput(asyncio.Protocol):
    """Splits stdin into frames as it arrives. Pieces are kept as read and each payload is joined
    once: a StreamReader's buffer, trimmed at the front and appended to, copies all it holds
    whenever it grows."""

    def __init__(self, deliver: Callable[[int, int, bytes], None]) -> None:
        self.deliver = deliver
        self.pieces: collections.deque[memoryview] = collections.deque()
        self.buffered = 0
        self.header: tuple[int, int, int] | None = None
        self.closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def data_received(self, data: bytes) -> None:
        self.pieces.append(memoryview(data))
        self.buffered += len(data)
        while True:
            if self.header is None:
                if self.buffered < HEADER.size:
                    return
                self.header = HEADER.unpack(self.take(HEADER.size))
            size, rid, kind = self.header
            if self.buffered < size:
                return
            self.header = None
            self.deliver(rid, kind, self.take(size))

    def take(self, n: int) -> bytes:
        if n == 0:
            return b""
        self.buffered -= n
        parts = []
        while n:
            first = self.pieces[0]
            if len(first) <= n:
                parts.append(self.pieces.popleft())
                n -= len(first)
            else:
                parts.append(first[:n])
                self.pieces[0] = first[n:]
                n = 0
        return parts[0].tobytes() if len(parts) == 1 else b"".join(parts)

    def eof_received(self) -> bool:
        self.connection_lost(None)
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closed.done():
            self.closed.set_result(None)


async def main() -> None:
    root = sys.argv[1] if len(sys.argv) > 1 else "/workspace"
    # Commands' working directory: "/" in a sandbox; unsandboxed, one that shows the root as workspace/.
    cwd = sys.argv[2] if len(sys.argv) > 2 else "/"
    loop = asyncio.get_running_loop()
    widen_pipes()
    keep_freed_memory()
    transport, protocol = await loop.connect_write_pipe(
        asyncio.streams.FlowControlMixin, os.fdopen(1, "wb", buffering=0)
    )
    writer = asyncio.StreamWriter(transport, protocol, None, loop)
    finish_swaps(Root(root).path)
    agent = Agent(root, writer, cwd)
    # HELLO goes out before any request is read.
    agent.send(0, HELLO, json.dumps({"version": VERSION, "pid": os.getpid()}).encode())
    _, frames = await loop.connect_read_pipe(
        lambda: FrameInput(agent.deliver), os.fdopen(0, "rb", buffering=0)
    )
    sweeper = asyncio.create_task(asyncio.to_thread(sweep, Root(root).path))
    await agent.serve(frames)
    sweeper.cancel()


def _sync_file_range() -> Callable[[int, int, int, int], int] | None:
    with contextlib.suppress(OSError, AttributeError):
        function = ctypes.CDLL(None, use_errno=True).sync_file_range
        function.argtypes = (ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint)
        function.restype = ctypes.c_int
        return function
    return None


SYNC_FILE_RANGE = _sync_file_range()


def start_writeback(fd: int, offset: int, nbytes: int) -> None:
    """Have the kernel start writing a written range to disk now (SYNC_FILE_RANGE_WRITE), so
    the fsync before the rename waits for the last few megabytes, not the whole upload (about
    40 ms per 100 MB on the test node). Advisory: an error only means the fsync does it all."""
    if SYNC_FILE_RANGE is not None:
        SYNC_FILE_RANGE(fd, offset, nbytes, 2)


def _syncfs() -> Callable[[int], int] | None:
    with contextlib.suppress(OSError, AttributeError):
        function = ctypes.CDLL(None, use_errno=True).syncfs
        function.argtypes = (ctypes.c_int,)
        function.restype = ctypes.c_int
        return function
    return None


SYNCFS = _syncfs()


def sync_filesystem(path: str) -> None:
    """Flush the filesystem holding ``path`` (every file's data and every directory entry on
    it): one call for a whole extracted tree, where an fsync per file would cost one journal
    commit each. Without syncfs (old libc), sync() does it for every filesystem."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        if SYNCFS is None or SYNCFS(fd) != 0:
            os.sync()
    finally:
        os.close(fd)


def widen_pipes() -> None:
    """1 MiB pipes instead of 64 KiB: a transfer moves in a sixteenth of the reads and wakeups."""
    for fd in (0, 1):
        with contextlib.suppress(OSError):  # not a pipe, or above the system's pipe-max-size
            fcntl.fcntl(fd, fcntl.F_SETPIPE_SZ, PIPE_BYTES)


def keep_freed_memory() -> None:
    """glibc: serve and keep megabyte blocks on the heap, so each transfer frame is not faulted in anew.

    The same tuning as the API's ``trove_api.allocator`` (this file must stay standalone).
    """
    if any(name in os.environ for name in ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_")):
        return
    with contextlib.suppress(OSError, AttributeError):
        mallopt = ctypes.CDLL(None).mallopt
        mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
        mallopt(-3, 4 * 1024 * 1024)  # M_MMAP_THRESHOLD
        mallopt(-1, 32 * 1024 * 1024)  # M_TRIM_THRESHOLD


SWAP_PREFIXES = (".trove-old-", ".trove-new-", ".trove-restore-")


def restore_running(path: str) -> bool:
    """Whether a live agent holds the restore's lock on ``path`` (its staged tree)."""
    try:
        fd = os.open(path, DIR_FLAGS)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


def move_entries(source: str, target: str) -> None:
    for name in os.listdir(source):
        os.rename(os.path.join(source, name), os.path.join(target, name))


def finish_swaps(root: str) -> None:
    """Restores whose agent died mid-swap (killed, or its sandbox's server was): the tree is made
    whole before anything is served. Committed (``.trove-new-*`` exists): the rest moves in;
    old entries moved aside while the new tree is still staged move back. A restore whose agent
    still runs (another session on the same namespace) holds a lock on its staged tree and is
    left alone."""
    tokens = {n[len(p) :] for n in os.listdir(root) for p in SWAP_PREFIXES if n.startswith(p)}
    for token in tokens:
        old, new, staged = (os.path.join(root, prefix + token) for prefix in SWAP_PREFIXES)
        if restore_running(new) or restore_running(staged):
            continue
        with contextlib.suppress(OSError):
            if os.path.isdir(new):
                move_entries(new, root)
            elif os.path.isdir(old) and os.path.isdir(staged):  # no staging: only the delete was left
                move_entries(old, root)
        for leftover in (old, new, staged):
            shutil.rmtree(leftover, ignore_errors=True)
    if tokens:
        sync_filesystem(root)


def sweep(root: str) -> None:
    """Uploads cut off by a crash (of an agent, or of the server its sandbox belonged to) leave
    hidden temp files; each live upload holds a lock on its own (whichever agent, replica or pod
    writes it), so the unlocked ones are dropped, but for this agent's own (just created, their
    lock maybe not taken yet)."""
    for directory, _dirs, files in os.walk(root):
        for name in files:
            if name.startswith(TEMP_PREFIX) and name not in OWN_UPLOADS:
                path = os.path.join(directory, name)
                with contextlib.suppress(OSError):  # BlockingIOError: still being written
                    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
                    try:
                        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                        os.unlink(path)
                    finally:
                        os.close(fd)


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(main())
