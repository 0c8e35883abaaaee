"""Request ids, structured logs and metrics, wired into an app in one call.

``RequestObservabilityMiddleware`` is the outermost middleware: every answer (a 413 of the
body limit included) gets an ``X-Request-ID`` and is counted under its route template, never
its raw path, so /models/{name} stays one series however many models there are.
"""

from __future__ import annotations

import time

from fastapi import FastAPI
from starlette.datastructures import MutableHeaders
from starlette.routing import Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from core.logs import REQUEST_ID, configure_logging, request_id_from
from core.settings import Settings
from service.metrics import (
    HTTP_IN_FLIGHT,
    HTTP_LATENCY,
    HTTP_REQUESTS,
    PoolBacklog,
    app_collectors,
)
from service.routes import metrics as metrics_routes

REQUEST_ID_HEADER = "X-Request-ID"
UNMATCHED = "unmatched"


def _route_template(scope: Scope) -> str:
    route = scope.get("route")
    if route is None:  # answered before routing (body limit): match it ourselves
        app = scope.get("app")
        for candidate in getattr(getattr(app, "router", None), "routes", ()):
            match, _ = candidate.matches(scope)
            if match is not Match.NONE:
                route = candidate
                break
    return getattr(route, "path", UNMATCHED)


class RequestObservabilityMiddleware:
    """Request id (log context + response header), in-flight gauge, count and latency."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = next((v.decode("latin-1") for k, v in scope["headers"]
                      if k == b"x-request-id"), None)
        request_id = request_id_from(given)
        # Not reset afterwards: the server runs each request in a task of its own, whose
        # context ends with it, and the 500 handler (outside this middleware) still logs
        # with the id.
        REQUEST_ID.set(request_id)
        status, model_version = 500, ""

        async def send_tagged(message: Message) -> None:
            nonlocal status, model_version
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = MutableHeaders(scope=message)
                headers[REQUEST_ID_HEADER] = request_id
                model_version = headers.get("x-model-version", "")
            await send(message)

        HTTP_IN_FLIGHT.inc()
        started = time.perf_counter()
        try:
            await self.app(scope, receive, send_tagged)
        finally:
            HTTP_IN_FLIGHT.dec()
            labels = (_route_template(scope), scope["method"], str(status), model_version)
            HTTP_REQUESTS.labels(*labels).inc()
            HTTP_LATENCY.labels(*labels).observe(time.perf_counter() - started)


def _pool_backlog(app: FastAPI) -> PoolBacklog | None:
    pool = getattr(app.state, "pool", None)  # set by the lifespan
    return pool.backlog() if pool is not None else None


def install_observability(app: FastAPI, settings: Settings) -> None:
    """Logging (Settings.log_format / log_level), /metrics and the middleware. Call it after
    every other middleware is added, so this one wraps them all."""
    configure_logging(settings.log_format, settings.log_level)
    app.state.metrics = app_collectors(lambda: _pool_backlog(app), settings.jobs_database_url)
    app.include_router(metrics_routes.router)
    app.add_middleware(RequestObservabilityMiddleware)
