"""Short garbage-collection pauses in the local pipeline's long-running processes.

moto holds every item, message and stream record as Python objects, and CPython's collection of
its oldest generation walks all of them while holding the GIL. At 100 orders/s moto's full
collections took 66 ms after 20 s and 206 ms after 45 s, and every call waiting on the endpoint
waited with them: they were the POST latency's p99. Frozen objects (`gc.freeze`) are out of the
collector's reach, so freezing the survivors once a second leaves a full collection only the last
second's survivors to walk. Young garbage is collected just before (a collection of the two
younger generations), so what is frozen is what survived. The price: a reference cycle that
becomes garbage once frozen is never freed.
"""

from __future__ import annotations

import gc
import os
import threading

FREEZE_INTERVAL_SECONDS = 1.0


_freezing: dict[int, threading.Thread] = {}  # by process id: a forked child starts its own
_freezing_lock = threading.Lock()


def freeze_survivors(interval: float = FREEZE_INTERVAL_SECONDS) -> threading.Thread:
    """Freeze what survives the young generations' collection, every `interval` seconds, for
    the process's life. Once a process: a second call returns the running thread."""

    def freeze_forever() -> None:
        while True:
            gc.collect(1)
            gc.freeze()
            never.wait(interval)

    with _freezing_lock:
        running = _freezing.get(os.getpid())
        if running is not None:
            return running
        never = threading.Event()  # the thread is a daemon: it ends with the process
        thread = _freezing[os.getpid()] = threading.Thread(
            target=freeze_forever, name="gc freeze", daemon=True
        )
        thread.start()
        return thread
