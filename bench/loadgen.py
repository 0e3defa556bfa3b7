"""The benchmarks' load generator, run in a process of its own so that its CPU is not the
server's: raw keep-alive HTTP/1.1 connections to one server on loopback, phase after phase.

    .venv/bin/python bench/loadgen.py SPEC.json OUT.json

A phase is open loop (`rate`: requests sent on a fixed schedule whatever the responses, latency
measured from the scheduled send, so a late server is not hidden by a client that waits for it)
or closed loop (`closed`: each of `connections` sends its next request when the last one is
answered, latency from the send; `cycle` repeats the bodies until `duration` is over, what
measures a saturated rate). Between phases it waits until the server is idle again. The spec:
`port`, `pid` (the server's, for its CPU time), `connections`, `key` (sent as a bearer token),
`timeout` (seconds), `pause` and `phases`; a phase: `name`, `path`, `bodies` (JSON strings) and
`rate` or `closed`, optionally `keep_bodies` (parse the 2xx answers) and `keep_timing` (keep
their `server-timing` header).
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import sys
import time
from pathlib import Path
from typing import Any

CONTENT_LENGTH = re.compile(rb"(?i)\r\ncontent-length:\s*(\d+)")
_TIMING = re.compile(rb"(?i)\r\nserver-timing:\s*([^\r]*)")

Conn = tuple[asyncio.StreamReader, asyncio.StreamWriter]


def http_request(path: str, body: bytes, key: str) -> bytes:
    head = (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        f"Authorization: Bearer {key}\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


async def _read_response(reader: asyncio.StreamReader) -> tuple[int, bytes, bytes]:
    """(status, body, the server-timing header's value or b"")."""
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    length = CONTENT_LENGTH.search(head)
    body = await reader.readexactly(int(length.group(1))) if length else b""
    timing = _TIMING.search(head)
    return status, body, timing.group(1) if timing else b""


def cpu_s(pid: int) -> float:
    """utime + stime of a process and its live descendants (uvicorn's workers), in seconds
    (Linux /proc)."""
    total = 0.0
    for one in [pid, *_descendants(pid)]:
        try:
            fields = Path(f"/proc/{one}/stat").read_text().rsplit(")", 1)[1].split()
        except FileNotFoundError:
            continue
        total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


def _descendants(pid: int) -> list[int]:
    found = []
    try:
        for task in Path(f"/proc/{pid}/task").glob("*/children"):
            found += [int(c) for c in task.read_text().split()]
    except FileNotFoundError:
        return []
    return found + [d for child in found for d in _descendants(child)]


class _Phase:
    """One phase's connections and what it records, request by request."""

    def __init__(self, spec: dict[str, Any], phase: dict[str, Any]) -> None:
        self.port, self.timeout = spec["port"], float(phase.get("timeout", spec["timeout"]))
        self.phase = phase
        self.requests = [
            http_request(phase["path"], b.encode(), spec["key"]) for b in phase["bodies"]
        ]
        # Per request, by its index i: (i, latency ms, status, body, server-timing); a status
        # of 0 is a timeout, -1 a connection error.
        self.done: list[tuple[int, float, int, bytes, bytes]] = []
        self.pool: asyncio.Queue[Conn] = asyncio.Queue()

    async def connect(self, n: int) -> None:
        for _ in range(n):
            self.pool.put_nowait(await asyncio.open_connection("127.0.0.1", self.port))

    async def one(self, i: int, since: float) -> None:
        """Send request `i % n`; its latency counts from `since` (loop time), waiting for a free
        connection included."""
        loop = asyncio.get_running_loop()
        conn, status, body, timing = None, 0, b"", b""
        try:
            async with asyncio.timeout_at(since + self.timeout):
                conn = await self.pool.get()
                conn[1].write(self.requests[i % len(self.requests)])
                status, body, timing = await _read_response(conn[0])
            self.pool.put_nowait(conn)
            conn = None
        except TimeoutError:
            status = 0
        except (OSError, asyncio.IncompleteReadError):
            status = -1
        finally:
            self.done.append((i, (loop.time() - since) * 1000, status,
                              body if self.phase.get("keep_bodies") else b"",
                              timing if self.phase.get("keep_timing") else b""))  # fmt: skip
            if conn is not None:  # a broken or late connection is replaced, not reused
                conn[1].close()
                self.pool.put_nowait(await asyncio.open_connection("127.0.0.1", self.port))

    def close(self) -> None:
        while not self.pool.empty():
            self.pool.get_nowait()[1].close()


async def _open_loop(run: _Phase, rate: float, connections: int) -> float:
    """Returns the schedule's start (loop time)."""
    loop = asyncio.get_running_loop()
    await run.connect(connections)
    t0 = loop.time() + 0.05
    tasks = []
    for i in range(len(run.requests)):
        scheduled = t0 + i / rate
        delay = scheduled - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(run.one(i, scheduled)))
    await asyncio.gather(*tasks)
    return t0


async def _closed_loop(run: _Phase, connections: int, duration: float, cycle: bool) -> float:
    """Returns the start (loop time)."""
    loop = asyncio.get_running_loop()
    await run.connect(connections)
    t0 = loop.time()
    deadline = t0 + duration
    sent = 0

    async def worker() -> None:
        nonlocal sent
        while (cycle or sent < len(run.requests)) and loop.time() < deadline:
            i, sent = sent, sent + 1
            await run.one(i, loop.time())

    await asyncio.gather(*(worker() for _ in range(connections)))
    return t0


async def _phase(spec: dict[str, Any], phase: dict[str, Any]) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    run = _Phase(spec, phase)
    cpu_server, cpu_client = cpu_s(spec["pid"]), time.process_time()
    if "closed" in phase:
        duration = float(phase.get("duration", 3600))
        t0 = await _closed_loop(run, int(phase["closed"]), duration, bool(phase.get("cycle")))
    else:
        t0 = await _open_loop(run, float(phase["rate"]), spec["connections"])
    wall = loop.time() - t0
    t0_epoch = time.time() - wall
    cpu_server, cpu_client = cpu_s(spec["pid"]) - cpu_server, time.process_time() - cpu_client
    run.close()
    done = sorted(run.done, key=lambda d: d[0])
    return {
        "name": phase["name"], "rate": phase.get("rate"), "connections": phase.get("closed"),
        "latency_ms": [d[1] for d in done], "status": [d[2] for d in done],
        "wall_s": wall, "server_cpu_s": cpu_server, "client_cpu_s": cpu_client,
        "responses": [{"i": i, **_brief(json.loads(body))} for i, _, status, body, _ in done
                      if body and 200 <= status < 300],
        "timing": [d[4].decode("latin-1") for d in done if d[4]],
        "t0_epoch": t0_epoch,  # the start, wall clock
    }  # fmt: skip


def _brief(answer: Any) -> dict[str, Any]:
    """What the reports read of an answer: a decision's action and id, a batch's counts."""
    if not isinstance(answer, dict):
        return {}
    keys = ("received", "applied") if "applied" in answer else ("action", "decision_id", "degraded")
    return {k: answer.get(k) for k in keys}


async def _drain(pid: int, pause: float, limit_s: float = 120.0) -> None:
    """Wait until the server is idle: requests it queued past their timeout are still served
    after the phase, and would otherwise land in the next one's figures."""
    await asyncio.sleep(pause)
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        before = cpu_s(pid)
        await asyncio.sleep(0.5)
        if cpu_s(pid) - before < 0.05:  # under 10% of a core
            return


async def _loadgen(spec: dict[str, Any]) -> list[dict[str, Any]]:
    results = []
    for phase in spec["phases"]:
        results.append(await _phase(spec, phase))
        await _drain(spec["pid"], spec["pause"])
    return results


def main(spec_path: Path, out_path: Path) -> None:
    spec = json.loads(spec_path.read_text())
    out_path.write_text(json.dumps(asyncio.run(_loadgen(spec))))


def summarise(result: dict[str, Any]) -> dict[str, Any]:
    """Latency percentiles (ms), errors by kind, throughput and CPU shares of one phase."""
    import numpy as np

    lat = np.array(result["latency_ms"])
    status = np.array(result["status"])
    ok = (status >= 200) & (status < 300)
    p50, p99, p999 = np.percentile(lat, [50, 99, 99.9]) if len(lat) else (np.nan,) * 3
    return {
        "name": result["name"], "rate": result["rate"], "connections": result["connections"],
        "n": len(lat), "p50": p50, "p99": p99, "p999": p999,
        "max": lat.max() if len(lat) else np.nan,
        "non2xx": int(((status > 0) & ~ok).sum()), "timeouts": int((status == 0).sum()),
        "conn_errors": int((status == -1).sum()), "achieved": ok.sum() / result["wall_s"],
        "server_cpu": result["server_cpu_s"] / result["wall_s"],
        "client_cpu": result["client_cpu_s"] / result["wall_s"],
    }  # fmt: skip


if __name__ == "__main__":
    if len(sys.argv) != 3:
        raise SystemExit(__doc__)
    main(Path(sys.argv[1]), Path(sys.argv[2]))
