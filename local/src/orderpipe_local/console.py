"""The console of `orderpipe local`: permanent lines above one live status line.

On a terminal the status line is redrawn in place; anywhere else (a pipe, a CI log) it is
printed as a plain line whenever it changes, so the output stays readable as a log.
"""

from __future__ import annotations

import logging
import threading
from typing import TextIO

_CLEAR_LINE = "\r\x1b[2K"


class Console:
    def __init__(self, stream: TextIO, *, live: bool | None = None) -> None:
        self.stream = stream
        self.live = stream.isatty() if live is None else live
        self._status = ""
        self._lock = threading.Lock()

    def line(self, text: str) -> None:
        """Print a line that stays (a start-up message, an email summary, a warning)."""
        with self._lock:
            if self.live and self._status:
                self.stream.write(f"{_CLEAR_LINE}{text}\n{self._status}")
            else:
                self.stream.write(f"{text}\n")
            self.stream.flush()

    def status(self, text: str) -> None:
        """Show the current status: redrawn in place on a terminal, else printed when it changed."""
        with self._lock:
            if text == self._status:
                return
            self._status = text
            self.stream.write(f"{_CLEAR_LINE}{text}" if self.live else f"{text}\n")
            self.stream.flush()

    def end_status(self) -> None:
        """Leave the status line as it is and move below it."""
        with self._lock:
            if self.live and self._status:
                self.stream.write("\n")
                self.stream.flush()
            self._status = ""


class ConsoleLogHandler(logging.Handler):
    """Log records as console lines, so they do not tear the status line."""

    def __init__(self, console: Console, level: int = logging.NOTSET) -> None:
        super().__init__(level)
        self.console = console

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.console.line(self.format(record))
        except Exception:
            self.handleError(record)
