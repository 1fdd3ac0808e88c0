"""Live views for notebooks: a sink's counters redrawn in place while it runs."""

import time
from typing import Optional

from stockstream._core import LakeSink, SinkStatus


def watch(sink: LakeSink, duration: Optional[float] = None, every: float = 1.0) -> SinkStatus:
    """Show a background sink's status and redraw it every ``every`` seconds.

    Returns when the sink stops, after ``duration`` seconds, or on a notebook interrupt, which
    ends only the watching: the sink keeps running. Outside a notebook it prints a status line.

    Returns:
        SinkStatus: the last status shown.

    """
    try:
        from IPython.display import display

        handle = display(sink.status(), display_id=True)
    except ImportError:
        handle = None
    began = time.monotonic()
    status = sink.status()
    try:
        while sink.running and (duration is None or time.monotonic() - began < duration):
            time.sleep(every)
            status = sink.status()
            if handle is not None:
                handle.update(status)
            else:
                print(f"\r{status!r}", end="", flush=True)
    except KeyboardInterrupt:
        pass
    status = sink.status()
    if handle is not None:
        handle.update(status)
    else:
        print(f"\r{status!r}", flush=True)
    return status
