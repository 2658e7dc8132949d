#!/usr/bin/env python3
"""trove-agent: runs in the sandbox pod behind one long-lived exec session and multiplexes
many commands and file transfers over its stdin/stdout.

Frames in both directions: a 9-byte header ``>IIB`` (payload length, request id, type), then
the payload. Client → agent: OPEN (JSON op), DATA (stdin or file bytes), EOF, CANCEL.
Agent → client: HELLO (id 0), DATA (file bytes), STDOUT, STDERR, RESULT (JSON; ends the id).
``port_connect`` (a TCP connection in the sandbox) also has EOF from the agent and ACK both ways.
Locally (``--fds=N``, a unix socket beside the pipes) ``open`` and ``write`` may hand the opened
file to the API (SCM_RIGHTS) so the bytes skip the channel; paths and commits stay here.

Each command runs in its own session under its own supervisor (a child subreaper: see
"containment"), with its own timeout; everything it started is killed when it ends, however
it tried to leave. The agent is not dumpable (a command of the same uid cannot open
``/proc/<agent>/fd/*``) and no command ever holds a descriptor of the channel.
File operations resolve paths with realpath and refuse any that leave the workspace root,
then walk the resolved path with O_NOFOLLOW, so a symlink swapped in meanwhile is not followed.
Standard library only: it must run on any image with python3.
"""

from __future__ import annotations

import array
import sys
import threading
import types

# asyncio imports ssl when it can (about 10 ms of the agent's start, more under load); the agent
# never speaks TLS, and asyncio runs without it as on a Python built without ssl.
sys.modules.setdefault("ssl", None)  # type: ignore[arg-type]
DEFERRED_LOCK = threading.Lock()


class DeferredModule(types.ModuleType):
    """A top-level module that is imported (by asyncio) but used only on rare paths: the real
    one is loaded when an attribute is first read, by whichever thread reads it."""

    def __getattr__(self, name: str) -> Any:
        with DEFERRED_LOCK:
            if sys.modules.get(self.__name__) is self:
                del sys.modules[self.__name__]
            real = __import__(self.__name__)
            # Later reads find the attributes here, without a call of this method.
            self.__dict__.update(real.__dict__)
        return getattr(real, name)


# asyncio uses inspect only in debug mode and to describe a callback in an error report; with
# the ast, dis and opcode modules it pulls in, it was about 1 MB of every agent's memory.
sys.modules.setdefault("inspect", DeferredModule("inspect"))
import asyncio
import collections
import contextlib
import ctypes
import errno
import fcntl
import functools
import gc
import itertools
import json
import os
import select
import signal
import socket
import stat
import struct
import subprocess
import time
import warnings
from collections.abc import Awaitable, Callable, Iterator
from typing import Any, NoReturn

HEADER = struct.Struct(">IIB")
OPEN, DATA, EOF, CANCEL, STDOUT, STDERR, RESULT, HELLO = 1, 2, 3, 4, 5, 6, 7, 8
ACK = 9  # port_connect, both ways: bytes taken so far (ASCII decimal); the first one says "connected"
VERSION = 1
CHUNK = 256 * 1024
PIPE_BYTES = 1024 * 1024
DRAIN_GRACE_S = 2.0
KILL_WAIT_S = 1.0
WRITEBACK_BYTES = 8 * 1024 * 1024
SWEEP_EVERY_S = 5.0
# Idle supervisors kept for the next calls; each costs ~3 MB of its own (the pages it wrote
# since the fork), so they go after a while without calls and a quiet sandbox keeps none.
IDLE_SUPERVISORS = 2
SUPERVISOR_IDLE_S = 30.0
SUPERVISOR_GRACE_S = 5.0
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
    def __init__(
        self, root: str, writer: asyncio.StreamWriter, cwd: str = "/", fd_socket: socket.socket | None = None
    ) -> None:
        self.root = Root(root)
        self.cwd = cwd
        self.writer = writer
        # Local transport: open files handed to the API (SCM_RIGHTS) for ops that ask ("fd": true),
        # so a transfer's bytes skip the channel. Paths are still resolved and uploads committed here.
        self.fd_socket = fd_socket
        self.inbox: dict[int, asyncio.Queue[tuple[int, bytes]]] = {}
        self.handles: dict[int, int] = {}
        self.tasks: set[asyncio.Task[None]] = set()
        self.children = Children()
        self.session = f"{os.getpid()}-{os.urandom(4).hex()}"  # secrets.token_hex, without importing it
        # Processes started by proc_start are the agent's own children: registered in the
        # sweep's known set, so it never takes them for orphans.
        self.processes = Processes(self.root, self.session, self.children.known)
        # The $SHELL bash would look up for each exec (``login_shell``), once known.
        self.login_shell: str | None = None
        self.login_shell_lookup: asyncio.Task[None] | None = None

    def send(self, rid: int, kind: int, payload: bytes = b"") -> None:
        self.writer.write(HEADER.pack(len(payload), rid, kind) + payload)

    def pass_fd(self, rid: int, req: dict[str, object], fd: int) -> bool:
        """Hand ``fd`` to the API for request ``rid`` if it asked and this transport can."""
        if not req.get("fd") or self.fd_socket is None:
            return False
        try:
            rights = array.array("i", [fd]).tobytes()
            self.fd_socket.sendmsg([struct.pack(">I", rid)], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, rights)])
        except OSError:  # the socket is full or gone: the bytes go over the channel instead
            return False
        return True

    async def flush(self) -> None:
        await self.writer.drain()

    def result(self, rid: int, body: dict[str, object]) -> None:
        self.send(rid, RESULT, json.dumps(body).encode())

    async def serve(self, frames: FrameInput) -> None:
        await self.flush()
        await frames.closed
        # The session is the sandbox: its processes end with it.
        self.processes.kill_all()
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
        env = {
            "PATH": SANDBOX_PATH,
            "HOME": self.root.path,
            "LANG": "C.UTF-8",
            "TERM": "dumb",
            "USER": "agent",
        }
        if self.login_shell is not None:
            env["SHELL"] = self.login_shell
        elif self.login_shell_lookup is None:  # the first exec: this one's bash still looks
            self.login_shell_lookup = asyncio.create_task(self.look_up_login_shell())
        started = time.monotonic()
        # The limit (soft and hard) is set by the same bash before the script's own lines are
        # parsed, so the script cannot lift it; one exec fewer than a wrapper shell. Same line:
        # line numbers in bash's error messages stay those of the script.
        # CPU seconds per command (the local sandbox): set here, since on the long-lived agent
        # itself RLIMIT_CPU would add up over every call.
        cpu = f"ulimit -t {int(req['cpu_s'])} || exit 125; " if req.get("cpu_s") else ""  # type: ignore[call-overload]
        # A $SHELL handed over is un-exported, as bash leaves the one it sets (a no-op on that).
        limited = f"ulimit -f {file_blocks} || exit 125; {cpu}{process_cap()}export -n SHELL; {script}"
        call = self.children.start(
            ["/bin/bash", "--noprofile", "--norc", "-c", limited],
            env,
            stdin=bool(req.get("stdin")),
            cwd=self.cwd,
        )
        loop = asyncio.get_running_loop()
        cut = {STDOUT: False, STDERR: False}
        # The pipes are wired up before any task starts: a task cancelled before its first
        # step would never close the descriptor it was handed.
        streams: list[asyncio.BaseTransport] = []
        readers: dict[int, asyncio.StreamReader] = {}
        for fd, kind in ((call.stdout, STDOUT), (call.stderr, STDERR)):
            readers[kind] = asyncio.StreamReader(limit=1 << 20, loop=loop)
            reading, _ = await loop.connect_read_pipe(
                functools.partial(asyncio.StreamReaderProtocol, readers[kind]),
                os.fdopen(fd, "rb", buffering=0),
            )
            streams.append(reading)
        stdin: asyncio.StreamWriter | None = None
        if call.stdin >= 0:
            writing, protocol = await loop.connect_write_pipe(
                asyncio.streams.FlowControlMixin, os.fdopen(call.stdin, "wb", buffering=0)
            )
            streams.append(writing)
            stdin = asyncio.StreamWriter(writing, protocol, None, loop)

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

        async def feed(stdin: asyncio.StreamWriter) -> None:
            try:
                while True:
                    kind, payload = await queue.get()
                    if kind == DATA:
                        stdin.write(payload)
                        await stdin.drain()
                    elif kind == EOF:
                        break
                    elif kind == CANCEL:
                        call.stop()
                        break
            except (BrokenPipeError, ConnectionResetError):
                pass
            stdin.close()

        async def watch_cancel() -> None:
            while True:
                kind, _payload = await queue.get()
                if kind == CANCEL:
                    call.stop()
                    return

        tasks = [asyncio.create_task(pump(readers[kind], kind)) for kind in (STDOUT, STDERR)]
        side = asyncio.create_task(feed(stdin) if stdin is not None else watch_cancel())
        timed_out = False
        try:
            try:
                await asyncio.wait_for(asyncio.shield(call.finished), timeout)
            except TimeoutError:
                timed_out = True
        finally:
            # Whatever happened, nothing this call started may outlive it: the supervisor kills
            # every process left and reports only when it has no child left.
            call.stop()
            try:
                code = await asyncio.wait_for(asyncio.shield(call.finished), SUPERVISOR_GRACE_S)
            except TimeoutError:
                code = None  # stopped (SIGSTOP) by its command, which runs as the same user
            side.cancel()
        if code is None:
            # The supervisor was killed or stopped by its command: once it is gone, its orphans
            # belong to the agent, which kills them.
            self.children.discard(call.supervisor)
            await call.supervisor.reaped
            await self.children.sweep()
            code = 128 + signal.SIGKILL
        else:
            self.children.release(call.supervisor)
        _done, pending = await asyncio.wait(tasks, timeout=DRAIN_GRACE_S)
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, side, return_exceptions=True)
        for stream in streams:
            stream.close()
        return {
            "exit_code": code if code >= 0 else 128 - code,
            "timed_out": timed_out,
            "stdout_truncated": cut[STDOUT],
            "stderr_truncated": cut[STDERR],
            "duration_ms": int((time.monotonic() - started) * 1000),
        }

    async def look_up_login_shell(self) -> None:
        """``$SHELL`` as bash sets it when its environment has none: the shell of the uid's
        passwd entry, or ``/bin/sh`` without one (bash's ``get_current_user_info``). Handed to
        each exec's bash in its environment, it spares every call that lookup: for a uid
        /etc/passwd lacks (a local sandbox's), NSS loads libnss_systemd and two more libraries,
        about a quarter of a bare ``bash -c true``. Asked of ``getent`` (getpwuid, as bash),
        once, so neither the agent nor its supervisors load NSS; spawned as supervisors spawn
        (``posix_spawn``, no subprocess machinery: what the agent runs dirties pages it shares
        with its forks). If that fails, bash keeps looking it up itself."""
        getent = next(
            (f"{d}/getent" for d in SANDBOX_PATH.split(":") if os.access(f"{d}/getent", os.X_OK)), None
        )
        if getent is None:
            return
        out_r, out_w = os.pipe2(os.O_CLOEXEC)
        try:
            with self.children.spawning():
                pid = os.posix_spawn(  # noqa: ASYNC221 (vfork and exec: never blocks)
                    getent,
                    [getent, "passwd", str(os.getuid())],
                    {"PATH": SANDBOX_PATH},
                    # Not the channel's ends (0 and 1): /dev/null, and the pipe for its line.
                    file_actions=[
                        (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
                        (os.POSIX_SPAWN_DUP2, out_w, 1),
                        (os.POSIX_SPAWN_OPEN, 2, os.devnull, os.O_WRONLY, 0),
                    ],
                )
                self.children.known.add(pid)
        except OSError:
            os.close(out_r)
            return
        finally:
            os.close(out_w)
        try:
            status = await watch_exit(pid)
            out = os.read(out_r, 65536)  # a line, in the pipe's buffer: getent never waited
        finally:
            self.children.known.discard(pid)
            os.close(out_r)
        code = os.waitstatus_to_exitcode(status)
        fields = os.fsdecode(out.rstrip(b"\n")).split(":")
        if code == 2:  # no such entry
            self.login_shell = "/bin/sh"
        elif code == 0 and len(fields) == 7:
            self.login_shell = fields[6] or "/bin/sh"

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
        import secrets  # not imported at start-up (hashlib, hmac, random)

        temp = f"{TEMP_PREFIX}{secrets.token_hex(8)}"
        OWN_UPLOADS.add(temp)
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644, dir_fd=parent)
        fcntl.flock(fd, fcntl.LOCK_EX)  # a live upload: ``sweep`` leaves it alone
        done = False
        try:
            if self.pass_fd(rid, req, fd):
                self.send(rid, DATA, b"fd")  # sent: the API writes the bytes through it
                size = await written_by_client(rel, fd, queue, max_bytes)
            else:
                size = await received_into(rel, fd, queue, max_bytes)
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
        """A file held open for ``pread`` (its ``handle``), or handed to the API ("fd": true)."""
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
        if self.pass_fd(rid, req, fd):
            os.close(fd)
            return {"fd": True, "size": st.st_size, "mtime_ns": st.st_mtime_ns}
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
                import shutil  # rarely needed: not imported at start-up

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
        proc = await self.children.spawn(asyncio.create_subprocess_exec(
            "tar", "-C", self.root.path, "--format=gnu", f"--exclude={TEMP_PREFIX}*", "-czf", "-",
            "--null", "--files-from=-",
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
            start_new_session=True,
        ))  # fmt: skip
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
        import secrets  # not imported at start-up (hashlib, hmac, random)

        token = secrets.token_hex(6)
        staging = os.path.join(self.root.path, f".trove-restore-{token}")
        os.mkdir(staging, 0o700)
        # Held until the end: another agent on this namespace (another API replica's, in another
        # pid namespace) sees the restore is alive and leaves it to this one (``finish_swaps``).
        owned = os.open(staging, DIR_FLAGS)
        fcntl.flock(owned, fcntl.LOCK_EX)
        proc = await self.children.spawn(asyncio.create_subprocess_exec(
            "tar", "-xzf", "-", "-C", staging, "--no-same-owner", "--delay-directory-restore",
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
            start_new_session=True,
        ))  # fmt: skip
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
                import shutil  # rarely needed: not imported at start-up

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
        import shutil  # rarely needed: not imported at start-up

        shutil.rmtree(old, ignore_errors=True)

    async def op_ping(
        self, rid: int, req: dict[str, object], queue: asyncio.Queue[tuple[int, bytes]]
    ) -> dict[str, object]:
        return {"pong": True}

    async def op_usage(
        self, rid: int, req: dict[str, object], queue: asyncio.Queue[tuple[int, bytes]]
    ) -> dict[str, object]:
        return sandbox_usage(cgroup=req.get("cgroup") is not False)

    # -- processes that outlive a call ----------------------------------------------------

    async def op_proc_start(
        self, rid: int, req: dict[str, object], queue: asyncio.Queue[tuple[int, bytes]]
    ) -> dict[str, object]:
        return self.processes.start(req).info()

    async def op_proc_list(
        self, rid: int, req: dict[str, object], queue: asyncio.Queue[tuple[int, bytes]]
    ) -> dict[str, object]:
        self.processes.prune()
        return {"processes": [proc.info() for proc in self.processes.procs.values()]}

    async def op_proc_output(
        self, rid: int, req: dict[str, object], queue: asyncio.Queue[tuple[int, bytes]]
    ) -> dict[str, object]:
        """What the ring holds from ``cursor`` on, then output as it comes, then the exit.

        Paced by the client's acknowledgements (cumulative bytes, as export): at most
        ``window`` bytes are unacknowledged, and a reader that falls behind the ring resumes at
        its oldest byte (the cursor of that frame tells the client how much it missed) unless
        it ``hold``s: then the process waits for it (``Proc.holds``).
        """
        proc = self.processes.get(req)
        cursor = min(int(req.get("cursor", 0)), proc.ring.end)  # type: ignore[call-overload]
        window = int(req.get("window", PROC_WINDOW))  # type: ignore[call-overload]
        sent = acked = 0
        hold = bool(req.get("hold"))
        try:
            while True:
                while not queue.empty():
                    acked = acknowledged(queue.get_nowait(), acked)
                if hold:
                    proc.holds[rid] = max(cursor - (sent - acked), proc.ring.start)
                    self.processes.resume(proc)
                budget = window - (sent - acked)
                pieces = proc.ring.read(cursor, budget) if budget > 0 else []
                if pieces:
                    for start, stream, data in pieces:
                        self.send(rid, DATA, OUTPUT.pack(start, stream) + data)
                        sent += len(data)
                        cursor = start + len(data)
                    await self.flush()
                    continue
                if budget > 0 and proc.exit_code is not None:
                    return {"exit_code": proc.exit_code, "cursor": proc.ring.end}
                frame = await proc.change(queue)
                if frame is not None:
                    acked = acknowledged(frame, acked)
        finally:
            if proc.holds.pop(rid, None) is not None:
                self.processes.resume(proc)

    async def op_proc_stdin(
        self, rid: int, req: dict[str, object], queue: asyncio.Queue[tuple[int, bytes]]
    ) -> dict[str, object]:
        proc = self.processes.get(req)
        while True:
            kind, payload = await queue.get()
            if kind == EOF:
                return {}
            if kind == CANCEL:
                raise OpError("cancelled", "")
            # Held per frame, not while waiting for the next: a client that never sends EOF
            # must not keep the process's end (which closes the descriptor) waiting.
            async with proc.writing:
                if proc.stdin_fd is None:
                    raise OpError("process_stdin_closed", "", f"process {proc.pid} takes no more input")
                try:
                    await write_all(proc.stdin_fd, payload)
                except OSError as exc:  # EPIPE, or EIO from a PTY whose process is gone
                    raise OpError("process_stdin_closed", "", f"process {proc.pid}: {exc}") from exc

    async def op_proc_close_stdin(
        self, rid: int, req: dict[str, object], queue: asyncio.Queue[tuple[int, bytes]]
    ) -> dict[str, object]:
        proc = self.processes.get(req)
        async with proc.writing:
            if proc.stdin_fd is None:
                return {}
            if proc.spec["pty"]:
                # A terminal has no end of input: EOT (^D) is what a person would type.
                with contextlib.suppress(OSError):
                    await write_all(proc.stdin_fd, b"\x04")
            else:
                os.close(proc.stdin_fd)
                proc.stdin_fd = None
        return {}

    async def op_proc_resize(
        self, rid: int, req: dict[str, object], queue: asyncio.Queue[tuple[int, bytes]]
    ) -> dict[str, object]:
        proc = self.processes.get(req)
        if not proc.spec["pty"]:
            raise OpError("process_not_a_pty", "", f"process {proc.pid} has no terminal")
        rows, cols = int(req["rows"]), int(req["cols"])  # type: ignore[call-overload]
        async with proc.writing:
            if proc.stdin_fd is not None:
                # The kernel sends SIGWINCH to the terminal's foreground process group.
                set_winsize(proc.stdin_fd, rows, cols)
                proc.spec["pty"] = [rows, cols]
        return {}

    async def op_proc_signal(
        self, rid: int, req: dict[str, object], queue: asyncio.Queue[tuple[int, bytes]]
    ) -> dict[str, object]:
        proc = self.processes.get(req)
        signum = int(req["signal"])  # type: ignore[call-overload]
        if not 0 < signum < signal.NSIG:
            raise OpError("invalid_request", "", f"no signal {signum}")
        if proc.exit_code is None:
            # The whole group, as a terminal's ^C: the process is its session's leader.
            try:
                os.killpg(proc.pid, signum)
            except ProcessLookupError:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(proc.pid, signum)
        return {"running": proc.exit_code is None}

    async def op_proc_wait(
        self, rid: int, req: dict[str, object], queue: asyncio.Queue[tuple[int, bytes]]
    ) -> dict[str, object]:
        proc = self.processes.get(req)
        while proc.exit_code is None:
            frame = await proc.change(queue)
            if frame is not None and frame[0] == CANCEL:
                raise OpError("cancelled", "")
        return {"exit_code": proc.exit_code}

    # -- a port in the sandbox (E2B's get_host) -------------------------------------------

    async def op_port_connect(
        self, rid: int, req: dict[str, object], queue: asyncio.Queue[tuple[int, bytes]]
    ) -> dict[str, object]:
        """A TCP connection to ``127.0.0.1:<port>`` here, its bytes relayed over this request.

        DATA both ways carries the bytes; EOF both ways a half close; CANCEL from the client
        ends it. Each side has at most ``window`` bytes unacknowledged (ACK: bytes taken, counted
        from the start), so neither end buffers more than that whatever the other does. Bytes
        from the client are acknowledged once written to the socket, never before.
        """
        port = int(req["port"])  # type: ignore[call-overload]
        window = int(req.get("window", PORT_WINDOW))  # type: ignore[call-overload]
        if not 0 < port < 65536:
            raise OpError("invalid_request", "", f"no port {port}")
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection("127.0.0.1", port, limit=PORT_READ), PORT_CONNECT_S
            )
        except (OSError, TimeoutError) as exc:
            raise OpError("port_closed", "", f"nothing accepts connections on port {port}: {exc}") from None
        self.send(rid, ACK, b"0")
        await self.flush()
        state = {"acked": 0, "received": 0, "reported": 0}
        acks, written = asyncio.Event(), asyncio.Event()

        async def from_socket() -> None:
            sent = 0
            while chunk := await reader.read(PORT_READ):
                self.send(rid, DATA, chunk)
                sent += len(chunk)
                await self.flush()
                while sent - state["acked"] > window:
                    acks.clear()
                    await acks.wait()
            self.send(rid, EOF)
            await self.flush()

        async def from_client() -> None:
            while True:
                kind, payload = await queue.get()
                if kind == DATA:
                    writer.write(payload)  # at most a window: the client waits for ACKs
                    state["received"] += len(payload)
                    written.set()
                elif kind == ACK:
                    state["acked"] = max(state["acked"], int(payload))
                    acks.set()
                elif kind == EOF:
                    # Shuts the socket's sending side once what is buffered has gone out.
                    if writer.can_write_eof():
                        writer.write_eof()
                elif kind == CANCEL:
                    return

        async def acknowledge() -> None:
            while True:
                await written.wait()
                written.clear()
                await writer.drain()
                if state["received"] > state["reported"]:
                    state["reported"] = state["received"]
                    self.send(rid, ACK, str(state["reported"]).encode())
                    await self.flush()

        outward = asyncio.create_task(from_socket())
        inward = asyncio.create_task(from_client())
        acker = asyncio.create_task(acknowledge())
        try:
            # Over when the client cancels (it has what it wanted), or the socket fails; the
            # server closing its side is an EOF frame, and the client decides what follows.
            done, _ = await asyncio.wait((inward, acker, outward), return_when=asyncio.FIRST_COMPLETED)
            if outward in done and outward.exception() is None:
                await asyncio.wait((inward, acker), return_when=asyncio.FIRST_COMPLETED)
            for task in (inward, acker, outward):
                failure = task.exception() if task.done() and not task.cancelled() else None
                if failure is not None:
                    raise OpError("port_reset", "", f"port {port}: {failure!r}")
        finally:
            for task in (inward, acker, outward):
                task.cancel()
            await asyncio.gather(inward, acker, outward, return_exceptions=True)
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
        return {"received": state["received"]}


# -- usage (E2B's get_metrics) -----------------------------------------------------------


def sandbox_usage(*, cgroup: bool) -> dict[str, object]:
    """CPU time and memory of this sandbox: its cgroup's figures where the pod shows them, else
    the agent's own process tree summed from /proc (a local sandbox mounts no /sys)."""
    cpu_ns, rss = tree_usage(os.getpid())
    usage: dict[str, object] = {
        "cpu_count": len(os.sched_getaffinity(0)),
        "cpu_ns": cpu_ns,
        "mem_used": rss,
        "mem_total": meminfo_total(),
        "mem_cache": 0,
    }
    if cgroup:
        usage.update(cgroup_usage())
    quota = usage.pop("cpu_quota", None)
    if isinstance(quota, float) and quota > 0:
        usage["cpu_count"] = max(1, min(int(str(usage["cpu_count"])), -int(-quota // 1)))
    return usage


def tree_usage(root: int) -> tuple[int, int]:
    """CPU time (ns; reaped children included) and resident bytes of ``root`` and its descendants."""
    parents: dict[int, int] = {}
    figures: dict[int, tuple[int, int]] = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as stat_file:
                fields = stat_file.read().rsplit(b")", 1)[1].split()
        except (OSError, IndexError):
            continue  # gone meanwhile
        pid = int(name)
        parents[pid] = int(fields[1])
        ticks = sum(int(f) for f in fields[11:15])  # utime stime cutime cstime
        figures[pid] = (ticks, int(fields[21]))  # rss, in pages
    tree, todo = {root}, [root]
    children: dict[int, list[int]] = {}
    for pid, ppid in parents.items():
        children.setdefault(ppid, []).append(pid)
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in tree:
                tree.add(child)
                todo.append(child)
    ticks = sum(figures[p][0] for p in tree if p in figures)
    pages = sum(figures[p][1] for p in tree if p in figures)
    return ticks * 1_000_000_000 // os.sysconf("SC_CLK_TCK"), pages * os.sysconf("SC_PAGE_SIZE")


def meminfo_total() -> int:
    with contextlib.suppress(OSError, ValueError, IndexError), open("/proc/meminfo", "rb") as meminfo:
        for line in meminfo:
            if line.startswith(b"MemTotal:"):
                return int(line.split()[1]) * 1024
    return 0


def read_text(*candidates: str) -> str | None:
    for path in candidates:
        with contextlib.suppress(OSError), open(path, encoding="ascii") as handle:
            return handle.read().strip()
    return None


def stat_value(text: str | None, key: str) -> int | None:
    for line in (text or "").splitlines():
        name, _, value = line.partition(" ")
        if name == key and value.strip().isdigit():
            return int(value)
    return None


def cgroup_usage() -> dict[str, object]:
    """The figures of this process's own cgroup (v2, else v1) that can be read; {} when none."""
    try:
        with open("/proc/self/cgroup", encoding="ascii") as own:
            lines = [line.strip().split(":", 2) for line in own if line.count(":") >= 2]
    except OSError:
        return {}
    paths = {c: p.lstrip("/") for ids, names, p in lines for c in (names.split(",") if names else ["v2"])}
    found: dict[str, object] = {}
    base = "/sys/fs/cgroup"
    if "v2" in paths and os.path.exists(f"{base}/cgroup.controllers"):
        where = [f"{base}/{paths['v2']}".rstrip("/"), base]
        usage = stat_value(read_text(*(f"{w}/cpu.stat" for w in where)), "usage_usec")
        current = read_text(*(f"{w}/memory.current" for w in where))
        limit = read_text(*(f"{w}/memory.max" for w in where))
        cache = stat_value(read_text(*(f"{w}/memory.stat" for w in where)), "file")
        quota = (read_text(*(f"{w}/cpu.max" for w in where)) or "max").split()
        if usage is not None:
            found["cpu_ns"] = usage * 1000
        if quota[0].isdigit() and len(quota) == 2 and quota[1].isdigit():
            found["cpu_quota"] = int(quota[0]) / int(quota[1])
    else:
        cpu = [f"{base}/{d}" for d in ("cpuacct", "cpu,cpuacct", "cpuacct,cpu")]
        acct = [f"{m}/{paths.get('cpuacct', '')}".rstrip("/") for m in cpu] + cpu
        usage_text = read_text(*(f"{w}/cpuacct.usage" for w in acct))
        memory = [f"{base}/memory/{paths.get('memory', '')}".rstrip("/"), f"{base}/memory"]
        current = read_text(*(f"{w}/memory.usage_in_bytes" for w in memory))
        limit = read_text(*(f"{w}/memory.limit_in_bytes" for w in memory))
        stats = read_text(*(f"{w}/memory.stat" for w in memory))
        cache = stat_value(stats, "total_cache") or stat_value(stats, "cache")
        quota_text = read_text(*(f"{w}/cpu.cfs_quota_us" for w in acct))
        period_text = read_text(*(f"{w}/cpu.cfs_period_us" for w in acct))
        if usage_text and usage_text.isdigit():
            found["cpu_ns"] = int(usage_text)
        if quota_text and quota_text.isdigit() and period_text and period_text.isdigit():
            found["cpu_quota"] = int(quota_text) / int(period_text)
    if current and current.isdigit():
        found["mem_used"] = int(current)
    if limit and limit.isdigit() and 0 < int(limit) < meminfo_total():
        found["mem_total"] = int(limit)
    if cache is not None:
        found["mem_cache"] = cache
    return found


def acknowledged(frame: tuple[int, bytes], acked: int) -> int:
    """A reader's frame during proc_output: DATA acknowledges bytes consumed, CANCEL ends it."""
    kind, payload = frame
    if kind == CANCEL:
        raise OpError("cancelled", "")
    return max(acked, int(payload)) if kind == DATA else acked


# -- containment ----------------------------------------------------------------------------
#
# No marker, group or session can hold a command that wants out (``setsid env -u X``, double
# forks), and neither cgroups nor pid namespaces are available to an unprivileged pod. Child
# subreapers are: a process that leaves its parent is re-parented to the nearest ancestor
# marked as one, never past it. Each exec runs under a supervisor (a fork of the agent, a
# subreaper holding only the call's pipes, one call at a time, reused so an exec costs no
# fork); when the shell exits, the call is cancelled or times out, or the agent goes away, the
# supervisor kills every child it has, again and again as the orphans of the killed come up
# to it, and reports the exit code once it has none. A supervisor killed (or stopped) by its
# command leaves its orphans to the agent (a subreaper too), which kills every child of its
# own that it does not know.


def _prctl() -> Callable[..., int] | None:
    with contextlib.suppress(OSError, AttributeError):
        function = ctypes.CDLL(None, use_errno=True).prctl
        function.restype = ctypes.c_int
        return function
    return None


PRCTL = _prctl()
REPORT = struct.Struct(">i")
PR_SET_DUMPABLE = 4
PR_SET_CHILD_SUBREAPER = 36


def prctl(option: int, value: int) -> None:
    if PRCTL is None or PRCTL(option, ctypes.c_ulong(value), 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), f"prctl({option}) failed")


def children_of(pid: int) -> list[int]:
    """The live and zombie children of ``pid``, read from /proc (as their parent sees them)."""
    found: list[int] = []
    with contextlib.suppress(OSError):
        tasks = os.listdir(f"/proc/{pid}/task")
        with contextlib.suppress(OSError):
            for task in tasks:  # needs CONFIG_PROC_CHILDREN, which not every kernel has
                with open(f"/proc/{pid}/task/{task}/children", "rb") as f:
                    found += [int(child) for child in f.read().split()]
            return found
    found = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                with open(f"/proc/{name}/stat", "rb") as f:
                    stat_line = f.read()
            except OSError:
                continue
            # "pid (comm) state ppid ...": comm may hold anything, so fields count from the last ")".
            fields = stat_line[stat_line.rfind(b")") + 2 :].split()
            if len(fields) > 1 and int(fields[1]) == pid:
                found.append(int(name))
    return found


def reap_all(first: int, status: int | None) -> int | None:
    """Kill every child, over and over as orphans come up, until none is left; ``first``'s status."""
    me = os.getpid()
    pause = 0.0005
    while True:
        try:
            pid, st = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return status
        if pid:
            if pid == first:
                status = st
            continue
        killed = 0
        for child in children_of(me):
            with contextlib.suppress(ProcessLookupError):
                os.kill(child, signal.SIGKILL)
                killed += 1
        if killed:
            # Blocks only until one of the killed is gone; its own children come up next round.
            with contextlib.suppress(ChildProcessError):
                pid, st = os.waitpid(-1, 0)
                if pid == first:
                    status = st
        else:  # a child exists that /proc did not show yet: look again shortly
            time.sleep(pause)
            pause = min(pause * 2, 0.01)


def run_call(request: dict[str, Any], fds: list[int], wake: int) -> None:
    """One call, in a supervisor. ``fds``: the call's stdin, stdout and stderr, its control pipe
    (closed by the agent to stop the call, or by the kernel when the agent dies) and its report
    pipe (the exit code, written once no process of the call is left)."""
    stdin, stdout, stderr, control, report = fds
    argv, env = list(request["argv"]), dict(request["env"])
    code = 125
    try:
        try:
            os.chdir(request.get("cwd", "/"))
            # Python ignores SIGPIPE and SIGXFSZ, and an ignored signal stays ignored across
            # exec: the command gets the defaults (``ulimit -f`` kills, ``yes | head`` ends).
            shell = os.posix_spawn(
                argv[0],
                argv,
                env,
                setsid=True,
                setsigdef=(signal.SIGPIPE, signal.SIGXFSZ),
                file_actions=[
                    (os.POSIX_SPAWN_DUP2, fd, target) for target, fd in enumerate((stdin, stdout, stderr))
                ],
            )
        finally:
            for fd in (stdin, stdout, stderr):  # the shell has them: output ends with the call's last process
                os.close(fd)
        status: int | None = None
        while status is None:
            ready, _, _ = select.select([wake, control], [], [])
            with contextlib.suppress(BlockingIOError):
                os.read(wake, 4096)
            while True:  # reap what exited: the shell, or orphans (no zombie piles up meanwhile)
                try:
                    pid, st = os.waitpid(-1, os.WNOHANG)
                except ChildProcessError:
                    break
                if pid == 0:
                    break
                if pid == shell:
                    status = st
            if status is None and control in ready:
                break  # stopped: cancelled, timed out, or the agent is gone
        status = reap_all(shell, status)
        if status is None:
            code = 128 + signal.SIGKILL
        else:
            # As a shell reports it: the exit status, or 128 + the signal that killed it.
            code = os.WEXITSTATUS(status) if os.WIFEXITED(status) else 128 + os.WTERMSIG(status)
    except Exception:
        reap_all(-1, None)
    finally:
        with contextlib.suppress(OSError):
            os.write(report, REPORT.pack(code))
        os.close(control)
        os.close(report)


def serve_calls(requests: int) -> NoReturn:
    """A supervisor: a fork of the agent that runs one call after another, each handed over on
    the ``requests`` socket (one byte and the call's descriptors; argv and environment in a
    memfd). It keeps no other descriptor of the agent's: not the channel, not another call's
    pipes. Reused, so a call costs no fork of the agent."""
    try:
        # A collection would walk (and so copy) every page it shares with the agent.
        gc.disable()
        signal.set_wakeup_fd(-1)
        for name in os.listdir("/proc/self/fd"):
            if int(name) not in (2, requests):  # 2: the agent's own stderr, for its log
                with contextlib.suppress(OSError):
                    os.close(int(name))
        null = os.open(os.devnull, os.O_RDWR)  # 0 and 1 taken: what a call receives lands above 2
        os.dup2(null, 1 - (null == 1))
        prctl(PR_SET_CHILD_SUBREAPER, 1)
        wake_r, wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        signal.signal(signal.SIGCHLD, lambda _signum, _frame: None)
        signal.set_wakeup_fd(wake_w)
        sock = socket.socket(fileno=requests)
        sock.setblocking(True)
        while True:
            message, fds = receive_fds(sock, 6)
            if not message or len(fds) != 6:
                break  # the agent is gone, or retired this supervisor
            for fd in fds:  # the shell gets three of them, as 0, 1 and 2, and no other
                os.set_inheritable(fd, False)
            with os.fdopen(fds[0], "rb") as request:
                call = json.loads(request.read())
            run_call(call, fds[1:], wake_r)
    finally:
        os._exit(0)


def receive_fds(sock: socket.socket, most: int) -> tuple[bytes, list[int]]:
    """One byte and the descriptors sent with it (``socket.recv_fds`` is Python 3.9+)."""
    fds = array.array("i")
    message, ancillary, _flags, _address = sock.recvmsg(1, socket.CMSG_SPACE(most * fds.itemsize))
    for level, kind, data in ancillary:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            fds.frombytes(data[: len(data) - len(data) % fds.itemsize])
    return message, list(fds)


class Supervisor:
    """A supervisor process, seen from the agent: its request socket and ``reaped`` (its wait status)."""

    def __init__(self) -> None:
        agent_end, supervisor_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        pid = os.fork()
        if pid == 0:
            serve_calls(supervisor_end.detach())
        supervisor_end.close()
        agent_end.setblocking(False)  # a stopped supervisor must never block the agent
        self.pid = pid
        self.sock = agent_end
        self.idle_since = 0.0
        self.reaped = watch_exit(pid)
        self.reaped.add_done_callback(lambda _: self.sock.close())

    def hand_over(self, request: bytes, fds: list[int]) -> None:
        hand_over(self.sock, request, fds)

    def retire(self) -> None:
        self.sock.close()

    def stopped(self) -> bool:
        try:
            with open(f"/proc/{self.pid}/stat", "rb") as f:
                stat_line = f.read()
        except OSError:
            return True
        return stat_line[stat_line.rfind(b")") + 2 : stat_line.rfind(b")") + 3] in (b"T", b"t")


class Supervised:
    """One call, seen from the agent: its pipes, ``stop()``, and ``finished`` (its exit code,
    or None when its supervisor died without one)."""

    def __init__(
        self, supervisor: Supervisor, argv: list[str], env: dict[str, str], *, stdin: bool, cwd: str = "/"
    ) -> None:
        self.supervisor = supervisor
        out_r, out_w = os.pipe2(os.O_CLOEXEC)
        err_r, err_w = os.pipe2(os.O_CLOEXEC)
        control_r, control_w = os.pipe2(os.O_CLOEXEC)
        report_r, report_w = os.pipe2(os.O_CLOEXEC)
        if stdin:
            in_r, in_w = os.pipe2(os.O_CLOEXEC)
        else:
            in_r, in_w = os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC), -1
        theirs = [in_r, out_w, err_w, control_r, report_w]
        try:
            supervisor.hand_over(json.dumps({"argv": argv, "env": env, "cwd": cwd}).encode(), theirs)
        except OSError:
            for fd in (in_w, out_r, err_r, control_w, report_r):
                if fd >= 0:
                    os.close(fd)
            raise
        finally:
            for fd in theirs:
                os.close(fd)
        self.stdin, self.stdout, self.stderr, self.control = in_w, out_r, err_r, control_w
        loop = asyncio.get_running_loop()
        self.finished: asyncio.Future[int | None] = loop.create_future()

        def reported() -> None:
            data = os.read(report_r, REPORT.size)  # written whole, in one write
            loop.remove_reader(report_r)
            os.close(report_r)
            if not self.finished.done():
                self.finished.set_result(REPORT.unpack(data)[0] if len(data) == REPORT.size else None)

        loop.add_reader(report_r, reported)

    def stop(self) -> None:
        """Kill the call's whole tree (the supervisor sees its control pipe close)."""
        if self.control >= 0:
            os.close(self.control)
            self.control = -1


def watch_exit(pid: int) -> asyncio.Future[int]:
    """A child's wait status, reaped by its pid alone (never ``waitpid(-1)``: asyncio waits for its own)."""
    loop = asyncio.get_running_loop()
    done: asyncio.Future[int] = loop.create_future()

    def reaped() -> bool:
        try:
            waited, status = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:  # reaped by a sweep meanwhile
            waited, status = pid, 0
        if waited and not done.done():
            done.set_result(status)
        return bool(waited)

    try:
        pidfd = os.pidfd_open(pid)
    except (AttributeError, OSError):  # before Linux 5.3: look every few milliseconds

        def poll() -> None:
            if not reaped():
                loop.call_later(0.005, poll)

        poll()
        return done

    def exited_now() -> None:
        if reaped():
            loop.remove_reader(pidfd)
            os.close(pidfd)

    loop.add_reader(pidfd, exited_now)
    return done


class Children:
    """Which of the agent's children are its own: live supervisors, and whatever a feature
    registers in ``known`` (inside ``spawning()``, so the sweep never sees it unregistered).
    Any other child is an orphan re-parented to the agent, and ``sweep`` kills it."""

    def __init__(self) -> None:
        self.supervisors: set[int] = set()
        self.known: set[int] = set()
        self._spawning = 0
        self.idle: list[Supervisor] = []

    def start(self, argv: list[str], env: dict[str, str], *, stdin: bool, cwd: str = "/") -> Supervised:
        """A call under an idle supervisor (a new one when none is idle)."""
        while self.idle:
            supervisor = self.idle.pop()
            if supervisor.reaped.done():
                continue
            if supervisor.stopped():  # by a command of an earlier call: not trusted again
                self.discard(supervisor)
                continue
            try:
                return Supervised(supervisor, argv, env, stdin=stdin, cwd=cwd)
            except OSError:  # gone, or stopped with its socket full: never waited for
                self.discard(supervisor)
        supervisor = self.new_supervisor()
        return Supervised(supervisor, argv, env, stdin=stdin, cwd=cwd)

    def new_supervisor(self) -> Supervisor:
        supervisor = Supervisor()
        self.supervisors.add(supervisor.pid)
        supervisor.reaped.add_done_callback(lambda _: self.supervisors.discard(supervisor.pid))
        return supervisor

    def prefork(self) -> None:
        """One idle supervisor made ahead, right after HELLO: the fork overlaps the client's
        first request on its way instead of delaying its exec."""
        if self.idle:
            return
        try:
            supervisor = self.new_supervisor()
        except OSError:  # the first exec forks one itself
            return
        supervisor.idle_since = time.monotonic()
        self.idle.append(supervisor)

    def release(self, supervisor: Supervisor) -> None:
        if supervisor.reaped.done():
            return
        if len(self.idle) < IDLE_SUPERVISORS:
            supervisor.idle_since = time.monotonic()
            self.idle.append(supervisor)
        else:
            supervisor.retire()

    def retire_idle(self, older_than_s: float) -> None:
        cutoff = time.monotonic() - older_than_s
        for supervisor in [s for s in self.idle if s.idle_since < cutoff]:
            self.idle.remove(supervisor)
            supervisor.retire()

    def discard(self, supervisor: Supervisor) -> None:
        """A supervisor that broke (killed, or stopped by its command): killed for good."""
        with contextlib.suppress(ProcessLookupError):
            os.kill(supervisor.pid, signal.SIGKILL)
        supervisor.retire()

    @contextlib.contextmanager
    def spawning(self) -> Iterator[None]:
        self._spawning += 1
        try:
            yield
        finally:
            self._spawning -= 1

    async def spawn(self, starting: Awaitable[asyncio.subprocess.Process]) -> asyncio.subprocess.Process:
        """``asyncio.create_subprocess_exec(...)``, known to the sweep until it exits."""
        with self.spawning():
            proc = await starting
            self.known.add(proc.pid)
        pid = proc.pid
        asyncio.ensure_future(proc.wait()).add_done_callback(lambda _: self.known.discard(pid))
        return proc

    async def sweep(self) -> None:
        deadline = time.monotonic() + KILL_WAIT_S
        me = os.getpid()
        while time.monotonic() < deadline:
            if self._spawning:
                await asyncio.sleep(0.002)
                continue
            orphans = [
                pid for pid in children_of(me) if pid not in self.supervisors and pid not in self.known
            ]
            if not orphans:
                return
            for pid in orphans:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            await asyncio.sleep(0.001)
            for pid in orphans:  # only these are reaped: asyncio and the supervisors reap their own
                with contextlib.suppress(ChildProcessError):
                    os.waitpid(pid, os.WNOHANG)  # noqa: ASYNC222 (WNOHANG: never blocks)

    async def sweep_every(self, seconds: float) -> None:
        while True:
            await asyncio.sleep(seconds)
            self.retire_idle(SUPERVISOR_IDLE_S)
            await self.sweep()


# -- processes that outlive a call ------------------------------------------------------------
#
# Started by ``proc_start``, they run until they exit, are signalled, or the agent ends (its
# session is the sandbox). Their output goes to a bounded ring per process with an absolute
# byte cursor, so a reader may come and go (``proc_output`` from a cursor) and a slow or absent
# reader costs at most the ring: old bytes are dropped, never queued.

PROC_MAX = 16
PROC_BUFFER_BYTES = 1024 * 1024
PROC_KEEP_EXITED = 8  # exited processes kept for a late wait or reconnect ...
PROC_KEEP_EXITED_S = 600.0  # ... for this long at most
PROC_WINDOW = 256 * 1024  # output a reader may have unacknowledged
PROC_READ = 65536
RING_MERGE = 64 * 1024  # small writes (a PTY's keystrokes) are joined up to this size
RING_OVERHEAD = 64  # each ring entry is charged this beside its bytes: many tiny ones stay bounded
PORT_WINDOW = 256 * 1024  # port_connect: bytes a side may have unacknowledged
PORT_READ = 65536
PORT_CONNECT_S = 10.0
OUTPUT = struct.Struct(">QB")  # DATA payload of proc_output: cursor of its first byte, stream
STREAM_STDOUT, STREAM_STDERR, STREAM_PTY = 1, 2, 3
PR_SET_PDEATHSIG = 1
# In each such process's environment, so what it starts in a session of its own (setsid, a
# double fork) is still found and killed with it.
PROCESS_MARKER = "TROVE_PROCESS_TAG"


class Ring:
    """The last ``limit`` bytes a process wrote, as ``[cursor, stream, bytes]`` entries."""

    def __init__(self, limit: int) -> None:
        self.limit = max(limit, 2 * RING_MERGE)
        self.entries: collections.deque[tuple[int, int, bytearray]] = collections.deque()
        self.end = 0
        self.charged = 0

    @property
    def start(self) -> int:
        return self.entries[0][0] if self.entries else self.end

    def append(self, stream: int, data: bytes) -> None:
        cursor = self.end
        self.end += len(data)
        last = self.entries[-1] if self.entries else None
        if last is not None and last[1] == stream and len(last[2]) < RING_MERGE:
            last[2].extend(data)
            self.charged += len(data)
        else:
            self.entries.append((cursor, stream, bytearray(data)))
            self.charged += len(data) + RING_OVERHEAD
        while self.charged > self.limit and len(self.entries) > 1:
            self.charged -= len(self.entries.popleft()[2]) + RING_OVERHEAD
        if self.charged > self.limit:  # one entry larger than the ring: keep its tail
            first_cursor, first_stream, first = self.entries[0]
            cut = self.charged - self.limit
            self.entries[0] = (first_cursor + cut, first_stream, first[cut:])
            self.charged -= cut

    def read(self, cursor: int, budget: int) -> list[tuple[int, int, bytes]]:
        """Entries from ``cursor`` (or the oldest kept byte, if later) up to ``budget`` bytes."""
        out: list[tuple[int, int, bytes]] = []
        # From the newest end back: a reader keeping up wants the last entry or two, not a
        # walk over thousands of a terminal's small writes.
        first = len(self.entries)
        while first and self.entries[first - 1][0] + len(self.entries[first - 1][2]) > cursor:
            first -= 1
        for start, stream, data in itertools.islice(self.entries, first, None):
            if budget <= 0:
                break
            offset = max(0, cursor - start)
            piece = bytes(data[offset : offset + budget])
            out.append((start + offset, stream, piece))
            budget -= len(piece)
        return out


class Proc:
    def __init__(self, popen: Spawned, spec: dict[str, object], buffer_bytes: int) -> None:
        self.popen = popen
        self.pid = popen.pid
        self.spec = spec
        self.ring = Ring(buffer_bytes)
        self.stdin_fd: int | None = None
        self.outputs: dict[int, int] = {}  # fd -> stream
        self.exit_code: int | None = None
        self.ended_at = 0.0
        self.waiters: set[asyncio.Future[None]] = set()
        self.writing = asyncio.Lock()
        self.marker = ""
        # Readers that asked for every byte (``hold``), by request id: how far each has
        # consumed. While the slowest is half a ring behind, the process's output is not read,
        # so the pipe fills and the process waits for that reader instead of losing output.
        self.holds: dict[int, int] = {}
        self.paused = False

    def held_back(self) -> bool:
        return bool(self.holds) and self.ring.end - min(self.holds.values()) >= self.ring.limit // 2

    def info(self) -> dict[str, object]:
        return {
            **self.spec,
            "pid": self.pid,
            "running": self.exit_code is None,
            "exit_code": self.exit_code,
            "cursor": self.ring.end,
        }

    def notify(self) -> None:
        for waiter in self.waiters:
            if not waiter.done():
                waiter.set_result(None)
        self.waiters.clear()

    async def change(self, queue: asyncio.Queue[tuple[int, bytes]]) -> tuple[int, bytes] | None:
        """Wait for output, the end, or the next frame from the client (returned)."""
        changed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.waiters.add(changed)
        frame = asyncio.ensure_future(queue.get())
        pending: set[asyncio.Future[object]] = {changed, frame}  # type: ignore[arg-type]
        try:
            await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
        finally:
            self.waiters.discard(changed)
            if not frame.done():
                frame.cancel()
        return frame.result() if frame.done() and not frame.cancelled() else None


class Spawned:
    """A process a zygote became, as ``subprocess.Popen`` tracks one: reaped by its pid alone."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.returncode: int | None = None

    def poll(self) -> int | None:
        if self.returncode is None:
            try:
                pid, status = os.waitpid(self.pid, os.WNOHANG)
            except ChildProcessError:  # reaped elsewhere: as Popen says then
                pid, status = self.pid, 0
            if pid:
                self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        deadline = None if timeout is None else time.monotonic() + timeout
        while (code := self.poll()) is None:
            if deadline is not None and time.monotonic() > deadline:
                raise subprocess.TimeoutExpired(str(self.pid), timeout or 0.0)
            time.sleep(0.001)
        return code


def become_process(requests: int, agent: int) -> NoReturn:
    """A zygote: a fork of the agent that waits for one ``proc_start`` and execs its command.

    What every such process is, it becomes now, before it is needed: its own session, killed
    with the agent (PDEATHSIG; checked against an agent already gone), a child subreaper (what
    it double-forks stays below it). Per start it takes its descriptors, terminal, limits (soft
    and hard), cwd and environment; SIGPIPE and SIGXFSZ go back to their defaults (Python
    ignores both, and exec keeps what is ignored). An exec that fails reports its errno.
    """
    import resource  # loaded by the agent before the fork: only looked up here
    import termios

    try:
        gc.disable()  # a collection would copy every page it shares with the agent
        signal.set_wakeup_fd(-1)
        if PRCTL is not None:
            PRCTL(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
            PRCTL(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
        if os.getppid() != agent:
            os._exit(0)
        for name in os.listdir("/proc/self/fd"):
            if int(name) not in (2, requests):
                with contextlib.suppress(OSError):
                    os.close(int(name))
        null = os.open(os.devnull, os.O_RDWR)  # 0 and 1 taken: what arrives lands above 2
        os.dup2(null, 1 - (null == 1))
        os.setsid()
        sock = socket.socket(fileno=requests)
        sock.setblocking(True)
        message, fds = receive_fds(sock, 5)
        if not message or len(fds) != 5:
            os._exit(0)  # retired, or the agent is gone
        with os.fdopen(fds[0], "rb") as request:
            call = json.loads(request.read())
        stdin, stdout, stderr, report = fds[1:]
        os.set_inheritable(report, False)
        try:
            os.chdir(call["cwd"])
            for target, fd in enumerate((stdin, stdout, stderr)):
                os.dup2(fd, target)
            for fd in {stdin, stdout, stderr} - {0, 1, 2}:
                os.close(fd)
            if call["pty"]:
                fcntl.ioctl(0, termios.TIOCSCTTY, 0)
            fsize = int(call["fsize"])
            resource.setrlimit(resource.RLIMIT_FSIZE, (fsize, fsize))
            if call["nproc"]:
                nproc = int(call["nproc"])
                resource.setrlimit(resource.RLIMIT_NPROC, (nproc, nproc))
            for signum in (signal.SIGPIPE, signal.SIGXFSZ):
                signal.signal(signum, signal.SIG_DFL)
            signal.pthread_sigmask(signal.SIG_SETMASK, [])
            os.execvpe(call["argv"][0], call["argv"], call["env"])  # noqa: S606 (argv, as Popen's)
        except OSError as exc:
            os.write(report, REPORT.pack(exc.errno or errno.EIO))
    finally:
        os._exit(127)


ZYGOTE_EXEC_S = 5.0  # a zygote that has not exec'd by then (stopped by a command) is replaced


class Zygotes:
    """Spawns for ``proc_start``: each by a zygote forked ahead (``become_process``), so the
    fork of the agent (1-3 ms, the most of an E2B command's start) is off the reply's way.

    One waits idle once a process has been started (none in a sandbox that only execs); it is
    known to the sweep from its fork on, and dies with the agent.
    """

    def __init__(self, known: set[int]) -> None:
        self.known = known
        self.idle: tuple[int, socket.socket] | None = None

    def fork(self) -> tuple[int, socket.socket]:
        # Imported here, before the fork: only commands need them, and the zygote finds them loaded.
        import resource  # noqa: F401
        import termios  # noqa: F401

        agent_end, its_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        agent = os.getpid()
        pid = os.fork()
        if pid == 0:
            become_process(its_end.detach(), agent)
        its_end.close()
        self.known.add(pid)
        return pid, agent_end

    def refill(self) -> None:
        if self.idle is None:
            with contextlib.suppress(OSError):
                self.idle = self.fork()

    def discard(self, pid: int, sock: socket.socket) -> None:
        sock.close()
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, 0)
        self.known.discard(pid)

    def spawn(
        self,
        argv: list[str],
        env: dict[str, str],
        cwd: str,
        fds: tuple[int, int, int],
        *,
        pty: bool,
        file_bytes: int,
    ) -> Spawned:
        cap = os.environ.get(MAX_PROCESSES_ENV, "")
        taken, self.idle = self.idle, None
        if taken is not None:
            pid, sock = taken
            if carries_state(pid, (b"T", b"t", b"Z", b"X")):  # stopped or killed by a command
                self.discard(pid, sock)
                taken = None
        pid, sock = taken if taken is not None else self.fork()
        import resource

        try:
            hard = resource.getrlimit(resource.RLIMIT_FSIZE)[1]
            call = {
                "argv": argv,
                "env": env,
                "cwd": cwd,
                "pty": pty,
                "fsize": file_bytes if hard == resource.RLIM_INFINITY else min(file_bytes, hard),
                "nproc": int(cap) if cap.isdigit() and int(cap) > 0 else 0,
            }
            report_r, report_w = os.pipe2(os.O_CLOEXEC)
            try:
                hand_over(sock, json.dumps(call).encode(), [*fds, report_w])
            finally:
                os.close(report_w)
            try:
                # Waits for the exec, as Popen does: its errno, or end of file once it ran.
                ready, _, _ = select.select([report_r], [], [], ZYGOTE_EXEC_S)
                data = os.read(report_r, REPORT.size) if ready else None
            finally:
                os.close(report_r)
        except BaseException:
            self.discard(pid, sock)
            raise
        sock.close()
        if data is None or data:
            self.discard(pid, sock)
            code = REPORT.unpack(data)[0] if data else errno.ETIMEDOUT
            raise OSError(code, os.strerror(code), argv[0])
        asyncio.get_running_loop().call_soon(self.refill)  # after this start's reply
        return Spawned(pid)


def carries_state(pid: int, states: tuple[bytes, ...]) -> bool:
    """Whether ``pid``'s kernel state letter is one of ``states`` (True when it is gone)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat_line = f.read()
    except OSError:
        return True
    return stat_line[stat_line.rfind(b")") + 2 : stat_line.rfind(b")") + 3] in states


def hand_over(sock: socket.socket, request: bytes, fds: list[int]) -> None:
    """``request`` in a memfd, with ``fds``, to a process waiting on the other end of ``sock``."""
    memfd = os.memfd_create("trove-call", os.MFD_CLOEXEC)
    try:
        os.write(memfd, request)
        os.lseek(memfd, 0, os.SEEK_SET)
        fd_array = array.array("i", [memfd, *fds])
        sock.sendmsg([b"c"], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, fd_array.tobytes())])
    finally:
        os.close(memfd)


class Processes:
    """The agent's processes that outlive a call, by pid."""

    def __init__(self, root: Root, session: str, known: set[int]) -> None:
        self.root = root
        self.session = session
        self.known = known
        self.started = 0
        self.procs: dict[int, Proc] = {}
        self.tasks: set[asyncio.Task[None]] = set()
        self.zygotes = Zygotes(known)

    def get(self, req: dict[str, object]) -> Proc:
        proc = self.procs.get(int(req.get("pid", -1)))  # type: ignore[call-overload]
        if proc is None:
            raise OpError("process_not_found", "", f"no process {req.get('pid')}")
        return proc

    def prune(self) -> None:
        ended = sorted((p for p in self.procs.values() if p.exit_code is not None), key=lambda p: p.ended_at)
        cutoff = time.monotonic() - PROC_KEEP_EXITED_S
        for index, proc in enumerate(ended):
            if proc.ended_at < cutoff or index < len(ended) - PROC_KEEP_EXITED:
                del self.procs[proc.pid]

    def start(self, req: dict[str, object]) -> Proc:
        self.prune()
        limit = int(req.get("max_processes", PROC_MAX))  # type: ignore[call-overload]
        if sum(p.exit_code is None for p in self.procs.values()) >= limit:
            raise OpError("process_limit_reached", "", f"{limit} processes are running already")
        argv = [str(a) for a in req.get("argv") or []]  # type: ignore[attr-defined]
        if not argv:
            raise OpError("invalid_request", "", "argv is empty")
        rel = str(req.get("cwd") or "")
        cwd_rel = self.root.resolve(rel)
        cwd = os.path.join(self.root.path, cwd_rel) if cwd_rel else self.root.path
        if not os.path.isdir(cwd):
            raise OpError("not_a_directory" if os.path.exists(cwd) else "path_not_found", rel)
        size = req.get("pty")
        if size:
            rows, cols = (int(n) for n in size)  # type: ignore[attr-defined]
            check_winsize(rows, cols)
        env = {
            "PATH": SANDBOX_PATH,
            "HOME": self.root.path,
            "LANG": "C.UTF-8",
            "TERM": "xterm-256color" if size else "dumb",
            "USER": "agent",
            **{str(k): str(v) for k, v in dict(req.get("env") or {}).items()},  # type: ignore[call-overload]
        }
        self.started += 1
        marker = env[PROCESS_MARKER] = f"{self.session}-p{self.started}"
        file_bytes = int(req.get("file_bytes", 100 << 20))  # type: ignore[call-overload]
        ours: list[int] = []  # our ends, closed if the start fails
        theirs: list[int] = []  # the child's ends, closed once it has them
        try:
            if size:
                master, slave = os.openpty()
                ours.append(master)
                theirs.append(slave)
                set_winsize(master, rows, cols)
                stdin = stdout = stderr = slave
            else:
                out_r, out_w = os.pipe()
                err_r, err_w = os.pipe()
                ours += [out_r, err_r]
                theirs += [out_w, err_w]
                stdout, stderr = out_w, err_w
                if req.get("stdin"):
                    in_r, in_w = os.pipe()
                    ours.append(in_w)
                    theirs.append(in_r)
                    stdin = in_r
                else:
                    stdin = os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
                    theirs.append(stdin)
            popen = self.zygotes.spawn(
                argv, env, cwd, (stdin, stdout, stderr), pty=bool(size), file_bytes=file_bytes
            )
        except (OSError, ValueError) as exc:
            for fd in ours:
                os.close(fd)
            raise OpError("process_start_failed", "", f"{argv[0]}: {exc}") from exc
        finally:
            for fd in theirs:
                os.close(fd)
        self.known.add(popen.pid)
        spec = {
            "argv": argv,
            "env": dict(req.get("env") or {}),  # type: ignore[call-overload]
            "tag": req.get("tag"),
            "cwd": cwd_rel,
            "pty": [rows, cols] if size else None,
            "stdin": bool(size or req.get("stdin")),
        }
        proc = Proc(popen, spec, int(req.get("buffer_bytes", PROC_BUFFER_BYTES)))  # type: ignore[call-overload]
        proc.marker = marker
        if size:
            proc.stdin_fd = ours[0]
            proc.outputs[ours[0]] = STREAM_PTY
        else:
            proc.outputs[ours[0]] = STREAM_STDOUT
            proc.outputs[ours[1]] = STREAM_STDERR
            if len(ours) == 3:
                proc.stdin_fd = ours[2]
                os.set_blocking(ours[2], False)
        loop = asyncio.get_running_loop()
        for fd, stream in proc.outputs.items():
            os.set_blocking(fd, False)
            loop.add_reader(fd, self.readable, proc, fd, stream)
        self.procs[proc.pid] = proc
        task = asyncio.create_task(self.supervise(proc))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        return proc

    def readable(self, proc: Proc, fd: int, stream: int) -> None:
        try:
            data = os.read(fd, PROC_READ)
        except BlockingIOError:
            return
        except OSError:  # EIO: a PTY whose last slave end closed
            data = b""
        if data:
            proc.ring.append(stream, data)
            if not proc.paused and proc.held_back():
                proc.paused = True
                for output in proc.outputs:
                    asyncio.get_running_loop().remove_reader(output)
        else:
            self.close_output(proc, fd)
        proc.notify()

    def resume(self, proc: Proc) -> None:
        if proc.paused and not proc.held_back():
            proc.paused = False
            for fd, stream in proc.outputs.items():
                asyncio.get_running_loop().add_reader(fd, self.readable, proc, fd, stream)

    def close_output(self, proc: Proc, fd: int) -> None:
        if proc.outputs.pop(fd, None) is None:
            return
        asyncio.get_running_loop().remove_reader(fd)
        # A PTY's master is its input too: closed by supervise() under the writing lock, so a
        # write in flight never meets a closed (or reused) descriptor number.
        if fd != proc.stdin_fd:
            os.close(fd)

    async def supervise(self, proc: Proc) -> None:
        await exited_pid(proc.popen)
        # The rest of its output, unless something it left behind holds the pipe open.
        deadline = time.monotonic() + DRAIN_GRACE_S
        while proc.outputs and time.monotonic() < deadline:
            with contextlib.suppress(TimeoutError):
                waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
                proc.waiters.add(waiter)
                await asyncio.wait_for(waiter, deadline - time.monotonic())
        # What its process group still holds dies with it: nothing outlives the process
        # unaccounted (the count bound covers the processes started here).
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        # Most processes leave nothing behind: a look at /proc, when it is the sandbox's short
        # list, answers that at once; killing (which waits for what it kills) takes a thread.
        if marked_left(proc.marker):
            await asyncio.to_thread(kill_marked, proc.marker)
        for fd in list(proc.outputs):
            self.close_output(proc, fd)
        async with proc.writing:
            if proc.stdin_fd is not None:
                os.close(proc.stdin_fd)
                proc.stdin_fd = None
        code = proc.popen.returncode if proc.popen.returncode is not None else -signal.SIGKILL
        proc.exit_code = code if code >= 0 else 128 - code
        proc.ended_at = time.monotonic()
        self.known.discard(proc.pid)
        proc.notify()

    def kill_all(self) -> None:
        """The agent is ending: so does every process it started (and waits until they are gone)."""
        running = [p for p in self.procs.values() if p.exit_code is None]
        for proc in running:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(proc.pid, signal.SIGKILL)
        for proc in running:
            kill_marked(proc.marker)
            with contextlib.suppress(subprocess.TimeoutExpired, ChildProcessError):
                proc.popen.wait(KILL_WAIT_S)
            self.known.discard(proc.pid)


QUICK_SCAN_PIDS = 64  # /proc entries a look on the agent's loop may read; past it, a thread


def marked_left(marker: str) -> bool:
    """Whether a process may still carry ``marker`` (True, to be sure, when /proc is long)."""
    names = [name for name in os.listdir("/proc") if name.isdigit()]
    if len(names) > QUICK_SCAN_PIDS:
        return True
    needle = f"{PROCESS_MARKER}={marker}".encode()
    return any(carries(name, needle) for name in names)


def carries(pid: str, needle: bytes) -> bool:
    """Whether process ``pid``'s environment holds the entry ``needle`` (False once gone)."""
    try:
        with open(f"/proc/{pid}/environ", "rb") as f:
            environ = f.read()
    except OSError:
        return False
    return needle + b"\x00" in environ or environ.endswith(needle)


def kill_marked(marker: str) -> None:
    """SIGKILL every process whose environment carries ``marker``; return once none is left
    (or after KILL_WAIT_S). A killed process has no environment left, so it stops matching."""
    needle = f"{PROCESS_MARKER}={marker}".encode()
    deadline = time.monotonic() + KILL_WAIT_S
    while True:
        found = False
        for name in os.listdir("/proc"):
            if name.isdigit() and carries(name, needle):
                found = True
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(int(name), signal.SIGKILL)
        if not found or time.monotonic() > deadline:
            return
        time.sleep(0.002)


def check_winsize(rows: int, cols: int) -> None:
    if not (0 < rows < 65536 and 0 < cols < 65536):
        raise OpError("invalid_request", "", f"bad terminal size {rows}x{cols}")


def set_winsize(fd: int, rows: int, cols: int) -> None:
    import termios  # only terminals need it: not imported at start-up

    check_winsize(rows, cols)
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))


async def exited_pid(popen: Spawned) -> None:
    """Return once ``popen`` has exited and is reaped (a pidfd says when; polled without one)."""
    try:
        pidfd = os.pidfd_open(popen.pid)
    except (AttributeError, OSError):
        while popen.poll() is None:  # noqa: ASYNC110
            await asyncio.sleep(0.05)
        return
    loop = asyncio.get_running_loop()
    done: asyncio.Future[None] = loop.create_future()
    loop.add_reader(pidfd, settle, done)
    try:
        await done
    finally:
        loop.remove_reader(pidfd)
        os.close(pidfd)
    popen.wait()


def settle(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


async def write_all(fd: int, data: bytes) -> None:
    loop = asyncio.get_running_loop()
    view = memoryview(data)
    while view:
        try:
            view = view[os.write(fd, view) :]
        except BlockingIOError:
            ready: asyncio.Future[None] = loop.create_future()
            loop.add_writer(fd, settle, ready)
            try:
                await ready
            finally:
                loop.remove_writer(fd)


async def received_into(rel: str, fd: int, queue: asyncio.Queue[tuple[int, bytes]], max_bytes: int) -> int:
    """An upload's bytes from the channel (DATA frames until EOF), written to ``fd``; their size."""
    size = written_back = 0
    while True:
        kind, payload = await queue.get()
        if kind == CANCEL:
            raise OpError("cancelled", rel)
        if kind == EOF:
            return size
        size += len(payload)
        if size > max_bytes:
            raise OpError("payload_too_large", rel)
        view = memoryview(payload)
        while view:
            view = view[os.write(fd, view) :]
        if size - written_back >= WRITEBACK_BYTES:
            await asyncio.to_thread(start_writeback, fd, written_back, size - written_back)
            written_back = size


async def written_by_client(
    rel: str, fd: int, queue: asyncio.Queue[tuple[int, bytes]], max_bytes: int
) -> int:
    """An upload the client writes through its copy of ``fd``: DATA frames say how far it has
    written (writeback starts there), EOF its size, once its last write returned."""
    written_back = 0
    while True:
        kind, payload = await queue.get()
        if kind == CANCEL:
            raise OpError("cancelled", rel)
        if kind not in (DATA, EOF):
            continue
        size = int(payload or b"0")
        if size > max_bytes:
            raise OpError("payload_too_large", rel)
        if kind == EOF:
            on_disk = os.fstat(fd).st_size
            if on_disk != size:
                raise OpError("io_error", rel, f"{on_disk} bytes written, {size} announced")
            return size
        if size - written_back >= WRITEBACK_BYTES:
            await asyncio.to_thread(start_writeback, fd, written_back, size - written_back)
            written_back = size


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


FDS_OPTION = "--fds="


def fd_socket_from(args: list[str]) -> socket.socket | None:
    """The unix socket named by ``--fds=N`` (the local transport's; see ``Agent.pass_fd``), if any."""
    for arg in args:
        if arg.startswith(FDS_OPTION):
            with contextlib.suppress(OSError, ValueError):
                sock = socket.socket(fileno=int(arg[len(FDS_OPTION) :]))
                if sock.family == socket.AF_UNIX:
                    sock.set_inheritable(False)  # no command, nor a supervisor's exec, holds it
                    sock.setblocking(False)  # a full socket never blocks the agent
                    return sock
                sock.detach()
    return None


async def main() -> None:
    args = [arg for arg in sys.argv[1:] if not arg.startswith(FDS_OPTION)]
    fd_socket = fd_socket_from(sys.argv[1:])
    root = args[0] if args else "/workspace"
    # Commands' working directory: "/" in a sandbox; unsandboxed, one that shows the root as workspace/.
    cwd = args[1] if len(args) > 1 else "/"
    loop = asyncio.get_running_loop()
    # Not dumpable: /proc/<agent>/{fd,environ,mem} are closed to the commands (same uid, no
    # capabilities), so none can write a forged frame into the channel. Supervisors are forks
    # and stay so; the commands they exec are dumpable again, as exec resets it.
    prctl(PR_SET_DUMPABLE, 0)
    prctl(PR_SET_CHILD_SUBREAPER, 1)
    # Forking a process with threads (asyncio.to_thread's) is safe here: the child touches no
    # lock before it execs or exits (Python 3.12+ warns about it regardless).
    warnings.filterwarnings("ignore", ".*fork.*", DeprecationWarning)
    widen_pipes()
    keep_freed_memory()
    # What is loaded by now lives as long as the agent: kept out of collections, its pages are
    # not written by them, so they stay shared with each call's supervisor (a fork).
    gc.freeze()
    transport, protocol = await loop.connect_write_pipe(
        asyncio.streams.FlowControlMixin, os.fdopen(1, "wb", buffering=0)
    )
    writer = asyncio.StreamWriter(transport, protocol, None, loop)
    finish_swaps(Root(root).path)
    agent = Agent(root, writer, cwd, fd_socket)
    # HELLO goes out before any request is read.
    hello = {"version": VERSION, "pid": os.getpid(), "fds": fd_socket is not None}
    agent.send(0, HELLO, json.dumps(hello).encode())
    _, frames = await loop.connect_read_pipe(
        lambda: FrameInput(agent.deliver), os.fdopen(0, "rb", buffering=0)
    )
    loop.call_soon(agent.children.prefork)
    sweeper = asyncio.create_task(asyncio.to_thread(sweep, Root(root).path))
    orphans = asyncio.create_task(agent.children.sweep_every(SWEEP_EVERY_S))
    await agent.serve(frames)
    sweeper.cancel()
    orphans.cancel()


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
            import shutil  # rarely needed: not imported at start-up

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
