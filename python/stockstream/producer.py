"""The producer's conveniences for a file or a frame, over the core's ``send``.

Each builds the ``TickSource`` and sends it: pacing (``rate``, ``speedup``), bounds
(``limit``, ``duration``), ``progress``, the ``SendReport`` and the errors are ``send``'s.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from stockstream import _core
from stockstream._core import TickSource

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable
    from os import PathLike

    from typing_extensions import TypedDict, Unpack

    from stockstream._core import SendReport, TickSchema

    class SendOptions(TypedDict, total=False):
        """The keywords of ``Producer.send``."""

        rate: float | None
        speedup: float | None
        limit: int | None
        duration: float | None
        progress: Callable[[SendReport], object] | bool | None


class Producer(_core.Producer):
    """Sends stock ticks to one Kafka topic, keyed by symbol."""

    def send_csv(
        self,
        path: str | PathLike[str],
        mode: str = "replay",
        *,
        seed: int = 0,
        schema: TickSchema | None = None,
        **send: Unpack[SendOptions],
    ) -> SendReport:
        """Send the rows of a CSV file: ``send(TickSource.csv(path, mode, seed=, schema=))``.

        ``mode`` is ``"replay"`` (every row once, in event-time order) or ``"sample"``
        (random rows forever, like the tutorial); ``schema`` names other layouts' columns.
        """
        return self.send(TickSource.csv(path, mode, seed=seed, schema=schema), **send)

    def send_frame(
        self,
        frame: Any,
        mode: str = "replay",
        *,
        seed: int = 0,
        schema: TickSchema | None = None,
        **send: Unpack[SendOptions],
    ) -> SendReport:
        """Send the rows of a Polars, pandas or pyarrow frame: ``send(TickSource.frame(…))``."""
        return self.send(TickSource.frame(frame, mode, seed=seed, schema=schema), **send)

    def send_csv_async(
        self,
        path: str | PathLike[str],
        mode: str = "replay",
        *,
        seed: int = 0,
        schema: TickSchema | None = None,
        **send: Unpack[SendOptions],
    ) -> Awaitable[SendReport]:
        """Awaitable ``send_csv``: the file is loaded at once, then sent on a worker thread.

        The event loop (a notebook's) stays free meanwhile.
        """
        return self.send_async(TickSource.csv(path, mode, seed=seed, schema=schema), **send)


# help(Producer) shows the constructor's options, as the core documents them.
Producer.__doc__ = _core.Producer.__doc__
