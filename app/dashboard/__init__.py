"""The web dashboard: static HTML, CSS and JavaScript served by the API at `/dashboard/`.

No build step and no CDN: the page is plain JavaScript over the public REST API, and its one
library (uPlot, MIT, for the charts) is vendored under `static/vendor/`. The page talks only
to its own origin, which the Content-Security-Policy below pins down.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi import FastAPI
from fastapi.responses import RedirectResponse
from starlette.responses import Response
from starlette.staticfiles import StaticFiles

STATIC_DIR = Path(__file__).parent / "static"

# Inline `style` attributes are allowed (progress bar widths, uPlot); scripts and network
# calls only from this origin.
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data: blob:; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'"
)


class DashboardFiles(StaticFiles):
    """Static files with the dashboard's security headers (and no caching of the page)."""

    def file_response(self, *args: Any, **kwargs: Any) -> Response:
        response = super().file_response(*args, **kwargs)
        response.headers["Content-Security-Policy"] = CSP
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["Referrer-Policy"] = "no-referrer"
        response.headers["Cache-Control"] = "no-cache"
        return response


def mount_dashboard(app: FastAPI) -> None:
    """Serve the dashboard at /dashboard/ and send a browser that opens / there."""
    app.mount("/dashboard", DashboardFiles(directory=STATIC_DIR, html=True), name="dashboard")

    @app.get("/", include_in_schema=False)
    def root() -> RedirectResponse:
        return RedirectResponse("/dashboard/")
