"""``python -m worker``: start one job worker (one per GPU; see worker/celery_app.py).

Settings come from the environment (``TOONFORGE_*``) like the API's, so both processes see
the same database, broker and store.
"""

from __future__ import annotations

import argparse
import sys

from core.logs import configure_logging
from core.settings import get_settings


def main(argv: list[str] | None = None) -> int:
    settings = get_settings()
    parser = argparse.ArgumentParser(prog="python -m worker", description=__doc__)
    parser.add_argument("--hostname", default=settings.worker_name or "toonforge@%h",
                        help="worker node name (%%h: host name; default: TOONFORGE_WORKER_NAME"
                             " or toonforge@%%h); one per GPU")
    parser.add_argument("--loglevel", default=None, help="default: TOONFORGE_LOG_LEVEL")
    args = parser.parse_args(argv)
    loglevel = (args.loglevel or settings.log_level).upper()
    configure_logging(settings.log_format, loglevel)

    # Importing the app imports the plugin families too (worker/celery_app.py).
    from worker.celery_app import app

    celery_args = [
        # Celery prints its start-up banner as plain text: keep a JSON log all JSON.
        *(["--quiet"] if settings.log_format == "json" else []),
        "worker",
        "--pool=solo",
        "--concurrency=1",
        f"--hostname={args.hostname}",
        f"--queues={settings.job_queue}",
        f"--loglevel={loglevel}",
        # Gossip, mingle and event heartbeats are cluster chatter for monitoring tools;
        # job liveness is tracked in SQL, so they would only add broker traffic.
        "--without-gossip",
        "--without-mingle",
        "--without-heartbeat",
    ]
    app.worker_main(celery_args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
