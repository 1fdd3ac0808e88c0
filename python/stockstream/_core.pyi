"""Type stubs for the Rust extension module ``stockstream._core``."""

from collections.abc import Awaitable, Callable, Sequence
from os import PathLike
from types import TracebackType
from typing import Optional, Union

import polars

__version__: str

_Path = Union[str, PathLike[str]]
_Progress = Callable[[SendReport], object]
_Config = Union[str, int, float, bool]

class SendReport:
    """What one send did: counts, timing, and anything the caller should know."""

    @property
    def topic(self) -> str: ...
    @property
    def sent(self) -> int: ...
    @property
    def delivered(self) -> int: ...
    @property
    def failed(self) -> int: ...
    @property
    def bytes(self) -> int: ...
    @property
    def elapsed(self) -> float: ...
    @property
    def rate(self) -> float: ...
    @property
    def first_error(self) -> Optional[str]: ...
    @property
    def dropped_by_broker(self) -> int: ...
    @property
    def warnings(self) -> list[str]: ...
    @property
    def interrupted(self) -> bool: ...

class TickSource:
    """A stream of stock ticks to produce: CSV rows (sampled or replayed) or synthetic bars."""

    @staticmethod
    def csv(
        path: _Path,
        mode: str = "replay",
        *,
        seed: int = 0,
        symbol_column: Optional[str] = None,
        time_column: Optional[str] = None,
        numeric_columns: Optional[Sequence[str]] = None,
    ) -> TickSource: ...
    @staticmethod
    def synthetic(
        symbols: int = 14, *, seed: int = 42, start: str = "2021-01-04", interval: float = 86400.0
    ) -> TickSource: ...

class EmbeddedKafka:
    """An in-process Kafka cluster on 127.0.0.1 (librdkafka's mock cluster)."""

    def __init__(
        self, partitions: int = 4, *, brokers: int = 1, topics: Optional[Sequence[str]] = None
    ) -> None: ...
    @property
    def bootstrap_servers(self) -> str: ...
    @property
    def partitions(self) -> int: ...
    @property
    def running(self) -> bool: ...
    def create_topic(self, name: str, partitions: Optional[int] = None) -> None: ...
    def stop(self) -> None: ...
    def __enter__(self) -> EmbeddedKafka: ...
    def __exit__(
        self,
        exc_type: Optional[type[BaseException]],
        exc: Optional[BaseException],
        tb: Optional[TracebackType],
    ) -> bool: ...

class Producer:
    """Produces stock ticks to one Kafka topic."""

    def __init__(
        self,
        bootstrap_servers: str,
        topic: str,
        *,
        connect_timeout: float = 10.0,
        **config: _Config,
    ) -> None: ...
    def send_csv(
        self,
        path: _Path,
        mode: str = "replay",
        *,
        rate: Optional[float] = None,
        speedup: Optional[float] = None,
        limit: Optional[int] = None,
        duration: Optional[float] = None,
        seed: int = 0,
        symbol_column: Optional[str] = None,
        time_column: Optional[str] = None,
        numeric_columns: Optional[Sequence[str]] = None,
        progress: Optional[_Progress] = None,
    ) -> SendReport: ...
    def send(
        self,
        source: TickSource,
        *,
        rate: Optional[float] = None,
        speedup: Optional[float] = None,
        limit: Optional[int] = None,
        duration: Optional[float] = None,
        progress: Optional[_Progress] = None,
    ) -> SendReport: ...
    def send_async(
        self,
        source: TickSource,
        *,
        rate: Optional[float] = None,
        speedup: Optional[float] = None,
        limit: Optional[int] = None,
        duration: Optional[float] = None,
        progress: Optional[_Progress] = None,
    ) -> Awaitable[SendReport]: ...
    def send_csv_async(
        self,
        path: _Path,
        mode: str = "replay",
        *,
        rate: Optional[float] = None,
        speedup: Optional[float] = None,
        limit: Optional[int] = None,
        duration: Optional[float] = None,
        seed: int = 0,
        symbol_column: Optional[str] = None,
        time_column: Optional[str] = None,
        numeric_columns: Optional[Sequence[str]] = None,
        progress: Optional[_Progress] = None,
    ) -> Awaitable[SendReport]: ...
    def stop(self) -> None: ...
    def flush(self, timeout: float = 30.0) -> None: ...
    @property
    def topic(self) -> str: ...
    @property
    def bootstrap_servers(self) -> str: ...
    @property
    def last_report(self) -> Optional[SendReport]: ...
    def __enter__(self) -> Producer: ...
    def __exit__(
        self,
        exc_type: Optional[type[BaseException]],
        exc: Optional[BaseException],
        tb: Optional[TracebackType],
    ) -> bool: ...

def read_ticks(
    path: _Path,
    *,
    symbol_column: Optional[str] = None,
    time_column: Optional[str] = None,
    numeric_columns: Optional[Sequence[str]] = None,
) -> polars.DataFrame: ...
def synthetic_ticks(
    rows: int,
    symbols: int = 14,
    *,
    seed: int = 42,
    start: str = "2021-01-04",
    interval: float = 86400.0,
) -> polars.DataFrame: ...
def read_topic(
    bootstrap_servers: str,
    topic: str,
    *,
    limit: Optional[int] = None,
    timeout: float = 30.0,
    **config: _Config,
) -> polars.DataFrame: ...
