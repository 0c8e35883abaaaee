"""``python -m service``: serve the API with uvicorn on Settings.host and Settings.port."""

from __future__ import annotations

import uvicorn

from core.settings import get_settings
from service.app import create_app
from service.http11 import JsonErrorH11Protocol


def main() -> None:
    settings = get_settings()
    # log_config=None: create_app already routed uvicorn's loggers to our handler.
    # http: the JSON envelope also for requests h11 rejects before the app (service/http11.py).
    uvicorn.run(create_app(settings), host=settings.host, port=settings.port, log_config=None,
                http=JsonErrorH11Protocol)


if __name__ == "__main__":
    main()
