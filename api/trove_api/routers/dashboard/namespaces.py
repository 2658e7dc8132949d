"""Dashboard: the namespaces list and a namespace's page (file browser, convention files, recent
execs, snapshots, the terminal's place). Every read and change goes through the same services
as the HTTP API, as the signed-in key: tenancy, namespace locks, limits and events all apply."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from starlette.background import BackgroundTask

from trove_api.dashboard.render import TERMINAL_CSP
from trove_api.ranges import plan_download
from trove_api.routers.dashboard.common import (
    CSRF_HEADER,
    DashboardRoute,
    PostedDep,
    View,
    ViewDep,
    back,
    check_csrf,
)
from trove_api.services.auth import resolve_namespace
from trove_api.services.events import scope_for
from trove_api.services.namespace_catalog import PAGE_SIZE, PAGE_SIZE_MAX
from trove_core import paths
from trove_core.clock import from_ns
from trove_core.errors import (
    BadRequestError,
    InvalidRequestError,
    TroveError,
)
from trove_core.runtime import FileReader, FileStat
from trove_core.wire import LIST_MAX_DEPTH

router = APIRouter(prefix="/dashboard/namespaces", route_class=DashboardRoute, include_in_schema=False)

CONVENTION_FILES = ("workspace/.trove/init.sh", "workspace/.trove/agent.md")
# Shown inline; never SVG (it can carry script) nor anything a browser might sniff into HTML.
IMAGE_TYPES = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".gif": "image/gif",
               ".webp": "image/webp", ".bmp": "image/bmp"}  # fmt: skip
RECENT_EXECS = 20
TREE_MAX_ENTRIES = 1000


def namespace_of(view: View, name: str) -> str:
    """The path's namespace, checked as ``X-Namespace`` is (pattern; a locked key's own only)."""
    return resolve_namespace(view.caller, name)


def namespace_url(namespace: str, **query: str) -> str:
    from urllib.parse import urlencode

    suffix = f"?{urlencode(query)}" if query else ""
    return f"/dashboard/namespaces/{namespace}{suffix}"


@router.get("")
async def namespace_list(
    view: ViewDep,
    q: Annotated[str, Query(max_length=128)] = "",
    page: Annotated[int, Query(ge=1, le=1_000_000)] = 1,
    per: Annotated[int, Query(ge=1, le=PAGE_SIZE_MAX)] = PAGE_SIZE,
) -> Response:
    listing = await view.ctx.catalog.page(view.caller, search=q, page=page, per_page=per)
    template = "namespace_rows.html" if view.request.headers.get("hx-request") else "namespaces.html"
    return view.page(template, nav="namespaces", listing=listing, q=q)


@router.get("/{name}")
async def namespace_page(
    name: str,
    view: ViewDep,
    path: Annotated[str, Query(max_length=4096)] = "workspace/",
    file: Annotated[str | None, Query(max_length=4096)] = None,
) -> Response:
    namespace = namespace_of(view, name)
    ctx, caller = view.ctx, view.caller
    directory = paths.display(paths.normalize(path)).rstrip("/") + "/"
    entries, truncated = await ctx.files.list(
        caller, namespace, directory, recursive=False, max_entries=1000, max_depth=1
    )
    everything, tree_truncated = await ctx.files.list(
        caller,
        namespace,
        "workspace/",
        recursive=True,
        max_entries=TREE_MAX_ENTRIES,
        max_depth=LIST_MAX_DEPTH,
    )
    preview = await _preview(view, namespace, file) if file else None
    convention = {p: await _text_or_none(view, namespace, p) for p in CONVENTION_FILES}
    execs = await ctx.event_feed.page(
        scope_for(caller, namespace=namespace, types="exec.completed"),
        limit=RECENT_EXECS,
        since=None,
        cursor=None,
    )
    snapshots, _ = await ctx.snapshots.listing(caller.workspace_id, namespace, limit=50)
    ref = await ctx.namespaces.find(caller.workspace_id, namespace)
    state = await ctx.catalog.state(ref) if ref is not None else "not created yet"
    page = view.page(
        "namespace.html",
        nav="namespaces",
        namespace=namespace,
        directory=directory,
        crumbs=_crumbs(directory),
        entries=[
            {
                "name": paths.printable(paths.basename(e.rel)),
                "path": paths.display(e.rel),
                "is_dir": e.is_dir,
                "size": None if e.is_dir else e.size,
                "modified_at": from_ns(e.mtime_ns),
            }
            for e in entries
        ],
        truncated=truncated,
        tree=_tree(everything),
        tree_truncated=tree_truncated,
        preview=preview,
        convention=convention,
        execs=execs.events,
        snapshots=snapshots,
        state=state,
        done=view.request.query_params.get("done", ""),
    )
    page.headers["Content-Security-Policy"] = TERMINAL_CSP  # the terminal's xterm.js styles
    return page


def _tree(entries: list[FileStat]) -> dict[str, list[dict[str, object]]]:
    """Children by parent path ("" is the root), in the runtime's order (folders first)."""
    children: dict[str, list[dict[str, object]]] = {}
    for e in entries:
        parent = e.rel.rsplit("/", 1)[0] if "/" in e.rel else ""
        children.setdefault(parent, []).append(
            {
                "rel": e.rel,
                "name": paths.printable(paths.basename(e.rel)),
                "path": paths.display(e.rel),
                "is_dir": e.is_dir,
            }
        )
    return children


def _crumbs(directory: str) -> list[tuple[str, str]]:
    parts = [p for p in directory.split("/") if p]
    return [(part, "/".join(parts[: i + 1]) + "/") for i, part in enumerate(parts)]


async def _text_or_none(view: View, namespace: str, path: str) -> str | None:
    try:
        shown = await view.ctx.files.preview(view.caller, namespace, path)
    except TroveError:  # absent, or a directory: shown as "not set"
        return None
    return shown.content


async def _preview(view: View, namespace: str, file: str) -> dict[str, object]:
    try:
        shown = await view.ctx.files.preview(view.caller, namespace, file)
    except TroveError as exc:  # gone, a directory, a rejected path: the rest of the page still shows
        return {"path": file, "error": exc.detail}
    display = paths.display(shown.stat.rel)
    suffix = "." + display.rsplit(".", 1)[-1].lower() if "." in display else ""
    return {
        "path": display,
        "size": shown.stat.size,
        "modified_at": from_ns(shown.stat.mtime_ns),
        "text": shown.content,
        "truncated": shown.truncated,
        "image": shown.content is None and suffix in IMAGE_TYPES,
    }


async def _open(view: View, namespace: str, path: str) -> FileReader:
    return await view.ctx.files.open(view.caller, namespace, path)


async def _chunks(reader: FileReader, start: int, end: int) -> AsyncIterator[bytes]:
    try:
        async for chunk in reader.iter_bytes(start, end):
            yield chunk
    finally:
        await reader.aclose()


@router.get("/{name}/download")
async def download(name: str, view: ViewDep, path: Annotated[str, Query(max_length=4096)]) -> Response:
    """The file as an attachment (never rendered by the browser, whatever it holds)."""
    reader = await _open(view, namespace_of(view, name), path)
    plan = plan_download(
        size=reader.stat.size,
        mtime_ns=reader.stat.mtime_ns,
        max_bytes=view.ctx.settings.read_max_bytes,
        range_header=None,
        if_range=None,
    )
    filename = paths.basename(reader.stat.rel).replace('"', "_").encode("ascii", "replace").decode()
    headers = {
        **plan.headers,
        "Content-Disposition": f'attachment; filename="{filename}"',
        "X-Content-Type-Options": "nosniff",
        "Cache-Control": "no-store",
    }
    return StreamingResponse(
        _chunks(reader, plan.start, plan.end),
        headers=headers,
        media_type="application/octet-stream",
        background=BackgroundTask(reader.aclose),
    )


@router.get("/{name}/image")
async def image(name: str, view: ViewDep, path: Annotated[str, Query(max_length=4096)]) -> Response:
    """An image for the preview: raster types only, sandboxed, never sniffed."""
    suffix = "." + path.rsplit(".", 1)[-1].lower() if "." in path else ""
    media = IMAGE_TYPES.get(suffix)
    if media is None:
        raise BadRequestError("Only raster images (png, jpeg, gif, webp, bmp) are previewed")
    reader = await _open(view, namespace_of(view, name), path)
    plan = plan_download(
        size=reader.stat.size,
        mtime_ns=reader.stat.mtime_ns,
        max_bytes=view.ctx.settings.read_max_bytes,
        range_header=None,
        if_range=None,
    )
    headers = {
        "Content-Security-Policy": "default-src 'none'; sandbox",
        "X-Content-Type-Options": "nosniff",
        "Cache-Control": "no-store",
    }
    return StreamingResponse(
        _chunks(reader, plan.start, plan.end),
        headers=headers,
        media_type=media,
        background=BackgroundTask(reader.aclose),
    )


@router.put("/{name}/upload")
async def upload(
    name: str, request: Request, view: ViewDep, path: Annotated[str, Query(max_length=4096)]
) -> Response:
    """The upload the page's progress bar follows: the raw body streams to the file (CSRF header)."""
    check_csrf(view, request.headers.get(CSRF_HEADER))
    namespace = namespace_of(view, name)
    declared = request.headers.get("content-length")
    written = await view.ctx.files.upload(
        view.caller,
        namespace,
        path,
        request.stream(),
        int(declared) if declared and declared.isdigit() else None,
    )
    return JSONResponse({"path": written.path, "size_bytes": written.size_bytes})


@router.post("/{name}/delete")
async def delete(name: str, posted: PostedDep) -> Response:
    namespace = namespace_of(posted.view, name)
    target = posted.form.get("path", "")
    shown = await posted.view.ctx.files.delete(posted.caller, namespace, target)
    parent = shown.rstrip("/").rsplit("/", 1)[0] + "/"
    return back(namespace_url(namespace, path=parent, done="deleted"))


@router.post("/{name}/convention")
async def save_convention_file(name: str, posted: PostedDep) -> Response:
    """Save init.sh or agent.md from the page's editor (only those two paths)."""
    namespace = namespace_of(posted.view, name)
    target = posted.form.get("path", "")
    if target not in CONVENTION_FILES:
        raise InvalidRequestError(
            "Only workspace/.trove/init.sh and workspace/.trove/agent.md are edited here"
        )
    await posted.view.ctx.files.write_text(
        posted.caller, namespace, target, _unix_lines(posted.form.get("content", ""))
    )
    return back(namespace_url(namespace, done="saved"))


def _unix_lines(text: str) -> str:
    # Browsers send a textarea's line breaks as CRLF; bash would read the CR as part of each line.
    return text.replace("\r\n", "\n")
