"""Type stubs for the Rust extension module ``stockstream._core``."""

import datetime
from collections.abc import Awaitable, Callable, Mapping, Sequence
from os import PathLike
from types import TracebackType
from typing import Any, Generic, Literal, TypeVar, final, overload

import polars
from typing_extensions import Self, disjoint_base

__version__: str
__all__ = [
    "Analytics",
    "AnalyticsStatus",
    "CompactReport",
    "CrawlReport",
    "EmbeddedKafka",
    "JobStatus",
    "Lake",
    "LakeSink",
    "Producer",
    "SendReport",
    "Session",
    "AsOf",
    "SinkStatus",
    "TailInfo",
    "AwsOptions",
    "Outputs",
    "Pipeline",
    "RollPolicy",
    "TickSchema",
    "TickSource",
    "crawl",
    "read_ticks",
    "read_topic",
    "running_pipelines",
    "synthetic_ticks",
    "__version__",
]

_Path = str | PathLike[str]
_Status = TypeVar("_Status", SinkStatus, AnalyticsStatus)
_Collected = TypeVar("_Collected", polars.DataFrame, dict[str, polars.DataFrame])
# A callback given each SendReport, or False for no progress display.
_Progress = Callable[[SendReport], object] | bool
# A Polars DataFrame or LazyFrame, a pandas DataFrame, a pyarrow Table, or any object with
# the Arrow C stream interface.
_Frame = Any
_Config = str | int | float | bool
# Enumerated options (matched without regard to case).
_Mode = Literal["replay", "sample"]
_Format = Literal["parquet", "ndjson"]
_Catalog = Literal["local", "glue", "rest"]
_Engine = Literal["polars", "athena"]
_OnError = Literal["skip", "raise"]
_OutputKind = Literal["window", "windows", "indicators", "alert", "alerts", "late"]

@final
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
    def first_error(self) -> str | None: ...
    @property
    def dropped_by_broker(self) -> int: ...
    @property
    def warnings(self) -> list[str]: ...
    @property
    def interrupted(self) -> bool: ...
    def _repr_html_(self) -> str: ...

@final
class TickSchema:
    """What a tick looks like: its symbol, time, price and volume fields, and its time format."""

    def __new__(
        cls,
        symbol: str = "Index",
        time: str = "Date",
        price: str = "Close",
        volume: str | None = ...,  # "Volume"
        *,
        numeric: Sequence[str] | None = None,
        time_format: str | None = None,
        time_zone: str | None = None,
    ) -> TickSchema: ...
    @property
    def symbol(self) -> str: ...
    @property
    def time(self) -> str: ...
    @property
    def price(self) -> str: ...
    @property
    def volume(self) -> str | None: ...
    @property
    def numeric(self) -> list[str] | None: ...
    @property
    def time_format(self) -> str | None: ...
    @property
    def time_zone(self) -> str | None: ...

@final
class AwsOptions:
    """How to reach AWS (S3, Glue, Athena) or an S3-compatible server."""

    def __new__(
        cls,
        *,
        endpoint_url: str | None = None,
        region: str | None = None,
        profile: str | None = None,
        part_size: int | None = None,
    ) -> AwsOptions: ...
    @property
    def endpoint_url(self) -> str | None: ...
    @property
    def region(self) -> str | None: ...
    @property
    def profile(self) -> str | None: ...
    @property
    def part_size(self) -> int | None: ...

@final
class RollPolicy:
    """When a sink lands what it buffers of one Kafka partition: at the first limit reached."""

    def __new__(
        cls,
        *,
        records: int | None = None,
        bytes: int | None = None,
        age: float | None = None,
        idle: float | None = None,
        buffer_bytes: int | None = None,
    ) -> RollPolicy: ...
    @property
    def records(self) -> int: ...
    @property
    def bytes(self) -> int: ...
    @property
    def age(self) -> float: ...
    @property
    def idle(self) -> float: ...
    @property
    def buffer_bytes(self) -> int: ...

@final
class Session:
    """A per-symbol session window: closed once ``gap`` passes without a tick of its symbol."""

    def __new__(cls, gap: str | float) -> Session: ...
    @property
    def gap(self) -> float: ...

@final
class AsOf:
    """An as-of join: each tick takes its key's latest values of a table topic as of its time."""

    def __new__(
        cls,
        topic: str,
        by: str | tuple[str, str],
        fields: str | Sequence[str],
        *,
        on: str | None = None,
        tolerance: str | float | None = None,
    ) -> AsOf: ...
    @property
    def topic(self) -> str: ...
    @property
    def by(self) -> tuple[str, str]: ...
    @property
    def fields(self) -> list[str]: ...
    @property
    def on(self) -> str | None: ...
    @property
    def tolerance(self) -> float | None: ...

@final
class Outputs:
    """Where an analytics job writes: a topic per kind of output, and its checkpoint topic."""

    def __new__(
        cls,
        *,
        windows: str | None = None,
        indicators: str | None = None,
        alerts: str | None = None,
        late: str | None = None,
        state: str | None = None,
    ) -> Outputs: ...
    @property
    def windows(self) -> str | None: ...
    @property
    def indicators(self) -> str | None: ...
    @property
    def alerts(self) -> str | None: ...
    @property
    def late(self) -> str | None: ...
    @property
    def state(self) -> str | None: ...

@final
class TickSource:
    """A stream of stock ticks to produce: CSV rows (sampled or replayed) or synthetic bars."""

    @staticmethod
    def csv(
        path: _Path,
        mode: _Mode = "replay",
        *,
        seed: int = 0,
        schema: TickSchema | None = None,
    ) -> TickSource: ...
    @staticmethod
    def frame(
        frame: _Frame,
        mode: _Mode = "replay",
        *,
        seed: int = 0,
        schema: TickSchema | None = None,
    ) -> TickSource: ...
    @staticmethod
    def parquet(
        path: _Path,
        mode: _Mode = "replay",
        *,
        seed: int = 0,
        schema: TickSchema | None = None,
    ) -> TickSource: ...
    @staticmethod
    def synthetic(
        symbols: int = 14, *, seed: int = 42, start: str = "2021-01-04", interval: float = 86400.0
    ) -> TickSource: ...

@final
class EmbeddedKafka:
    """An in-process Kafka cluster on 127.0.0.1 (librdkafka's mock cluster)."""

    def __new__(
        cls, partitions: int = 4, *, brokers: int = 1, topics: Sequence[str] | None = None
    ) -> EmbeddedKafka: ...
    @property
    def bootstrap_servers(self) -> str: ...
    @property
    def partitions(self) -> int: ...
    @property
    def running(self) -> bool: ...
    def create_topic(self, name: str, partitions: int | None = None) -> None: ...
    def stop(self) -> None: ...
    def __enter__(self) -> EmbeddedKafka: ...
    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool: ...

@disjoint_base
class Producer:
    """Produces stock ticks to one Kafka topic."""

    def __new__(
        cls,
        bootstrap_servers: str,
        topic: str,
        *,
        connect_timeout: float = 10.0,
        lanes: int | None = None,
        **config: _Config,
    ) -> Producer: ...
    @property
    def lanes(self) -> int: ...
    def send(
        self,
        source: TickSource,
        *,
        rate: float | None = None,
        speedup: float | None = None,
        limit: int | None = None,
        duration: float | None = None,
        progress: _Progress | None = None,
    ) -> SendReport: ...
    def send_async(
        self,
        source: TickSource,
        *,
        rate: float | None = None,
        speedup: float | None = None,
        limit: int | None = None,
        duration: float | None = None,
        progress: _Progress | None = None,
    ) -> Awaitable[SendReport]: ...
    def stop(self) -> None: ...
    @property
    def running(self) -> bool: ...
    def flush(self, timeout: float = 30.0) -> None: ...
    @property
    def topic(self) -> str: ...
    @property
    def bootstrap_servers(self) -> str: ...
    @property
    def last_report(self) -> SendReport | None: ...
    def __enter__(self) -> Self: ...
    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool: ...

@disjoint_base
class JobStatus:
    """What every pipeline's status says (``SinkStatus`` and ``AnalyticsStatus`` add their own)."""

    @property
    def state(self) -> str: ...
    @property
    def running(self) -> bool: ...
    @property
    def consumed(self) -> int: ...
    @property
    def rejected(self) -> int: ...
    @property
    def buffered(self) -> int: ...
    @property
    def lag(self) -> int | None: ...
    @property
    def assigned(self) -> list[int]: ...
    @property
    def errors(self) -> int: ...
    @property
    def last_error(self) -> str | None: ...
    @property
    def notes(self) -> list[str]: ...
    def _repr_html_(self) -> str: ...

@final
class SinkStatus(JobStatus):
    """A snapshot of a sink's counters, besides those of every ``JobStatus``."""

    @property
    def written(self) -> int: ...
    @property
    def skipped(self) -> int: ...
    @property
    def files(self) -> int: ...
    @property
    def bytes(self) -> int: ...
    @property
    def committed(self) -> dict[int, int]: ...
    @property
    def landed(self) -> dict[int, int]: ...
    @property
    def resumed(self) -> dict[int, int]: ...
    @property
    def last_commit(self) -> float | None: ...

@disjoint_base
class Pipeline(Generic[_Status, _Collected]):
    """What every long-running pipeline (``LakeSink``, ``Analytics``) does."""

    @overload
    def run(
        self,
        limit: int | None = None,
        duration: float | None = None,
        stop_at_end: bool = False,
        progress: bool | None = None,
        collect: Literal[False] = False,
    ) -> _Status: ...
    @overload
    def run(
        self,
        limit: int | None = None,
        duration: float | None = None,
        stop_at_end: bool = False,
        progress: bool | None = None,
        *,
        collect: Literal[True],
    ) -> _Collected: ...
    def start(
        self, limit: int | None = None, duration: float | None = None, stop_at_end: bool = False
    ) -> None: ...
    def stop(self) -> _Status: ...
    def wait(self, timeout: float | None = None) -> bool: ...
    def status(self) -> _Status: ...
    @property
    def running(self) -> bool: ...
    def __enter__(self) -> Self: ...
    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool: ...

@final
class LakeSink(Pipeline[SinkStatus, polars.DataFrame]):
    """Lands a Kafka topic in a lake (a local directory or ``s3://bucket/prefix``), exactly once."""

    def __new__(
        cls,
        bootstrap_servers: str,
        topic: str,
        group_id: str = "stockstream-sink",
        lake: str = "lake",
        *,
        format: _Format = "parquet",
        table: str | None = None,
        partition_by: str | Sequence[str] | None = None,  # "auto"
        roll: RollPolicy | None = None,
        schema: TickSchema | None = None,
        columns: dict[str, str] | None = None,
        kafka_metadata: bool = False,
        aws: AwsOptions | None = None,
        catalog: _Catalog | None = ...,  # "local"
        database: str = "stock_market",
        compact_every: float | None = None,
        compact_grace: float = 3600.0,
        table_format: Literal["hive", "iceberg"] = "hive",
        catalog_uri: str | None = None,
        connect_timeout: float = 10.0,
        **config: _Config,
    ) -> LakeSink: ...

@final
class AnalyticsStatus(JobStatus):
    """A snapshot of an analytics job's counters, besides those of every ``JobStatus``."""

    @property
    def ticks(self) -> int: ...
    @property
    def late(self) -> int: ...
    @property
    def last_rejected(self) -> str | None: ...
    @property
    def windows(self) -> int: ...
    @property
    def indicators(self) -> int: ...
    @property
    def alerts(self) -> int: ...
    @property
    def open_windows(self) -> int: ...
    @property
    def checkpoints(self) -> int: ...
    @property
    def watermarks(self) -> dict[int, str]: ...

@final
class Analytics(Pipeline[AnalyticsStatus, dict[str, polars.DataFrame]]):
    """Per-symbol, event-time analytics on a topic of stock ticks, as a consumer group member."""

    def __new__(
        cls,
        bootstrap_servers: str,
        topic: str,
        group_id: str = "stockstream-analytics",
        *,
        window: str | float | Session | None = None,
        slide: str | float | None = None,
        indicators: str | Sequence[str] | None = None,
        alerts: str | Sequence[str] | None = None,
        allowed_lateness: str | float | None = None,
        max_future: str | float | None = None,
        idle_timeout: float = 10.0,
        outputs: Outputs | None = None,
        checkpoint_interval: float = 2.0,
        exactly_once: bool = False,
        callback: Callable[[str, dict[str, Any]], object] | None = None,
        callback_kinds: _OutputKind | Sequence[_OutputKind] | None = None,
        keep: int = 10000,
        schema: TickSchema | None = None,
        session_zone: str | None = None,
        join: AsOf | None = None,
        price: str | None = None,
        connect_timeout: float = 10.0,
        **config: _Config,
    ) -> Analytics: ...
    @property
    def indicator_names(self) -> list[str]: ...
    def windows(self) -> polars.DataFrame: ...
    def indicators(self) -> polars.DataFrame: ...
    def alerts(self) -> polars.DataFrame: ...
    def late(self) -> polars.DataFrame: ...
    def chart(self, symbol: str | None = None, **options: Any) -> Any: ...

@final
class CrawlReport:
    """What a crawl changed in the catalog."""

    @property
    def tables_created(self) -> list[str]: ...
    @property
    def tables_updated(self) -> list[str]: ...
    @property
    def partitions_added(self) -> list[tuple[str, str]]: ...
    @property
    def columns_added(self) -> list[tuple[str, str, str]]: ...
    @property
    def conflicts(self) -> list[tuple[str, str, str, str, list[str]]]: ...
    @property
    def skipped(self) -> list[tuple[str, str]]: ...
    @property
    def objects_read(self) -> int: ...
    @property
    def objects_unchanged(self) -> int: ...
    @property
    def changed(self) -> bool: ...
    def _repr_html_(self) -> str: ...

@final
class CompactReport:
    """What a compaction did."""

    @property
    def partitions(self) -> list[tuple[str, str]]: ...
    @property
    def objects_merged(self) -> int: ...
    @property
    def objects_written(self) -> int: ...
    @property
    def objects_carried(self) -> int: ...
    @property
    def bytes_read(self) -> int: ...
    @property
    def bytes_written(self) -> int: ...
    @property
    def folders_deleted(self) -> int: ...
    @property
    def objects_deleted(self) -> int: ...
    @property
    def snapshots_expired(self) -> int: ...
    @property
    def raced(self) -> int: ...
    @property
    def elapsed(self) -> float: ...
    def _repr_html_(self) -> str: ...

@final
class TailInfo:
    """What the last query read from a table's Kafka tail (records not landed yet)."""

    @property
    def table(self) -> str: ...
    @property
    def live(self) -> bool: ...
    @property
    def reason(self) -> str | None: ...
    @property
    def records(self) -> int: ...
    @property
    def bytes(self) -> int: ...
    @property
    def truncated(self) -> bool: ...
    @property
    def offsets(self) -> dict[int, tuple[int, int]]: ...

@final
class Lake:
    """A lake and its catalog, for SQL."""

    def __new__(
        cls,
        lake: str = "lake",
        *,
        database: str = "stock_market",
        catalog: _Catalog = "local",
        catalog_uri: str | None = None,
        aws: AwsOptions | None = None,
    ) -> Lake: ...
    def sql(
        self,
        query: str,
        *,
        engine: _Engine = "polars",
        live: bool | None = None,
        tail_records: int = 1_000_000,
        tail_bytes: int = 268_435_456,
        tail_timeout: float = 5.0,
        workgroup: str | None = None,
        output: str | None = None,
        timeout: float = 300.0,
        params: Mapping[str, Any] | None = None,
        as_of: int | datetime.datetime | None = None,
    ) -> polars.DataFrame: ...
    @property
    def last_query(self) -> list[TailInfo]: ...
    def compact(
        self,
        table: str | None = None,
        *,
        target_bytes: int = 134_217_728,
        min_objects: int = 2,
        grace: float = 3600.0,
        progress: bool | None = None,
    ) -> CompactReport: ...
    def tables(self) -> polars.DataFrame: ...
    def files(self, table: str | None = None) -> polars.DataFrame: ...
    def crawl(
        self, table: str | None = None, *, on_error: _OnError = "skip", progress: bool | None = None
    ) -> CrawlReport: ...

def crawl(
    lake: str = "lake",
    *,
    database: str = "stock_market",
    table: str | None = None,
    catalog: _Catalog = "local",
    on_error: _OnError = "skip",
    aws: AwsOptions | None = None,
    progress: bool | None = None,
) -> CrawlReport: ...
def running_pipelines() -> list[LakeSink | Producer | Analytics]: ...
def read_ticks(
    path: _Path,
    *,
    schema: TickSchema | None = None,
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
    limit: int | None = None,
    last: int | None = None,
    after: Mapping[int, int] | None = None,
    timeout: float = 30.0,
    **config: _Config,
) -> polars.DataFrame: ...
