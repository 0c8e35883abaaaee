"""What both clients hold and decide alike: the server URL, timeouts, headers, how a
transport failure reads, and how an event stream's answer is checked."""

from __future__ import annotations

import httpx

from toonforge_client import _calls
from toonforge_client.errors import ToonforgeConnectionError, transport_error

STREAM_READ_TIMEOUT_S = 60.0  # above the server's keep-alive interval (15 s by default)


class ClientBase:
    def __init__(self, url: str | None, timeout: float | httpx.Timeout | None,
                 headers: dict[str, str] | None, api_key: str | None = None) -> None:
        self.base_url = _calls.resolve_url(url)
        self.timeout = timeout if timeout is not None else _calls.DEFAULT_TIMEOUT_S
        from toonforge_client import __version__

        self.headers = {"user-agent": f"toonforge-client/{__version__}"}
        # ``api_key``, else $TOONFORGE_API_KEY: sent as a bearer token on every request
        # (an explicit Authorization in ``headers`` wins).
        key = _calls.resolve_api_key(api_key)
        if key:
            self.headers["authorization"] = f"Bearer {key}"
        self.headers.update(headers or {})

    def _connection_error(self, exc: httpx.TransportError) -> ToonforgeConnectionError:
        return transport_error(exc, self.base_url)

    @staticmethod
    def _stream_timeout(timeout: httpx.Timeout, read: float | None) -> httpx.Timeout:
        """The client's timeouts, with ``read`` for the silence between two stream lines."""
        return httpx.Timeout(timeout.connect, read=read, write=timeout.write, pool=timeout.pool)
