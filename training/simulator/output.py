"""Writing a simulated world to a directory.

events.parquet   the event log (`features.log.write_parquet`), sorted by ts
events.jsonl     the same log as JSON Lines (optional)
accounts.parquet one row per account: sign-up attributes, scenario, compromised_at (ms)
truth.parquet    event_id, scenario for every event a fraud scenario drew (ground truth)
summary.json     counts per type and scenario, realised base rates
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import orjson
import pyarrow as pa
import pyarrow.parquet as pq

from features.log import write_jsonl, write_parquet

if TYPE_CHECKING:
    from training.simulator import SimulatedWorld

FILES = ("events.parquet", "events.jsonl", "accounts.parquet", "truth.parquet", "summary.json")


def write_world(world: SimulatedWorld, out: str | Path, *, jsonl: bool = True) -> list[Path]:
    """Write the world's files into `out` (created if needed); returns the paths written."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    written = [out / "events.parquet"]
    write_parquet(world.events, written[0])
    if jsonl:
        written.append(out / "events.jsonl")
        write_jsonl(world.events, written[-1])
    else:
        (out / "events.jsonl").unlink(missing_ok=True)  # never leave a stale copy beside
    for name, frame in (("accounts.parquet", world.accounts), ("truth.parquet", world.truth)):
        path = out / name
        table = pa.Table.from_pandas(frame, preserve_index=False)
        pq.write_table(table, path, compression="zstd")
        written.append(path)
    summary = out / "summary.json"
    summary.write_bytes(orjson.dumps(world.summary, option=orjson.OPT_INDENT_2) + b"\n")
    written.append(summary)
    return written
