"""A small progress bar on stderr (no dependency).

On a terminal it redraws one line (at most 10 times a second); elsewhere (a log file, CI)
it is off unless forced, and then writes a plain line at most once a second and at the end.
"""

from __future__ import annotations

import sys
import time
from typing import TextIO


def format_seconds(seconds: float | None) -> str:
    if seconds is None or seconds < 0 or seconds != seconds:  # None, negative, NaN
        return "?"
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def format_bytes(n: float) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if abs(n) < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} GB"


class Bar:
    """``Bar(total, label=...)``; ``update(done, note=..., eta=...)``; ``close()``."""

    def __init__(self, total: float | None, *, label: str = "", unit: str = "",
                 enabled: bool | None = None, stream: TextIO | None = None,
                 width: int = 24) -> None:
        self.stream = stream or sys.stderr
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.enabled = self.tty if enabled is None else enabled
        self.total, self.label, self.unit, self.width = total, label, unit, width
        self.done: float = 0
        self.note = ""
        self.eta: float | None = None
        self._start = time.monotonic()
        self._last_draw = 0.0
        self._last_text = ""
        self._closed = False

    def update(self, done: float | None = None, *, advance: float = 0,
               total: float | None = None, note: str | None = None,
               eta: float | None = None) -> None:
        if total is not None:
            self.total = total
        self.done = (self.done if done is None else done) + advance
        if note is not None:
            self.note = note
        self.eta = eta
        self._draw()

    def _amount(self, value: float) -> str:
        if self.unit == "B":
            return format_bytes(value)
        return f"{value:g}"

    def _eta(self) -> float | None:
        if self.eta is not None:
            return self.eta
        elapsed = time.monotonic() - self._start
        if not self.total or not self.done or elapsed < 0.5:
            return None
        return elapsed * (self.total - self.done) / self.done

    def text(self) -> str:
        parts = [self.label] if self.label else []
        if self.total:
            fraction = max(0.0, min(1.0, self.done / self.total))
            filled = int(fraction * self.width)
            parts.append("[" + "#" * filled + "." * (self.width - filled) + "]")
            parts.append(f"{self._amount(self.done)}/{self._amount(self.total)}"
                         f" {fraction * 100:3.0f}%")
        else:
            parts.append(self._amount(self.done))
        if self.note:
            parts.append(self.note)
        finished = bool(self.total) and self.done >= (self.total or 0)
        if finished:
            parts.append(f"in {format_seconds(time.monotonic() - self._start)}")
        else:
            parts.append(f"ETA {format_seconds(self._eta())}")
        return " ".join(parts)

    def _draw(self, force: bool = False) -> None:
        if not self.enabled or self._closed:
            return
        now = time.monotonic()
        interval = 0.1 if self.tty else 1.0
        if not force and now - self._last_draw < interval:
            return
        text = self.text()
        if text == self._last_text and not force:
            return
        self._last_draw, self._last_text = now, text
        if self.tty:
            self.stream.write("\r" + text + "\x1b[K")
        else:
            self.stream.write(text + "\n")
        self.stream.flush()

    def write(self, line: str) -> None:
        """A message line that does not break the bar (the bar is redrawn after it)."""
        if self.enabled and self.tty and self._last_text:
            self.stream.write("\r\x1b[K")
        self.stream.write(line + "\n")
        self.stream.flush()
        if self.enabled and self.tty and self._last_text:
            self._draw(force=True)

    def close(self) -> None:
        if self._closed:
            return
        if self.enabled:
            if self.text() != self._last_text:
                self._draw(force=True)
            if self.tty:
                self.stream.write("\n")
                self.stream.flush()
        self._closed = True

    def __enter__(self) -> Bar:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
