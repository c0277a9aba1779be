"""Short garbage-collection pauses in the local pipeline's long-running processes.

moto holds every item, message and stream record as Python objects, and CPython's collection of
its oldest generation walks all of them while holding the GIL. At 100 orders/s moto's full
collections took 66 ms after 20 s and 206 ms after 45 s, and every call waiting on the endpoint
waited with them: they were the POST latency's p99. Frozen objects (`gc.freeze`) are out of the
collector's reach, so freezing the survivors once a second leaves a full collection only the last
second's survivors to walk. The price: a reference cycle that became garbage after it was
frozen is never freed.
"""

from __future__ import annotations

import gc
import threading

FREEZE_INTERVAL_SECONDS = 1.0


def freeze_survivors(interval: float = FREEZE_INTERVAL_SECONDS) -> threading.Thread:
    """Freeze what the collector has kept, every `interval` seconds, for the process's life."""

    def freeze_forever() -> None:
        while True:
            gc.freeze()
            stop.wait(interval)

    stop = threading.Event()  # never set: the thread is a daemon, it ends with the process
    thread = threading.Thread(target=freeze_forever, name="gc freeze", daemon=True)
    thread.start()
    return thread
