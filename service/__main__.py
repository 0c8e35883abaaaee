"""``python -m service``: serve the API with uvicorn on Settings.host and Settings.port."""

from __future__ import annotations

import uvicorn

from core.settings import get_settings
from service.app import create_app


def main() -> None:
    settings = get_settings()
    # log_config=None: create_app already routed uvicorn's loggers to our handler.
    uvicorn.run(create_app(settings), host=settings.host, port=settings.port, log_config=None)


if __name__ == "__main__":
    main()
