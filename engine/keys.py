"""API keys: who may open which door (docs/security.md).

A key is `arb_<key_id>_<secret>`: `key_id` (public, 12 hex) finds the row, the secret (32 random
bytes, URL-safe) is never stored, only its SHA-256 (a key carries 256 bits of entropy, so a slow
password hash adds nothing), compared in constant time. Each key has a unique `name` (the actor
recorded in cases and the audit trail) and roles:

    scorer    billing: score payments (and the echo floor)
    ingest    the event pipeline: activity batches
    support   read rationales, open objections, move cases on (not decide them)
    reviewer  read rationales, move cases on and decide them
    ops       account decisions on demand, account status, /metrics when not public
    privacy   account exports
    admin     everything

`KeyRing` serves the checks from memory: a snapshot of the active keys, reloaded every
`refresh_s` seconds and, at most once a second, when an unknown key id is presented (a key just
created works at once; a revoked one stops within `refresh_s`). Creating and revoking keys are
audit events.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import re
import secrets
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import sqlalchemy as sa

from engine import audit
from engine.database import reading, writing
from engine.errors import EngineError
from engine.schema import api_keys

log = logging.getLogger("arbiter.keys")
ROLES = ("scorer", "ingest", "support", "reviewer", "ops", "privacy", "admin")
_TOKEN = re.compile(r"^arb_([0-9a-f]{12})_([A-Za-z0-9_-]{43})$")
RESERVED = frozenset({"engine"})  # the actor of the engine's own acts (suspensions, notices)
NAME = re.compile(r"^[A-Za-z0-9._@-]{1,128}$")


class InvalidKey(EngineError):
    code = "invalid_key"


@dataclass(frozen=True)
class Principal:
    """Who is calling: the key's name (the actor) and its roles."""

    name: str
    roles: frozenset[str]
    key_id: str

    def may(self, allowed: Iterable[str]) -> bool:
        return "admin" in self.roles or not self.roles.isdisjoint(allowed)


@dataclass(frozen=True)
class KeyInfo:
    key_id: str
    name: str
    roles: tuple[str, ...]
    created_at: int
    created_by: str
    revoked_at: int | None


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def create_key(engine: sa.Engine, *, name: str, roles: Iterable[str], actor: str,
               at: int) -> tuple[KeyInfo, str]:  # fmt: skip
    """A new key: its record and the key itself (shown once, stored nowhere)."""
    wanted = tuple(dict.fromkeys(roles))
    if not NAME.match(name):
        raise InvalidKey(f"key name {name!r}: letters, digits and ._@- only, at most 128")
    if name.lower().strip("._@-") in RESERVED:
        raise InvalidKey(f"key name {name!r} is reserved: the engine records its own acts so")
    unknown = [r for r in wanted if r not in ROLES]
    if not wanted or unknown:
        raise InvalidKey(f"roles {list(unknown) or '(none)'}: choose from {', '.join(ROLES)}")
    key_id, secret = secrets.token_hex(6), secrets.token_urlsafe(32)
    with writing(engine) as conn:
        taken = conn.execute(
            sa.select(api_keys.c.key_id).where(
                api_keys.c.name == name, api_keys.c.revoked_at.is_(None)
            )
        ).first()
        if taken is not None:
            raise InvalidKey(f"an active key is named {name!r} already: revoke it first")
        conn.execute(api_keys.insert().values(
            key_id=key_id, name=name, roles=list(wanted), secret_hash=_digest(secret),
            created_at=at, created_by=actor, revoked_at=None,
        ))  # fmt: skip
        audit.append(
            conn,
            actor=actor,
            action="key.create",
            subject_type="key",
            subject_id=key_id,
            at=at,
            details={"name": name, "roles": list(wanted)},
        )
    return KeyInfo(key_id, name, wanted, at, actor, None), f"arb_{key_id}_{secret}"


def revoke_key(engine: sa.Engine, name_or_id: str, *, actor: str, at: int) -> list[str]:
    """Revoke the active keys with that name or id; their ids."""
    with writing(engine) as conn:
        rows = conn.execute(
            sa.select(api_keys.c.key_id).where(
                sa.or_(api_keys.c.name == name_or_id, api_keys.c.key_id == name_or_id),
                api_keys.c.revoked_at.is_(None),
            )
        ).all()
        ids = [r.key_id for r in rows]
        if ids:
            conn.execute(api_keys.update().where(api_keys.c.key_id.in_(ids)).values(revoked_at=at))
        for key_id in ids:
            audit.append(conn, actor=actor, action="key.revoke", subject_type="key",
                         subject_id=key_id, at=at, details={})  # fmt: skip
    return ids


def list_keys(engine: sa.Engine) -> list[KeyInfo]:
    with reading(engine) as conn:
        rows = conn.execute(sa.select(api_keys).order_by(api_keys.c.created_at)).all()
    return [KeyInfo(r.key_id, r.name, tuple(r.roles), r.created_at, r.created_by, r.revoked_at)
            for r in rows]  # fmt: skip


class KeyRing:
    """The active keys in memory. `lookup` never does I/O (the request path); `reload` reads
    the store (blocking: an async caller runs it in a thread) and, if the store fails, keeps
    the last snapshot and waits `refresh_s` before trying again."""

    def __init__(self, engine: sa.Engine, *, refresh_s: float = 5.0,
                 clock: Callable[[], float] = time.monotonic) -> None:  # fmt: skip
        self.engine = engine
        self.refresh_s = refresh_s
        self.clock = clock
        self._keys: dict[str, tuple[str, Principal]] = {}
        self._tried_at = -1e18  # the last reload attempt, successful or not
        self._missed_at = -1e18
        self._lock = threading.Lock()

    def lookup(self, token: str) -> Principal | None:
        """The key's principal from the snapshot, or None (malformed, unknown, revoked)."""
        match = _TOKEN.match(token)
        if match is None:
            return None
        key_id, secret = match.groups()
        found = self._keys.get(key_id)
        if found is None or not hmac.compare_digest(found[0], _digest(secret)):
            return None
        return found[1]

    def stale(self) -> bool:
        return self.clock() - self._tried_at > self.refresh_s

    def worth_retrying(self, token: str) -> bool:
        """An unknown but well-formed key id: reload at most once a second (a key just
        created should work at once; random ids must not hammer the store)."""
        match = _TOKEN.match(token)
        if match is None or match.group(1) in self._keys:
            return False
        now = self.clock()
        if now - self._missed_at < 1.0:
            return False
        self._missed_at = now
        return True

    def reload(self) -> None:
        with self._lock:
            self._tried_at = self.clock()
            try:
                with reading(self.engine) as conn:
                    rows = conn.execute(
                        sa.select(api_keys).where(api_keys.c.revoked_at.is_(None))
                    ).all()
            except EngineError as exc:  # keep serving the keys known; try again later
                log.warning("API keys not reloaded (the last ones known serve): %s", exc.message)
                return
            self._keys = {
                r.key_id: (r.secret_hash, Principal(r.name, frozenset(r.roles), r.key_id))
                for r in rows
            }

    def authenticate(self, token: str) -> Principal | None:
        """`lookup` after any reload it needs, on the caller's thread (CLI, tests, pages)."""
        if self.stale():
            self.reload()
        found = self.lookup(token)
        if found is None and self.worth_retrying(token):
            self.reload()
            found = self.lookup(token)
        return found
