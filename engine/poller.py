"""The base of the policy and model watchers: `check()` now, or every `interval_s` seconds in
a background thread until stopped.

Each check runs under one lock (the thread's and a caller's `check_now()` never overlap), and an
unexpected error is logged without killing the thread, so whatever is serving keeps serving.
A subclass says what one check does in `_check`, returning what it swapped in (or None).
"""

from __future__ import annotations

import logging
import threading
from typing import Generic, TypeVar

log = logging.getLogger("arbiter.poller")

T = TypeVar("T")


class Watcher(Generic[T]):
    def __init__(self, *, interval_s: float, name: str) -> None:
        self.interval_s = interval_s
        self.name = name
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _check(self) -> T | None:
        raise NotImplementedError

    def check_now(self) -> T | None:
        """One check on the caller's thread; what was swapped in, else None."""
        with self._lock:
            return self._check()

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
                self.check_now()
            except Exception:  # the thread must outlive any surprise; what serves stays
                log.exception("%s: unexpected error while checking", self.name)
