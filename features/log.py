"""Reading and writing event logs: Parquet (for batch work) and JSON Lines (for streaming).

In memory a log is a pandas DataFrame with one row per event, `ts` as int64 epoch milliseconds
and one column per field (missing where the event type has no such field). In Parquet, `ts` is a
UTC millisecond timestamp; in JSON Lines it is an ISO 8601 string and missing fields are omitted.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from features.errors import InvalidEventLog
from features.events import format_ts, parse_ts

REQUIRED = ("event_id", "type", "ts")


def read_log(path: str | Path) -> pd.DataFrame:
    """A log sorted by `ts` (stable, so log order breaks ties), `ts` as int64 milliseconds."""
    path = Path(path)
    if not path.exists():
        raise InvalidEventLog(f"event log {path} does not exist")
    try:
        if path.suffix in (".jsonl", ".json", ".ndjson"):
            frame = pd.DataFrame(list(iter_jsonl(path)))
        else:
            frame = pq.read_table(path).to_pandas()
    except (OSError, ValueError, pa.ArrowException) as exc:
        raise InvalidEventLog(f"event log {path} cannot be read: {exc}") from exc
    return normalise(frame, str(path))


def normalise(frame: pd.DataFrame, source: str = "event log") -> pd.DataFrame:
    if frame.empty:
        raise InvalidEventLog(f"{source} holds no events")
    missing = [c for c in REQUIRED if c not in frame.columns]
    if missing:
        raise InvalidEventLog(f"{source} lacks the column '{missing[0]}'")
    ts = frame["ts"]
    if isinstance(ts.dtype, pd.DatetimeTZDtype) or pd.api.types.is_datetime64_any_dtype(ts):
        frame["ts"] = ts.dt.as_unit("ms").astype("int64")
    elif ts.dtype == object or pd.api.types.is_string_dtype(ts):
        frame["ts"] = [parse_ts(v) for v in ts]
    frame["ts"] = frame["ts"].astype("int64")
    frame = frame.sort_values("ts", kind="stable").reset_index(drop=True)
    return frame


def iter_jsonl(path: str | Path) -> Iterator[dict[str, Any]]:
    with open(path, "rb") as handle:
        for lineno, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                yield orjson.loads(line)
            except orjson.JSONDecodeError as exc:
                raise InvalidEventLog(f"{path}:{lineno}: not JSON ({exc})") from exc


def _clean(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    return value


def frame_records(frame: pd.DataFrame) -> Iterator[dict[str, Any]]:
    """Events as dicts (JSON-ready except `ts`, which stays epoch ms), missing fields omitted."""
    columns = list(frame.columns)
    arrays = [frame[c].to_numpy(dtype=object) for c in columns]
    for row in zip(*arrays, strict=True):
        yield {
            c: _clean(v)
            for c, v in zip(columns, row, strict=True)
            if v is not None and not (isinstance(v, float) and v != v)
        }


def write_parquet(frame: pd.DataFrame, path: str | Path) -> None:
    table = pa.Table.from_pandas(frame, preserve_index=False)
    index = table.schema.get_field_index("ts")
    stamps = pa.array(frame["ts"].to_numpy(dtype="int64"), type=pa.timestamp("ms", tz="UTC"))
    table = table.set_column(index, "ts", stamps)
    pq.write_table(table, path, compression="zstd")


def write_jsonl(frame: pd.DataFrame, path: str | Path) -> None:
    with open(path, "wb") as handle:
        for record in frame_records(frame):
            record["ts"] = format_ts(int(record["ts"]))
            handle.write(orjson.dumps(record))
            handle.write(b"\n")
