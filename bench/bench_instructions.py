"""What a request costs in CPU instructions, counted by valgrind's callgrind: the product's
score and echo endpoints against the floor's stages (bench/floor_app.py), each in a real
uvicorn process, the same payment bodies. Unlike the CPU seconds of bench_floor.py, a count
does not move with what else the machine is doing: two rounds of one run agree within a few
per cent where the seconds of two rounds differ by a third, so a change of 5% to the cost of
a decision can be seen on any day.

    .venv/bin/python bench/bench_instructions.py [--requests 200] [--rounds 2] [--connections 1]
                                                 [--only floor|product] [--no-doc]

Uses bench_scoring's world and champion (var/bench/scoring/, made if missing; Redis database 11
is FLUSHED and the world ingested). Each server is started under `valgrind --tool=callgrind
--instr-atstart=no`, warmed up with its counting off, then for each round: counters zeroed,
counting on, `--requests` requests sent one after another on one keep-alive connection (the
next when the last is answered; with `--connections N`, spread over N connections sending at
once), counting off, the counters dumped and read. The figure is
the instructions the server process executed (all its threads: the event loop, the decision
writer, the notifier; user space only, not the kernel's work in its system calls) per
request. Under valgrind the process runs about fifty times slower, so the product's time
budgets (Redis, the pollers) are set far out of the way; nothing else differs from
bench_scoring's server.

What a count does not show: the kernel's share (the socket and file system calls), waiting,
and most effects of concurrency (at 1,000 req/s a wake-up of the loop and a commit are shared
by several requests; on one connection each request has its own, and with `--connections 8`
the writer's commits gather several decisions, as under load). So it measures the cost of the
work, not the latency: docs/BENCHMARKS.md, the tenth round under "Scoring service". Needs
Debian's valgrind (`apt-get install valgrind`).
"""

from __future__ import annotations

import argparse
import datetime as dt
import glob
import json
import os
import re
import shlex
import shutil
import socket
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from bench_floor import LABEL, STAGES, export_champion, floor_server
from bench_scoring import (
    BIN,
    DOC,
    ECHO,
    HOME,
    ROOT,
    SCORE,
    Mix,
    arbiter,
    env_for,
    free_port,
    machine,
    prepare,
    server_args,
    setup,
    start_process,
    stop_server,
)
from benchdoc import publish
from loadgen import CONTENT_LENGTH, http_request

START, END = "<!-- bench-instructions:start -->", "<!-- bench-instructions:end -->"
# Under callgrind the product runs ~50x slower: budgets and pollers out of the way.
SLOW = {
    "ARBITER_REDIS_BUDGET_MS": "600000",
    "ARBITER_MODEL_POLL_SECONDS": "100000",
    "ARBITER_POLICY_RELOAD_SECONDS": "100000",
    "ARBITER_FLAG_SYNC_SECONDS": "100000",
    "ARBITER_STORE_BUSY_TIMEOUT_SECONDS": "600",
}
_TOTALS = re.compile(r"^(?:summary|totals):\s*(\d+)", re.M)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=200, help="requests counted per round")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--warmup", type=int, default=50, help="requests before counting")
    parser.add_argument("--connections", type=int, default=1, help="clients sending at once")
    parser.add_argument("--accounts", type=int, default=1000)
    parser.add_argument("--days", type=int, default=45)
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/11")
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--only", choices=["floor", "product"], help="count one side only")
    parser.add_argument("--no-doc", action="store_true")
    args = parser.parse_args()
    if shutil.which("valgrind") is None or shutil.which("callgrind_control") is None:
        raise SystemExit("valgrind is not installed: apt-get install valgrind")

    env = env_for(args.redis_url)
    world = setup(args, env)
    mix = Mix(world, args.seed)
    run = dt.datetime.now().strftime("%Y%m%d%H%M%S")
    arbiter(env, "decisions", "migrate")  # the server would at its start; the key needs it now
    key = prepare(env, mix, f"bench-instructions-{run}", roles=["scorer"])
    # One draw of bodies for every target and round: the same payments, new payment_ids.
    warm, _ = mix.bodies(args.warmup, "w")
    bodies, kinds = mix.bodies(args.requests, "m")
    out = HOME / "callgrind"
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    results: list[dict[str, Any]] = []

    if args.only != "product":
        model = export_champion(env)
        port = free_port()
        command, floor_env = floor_server(env, args.redis_url, model, port,
                                          HOME / "floor-instructions.db")  # fmt: skip
        print("starting the floor app under callgrind ...", flush=True)
        with Counted(command, floor_env, port, "/ready", out / "floor") as server:
            for path in STAGES:
                results += server.measure(path, args, warm, bodies, run, "")
    if args.only != "floor":
        port = free_port()
        print("starting the product under callgrind ...", flush=True)
        with Counted(
            server_args(port), {**env, **SLOW}, port, "/readyz", out / "product"
        ) as server:
            for path in (ECHO, SCORE):
                results += server.measure(path, args, warm, bodies, run, key)

    text = report(args, results, kinds)
    print(text)
    refused = [r for r in results if set(r["statuses"]) != {200}]
    if refused:  # a count of refusals is not a count of decisions: nothing is published
        raise SystemExit(f"not every request was answered 200: {LABEL[refused[0]['path']]}, "
                         f"round {refused[0]['round']}: {refused[0]['statuses']}")  # fmt: skip
    if not args.no_doc and args.only is None:
        publish(DOC, START, END, "Instructions per request (issue 4)", text)


class Counted:
    """A server process under callgrind, counting off until `measure` turns it on."""

    def __init__(self, command: list[str], env: dict[str, str], port: int, ready: str,
                 out: Path) -> None:  # fmt: skip
        self.port, self.out = port, out
        valgrind = ["valgrind", "--tool=callgrind", "--instr-atstart=no",
                    "--separate-threads=yes", f"--callgrind-out-file={out}.%p"]  # fmt: skip
        self.command = [*valgrind, str(BIN / "python"), *command]
        self.env, self.ready = env, ready
        self.server: Any = None

    def __enter__(self) -> Counted:
        self.server = start_process(self.command, self.env, f"http://127.0.0.1:{self.port}"
                                    f"{self.ready}", self.out.with_suffix(".log"),
                                    limit_s=900)  # fmt: skip
        return self

    def __exit__(self, *exc: object) -> None:
        stop_server(self.server)

    def control(self, *flags: str) -> None:
        subprocess.run(["callgrind_control", *flags, str(self.server.pid)], check=True,
                       capture_output=True)  # fmt: skip

    def measure(self, path: str, args: argparse.Namespace, warm: list[str], bodies: list[str],
                run: str, key: str) -> list[dict[str, Any]]:  # fmt: skip
        """Warm `path` up uncounted, then `args.rounds` counted rounds of `bodies`, over
        `args.connections` connections at once (each sends its share one after another)."""
        clients = [Client(self.port, key) for _ in range(args.connections)]
        try:
            _send_all(clients, path, _renamed(warm, f"{run}-{path}-warm"))
            rows = []
            for round_ in range(args.rounds):
                self.control("--zero")
                self.control("--instr=on")
                statuses = _send_all(clients, path, _renamed(bodies, f"{run}-{path}-{round_}"))
                self.control("--instr=off")
                instructions, loop = self.dump()
                rows.append({"path": path, "round": round_ + 1, "requests": len(bodies),
                             "instructions": instructions, "loop": loop,
                             "statuses": statuses})  # fmt: skip
                per = instructions / len(bodies)
                print(f"{LABEL[path]}, round {round_ + 1}: {per:,.0f} instructions per request",
                      flush=True)  # fmt: skip
            return rows
        finally:
            for client in clients:
                client.close()

    def dump(self) -> tuple[int, int]:
        """Dump the counters (a file `out.<pid>.<n>-<thread>` per thread, written before
        `callgrind_control` returns) and read them: all threads', and the main thread's (the
        event loop's)."""
        before = set(glob.glob(f"{self.out}.*"))
        self.control("--dump")
        total = main = 0
        for name in sorted(set(glob.glob(f"{self.out}.*")) - before):
            found = _TOTALS.findall(Path(name).read_text(errors="replace"))
            count = max((int(n) for n in found), default=0)  # `summary:` may be 0, `totals:` not
            total += count
            main += count if name.endswith("-01") else 0
        if not total:
            raise SystemExit(f"callgrind wrote no counts for {self.server.pid}")
        return total, main


class Client:
    """One keep-alive HTTP/1.1 connection; a request at a time."""

    def __init__(self, port: int, key: str) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port))
        self.sock.settimeout(600)
        self.key = key
        self.buffer = b""

    def send(self, path: str, bodies: list[str]) -> dict[int, int]:
        statuses: dict[int, int] = {}
        for body in bodies:
            self.sock.sendall(http_request(path, body.encode(), self.key))
            status = self._response()
            statuses[status] = statuses.get(status, 0) + 1
        return statuses

    def _response(self) -> int:
        while b"\r\n\r\n" not in self.buffer:
            self._read()
        head, self.buffer = self.buffer.split(b"\r\n\r\n", 1)
        length = CONTENT_LENGTH.search(head + b"\r\n")
        size = int(length.group(1)) if length else 0
        while len(self.buffer) < size:
            self._read()
        self.buffer = self.buffer[size:]
        return int(head[9:12])

    def _read(self) -> None:
        chunk = self.sock.recv(65536)
        if not chunk:
            raise SystemExit("the server closed the connection")
        self.buffer += chunk

    def close(self) -> None:
        self.sock.close()


def _send_all(clients: list[Client], path: str, bodies: list[str]) -> dict[int, int]:
    """`bodies` spread over `clients` (the i-th to client i mod n), all sending at once."""
    if len(clients) == 1:
        return clients[0].send(path, bodies)
    with ThreadPoolExecutor(len(clients)) as pool:
        parts = pool.map(lambda i: clients[i].send(path, bodies[i :: len(clients)]),
                         range(len(clients)))  # fmt: skip
        statuses: dict[int, int] = {}
        for part in parts:
            for status, n in part.items():
                statuses[status] = statuses.get(status, 0) + n
    return statuses


_shift = [0]


def _renamed(bodies: list[str], tag: str) -> list[str]:
    """The same payments with payment_ids of their own (no retries across targets) and later
    times (each batch after the last)."""
    _shift[0] += 100_000  # 100 s: a round's 10 ms apart payments end well before
    out = []
    for body in bodies:
        payment = json.loads(body)
        payment["payment_id"] = f"{payment['payment_id']}-{tag}"
        payment["ts"] += _shift[0]
        out.append(json.dumps(payment))
    return out


def report(args: argparse.Namespace, results: list[dict[str, Any]], kinds: dict[str, int]) -> str:
    argv = [a for a in sys.argv if a != "--no-doc"]
    command = "make bench-instructions  # or: " + " ".join(shlex.quote(a) for a in argv)
    mix = ", ".join(f"{k} {v}" for k, v in kinds.items() if v)
    lines = [
        f"Measured {dt.date.today().isoformat()} on {machine()}, valgrind "
        f"{_valgrind_version()} (callgrind). One uvicorn worker per server, each under "
        f"callgrind; {args.requests} payments per round ({mix}), sent one at a time on "
        f"{_connections(args.connections)} after {args.warmup} uncounted; the same payments "
        "for every target. Instructions of the server process, all threads, user space.",
        "",
        "| target | round | answered (status: count) | instructions per request "
        "| of which the event loop's thread | over the floor |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    floor = {r["round"]: r["instructions"] / r["requests"] for r in results
             if r["path"] == "/floor"}  # fmt: skip
    for r in results:
        per = r["instructions"] / r["requests"]
        ratio = f"{per / floor[r['round']]:.2f}x" if r["round"] in floor else "-"
        answered = ", ".join(f"{s}: {n}" for s, n in sorted(r["statuses"].items()))
        loop = r["loop"] / r["requests"]
        lines.append(f"| {LABEL[r['path']]} | {r['round']} | {answered} | {per:,.0f} "
                     f"| {loop:,.0f} | {ratio} |")  # fmt: skip
    lines += ["", f"Rerun: `{command}`"]
    return "\n".join(lines)


def _connections(n: int) -> str:
    if n == 1:
        return "one keep-alive connection"
    return f"each of {n} keep-alive connections at once"


def _valgrind_version() -> str:
    done = subprocess.run(["valgrind", "--version"], capture_output=True, text=True)
    return done.stdout.strip().removeprefix("valgrind-")


if __name__ == "__main__":
    os.chdir(ROOT)
    main()
