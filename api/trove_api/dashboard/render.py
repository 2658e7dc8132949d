"""Rendering dashboard pages: one Jinja2 environment (autoescaped), filters, security headers."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, select_autoescape
from markupsafe import Markup

HERE = Path(__file__).parent
STATIC_DIR = HERE / "static"

# Scripts and styles come from our own static files only (no inline script, no eval); the
# pages cannot be framed; forms post only to us.
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; script-src 'self'; style-src 'self'; "
    "img-src 'self' data:; connect-src 'self'; object-src 'none'; frame-ancestors 'none'; "
    "form-action 'self'; base-uri 'none'",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
    "X-Content-Type-Options": "nosniff",
}
# The namespace page's terminal: xterm.js adds <style> elements it computes at run time (cell
# sizes, colours). Styles cannot run script; scripts stay our own files only.
TERMINAL_CSP = SECURITY_HEADERS["Content-Security-Policy"] + "; style-src-elem 'self' 'unsafe-inline'"


def human_bytes(size: int | None) -> str:
    if size is None:
        return "–"
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} GiB"


def short_time(stamp: str | None) -> str:
    """``2026-12-03T12:00:01.123456Z`` → ``2026-12-03 12:00:01``."""
    if not stamp:
        return "–"
    return stamp[:19].replace("T", " ")


def sparkline(values: list[int], *, width: int = 300, height: int = 60, label: str = "") -> Markup:
    """A small inline SVG bar chart (no script, no styles beyond classes)."""
    top = max(values) if values and max(values) > 0 else 1
    bar = width / max(len(values), 1)
    bars = "".join(
        f'<rect x="{i * bar:.1f}" y="{height - v / top * (height - 2):.1f}" '
        f'width="{max(bar - 1, 1):.1f}" height="{v / top * (height - 2):.1f}"><title>{v}</title></rect>'
        for i, v in enumerate(values)
    )
    text = Markup.escape(label)
    # Safe: every interpolated value is a number or escaped above.
    return Markup(  # noqa: S704
        f'<svg class="chart" role="img" aria-label="{text}" viewBox="0 0 {width} {height}" '
        f'width="{width}" height="{height}">{bars}</svg>'
    )


def bars(items: list[tuple[str, float]], *, label: str, width: int = 300) -> Markup:
    """Labelled horizontal bars in SVG: a histogram or a breakdown a person reads at a glance."""
    top = max((v for _, v in items), default=0) or 1
    row = 20
    height = row * max(len(items), 1)
    parts = []
    for i, (name, value) in enumerate(items):
        length = value / top * (width - 130)
        shown = f"{value:g}"
        parts.append(
            f'<text x="0" y="{i * row + 14}">{Markup.escape(name)}</text>'
            f'<rect x="90" y="{i * row + 4}" width="{length:.1f}" height="{row - 8}"></rect>'
            f'<text x="{95 + length:.1f}" y="{i * row + 14}">{shown}</text>'
        )
    # Safe: names and the label are escaped, the rest are numbers.
    return Markup(  # noqa: S704
        f'<svg class="chart bars" role="img" aria-label="{Markup.escape(label)}" '
        f'viewBox="0 0 {width} {height}" width="{width}" height="{height}">{"".join(parts)}</svg>'
    )


def _json_attr(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"))


environment = Environment(
    loader=FileSystemLoader(HERE / "templates"),
    autoescape=select_autoescape(default=True, default_for_string=True),
    trim_blocks=True,
    lstrip_blocks=True,
)
environment.filters["bytes"] = human_bytes
environment.filters["when"] = short_time
environment.filters["json_attr"] = _json_attr
environment.globals["sparkline"] = sparkline
environment.globals["bars"] = bars


def render(template: str, **values: Any) -> str:
    return environment.get_template(template).render(**values)
