"""trove-server: serve the API, bootstrap a workspace, maintenance commands."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path
from typing import Literal

from trove_api import allocator, logs
from trove_api.context import AppContext
from trove_api.services.keys import NewWorkspace, create_workspace, workspace_count
from trove_core.errors import TroveError
from trove_core.settings import Settings, load_settings

FIRST_RUN_FILE = "first-run-keys.txt"
log = logging.getLogger("trove")


def credentials_text(new: NewWorkspace, base_url: str) -> str:
    if new.workspace_key is None:
        return admin_only_text(new, base_url)
    return (
        f"Trove workspace: {new.workspace_id}\n"
        f"Admin key (keys, webhooks, events; no filesystem): {new.admin_key.api_key}\n"
        f"Workspace key (any namespace via X-Namespace):     {new.workspace_key.api_key}\n"
        "\n"
        "Try it:\n"
        "  from trove_sdk import TroveClient\n"
        f'  client = TroveClient(api_key="{new.workspace_key.api_key}", namespace="my-agent", '
        f'base_url="{base_url}")\n'
        '  print(client.exec("echo hello from workspace/"))\n'
        "\n"
        "CLI:\n"
        f"  trove login --api-key {new.workspace_key.api_key} --base-url {base_url} "
        "--namespace my-agent\n"
    )


def admin_only_text(new: NewWorkspace, base_url: str) -> str:
    return (
        f"Trove workspace: {new.workspace_id}\n"
        f"Admin key (keys, webhooks, events; no filesystem): {new.admin_key.api_key}\n"
        "\n"
        "Mint a key for an agent with it (locked to one namespace):\n"
        "  from trove_sdk import TroveAdminClient\n"
        f'  admin = TroveAdminClient.from_api_key("<admin key>", base_url="{base_url}")\n'
        '  print(admin.create_key("my-agent", namespace="my-agent").api_key)\n'
    )


def keys_stay_off_the_console(settings: Settings) -> str | None:
    """Why first-run keys must not reach stdout/stderr, or None (a laptop's `make run`).

    On Kubernetes the console is the pod log, JSON logs are shipped and kept, and an admin key
    from TROVE_ADMIN_KEY (the chart's Secret) is already known to whoever deployed: printing a
    key there would copy a secret into every place logs go.
    """
    if settings.runtime == "kubernetes":
        return "the Kubernetes runtime (the console is the pod log)"
    if settings.log_format == "json":
        return "JSON logs (they are collected and kept)"
    if settings.admin_key is not None:
        return "the admin key comes from TROVE_ADMIN_KEY"
    return None


def _base_url(settings: Settings) -> str:
    host = settings.host if settings.host not in ("0.0.0.0", "::") else "127.0.0.1"
    return f"http://{host}:{settings.port}"


def _write_private(path: Path, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
    os.chmod(path, 0o600)


def _first_workspace(ctx: AppContext, settings: Settings, *, workspace_key: bool) -> NewWorkspace | None:
    """The default workspace on a fresh database; replicas starting together make just one."""
    with ctx.db.exclusive("first-workspace"):
        if workspace_count(ctx.db) != 0:
            return None
        return create_workspace(
            ctx.db,
            "default",
            admin_plaintext=settings.admin_key.get_secret_value() if settings.admin_key else None,
            workspace_key=workspace_key,
        )


def announce_quietly(settings: Settings, new: NewWorkspace | None, keys_file: Path, why: str) -> None:
    """Off a laptop: log where the first-run admin key is, never the key itself."""
    path = keys_file.resolve()
    where = f"{path} (mode 0600; on Kubernetes: kubectl exec <api pod> -- cat {path})"
    mint = "mint agent keys with it (TroveAdminClient.create_key, or trove-server bootstrap in the pod)"
    if new is not None and settings.admin_key is not None:
        log.warning(
            "first start: created workspace %s; its admin key is the one in TROVE_ADMIN_KEY "
            "(with the Helm chart: its admin-key Secret); %s. No key is printed here: %s",
            new.workspace_id,
            mint,
            why,
        )
    elif new is not None:
        _write_private(keys_file, credentials_text(new, _base_url(settings)))
        log.warning(
            "first start: created workspace %s; its admin key is in %s; %s. No key is printed here: %s",
            new.workspace_id,
            where,
            mint,
            why,
        )
    elif keys_file.exists():
        log.info("the first-run workspace id and admin key are in %s", where)


def serve(settings: Settings) -> int:
    allocator.keep_freed_memory()

    from trove_api.drain import CloseWhileDraining, Drain, DrainingServer
    from trove_api.httpserver import server_config
    from trove_api.main import create_app

    try:
        ctx = AppContext.open(settings)
        warnings: list[str] = getattr(ctx.runtime, "startup_report", list)()
    except TroveError as exc:
        print(f"trove-server: cannot start: {exc.internal or exc.detail}", file=sys.stderr)
        return 2
    for warning in warnings:
        print(f"\n*** WARNING: {warning}\n", file=sys.stderr)
    keys_file = settings.data_dir / FIRST_RUN_FILE
    # Off a laptop no unlocked workspace key is minted: nobody would see it, and it would be
    # one more all-namespace credential lying around.
    quiet_because = keys_stay_off_the_console(settings)
    laptop = quiet_because is None
    new = _first_workspace(ctx, settings, workspace_key=laptop) if settings.bootstrap_on_start else None
    if quiet_because is not None:
        announce_quietly(settings, new, keys_file, quiet_because)
    elif new is not None:
        text = credentials_text(new, _base_url(settings))
        _write_private(keys_file, text)
        print(text)
        print(f"(saved to {keys_file.resolve()}, mode 0600)\n")
    elif keys_file.exists():
        print(f"Trove: your first-run workspace id and keys are in {keys_file.resolve()}\n")
    app = create_app(settings, ctx)
    drain = Drain(settings.shutdown_drain_s)
    app.state.drain = drain
    config = server_config(
        CloseWhileDraining(app, drain),
        settings,
        log_level=settings.log_level,
        log_config=None,  # logs.configure() already routed uvicorn's loggers
        loop=event_loop(settings.runtime),
        # On SIGTERM uvicorn stops accepting, then lets in-flight requests finish: an exec
        # already running gets up to its full wall clock before the process exits.
        timeout_graceful_shutdown=int(max(settings.shutdown_grace_s, settings.exec_timeout_s + 5)),
    )
    server = DrainingServer(config, drain)
    server.run()
    if not server.started:
        return 1
    return 0


def event_loop(runtime: str) -> Literal["asyncio", "uvloop"]:
    """The event loop ``serve`` runs on for a runtime.

    The local runtime spawns processes (each namespace's sandbox, with its bubblewrap chain;
    when it spawned one per exec, uvloop's spawn path measured 2.4x slower per exec, p50 31.5
    vs 13.0 ms) and hands descriptors over unix sockets; asyncio's loop is what its tests and
    benchmarks run on. The Kubernetes runtime spawns nothing: its execs are websocket
    messages, and uvloop took its API CPU per exec from 3.0 to 2.5 ms.
    """
    return "uvloop" if runtime == "kubernetes" else "asyncio"


def bootstrap(settings: Settings, name: str) -> int:
    ctx = AppContext.open(settings)
    try:
        new = create_workspace(ctx.db, name)
    finally:
        ctx.db.dispose()
    print(credentials_text(new, _base_url(settings)))
    return 0


def snapshot_jobs(settings: Settings, job: str, day: str | None, force: bool) -> int:
    """Run the daily snapshot or prune job now (for the day given, default: the due one)."""
    import asyncio
    from datetime import UTC, date, datetime

    async def run() -> int:
        ctx = AppContext.open(settings)
        try:
            jobs = ctx.snapshot_jobs
            when = date.fromisoformat(day) if day else jobs.period(datetime.now(UTC))
            if job == "run-daily":
                report = await jobs.run_daily(when, force=force)
            else:
                report = await jobs.prune(when, force=force)
        finally:
            await ctx.aclose()
        print(report.summary())
        for snapshot_id in report.created + report.deleted:
            print(snapshot_id)
        return 1 if report.failed else 0

    return asyncio.run(run())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="trove-server", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    serve_parser = sub.add_parser("serve", help="run the API (settings from TROVE_* variables)")
    serve_parser.add_argument("--host")
    serve_parser.add_argument("--port", type=int)
    serve_parser.add_argument("--runtime", choices=["local", "kubernetes"])
    serve_parser.add_argument("--data-dir", type=Path)
    boot = sub.add_parser("bootstrap", help="create a workspace with an admin and a workspace key")
    boot.add_argument("--name", default="default")
    snaps = sub.add_parser("snapshots", help="daily auto snapshots and pruning, now")
    snaps.add_argument("job", choices=["run-daily", "prune"])
    snaps.add_argument("--day", help="the day to run for, YYYY-MM-DD (default: the one due now)")
    snaps.add_argument("--force", action="store_true", help="run even if that day's run finished")
    args = parser.parse_args(argv)
    overrides = {
        key: value
        for key, value in vars(args).items()
        if key in ("host", "port", "runtime", "data_dir") and value is not None
    }
    settings = load_settings(**overrides)
    logs.configure(settings.log_level, settings.log_format)
    if args.command == "serve":
        return serve(settings)
    if args.command == "snapshots":
        return snapshot_jobs(settings, args.job, args.day, args.force)
    return bootstrap(settings, args.name)


if __name__ == "__main__":
    sys.exit(main())
