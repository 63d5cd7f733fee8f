"""`GET /ui`: the console's page and its script and style, served without a token (they hold no
data: every datum comes from the token-checked API, called by the script with the token the
person signed in with)."""

from __future__ import annotations

from importlib import resources
from typing import TYPE_CHECKING

from faust.web import Request, Response, View

if TYPE_CHECKING:
    from app.kafka.app import TriggerApp

# The only files served, with their types: nothing else under static/ is reachable.
FILES = {
    "index.html": "text/html; charset=utf-8",
    "app.js": "text/javascript; charset=utf-8",
    "app.css": "text/css; charset=utf-8",
}
# No inline script or style, no other origin, never inside a frame.
SECURITY_HEADERS = {
    "Content-Security-Policy": ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
                                "connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'"),
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}


def static_file(name: str) -> bytes:
    return resources.files(__package__).joinpath("static", name).read_bytes()


def register_console(app: TriggerApp) -> None:
    """`/ui` (and `/ui/`) is the page; `/ui/app.js` and `/ui/app.css` its script and style."""

    class Page(View):
        async def get(self, request: Request) -> Response:
            return served(self, "index.html")

    class Asset(View):
        async def get(self, request: Request, name: str) -> Response:
            if name not in FILES or name == "index.html":
                return self.bytes(b"not found", status=404,
                                  headers={**SECURITY_HEADERS, "Content-Type": "text/plain; charset=utf-8"})
            return served(self, name)

    def served(view: View, name: str) -> Response:
        # The type goes in the headers: aiohttp refuses a charset in `content_type`.
        return view.bytes(static_file(name), headers={**SECURITY_HEADERS, "Content-Type": FILES[name]})

    app.page("/ui", name="console")(Page)
    app.page("/ui/", name="console-slash")(Page)
    app.page("/ui/{name}", name="console-asset")(Asset)
