"""Servers of a test's own, on free loopback ports, that the test may stop, kill and start
again: Debian's `redis-server`, and a PostgreSQL cluster made with `initdb` from Debian's
`postgresql` package (as the `postgres` user when the tests run as root, as initdb must).
The machine's own servers are never touched. Used by the failure tests and the chaos run;
`OwnRedisCluster` (several redis-servers as one Redis Cluster) by the cluster tests."""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
import redis

from tests.server import free_port, stop_process


class OwnRedis:
    """A redis-server process on loopback that the test may stall, kill and restart."""

    def __init__(self, folder: Path) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            pytest.fail("redis-server is not installed (apt-get install redis-server): the "
                        "failure tests stop and start one of their own", pytrace=False)  # fmt: skip
        self.binary, self.folder, self.port = binary, folder, free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.process = subprocess.Popen(
            [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--enable-debug-command", "local", "--dir", str(self.folder)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        client = redis.Redis.from_url(self.url, socket_timeout=1)
        for _ in range(100):
            try:
                client.ping()
                return
            except redis.RedisError:
                time.sleep(0.05)
        pytest.fail(f"redis-server did not start on port {self.port}")

    def kill(self) -> None:
        assert self.process is not None
        self.process.kill()
        self.process.wait(10)

    def stall(self, seconds: float) -> threading.Thread:
        """Block the server for `seconds` (DEBUG SLEEP), from another thread."""
        client = redis.Redis.from_url(self.url, socket_timeout=seconds + 5)
        thread = threading.Thread(target=client.execute_command, args=("DEBUG", "SLEEP", seconds))
        thread.start()
        time.sleep(0.1)  # the server is asleep from here on
        return thread


class OwnPostgres:
    """A PostgreSQL cluster of its own in a temporary folder; `stop` is a clean shutdown (every
    connection cut), `start` brings the same data back."""

    def __init__(self) -> None:
        found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"))
        if not found:
            pytest.fail("PostgreSQL's server binaries are not installed (apt-get install "
                        "postgresql): the store-outage tests run a cluster of their own",
                        pytrace=False)  # fmt: skip
        self.bin = Path(found[-1]).parent
        self.port = free_port()
        self.folder = Path(tempfile.mkdtemp(prefix="arbiter-pg-"))
        self.user = "postgres" if os.geteuid() == 0 else None
        if self.user is not None:
            entry = pwd.getpwnam(self.user)
            os.chown(self.folder, entry.pw_uid, entry.pw_gid)
        self.data = self.folder / "data"
        self._run("initdb", "-D", str(self.data), "-U", "postgres", "--auth=trust", "-E", "UTF8")

    @property
    def url(self) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, tool: str, *args: str) -> None:
        command = [str(self.bin / tool), *args]
        if self.user is not None:
            command = ["runuser", "-u", self.user, "--", *command]
        done = subprocess.run(command, capture_output=True, text=True, cwd=self.folder)
        if done.returncode != 0:
            pytest.fail(f"{tool} failed: {done.stdout}{done.stderr}", pytrace=False)

    def start(self) -> None:
        options = (f"-p {self.port} -k {self.folder} -c listen_addresses=127.0.0.1 "
                   "-c fsync=off -c max_connections=50")  # fmt: skip
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.folder / "log"), "-o",
                  options, "-w", "-t", "30", "start")  # fmt: skip

    def stop(self) -> None:
        self._run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "stop")

    def remove(self) -> None:
        if (self.data / "postmaster.pid").exists():
            self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop")
        shutil.rmtree(self.folder, ignore_errors=True)


class OwnMlflow:
    """`mlflow server` (the tracking server and registry) over a backend store, on a free port;
    the test may stop it and start it again."""

    def __init__(self, backend_uri: str, folder: Path) -> None:
        self.backend_uri, self.folder, self.port = backend_uri, folder, free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        env = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true"}
        with (self.folder / "mlflow-server.log").open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "mlflow", "server", "--backend-store-uri",
                 self.backend_uri, "--host", "127.0.0.1", "--port", str(self.port),
                 "--workers", "1"],
                stdout=log, stderr=subprocess.STDOUT, env=env, cwd=self.folder,
            )  # fmt: skip
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                pytest.fail(
                    f"mlflow server exited:\n{(self.folder / 'mlflow-server.log').read_text()}"
                )
            try:
                if httpx.get(f"{self.url}/health", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                time.sleep(0.2)
        pytest.fail("mlflow server did not answer /health in 90 s")

    def stop(self) -> None:
        if self.process is not None:
            stop_process(self.process, timeout=20)


class OwnRedisCluster:
    """A Redis Cluster of `masters` redis-server processes on loopback (no replicas), made with
    `redis-cli --cluster create`; `url` is the service's `redis+cluster://` setting. Use as a
    context manager, or call `start` and `stop` (which also runs when `start` fails halfway)."""

    def __init__(self, folder: Path, masters: int = 3, node_timeout_ms: int | None = None) -> None:
        binary, cli = shutil.which("redis-server"), shutil.which("redis-cli")
        if binary is None or cli is None:
            pytest.fail("redis-server and redis-cli are not installed (apt-get install "
                        "redis-server): the cluster tests start a cluster of their own",
                        pytrace=False)  # fmt: skip
        self.binary, self.cli, self.folder = binary, cli, folder
        self.ports = _cluster_ports(masters)
        self.processes: list[subprocess.Popen[bytes]] = []
        # How soon the others count a silent master as failed (Redis's default: 15 s).
        self.node_timeout_ms = node_timeout_ms

    @property
    def url(self) -> str:
        return "redis+cluster://" + ",".join(f"127.0.0.1:{p}" for p in self.ports)

    def node(self, port: int) -> redis.Redis:
        """A plain client of one master (for looking at what it holds)."""
        return redis.Redis(host="127.0.0.1", port=port, socket_timeout=5)

    def start(self) -> None:
        try:
            for port in self.ports:
                self.processes.append(self._server(port))
            for port in self.ports:
                self._wait(lambda p=port: self.node(p).ping(), f"redis-server on port {port}")
            nodes = [f"127.0.0.1:{p}" for p in self.ports]
            self._cluster_cli("create", *nodes, "--cluster-replicas", "0")
            for port in self.ports:
                self._wait(lambda p=port: b"cluster_state:ok" in self._cluster_info(p),
                           f"cluster_state:ok on port {port}")  # fmt: skip
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        for process in self.processes:
            stop_process(process)
        self.processes = []

    def kill(self, port: int) -> None:
        """Kill one master (its data is gone: there are no replicas)."""
        process = self.processes[self.ports.index(port)]
        process.kill()
        process.wait(10)

    def cover_lost_slots(self, alive: int) -> None:
        """Once the others count a killed master as failed, give its slots to the masters still
        alive (`redis-cli --cluster fix`): what a failover does to the slot map."""
        self._wait(lambda: b"cluster_state:fail" in self._cluster_info(alive),
                   f"the cluster seeing a master fail, on port {alive}")  # fmt: skip
        self._cluster_cli("fix", f"127.0.0.1:{alive}", "--cluster-fix-with-unreachable-masters",
                          answers="yes\n" * 16384)  # fmt: skip
        self._wait(lambda: b"cluster_state:ok" in self._cluster_info(alive),
                   f"cluster_state:ok on port {alive}")  # fmt: skip

    def move_slots(self, source: int, target: int) -> None:
        """Move every slot of one master, with its keys, to another (`--cluster reshard`)."""
        ids, count = {}, 0
        for port in (source, target):
            reply: bytes = self.node(port).execute_command("CLUSTER", "NODES")
            me = next(line.split() for line in reply.decode().splitlines() if "myself" in line)
            ids[port] = me[0]
            if port == source:
                for span in me[8:]:  # "a-b" or "a"
                    first, _, last = span.partition("-")
                    count += int(last or first) - int(first) + 1
        self._cluster_cli("reshard", f"127.0.0.1:{source}", "--cluster-from", ids[source],
                          "--cluster-to", ids[target], "--cluster-slots", str(count))  # fmt: skip
        for port in self.ports:
            self._wait(lambda p=port: b"cluster_state:ok" in self._cluster_info(p),
                       f"cluster_state:ok on port {port}")  # fmt: skip

    def _cluster_cli(self, *args: str, answers: str = "") -> None:
        done = subprocess.run(
            [self.cli, "--cluster", *args, "--cluster-yes"],
            input=answers, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        if done.returncode != 0:
            pytest.fail(f"redis-cli --cluster {args[0]} failed: {done.stdout}{done.stderr}")

    def __enter__(self) -> OwnRedisCluster:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _server(self, port: int) -> subprocess.Popen[bytes]:
        timeout = []
        if self.node_timeout_ms is not None:
            timeout = ["--cluster-node-timeout", str(self.node_timeout_ms)]
        with (self.folder / f"redis-{port}.log").open("ab") as log:
            return subprocess.Popen(
                [self.binary, "--port", str(port), "--bind", "127.0.0.1", "--cluster-enabled",
                 "yes", "--cluster-config-file", str(self.folder / f"nodes-{port}.conf"),
                 "--save", "", "--appendonly", "no", "--daemonize", "no", "--dir",
                 str(self.folder), *timeout],
                stdout=log, stderr=subprocess.STDOUT,
            )  # fmt: skip

    def _cluster_info(self, port: int) -> bytes:
        reply: bytes = self.node(port).execute_command("CLUSTER", "INFO")
        return reply

    def _wait(self, ready: Callable[[], object], what: str, seconds: float = 20) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            try:
                if ready():
                    return
            except redis.RedisError:
                pass
            time.sleep(0.05)
        pytest.fail(f"{what}: not ready in {seconds:.0f} s (logs in {self.folder})")


def _cluster_ports(count: int) -> list[int]:
    """Free loopback ports whose cluster bus ports (port + 10000) are free too."""
    ports: list[int] = []
    while len(ports) < count:
        port = free_port()
        if port + 10_000 >= 65_536 or port in ports:
            continue
        with socket.socket() as bus:
            try:
                bus.bind(("127.0.0.1", port + 10_000))
            except OSError:
                continue
        ports.append(port)
    return ports
