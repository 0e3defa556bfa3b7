"""Model swaps: `ModelWatcher` follows a registry alias and swaps in the version it points to.

Every `interval_s` seconds (a background thread; `check_now()` does one check on the caller's
thread) the watcher asks which version holds the alias (`resolve`: one cheap registry call).
Only when that differs from the version serving does it `load` the model: downloaded, read and
ready to score, before `on_change` gets it (the app rebinds `DecisionService.model`; a request
in flight finishes on the model it took, so one is always serving). A failed resolve or load
keeps the model serving; the error is logged once per message, kept in `last_error` (for
`/readyz`) and passed to `on_error` (for `/metrics`), and the next poll tries again.

The first check (the app's start) is the same call with nothing serving yet.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Protocol, TypeVar

from engine.poller import Watcher

log = logging.getLogger("arbiter.model")


class Versioned(Protocol):
    @property
    def name(self) -> str: ...
    @property
    def version(self) -> str: ...


M = TypeVar("M", bound=Versioned)


class ModelWatcher(Watcher[M]):
    def __init__(
        self,
        load: Callable[[], M],
        on_change: Callable[[M], None],
        *,
        resolve: Callable[[], str],
        interval_s: float = 10.0,
        alias: str = "champion",
        on_error: Callable[[str], None] | None = None,
        on_absent: Callable[[Exception], bool] | None = None,
        identify: Callable[[M], str] | None = None,
    ) -> None:
        """`load`: the model holding the alias, ready to score (raises when it cannot be
        loaded); `resolve`: the version holding the alias now (raises when none does).
        `on_absent`: told when `resolve` raised; True when the exception says no version holds
        the alias (the registry answered), which it has dealt with: nothing serves then, and
        it is no error (a `challenger` alias removed by a promotion). `identify`: what
        `resolve` says of a model (default: its version), so the two compare."""
        self.load = load
        self.on_change = on_change
        self.resolve = resolve
        self.alias = alias
        self.on_error = on_error
        self.on_absent = on_absent
        self.identify: Callable[[M], str] = identify or (lambda model: model.version)
        self.last_error: str | None = None
        self.source = "registry"  # or "cache": adopted at start while the registry was down
        self._model: M | None = None
        super().__init__(interval_s=interval_s, name=f"model-watcher-{alias}")

    @property
    def model(self) -> M | None:
        """The model serving (None before a first successful load)."""
        return self._model

    def adopt(self, model: M, source: str) -> None:
        """Serve `model`, obtained elsewhere (a cached copy at start, when the registry does
        not answer); the next polls follow the alias as usual."""
        self.on_change(model)
        self._model = model
        self.source = source
        log.warning("model %s version %s serving from %s", model.name, model.version, source)

    @property
    def serving_version(self) -> str | None:
        return self._model.version if self._model is not None else None

    # --- internals ------------------------------------------------------------------------------

    def _check(self) -> M | None:
        # Any failure (the registry, the download, LightGBM) must leave the serving model in
        # place and the watcher alive, hence the broad catches.
        try:
            wanted = self.resolve()
        except Exception as exc:
            if self.on_absent is not None and self.on_absent(exc):
                if self._model is not None:
                    log.info("model %s: no version holds the alias now (was %s): none serves",
                             self.alias, self.serving_version)  # fmt: skip
                self._model = None
                self._recover()
                return None
            self._fail(exc)
            return None
        if self._model is not None and wanted == self.identify(self._model):
            self.source = "registry"
            self._recover()
            return None
        try:
            model = self.load()
        except Exception as exc:
            self._fail(exc)
            return None
        self._recover()
        self.source = "registry"
        if self._model is not None and self.identify(model) == self.identify(self._model):
            return None  # the alias moved back while we loaded
        previous = self.serving_version
        self.on_change(model)
        self._model = model
        log.info("model %s version %s now serving as %s (was %s)", model.name, model.version,
                 self.alias, previous)  # fmt: skip
        return model

    def _fail(self, exc: Exception) -> None:
        message = str(getattr(exc, "message", None) or exc) or type(exc).__name__
        if self.on_error is not None:
            self.on_error(message)
        if message != self.last_error:  # once per problem, not at every poll
            log.error("model %s: %s (serving: %s)", self.alias, message, self.serving_version)
        self.last_error = message

    def _recover(self) -> None:
        if self.last_error is not None:
            log.info("model %s: the registry answers again", self.alias)
        self.last_error = None
