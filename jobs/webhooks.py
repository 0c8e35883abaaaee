"""Job webhooks: POST the JobView JSON to the job's ``webhook_url`` on every terminal state.

Delivery runs in a background thread with short timeouts and a few tries with backoff; it
never blocks or fails the job, nor the API request that cancelled a queued job. Each
delivery carries one ``X-Toonforge-Delivery`` id for all its tries, so a receiver can drop
duplicates. Torch-free (stdlib HTTP only): the worker and the API both send them.
"""

from __future__ import annotations

import logging
import threading
import time
import urllib.error
import urllib.request
import uuid
from typing import TYPE_CHECKING

from jobs.records import JobRecord
from jobs.states import JobStatus
from jobs.views import job_view

if TYPE_CHECKING:
    from core.settings import Settings

log = logging.getLogger(__name__)

BACKOFF_S = 1.0  # first wait; doubles after each failed try


def deliver(url: str, body: bytes, headers: dict[str, str], *, timeout_s: float,
            tries: int) -> bool:
    """POST until a 2xx answer or ``tries`` attempts; 4xx (except 408/429) ends it early."""
    wait = BACKOFF_S
    for attempt in range(1, tries + 1):
        request = urllib.request.Request(url, data=body, headers=headers, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=timeout_s) as response:  # noqa: S310
                if 200 <= response.status < 300:
                    return True
        except urllib.error.HTTPError as exc:
            if 400 <= exc.code < 500 and exc.code not in (408, 429):
                log.warning("webhook %s refused (%s); not retrying", url, exc.code)
                return False
            log.warning("webhook %s try %d/%d: HTTP %s", url, attempt, tries, exc.code)
        except (OSError, ValueError) as exc:  # URLError, timeouts, refused connections
            log.warning("webhook %s try %d/%d: %s", url, attempt, tries, exc)
        if attempt < tries:
            time.sleep(wait)
            wait *= 2
    return False


def notify_terminal(job: JobRecord, settings: Settings) -> threading.Thread | None:
    """Send the job's final view to its webhook in the background; returns the thread."""
    if not job.webhook_url or not JobStatus(job.status).is_terminal:
        return None
    body = job_view(job).model_dump_json().encode()
    headers = {
        "Content-Type": "application/json",
        "User-Agent": "toonforge-webhook/1",
        "X-Toonforge-Event": f"job.{job.status}",
        "X-Toonforge-Delivery": uuid.uuid4().hex,
    }
    thread = threading.Thread(
        target=deliver, args=(job.webhook_url, body, headers),
        kwargs={"timeout_s": settings.webhook_timeout_s, "tries": settings.webhook_tries},
        name=f"webhook-{job.id[:8]}", daemon=True,
    )
    thread.start()
    return thread
