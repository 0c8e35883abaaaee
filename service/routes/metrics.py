"""Prometheus metrics of this process."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from prometheus_client import CONTENT_TYPE_PLAIN_0_0_4
from starlette.concurrency import run_in_threadpool

from service.errors import error_responses
from service.metrics import exposition

router = APIRouter(tags=["observability"])


@router.get("/metrics", operation_id="metrics", response_class=Response,
            responses={200: {"description": "The Prometheus text format (version 0.0.4).",
                             "content": {"text/plain": {"schema": {"type": "string"}}}},
                       **error_responses(500)})
async def metrics(request: Request) -> Response:
    """Request, batching, reload and job metrics in the Prometheus text format."""
    # Off the event loop: the jobs collector may wait (briefly) for the database.
    body = await run_in_threadpool(exposition, request.app.state.metrics)
    return Response(body, media_type=CONTENT_TYPE_PLAIN_0_0_4)
