"""A background thread that calls `check()` every `interval_s` seconds until stopped.

The policy and model watchers share it: each check runs under one lock (the thread's and any
caller's `check_now()` never overlap), and an unexpected error is logged without killing the
thread, so whatever is serving keeps serving.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

log = logging.getLogger("arbiter.poller")


class Poller:
    def __init__(self, check: Callable[[], object], *, interval_s: float, name: str) -> None:
        self.interval_s = interval_s
        self.name = name
        self._check = check
        self.lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Poll in a daemon thread until `stop()`."""
        if self._thread is not None:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=max(5.0, self.interval_s))
            self._thread = None

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                with self.lock:
                    self._check()
            except Exception:  # the thread must outlive any surprise; what serves stays
                log.exception("%s: unexpected error while checking", self.name)
