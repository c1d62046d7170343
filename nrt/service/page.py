"""The listening page: one HTML file, its stylesheet and its script, shipped as package data.

The page holds no data and needs no token; everything it shows it fetches from the public API
with the visitor's token, so anything it does, ``curl`` can do. Its Content-Security-Policy
lets it load nothing from outside the service.
"""

from __future__ import annotations

from importlib.resources import files

from fastapi.responses import Response

from .errors import NotFound

FILES = {
    "index.html": "text/html; charset=utf-8",
    "page.css": "text/css; charset=utf-8",
    "page.js": "text/javascript; charset=utf-8",
}
HEADERS = {
    # blob: for the audio fetched with the token, played and downloaded from object URLs
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self' blob:; "
    "media-src 'self' blob:; img-src 'self' data: blob:; form-action 'none'; "
    "base-uri 'none'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}


def page_file(name: str) -> Response:
    """One of the page's files, with its media type and the page's security headers; 404 for others."""
    if name not in FILES:
        raise NotFound(f"no page file {name!r}; the page is at / and its files are {', '.join(sorted(FILES))}")
    return Response((files(__package__) / "static" / name).read_bytes(), media_type=FILES[name], headers=HEADERS)
