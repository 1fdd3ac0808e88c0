"""Progress display for long sends on a terminal."""

import sys
import time
from typing import TextIO

from stockstream._core import SendReport


class TerminalProgress:
    """A ``progress`` callback that keeps one status line updated on a terminal.

    Pass an instance as ``progress=`` to ``Producer.send`` or ``Producer.send_csv``; call
    ``close()`` afterwards to end the line.
    """

    def __init__(self, stream: TextIO = sys.stderr, every: float = 0.2) -> None:
        self.stream = stream
        self.every = every
        self._last = 0.0
        self._shown = False

    def __call__(self, report: SendReport) -> None:
        """Redraw the status line, at most every ``every`` seconds."""
        now = time.monotonic()
        if now - self._last < self.every:
            return
        self._last = now
        self.stream.write("\r" + self.line(report))
        self.stream.flush()
        self._shown = True

    @staticmethod
    def line(report: SendReport) -> str:
        """One line of counts: sent, acknowledged, failed, rate and elapsed time."""
        return (
            f"sent {report.sent:,}  acked {report.delivered:,}  failed {report.failed:,}  "
            f"{report.rate:,.0f} msg/s  {report.elapsed:.1f} s"
        )

    def close(self) -> None:
        """End the status line."""
        if self._shown:
            self.stream.write("\n")
            self.stream.flush()
