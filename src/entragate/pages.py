"""The pages people see: refusals, sign-in failures, the sign-out confirmation, signed out.

Self-contained (inline CSS, no external asset, no script), accessible (lang, landmarks, one h1,
visible focus, contrast that holds in light and dark), light or dark as the system prefers,
and brandable through configuration (BRAND_NAME, BRAND_LOGO as a `data:image/...` URI, and
SUPPORT_CONTACT as an e-mail address or https URL). Every page shows the request id to quote.

Nothing from the request is echoed, and every value that reaches a page is escaped.
"""

import re
from dataclasses import dataclass

DEFAULT_BRAND_NAME = "entragate"
# A logo must travel inside the page (no external assets): an image as a data: URI, small.
LOGO_PATTERN = re.compile(r"data:image/(png|jpeg|gif|webp|svg\+xml);base64,[A-Za-z0-9+/]+={0,2}")
MAX_LOGO_CHARS = 64 * 1024
EMAIL_PATTERN = re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}")
HTTPS_PATTERN = re.compile(r"https://[A-Za-z0-9.-]+(:[0-9]+)?(/[A-Za-z0-9._~!$&'()*+,;=:@/%-]*)?")

# html.escape would import html.entities (a 2,000-entry table, ~60 ms of a Pyodide cold start)
# to escape five characters.
_ESCAPES = str.maketrans({"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#x27;"})


def escape(text) -> str:
    return str(text).translate(_ESCAPES)


@dataclass(frozen=True, slots=True)
class Branding:
    name: str = DEFAULT_BRAND_NAME
    logo: str | None = None  # data:image/... URI, checked by config
    support: str | None = None  # e-mail address or https URL, checked by config
    show_rules: bool = False  # PAGES_SHOW_RULE: name the refusing route (policy internals) on pages

    def support_link(self) -> str | None:
        if not self.support:
            return None
        href = f"mailto:{self.support}" if EMAIL_PATTERN.fullmatch(self.support) else self.support
        return f'<a href="{escape(href)}">{escape(self.support)}</a>'


DEFAULT_BRANDING = Branding()
_branding = DEFAULT_BRANDING


def show_rules() -> bool:
    return _branding.show_rules


def set_branding(branding: Branding) -> None:
    """Set once per isolate when the gateway is assembled (configuration, like the policy)."""
    global _branding
    _branding = branding


_STYLE = """
:root{color-scheme:light dark;--bg:#f5f6f8;--card:#fff;--text:#1b1f24;--muted:#57606a;--line:#d0d7de;
--accent:#0b5cad;--bad:#a40e26;--ok:#116329}
@media (prefers-color-scheme:dark){:root{--bg:#0d1117;--card:#161b22;--text:#e6edf3;--muted:#9da7b3;
--line:#30363d;--accent:#58a6ff;--bad:#ff7b72;--ok:#3fb950}}
*{box-sizing:border-box}
body{margin:0;min-height:100vh;display:flex;align-items:center;justify-content:center;padding:1.5rem;
background:var(--bg);color:var(--text);font:16px/1.5 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif}
main{width:100%;max-width:34rem;background:var(--card);border:1px solid var(--line);border-radius:12px;
padding:2rem 2rem 1.5rem}
header{display:flex;align-items:center;gap:.75rem;margin-bottom:1.25rem;color:var(--muted);font-weight:600}
header img{max-height:2rem;max-width:8rem}
h1{font-size:1.4rem;margin:0 0 .75rem}
h1.bad{color:var(--bad)} h1.ok{color:var(--ok)}
p{margin:.5rem 0}
.who{padding:.75rem 1rem;border:1px solid var(--line);border-radius:8px;margin:1rem 0}
.actions{display:flex;flex-wrap:wrap;gap:.75rem;margin:1.25rem 0 .5rem}
a,button{font:inherit}
.button{display:inline-block;padding:.5rem 1rem;border-radius:6px;border:1px solid var(--accent);
background:var(--accent);color:#fff;text-decoration:none;cursor:pointer}
.button.secondary{background:transparent;color:var(--accent)}
a{color:var(--accent)}
a:focus-visible,button:focus-visible{outline:3px solid var(--accent);outline-offset:2px}
footer{margin-top:1.5rem;padding-top:.75rem;border-top:1px solid var(--line);color:var(--muted);font-size:.875rem}
code{font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;font-size:.85em;word-break:break-all}
"""


def render(*, status: int, title: str, message: str, request_id: str, tone: str = "bad", who: str | None = None,
           actions: str = "", details: str = "") -> str:
    """A whole page. `message`, `who` are text (escaped here); `actions` and `details` are
    HTML built by this module's callers from escaped parts."""
    branding = _branding
    logo = f'<img src="{escape(branding.logo)}" alt="">' if branding.logo else ""
    support = branding.support_link()
    help_line = f"<p>Need help? Contact {support} and quote the request id.</p>" if support else ""
    who_html = f'<p class="who">{escape(who)}</p>' if who else ""
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width,initial-scale=1">'
        # same-origin: the sign-out form's POST must carry its Origin (no-referrer makes it "null").
        '<meta name="referrer" content="same-origin">'
        f"<title>{escape(title)} · {escape(branding.name)}</title><style>{_STYLE}</style></head>"
        f'<body><main aria-labelledby="title"><header>{logo}<span>{escape(branding.name)}</span></header>'
        f'<h1 id="title" class="{tone}">{escape(title)}</h1><p>{escape(message)}</p>{who_html}{details}'
        f'{f"<div class=actions>{actions}</div>" if actions else ""}'
        f"<footer>{help_line}<p>Status {status} · Request id <code>{escape(request_id)}</code></p></footer>"
        "</main></body></html>"
    )


def link(href: str, text: str, secondary: bool = False) -> str:
    return f'<a class="button{" secondary" if secondary else ""}" href="{escape(href)}">{escape(text)}</a>'


def signed_in_as(name: str | None, username: str | None) -> str | None:
    if name and username:
        return f"Signed in as {name} ({username})"
    return f"Signed in as {name or username}" if (name or username) else None


def logout_confirm(request_id: str, csrf: str, who: str | None, action: str) -> str:
    form = (f'<form method="post" action="{escape(action)}"><input type="hidden" name="csrf" value="{escape(csrf)}">'
            '<button class="button" type="submit">Sign out</button></form>')
    return render(status=200, title="Sign out?", message="You will be signed out of this site and of Microsoft Entra.",
                  request_id=request_id, tone="ok", who=who, actions=form + link("/", "Stay signed in", True))


def signed_out(request_id: str) -> str:
    return render(status=200, title="You have signed out", message="You can close this window, or sign in again.",
                  request_id=request_id, tone="ok", actions=link("/", "Sign in again"))
