"""Hot reload of the ops policy: `PolicyWatcher` polls the policy file and swaps in good edits.

Every `interval_s` seconds (a background thread; `check_now()` does one check on the caller's
thread) the watcher looks at the file's inode, mtime and size; only when they moved does it read
the file and hash its bytes, and only new bytes are parsed and validated (including the rules'
and triggers' features against the feature spec). A valid policy with a new version is handed
to `on_change` (the app rebinds `DecisionService.policy`: the new one is built fully before the
old one is dropped, so one is always serving). An invalid file is refused: the last good policy
keeps serving, the error is logged once per content and kept in `last_error` (for `/readyz`)
until a later edit validates.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Callable, Collection
from pathlib import Path

from engine.policy import InvalidPolicy, Policy, decode_policy, parse_policy_text
from engine.poller import Watcher

log = logging.getLogger("arbiter.policy")

_Stamp = tuple[int, int, int]  # inode, mtime (ns), size


class PolicyWatcher(Watcher[Policy]):
    def __init__(
        self,
        path: str | Path,
        on_change: Callable[[Policy], None],
        *,
        features: Collection[str] | None = None,
        text_features: Collection[str] = (),
        interval_s: float = 2.0,
    ) -> None:
        """`features`: the feature spec's names the rules and triggers may use (None: any);
        `text_features`: those of them that hold text, which no condition may name."""
        self.path = Path(path)
        self.on_change = on_change
        self.features = frozenset(features) if features is not None else None
        self.text_features = frozenset(text_features)
        self.last_error: str | None = None
        self._policy: Policy | None = None
        self._stamp: _Stamp | None = None
        self._digest: str | None = None
        super().__init__(interval_s=interval_s, name="policy-watcher")

    @property
    def policy(self) -> Policy:
        """The last good policy (the one serving)."""
        if self._policy is None:
            raise RuntimeError("the policy watcher has not loaded a policy: call load() first")
        return self._policy

    def load(self) -> Policy:
        """The first load: raises `InvalidPolicy` (there is no last good policy to keep)."""
        with self._lock:
            stamp = self._stat()
            data = self._read()
            policy = self._parse(data)
            self._policy, self._stamp, self._digest = policy, stamp, _digest(data)
            self.last_error = None
        log.info("policy %s version %s loaded from %s", policy.model.name, policy.version,
                 self.path)  # fmt: skip
        return policy

    # --- internals ------------------------------------------------------------------------------

    def _check(self) -> Policy | None:
        try:
            stamp = self._stat()
            if stamp == self._stamp:
                return None
            data = self._read()
        except InvalidPolicy as exc:  # gone or unreadable: whatever comes back is parsed anew
            self._stamp = self._digest = None
            self._refuse(exc.message)
            return None
        self._stamp = stamp
        digest = _digest(data)
        if digest == self._digest:  # touched, or rewritten with the same bytes
            return None
        self._digest = digest
        try:
            policy = self._parse(data)
        except InvalidPolicy as exc:
            self._refuse(exc.message)
            return None
        previous = self._policy
        if self.last_error is not None:
            log.info("policy %s is valid again", self.path)
        self.last_error = None
        if previous is not None and previous.version == policy.version:
            return None  # the same rules, written differently (comments, order of keys)
        self.on_change(policy)
        self._policy = policy
        log.info(
            "policy %s version %s now serving (was %s)", policy.model.name, policy.version,
            previous.version if previous else None,
        )  # fmt: skip
        return policy

    def _refuse(self, message: str) -> None:
        if message != self.last_error:  # once per problem, not at every poll
            serving = self._policy.version if self._policy else None
            log.error("policy refused, version %s keeps serving: %s", serving, message)
        self.last_error = message

    def _stat(self) -> _Stamp:
        try:
            st = os.stat(self.path)
        except OSError as exc:
            raise InvalidPolicy(f"policy {self.path} cannot be read: {exc.strerror}") from exc
        return (st.st_ino, st.st_mtime_ns, st.st_size)

    def _read(self) -> bytes:
        try:
            return self.path.read_bytes()
        except OSError as exc:
            raise InvalidPolicy(f"policy {self.path} cannot be read: {exc.strerror}") from exc

    def _parse(self, data: bytes) -> Policy:
        text = decode_policy(data, self.path)
        return parse_policy_text(text, str(self.path), self.features, self.text_features)


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
