"""The HTML of the device-login approval page (`/cli`): plain forms, every value escaped."""

from __future__ import annotations

from html import escape

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
.note{color:#555;font-size:.9rem}.err{color:#a00}.ok{color:#060}
"""


def _page(title: str, body: str) -> str:
    return (
        "<!doctype html><html lang=en><head><meta charset=utf-8>"
        '<meta name=viewport content="width=device-width,initial-scale=1">'
        f"<title>{escape(title)}</title><style>{_STYLE}</style></head><body>{body}</body></html>"
    )


def approval_form(code: str, *, error: str | None = None) -> str:
    message = f"<p class=err role=alert>{escape(error)}</p>" if error else ""
    return _page(
        "Authorize the Trove CLI",
        f"""<h1>Authorize the Trove CLI</h1>
<p>A <code>trove login</code> is waiting for approval. Check that the code below is the one
your terminal shows. Approving mints a new workspace key for that terminal.</p>{message}
<form method=post action="/cli">
<label for=user_code>Code shown in your terminal</label>
<input id=user_code name=user_code class=code value="{escape(code)}" placeholder="ABCD-1234"
 autocomplete=off required maxlength=16>
<label for=api_key>Admin key of the workspace</label>
<input id=api_key name=api_key type=password placeholder="trove-sk-admin-…" autocomplete=off required>
<label for=namespace>Lock the new key to one namespace (optional)</label>
<input id=namespace name=namespace placeholder="e.g. customer-acme" maxlength=128>
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
