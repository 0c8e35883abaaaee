"""The job event stream (``GET /jobs/{id}/events``, text/event-stream) decoded line by line
into ``JobEvent``s, with no I/O."""

from __future__ import annotations

import json

from toonforge_client.types import JobEvent


class SSEDecoder:
    """The text/event-stream format, line by line (``id:``, ``event:``, ``data:``, comments)."""

    def __init__(self) -> None:
        self._data: list[str] = []
        self._event = ""
        self._id: str | None = None

    def feed(self, line: str) -> tuple[str, str, str | None] | None:
        """A line without its end; (event, data, id) when a blank line ends a message."""
        if not line:
            if not self._data:
                self._event = ""
                return None
            message = (self._event or "message", "\n".join(self._data), self._id)
            self._data, self._event = [], ""
            return message
        if line.startswith(":"):
            return None
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "data":
            self._data.append(value)
        elif name == "event":
            self._event = value
        elif name == "id":
            self._id = value
        return None


def job_event(event: str, data: str, event_id: str | None) -> JobEvent:
    """A message of the job stream as a JobEvent (the data is the event's JSON)."""
    body = json.loads(data)
    if not isinstance(body, dict):
        raise ValueError(f"unexpected event data: {data[:100]!r}")
    body.setdefault("kind", event)
    if event_id is not None and "id" not in body:
        body["id"] = int(event_id)
    return body  # type: ignore[return-value]


class JobEventReader:
    """Lines of the job stream in (without their line ends), ``JobEvent``s out."""

    def __init__(self) -> None:
        self._sse = SSEDecoder()

    def feed(self, line: str) -> JobEvent | None:
        """The event a blank line completes, else None; ValueError on data that is not a
        job event."""
        message = self._sse.feed(line)
        return None if message is None else job_event(*message)
