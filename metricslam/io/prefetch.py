"""Reading frames ahead of the consumer on a background thread."""
from __future__ import annotations

import queue
import threading
from collections.abc import Generator, Iterable

from metricslam.io.frame import Frame


class _Failure:
    def __init__(self, error: BaseException):
        self.error = error


_END = object()


def prefetched(frames: Iterable[Frame], depth: int = 4) -> Generator[Frame, None, None]:
    """Yield ``frames`` in order while a background thread reads up to ``depth`` ahead.

    Image decoding (and rendering, for synthetic sequences) releases the GIL, so it overlaps tracking.
    An exception raised while reading is re-raised here, at the frame where it happened.
    """
    if depth < 1:
        raise ValueError(f"prefetch depth must be >= 1, got {depth}")
    slots: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(item: object) -> bool:
        while not stop.is_set():
            try:
                slots.put(item, timeout=0.05)
                return True
            except queue.Full:
                continue
        return False

    def read() -> None:
        try:
            for frame in frames:
                if not put(frame):
                    return
            put(_END)
        except BaseException as exc:  # handed to the consumer, which raises it
            put(_Failure(exc))

    worker = threading.Thread(target=read, name="frame-prefetch", daemon=True)
    worker.start()
    try:
        while (item := slots.get()) is not _END:
            if isinstance(item, _Failure):
                raise item.error
            yield item
    finally:
        stop.set()
        worker.join()
