"""Live views for notebooks: a pipeline's counters redrawn in place while it runs."""

import time
from typing import Any, Callable, Optional, Union

from stockstream._core import Analytics, AnalyticsStatus, LakeSink, Producer, SendReport, SinkStatus

Pipeline = Union[LakeSink, Analytics, Producer]
Status = Union[SinkStatus, AnalyticsStatus, SendReport, None]


def current(pipeline: Pipeline) -> Status:
    """Return a pipeline's status now: a sink's or analytics job's ``status()``, a send's report."""
    if isinstance(pipeline, Producer):
        return pipeline.last_report
    return pipeline.status()


def live_status(pipeline: Pipeline) -> Optional[Callable[[], None]]:
    """Return a function redrawing ``pipeline``'s status in place, in a notebook kernel.

    A foreground ``run()`` calls it a few times a second; outside a notebook it is None.
    """
    from stockstream.progress import in_notebook

    if not in_notebook():
        return None
    from IPython.display import display

    handle: Any = display(current(pipeline), display_id=True)
    return lambda: handle.update(current(pipeline))


def watch(pipeline: Pipeline, duration: Optional[float] = None, every: float = 1.0) -> Status:
    """Show a running pipeline's status and redraw it every ``every`` seconds.

    ``pipeline`` is a background ``LakeSink`` or ``Analytics`` (after ``start()``), or a
    ``Producer`` whose awaitable send is running (its latest ``SendReport``).

    Returns when the pipeline stops, after ``duration`` seconds, or on a notebook interrupt,
    which ends only the watching: the pipeline keeps running. Outside a notebook it prints a
    status line.

    Returns:
        the last status shown.

    """
    try:
        from IPython.display import display

        handle: Any = display(current(pipeline), display_id=True)
    except ImportError:
        handle = None
    began = time.monotonic()
    status = current(pipeline)
    try:
        while pipeline.running and (duration is None or time.monotonic() - began < duration):
            time.sleep(every)
            status = current(pipeline)
            if handle is not None:
                handle.update(status)
            else:
                print(f"\r{status!r}", end="", flush=True)
    except KeyboardInterrupt:
        pass
    status = current(pipeline)
    if handle is not None:
        handle.update(status)
    else:
        print(f"\r{status!r}", flush=True)
    return status
