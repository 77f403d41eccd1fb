"""`papertape api`: the HTTP API and the dashboard, a thin edge. It reads the archive (ClickHouse, through the one
archive client) and writes only controls, orders, signals and acknowledgements to Kafka; a session's state is the
engine's alone. Versioned under /api/v1, OpenAPI at /openapi.json, a bearer token whenever it listens beyond
loopback (README "HTTP API")."""
from __future__ import annotations

import ipaddress
import json
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, AsyncIterator
from urllib.parse import urlsplit

import plotly
import prometheus_client
from fastapi import Depends, FastAPI, Request, Response
from fastapi.openapi.utils import get_openapi
from fastapi.responses import FileResponse, HTMLResponse
from fastapi.routing import APIRoute
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.routing import Match

from infra.prometheus import API_REQUESTS
from infra.sql_endpoint import SqlError
from papertape.app.api.backend import Backend, NotReady, version
from papertape.app.api.routes import authorized, open_router, router
from papertape.config import Settings

HERE = Path(__file__).parent
PLOTLY_JS = Path(plotly.__file__).parent / "package_data" / "plotly.min.js"


class OpenToNetwork(Exception):
    """Asked to listen beyond loopback without a token."""


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def api_token(settings: Settings) -> str | None:
    """The bearer token: the settings' (PAPERTAPE_API_TOKEN), else the contents of its token_file."""
    if settings.api.token:
        return settings.api.token
    if settings.api.token_file is not None:
        return Path(settings.api.token_file).read_text().strip() or None
    return None


LOOPBACK_NAMES = ["localhost", "127.0.0.1"]  # the Host a browser sends to an API on loopback


def check_exposure(host: str, token: str | None) -> None:
    if token is None and not is_loopback(host):
        raise OpenToNetwork(f"refusing to listen on {host} without a token: anyone who reaches it could start, stop "
                            "and trade sessions; set PAPERTAPE_API_TOKEN (or [api] token_file), or listen on "
                            "127.0.0.1")


def _json_error(status: int, detail: str) -> Response:
    return Response(json.dumps({"detail": detail}), status_code=status, media_type="application/json")


async def count_requests(request: Request, call_next: Any) -> Response:
    response: Response = await call_next(request)
    route = request.scope.get("route")  # the template (/api/v1/sessions/{session}): a bounded label
    API_REQUESTS.labels(request.method, getattr(route, "path", "unmatched"), str(response.status_code)).inc()
    return response


async def same_origin_writes(request: Request, call_next: Any) -> Response:
    """A write sent by a browser from another site is refused: a page the user happens to open could otherwise
    stop a session of a token-less API on loopback with a plain cross-site POST."""
    origin = request.headers.get("origin")
    if (request.method not in ("GET", "HEAD", "OPTIONS") and origin is not None
            and urlsplit(origin).netloc != request.headers.get("host")):
        return _json_error(403, f"a write from another origin ({origin[:100]}) is refused")
    return await call_next(request)


async def allow_every_method(request: Request, call_next: Any) -> Response:
    """A 405's Allow names every method of the path: Starlette names only those of the first route whose path
    matched (GET of /sessions/{session}/orders, not its POST)."""
    response: Response = await call_next(request)
    if response.status_code == 405:
        methods = {method for route in request.app.routes if isinstance(route, APIRoute)
                   and route.matches(request.scope)[0] == Match.PARTIAL for method in route.methods or ()}
        response.headers["allow"] = ", ".join(sorted(methods))
    return response


def _without_auth(app: FastAPI) -> dict[str, Any]:
    """The OpenAPI of an API without a token (loopback only): it asks for none, so its schema says so."""
    if app.openapi_schema is None:
        schema = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
        schema.get("components", {}).pop("securitySchemes", None)
        for operations in schema["paths"].values():
            for operation in operations.values():
                operation.pop("security", None)
                operation.get("responses", {}).pop("401", None)
        app.openapi_schema = schema
    return app.openapi_schema


def create_app(settings: Settings, token: str | None = None, allowed_hosts: list[str] | None = None) -> FastAPI:
    backend = Backend(settings)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        if backend.broker_address() is not None:
            try:  # follow the pipeline's events from the start; a broker not there yet is joined when needed
                await backend.broker()
            except NotReady:
                pass
        yield
        await backend.close()

    app = FastAPI(title="papertape", version=version(), lifespan=lifespan,
                  description="Paper trading on real market data: sessions, accounts, orders, fills, decisions, "
                              "metrics, prices and alerts of a papertape pipeline, and its controls.")
    app.state.backend, app.state.token = backend, token

    @app.exception_handler(NotReady)
    async def not_ready(_: Request, exc: Exception) -> Response:
        return _json_error(503, str(exc))

    @app.exception_handler(SqlError)
    async def archive_failed(_: Request, exc: Exception) -> Response:  # an archive of an older papertape, say
        return _json_error(503, f"the archive could not answer: {str(exc)[:500]}")

    app.include_router(open_router)
    app.include_router(router)

    app.middleware("http")(allow_every_method)
    app.middleware("http")(count_requests)
    app.middleware("http")(same_origin_writes)
    if allowed_hosts:  # on loopback: a name rebound to 127.0.0.1 by another site's DNS reads nothing
        app.add_middleware(TrustedHostMiddleware, allowed_hosts=allowed_hosts)
    if token is None:
        app.openapi = lambda: _without_auth(app)  # type: ignore[method-assign]

    @app.get("/metrics", include_in_schema=False, dependencies=[Depends(authorized)])
    def prometheus() -> Response:
        return Response(prometheus_client.generate_latest(), media_type=prometheus_client.CONTENT_TYPE_LATEST)

    @app.get("/", include_in_schema=False, response_class=HTMLResponse)
    def dashboard() -> Any:
        return FileResponse(HERE / "dashboard.html", media_type="text/html")

    @app.get("/static/dashboard.js", include_in_schema=False)
    def dashboard_js() -> FileResponse:
        return FileResponse(HERE / "dashboard.js", media_type="text/javascript")

    @app.get("/static/plotly.min.js", include_in_schema=False)
    def plotly_js() -> FileResponse:  # the package's own copy: no CDN at run time
        return FileResponse(PLOTLY_JS, media_type="text/javascript")

    return app
