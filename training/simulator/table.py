"""The event table under construction: typed columnar chunks, then one sorted event log.

Generators `add` whole arrays of events of one type (vectorised); nothing is a Python object per
event until `build`, which concatenates the chunks column by column, sorts by `ts` (stable, so
generation order breaks ties), and then assigns the identifiers that depend on that order:
`event_id` (`ev_` + zero-padded rank), `payment_id`, and the `target_event_id` of labels.

Encoded columns stay integers until `build`: `ip` (IPv4 as int), `dest_number` (E.164 digits),
`card_fp` (a 63-bit fingerprint shown as 16 hex digits). Columns starting with `_` are the
simulator's private bookkeeping (`_stolen`: paid with a card that is not the payer's;
`_target`: key of the labelled event) and never reach the log.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from features.events import ALL_FIELDS, ENVELOPE, EVENT_TYPES
from training.simulator import addresses
from training.simulator.config import BENIGN

TYPES: tuple[str, ...] = tuple(EVENT_TYPES)
TYPE_NAMES = np.array(TYPES, dtype=object)
PRIVATE: dict[str, int | bool] = {"_stolen": False, "_target": -1}
FIELD_COLUMNS: tuple[str, ...] = tuple(c for c in ALL_FIELDS if c not in ENVELOPE)
_ENCODED = ("ip", "dest_number", "card_fp")
_FILLED_BUILD = ("payment_id", "target_event_id")


@dataclass
class _Chunk:
    kind: int
    account: np.ndarray
    ts: np.ndarray
    scenario: np.ndarray
    fields: dict[str, np.ndarray] = field(default_factory=dict)


@dataclass(frozen=True)
class BuiltLog:
    """The event log plus, row by row, what only the simulator knows."""

    events: pd.DataFrame
    scenario: np.ndarray  # int8 scenario code per row (BENIGN = -1)
    account: np.ndarray  # account index per row
    target_row: np.ndarray  # row of the event a label targets (-1: none or not a label)


class EventTable:
    def __init__(
        self, start_ms: int, end_ms: int, signup_ms: np.ndarray, close_ms: np.ndarray
    ) -> None:
        self.start_ms = start_ms
        self.end_ms = end_ms
        self._signup = signup_ms
        self._close = close_ms
        self._chunks: list[_Chunk] = []
        self._size = 0

    def __len__(self) -> int:
        return self._size

    def add(
        self,
        kind: str,
        account: np.ndarray,
        ts: np.ndarray,
        scenario: np.ndarray | int = BENIGN,
        **fields: np.ndarray | str | float | bool | int,
    ) -> None:
        """Events of one type; those outside the window or the account's life are dropped.

        An account's life runs from its `account_created` (the only event allowed before the
        window) to its `account_closed`; labels may arrive after closure.
        """
        allowed = EVENT_TYPES[kind]
        unknown = set(fields) - set(allowed) - set(PRIVATE)
        if unknown:
            raise ValueError(f"{kind} has no field {sorted(unknown)[0]!r}")
        account = np.asarray(account, dtype=np.int64)
        ts = np.asarray(ts, dtype=np.int64)
        n = len(ts)
        columns = {k: np.broadcast_to(np.asarray(v), (n,)) for k, v in fields.items()}
        scenarios = np.broadcast_to(np.asarray(scenario, dtype=np.int8), (n,))
        if kind == "account_created":
            keep = ts < self.end_ms
        else:
            keep = (ts >= self.start_ms) & (ts < self.end_ms) & (ts > self._signup[account])
            if kind == "account_closed":
                keep &= ts <= self._close[account]
            elif kind != "label":
                keep &= ts < self._close[account]
        if not keep.all():
            account, ts, scenarios = account[keep], ts[keep], scenarios[keep]
            columns = {k: v[keep] for k, v in columns.items()}
        if not len(ts):
            return
        self._chunks.append(_Chunk(TYPES.index(kind), account, ts, scenarios, columns))
        self._size += len(ts)

    def rows(self, kind: str) -> dict[str, np.ndarray]:
        """All events of a type so far: `key` (position for `_target`), envelope and fields."""
        code = TYPES.index(kind)
        names = [*EVENT_TYPES[kind], *PRIVATE]
        parts: dict[str, list[np.ndarray]] = {n: [] for n in ("key", "account", "ts", "scenario")}
        for name in names:
            parts[name] = []
        offset = 0
        for chunk in self._chunks:
            n = len(chunk.ts)
            if chunk.kind == code:
                parts["key"].append(np.arange(offset, offset + n, dtype=np.int64))
                parts["account"].append(chunk.account)
                parts["ts"].append(chunk.ts)
                parts["scenario"].append(chunk.scenario)
                for name in names:
                    default = PRIVATE.get(name)
                    parts[name].append(
                        chunk.fields[name]
                        if name in chunk.fields
                        else np.full(n, default if default is not None else None)
                    )
            offset += n
        return {k: np.concatenate(v) if v else np.empty(0) for k, v in parts.items()}

    def touched(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Account, time and scenario of every fraud event (labels excluded) so far."""
        label = TYPES.index("label")
        chunks = [c for c in self._chunks if c.kind != label]
        scenario = np.concatenate([c.scenario for c in chunks])
        fraud = scenario != BENIGN
        account = np.concatenate([c.account for c in chunks])[fraud]
        ts = np.concatenate([c.ts for c in chunks])[fraud]
        return account, ts, scenario[fraud]

    def build(self, account_ids: np.ndarray) -> BuiltLog:
        """The log sorted by `ts`, with identifiers, ready for `features.log.write_parquet`."""
        ts = np.concatenate([c.ts for c in self._chunks])
        order = np.argsort(ts, kind="stable")
        n = len(ts)
        rank = np.empty(n, dtype=np.int64)
        rank[order] = np.arange(n)
        kind = np.concatenate([np.full(len(c.ts), c.kind, dtype=np.int8) for c in self._chunks])
        kind = kind[order]
        account = np.concatenate([c.account for c in self._chunks])[order]
        scenario = np.concatenate([c.scenario for c in self._chunks])[order]
        width = max(9, len(str(n)))
        columns: dict[str, object] = {
            "event_id": _numbered("ev_", np.arange(n), width),
            "type": _text(TYPE_NAMES[kind]),
            "ts": ts[order],
            "account_id": _text(account_ids[account]),
        }
        for name in FIELD_COLUMNS:
            if name in _FILLED_BUILD:
                continue
            values = self._column(name, n)[order]
            if name == "ip":
                columns[name] = _text(addresses.dotted(values))
            elif name == "dest_number":
                columns[name] = _prefixed("+", values)
            elif name == "card_fp":
                columns[name] = _text(_hex_fingerprints(values))
            elif ALL_FIELDS[name].kind == "str":
                columns[name] = _text(values)
            else:
                columns[name] = values
        is_payment = kind == TYPES.index("payment")
        columns["payment_id"] = _numbered("pay_", np.cumsum(is_payment) - 1, width, is_payment)
        target = self._column("_target", n)[order]
        target_row = np.where(target >= 0, rank[np.maximum(target, 0)], -1)
        columns["target_event_id"] = _numbered("ev_", target_row, width, target_row >= 0)
        frame = pd.DataFrame({name: columns[name] for name in ALL_FIELDS})
        return BuiltLog(frame, scenario, account, target_row)

    def _column(self, name: str, n: int) -> np.ndarray:
        """One column over all chunks in generation order, missing where a chunk lacks it."""
        if name in _ENCODED or name in PRIVATE:
            default: object = PRIVATE.get(name, -1)
            out = np.full(n, default, dtype=np.int64)
        elif ALL_FIELDS[name].kind == "float":
            out = np.full(n, np.nan)
        else:
            out = np.full(n, None, dtype=object)
        offset = 0
        for chunk in self._chunks:
            end = offset + len(chunk.ts)
            if name in chunk.fields:
                out[offset:end] = chunk.fields[name]
            offset = end
        return out


_STR = pd.StringDtype("pyarrow", na_value=np.nan)
_LARGE = pa.large_string()


def _text(values: np.ndarray | pa.Array) -> pd.api.extensions.ExtensionArray:
    """A pandas `str` column (Arrow-backed, NaN for missing) without a Python loop."""
    if isinstance(values, np.ndarray):
        values = pa.array(values, type=_LARGE, from_pandas=True)
    return pd.array(values, dtype=_STR)


def _prefixed(
    prefix: str, numbers: np.ndarray, width: int = 0, present: np.ndarray | None = None
) -> pd.api.extensions.ExtensionArray:
    """`prefix` + the decimal number (zero-padded to `width`); missing where not `present`."""
    mask = numbers < 0 if present is None else ~present
    digits = pc.cast(pa.array(numbers, mask=mask), _LARGE)
    if width:
        digits = pc.utf8_lpad(digits, width, "0")
    return _text(
        pc.binary_join_element_wise(pa.scalar(prefix, _LARGE), digits, pa.scalar("", _LARGE))
    )


def _numbered(
    prefix: str, numbers: np.ndarray, width: int, present: np.ndarray | None = None
) -> pd.api.extensions.ExtensionArray:
    return _prefixed(
        prefix, numbers, width, np.ones(len(numbers), bool) if present is None else present
    )


def _hex_fingerprints(fingerprints: np.ndarray) -> np.ndarray:
    out = np.full(len(fingerprints), None, dtype=object)
    present = fingerprints >= 0
    uniques, inverse = np.unique(fingerprints[present], return_inverse=True)
    out[present] = np.array([f"{int(v):016x}" for v in uniques], dtype=object)[inverse]
    return out
