"""The device-login approval page (`/cli`): its HTML (plain forms, every value escaped) and the
posted form's fields."""

from __future__ import annotations

from datetime import UTC, datetime
from html import escape
from urllib.parse import parse_qs, quote

from trove_api.services.device_login import Waiting

FORM_MAX_BYTES = 8192

# No scripts at all; the form posts only to us; the page cannot be framed (clickjacking).
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; "
    "frame-ancestors 'none'; base-uri 'none'",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
    "X-Content-Type-Options": "nosniff",
}

_STYLE = """
body{font-family:system-ui,sans-serif;max-width:34rem;margin:3rem auto;padding:0 1rem;color:#222}
h1{font-size:1.4rem}label{display:block;margin:.9rem 0 .3rem;font-weight:600}
input{width:100%;padding:.5rem;font-size:1rem;box-sizing:border-box}
.code{font-family:ui-monospace,monospace;font-size:1.6rem;letter-spacing:.15em}
.row{display:flex;gap:.8rem;margin-top:1.2rem}button{padding:.6rem 1.2rem;font-size:1rem}
.note{color:#555;font-size:.9rem}.err{color:#a00}.ok{color:#060}.who{background:#f4f4f4;padding:.6rem}
label.check{font-weight:400}label.check input{width:auto}
"""


def _page(title: str, body: str) -> str:
    return (
        "<!doctype html><html lang=en><head><meta charset=utf-8>"
        '<meta name=viewport content="width=device-width,initial-scale=1">'
        f"<title>{escape(title)}</title><style>{_STYLE}</style></head><body>{body}</body></html>"
    )


def requester(waiting: Waiting | None) -> str:
    """Who asked for this code and when, so the approver can tell a stranger's request."""
    if waiting is None:
        return ""
    when = datetime.fromtimestamp(waiting.requested_at, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    return (
        f"<p class=who>Requested from <code>{escape(waiting.client or 'an unknown address')}</code> "
        f"at <time>{escape(when)}</time>. If that is not you, deny it.</p>"
    )


def approval_form(
    code: str,
    *,
    error: str | None = None,
    waiting: Waiting | None = None,
    default_namespace: str = "default",
    signed_in_as: str | None = None,
    csrf: str | None = None,
) -> str:
    """Signed in to the dashboard as an admin (``signed_in_as``, ``csrf``), the form needs no
    key: the session approves, and the CSRF token proves the form is ours."""
    message = f"<p class=err role=alert>{escape(error)}</p>" if error else ""
    message += requester(waiting)
    if signed_in_as is not None and csrf is not None:
        credential = (
            f'<input type=hidden name=csrf value="{escape(csrf)}">'
            f"<p class=who>Signed in to the dashboard as <code>{escape(signed_in_as)}</code>; "
            "approving uses that sign-in.</p>"
        )
    else:
        sign_in = escape(f"/dashboard/login?next={quote('/cli?code=' + code, safe='')}")
        credential = f"""<label for=api_key>Admin key of the workspace</label>
<input id=api_key name=api_key type=password placeholder="trove-sk-admin-…" autocomplete=off required>
<p class=note>Or <a href="{sign_in}">sign in to the dashboard</a> and come back.</p>"""
    return _page(
        "Authorize the Trove CLI",
        f"""<h1>Authorize the Trove CLI</h1>
<p>A <code>trove login</code> is waiting for approval. Check that the code below is the one
your terminal shows. Approving mints a new workspace key for that terminal.</p>{message}
<form method=post action="/cli">
<label for=user_code>Code shown in your terminal</label>
<input id=user_code name=user_code class=code value="{escape(code)}" placeholder="ABCD-1234"
 autocomplete=off required maxlength=16>
{credential}
<label for=namespace>Namespace the new key is locked to</label>
<input id=namespace name=namespace value="{escape(default_namespace)}" maxlength=128>
<label class=check><input type=checkbox name=all_namespaces> Instead, an unlocked key for every
namespace (leave the namespace empty)</label>
<label for=name>Key name (optional)</label>
<input id=name name=name placeholder="cli-login" maxlength=200>
<div class=row><button name=action value=approve type=submit>Approve</button>
<button name=action value=deny type=submit>Deny</button></div>
</form>
<p class=note>Never approve a code you did not request yourself.</p>""",
    )


def approved(code: str, workspace_id: str, namespace: str | None) -> str:
    lock = f" locked to namespace <code>{escape(namespace)}</code>" if namespace else ""
    return _page(
        "CLI authorized",
        f"""<h1 class=ok>CLI authorized</h1><p>Code <span class=code>{escape(code)}</span> is approved:
a workspace key for <code>{escape(workspace_id)}</code>{lock} is on its way to your terminal.
You can close this page.</p>""",
    )


def denied(code: str) -> str:
    return _page(
        "Login denied",
        f"<h1>Login denied</h1><p>Code <span class=code>{escape(code)}</span> was denied; "
        "the waiting terminal will stop.</p>",
    )


def read_form(raw: bytes) -> dict[str, str]:
    """The posted form's fields (first value of each), from at most ``FORM_MAX_BYTES`` bytes."""
    return {k: v[0] for k, v in parse_qs(raw[:FORM_MAX_BYTES].decode("utf-8", "replace")).items()}
