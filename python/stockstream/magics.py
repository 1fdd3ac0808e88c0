"""IPython magics for notebooks: ``%load_ext stockstream``.

``%%sql`` runs the cell's SQL on the lake and shows the result (``-o name`` also stores the
DataFrame in the notebook's namespace). ``{name}`` is the value of the notebook variable
``name``, bound as a SQL literal (quotes in a string are safe)::

    %%sql -o closes
    SELECT "Index", avg("Close") AS avg_close FROM stock_market
    WHERE "Index" = {symbol} GROUP BY 1

``--as-of`` reads Iceberg tables as they were: a snapshot id, an ISO date-time (UTC unless
it says otherwise), or the name of a notebook variable holding either.

``%stockstream`` manages the kernel's background pipelines and the default lake::

    %stockstream status            # every running sink, analytics job and producer
    %stockstream stop              # stop them all (sinks land and commit what they hold)
    %stockstream lake s3://bucket/raw --database stock_market --catalog glue
"""

import atexit
import os
import shlex
from datetime import datetime
from typing import Any, Optional

from IPython.core.magic import Magics, cell_magic, line_magic, magics_class
from IPython.core.magic_arguments import argument, magic_arguments, parse_argstring
from IPython.display import HTML, display

from stockstream import _core

LAKE_ENV = "STOCKSTREAM_LAKE"
AWS_OPTIONS = ("endpoint_url", "region", "aws_profile")
LAKE_OPTIONS = ("database", "catalog", "catalog_uri", *AWS_OPTIONS)


def describe(pipeline: Any) -> Any:
    """Return what ``%stockstream status`` shows: a sink's or analytics' status, a send's report."""
    if isinstance(pipeline, (_core.LakeSink, _core.Analytics)):
        return pipeline.status()
    report = pipeline.last_report
    return report if report is not None else f"{pipeline!r}: sending, no report yet"


@magics_class
class StockstreamMagics(Magics):
    """The ``%%sql`` cell magic and the ``%stockstream`` line magic."""

    def __init__(self, shell: Any) -> None:
        super().__init__(shell)
        self.lake = os.environ.get(LAKE_ENV, "lake")
        self.lake_options: dict = {}

    @magic_arguments()
    @argument("-o", "--output", help="also store the result in this variable")
    @argument("-l", "--lake", help="lake to query (default: %%stockstream lake, or ./lake)")
    @argument("-d", "--database", help="catalog database")
    @argument("-c", "--catalog", choices=["local", "glue", "rest"], help="catalog backend")
    @argument("-e", "--engine", choices=["polars", "athena"], default="polars")
    @argument("--as-of", help="Iceberg snapshot id, ISO date-time, or a variable holding one")
    @cell_magic
    def sql(self, line: str, cell: str) -> Any:
        """Run the cell's SQL on the lake and display the resulting Polars DataFrame."""
        args = parse_argstring(self.sql, line)
        options = dict(self.lake_options)
        aws = {key: options.pop(key) for key in AWS_OPTIONS if key in options}
        if aws:
            options["aws"] = _core.AwsOptions(
                endpoint_url=aws.get("endpoint_url"),
                region=aws.get("region"),
                profile=aws.get("aws_profile"),
            )
        if args.database:
            options["database"] = args.database
        if args.catalog:
            options["catalog"] = args.catalog
        lake = _core.Lake(args.lake or self.lake, **options)
        as_of = self.as_of(args.as_of) if args.as_of else None
        frame = lake.sql(cell, engine=args.engine, params=self.shell.user_ns, as_of=as_of)
        if args.output:
            self.shell.user_ns[args.output] = frame
        return frame

    def as_of(self, text: str) -> Any:
        """Return the snapshot id or moment ``--as-of`` names."""
        if text in self.shell.user_ns:
            return self.shell.user_ns[text]
        if text.isdigit():
            return int(text)
        return datetime.fromisoformat(text)

    @line_magic
    def stockstream(self, line: str) -> Optional[list]:
        """``status`` | ``stop`` | ``lake PATH [--database D] [--catalog local|glue]``."""
        words = shlex.split(line)
        command = words[0] if words else "status"
        pipelines = _core.running_pipelines()
        if command == "status":
            if not pipelines:
                display(HTML("<i>no background pipelines are running</i>"))
            for pipeline in pipelines:
                display(describe(pipeline))
            return None
        if command == "stop":
            stop_all()
            for pipeline in pipelines:
                display(describe(pipeline))
            return None
        if command == "lake" and len(words) >= 2:
            flags = iter(words[2:])
            options = {}
            for flag in flags:
                key = flag.lstrip("-").replace("-", "_")
                if key not in LAKE_OPTIONS:
                    raise ValueError(f"%stockstream lake: unknown option {flag!r}")
                options[key] = next(flags, None)
            self.lake, self.lake_options = words[1], options
            return None
        raise ValueError(
            f"%stockstream {line!r}: use status, stop, or lake PATH [--database D] [--catalog C]"
        )


def stop_all() -> None:
    """Stop every background pipeline: sinks land and commit what they hold."""
    for pipeline in _core.running_pipelines():
        pipeline.stop()


def load_ipython_extension(ipython: Any) -> None:
    """Register the magics (called by ``%load_ext stockstream``).

    Background pipelines are also stopped cleanly when the kernel shuts down.
    """
    ipython.register_magics(StockstreamMagics)
    atexit.unregister(stop_all)
    atexit.register(stop_all)
