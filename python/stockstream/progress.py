"""Progress display for long sends: a bar in notebooks (by default), a line on terminals."""

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


class ProgressBar:
    """A ``progress`` callback drawing a progress bar: a widget in notebooks, text on terminals.

    Pass an instance as ``progress=`` to ``Producer.send`` or ``Producer.send_csv`` (and their
    awaitable forms); it shows messages acknowledged, failures and the send rate, and is
    redrawn a few times a second, never once per message. Use it as a context manager, or
    call ``close()`` when the send is over.
    """

    def __init__(self, total: "int | None" = None, desc: str = "acked") -> None:
        from tqdm.auto import tqdm

        self.bar = tqdm(total=total, desc=desc, unit="msg", unit_scale=True, mininterval=0.2)

    def __call__(self, report: SendReport) -> None:
        """Move the bar to the report's acknowledged count."""
        self.bar.update(report.delivered - self.bar.n)
        self.bar.set_postfix(failed=report.failed, rate=f"{report.rate:,.0f}/s", refresh=False)

    def close(self) -> None:
        """Finish the bar."""
        self.bar.close()

    def __enter__(self) -> "ProgressBar":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def in_notebook() -> bool:
    """Whether this runs in a Jupyter kernel, where a progress widget can be drawn."""
    try:
        from IPython import get_ipython
    except ImportError:
        return False
    shell = get_ipython()
    return shell is not None and type(shell).__name__ == "ZMQInteractiveShell"


def default_progress(total: "int | None" = None) -> "ProgressBar | None":
    """Return the progress a send shows when given none: a bar in a notebook kernel, or None.

    ``progress=False`` on the send silences it.
    """
    if not in_notebook():
        return None
    try:
        return ProgressBar(total)
    except ImportError:
        # tqdm is an optional dependency ("stockstream[notebook]").
        return None


class CountBar:
    """A bar counting the work a long call has done: objects read, partitions compacted."""

    def __init__(self, desc: str) -> None:
        from tqdm.auto import tqdm

        self.bar = tqdm(desc=desc, mininterval=0.2)

    def update_to(self, n: int) -> None:
        """Move the bar to ``n``."""
        self.bar.update(n - self.bar.n)

    def close(self) -> None:
        """Finish the bar."""
        self.bar.close()


def default_counter(desc: str) -> "CountBar | None":
    """Return the bar a crawl or compaction shows: in a notebook kernel, else None."""
    if not in_notebook():
        return None
    try:
        return CountBar(desc)
    except ImportError:
        return None
