"""Three `canary-bot serve` processes on one PostgreSQL database, for the failover tests and
`bench/failover.py`.

Each replica is a real process with its own `POD_NAME`, reaching the Kubernetes and Slack
emulators of one sandbox, a real Prometheus, and the database through a TCP relay of its own
(`Relay`), so that a test can cut one replica off the database as the Kubernetes emulator can
cut it off the API server (by the User-Agent that names it). Slack's signed requests go to a
random live replica, as a load balancer in front of the pods would send them.
"""

from __future__ import annotations

import contextlib
import random
import signal
import socket
import subprocess
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import requests

from canary_sandbox.sandbox import (
    ALICE,
    BOB,
    CAROL,
    RELEASE_CHANNEL,
    SRE_GROUP,
    Sandbox,
    stable_deployment,
)
from emulators.prometheus import free_port
from emulators.slack import SlackDriver

T = TypeVar("T")
REPO = Path(__file__).resolve().parents[2]
LEASE_NS = "canary-bot"
EXIT_LOST_LEASE = 75


@dataclass(frozen=True)
class Settings:
    """Short lease settings so that a failover takes seconds (DESIGN.md's are 15/10/2 s)."""

    lease_duration: float = 3.0
    renew_deadline: float = 2.0
    retry_period: float = 1.0
    analysis_interval: float = 1.0
    step_interval: float = 2.0
    steps: tuple[int, ...] = (20, 50, 80)
    approval: bool = True


def config_text(settings: Settings, *, prometheus_url: str) -> str:
    steps = ", ".join(map(str, settings.steps))
    return textwrap.dedent(
        f"""\
        slack:
          release_channels: [{RELEASE_CHANNEL}]
          oncall: S0ONCALL
          deployers: [{ALICE}, {BOB}, {CAROL}]
          approvers: [{SRE_GROUP}]
          # Slack's pacing is measured elsewhere (tests/test_slack_budget.py); here it would
          # only stretch every wait across three replicas' handovers.
          rate_limits: {{chat_update_per_minute: 10000, post_message_per_channel_per_second: 100}}
        cluster_name: sandbox
        prometheus:
          url: {prometheus_url}
          timeout: 2s
        ha:
          lease_namespace: {LEASE_NS}
          lease_duration: {settings.lease_duration:g}s
          renew_deadline: {settings.renew_deadline:g}s
          retry_period: {settings.retry_period:g}s
        defaults:
          steps: [{steps}]
          approval: {str(settings.approval).lower()}
          step_interval: {settings.step_interval:g}s
          analysis_interval: {settings.analysis_interval:g}s
          analysis_window: 5s
          progress_deadline: 60s
          promotion_deadline: 60s
          min_step_interval: 1s
          rules:
            - {{metric: error_rate, above: 0.5, for: 30s}}
        services:
          checkout:
            namespace: shop
            deployment: checkout
            container: app
            strategy: replicas
            environment: production
        """
    )


def wait_for(probe: Callable[[], T | None], *, what: str, timeout: float) -> T:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = probe()
        if found:
            return found
        time.sleep(0.02)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")


class Relay:
    """A TCP relay from a local port to the database; `cut()` drops every connection and
    refuses new ones until `mend()`, as a network partition between one replica and it."""

    def __init__(self, target: tuple[str, int]) -> None:
        self._target = target
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = int(self._listener.getsockname()[1])
        self._cut = threading.Event()
        self._closed = threading.Event()
        self._sockets: set[socket.socket] = set()
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, name="relay", daemon=True).start()

    def cut(self) -> None:
        self._cut.set()
        with self._lock:
            for sock in list(self._sockets):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)

    def mend(self) -> None:
        self._cut.clear()

    def close(self) -> None:
        self._closed.set()
        self.cut()
        self._listener.close()

    def _accept(self) -> None:
        while not self._closed.is_set():
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            if self._cut.is_set():
                client.close()
                continue
            try:
                upstream = socket.create_connection(self._target, timeout=5)
            except OSError:
                client.close()
                continue
            upstream.settimeout(None)
            with self._lock:
                self._sockets |= {client, upstream}
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    def _pipe(self, source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (source, sink):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                with self._lock:
                    self._sockets.discard(sock)


class Replica:
    """One `canary-bot serve` process; restartable on the same ports, as a pod is."""

    def __init__(self, world: HaWorld, name: str, relay: Relay) -> None:
        self.world = world
        self.name = name
        self.relay = relay
        self.port = free_port()
        self.admin_port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = world.workdir / f"{name}.log"
        self.starts = 0
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self) -> None:
        self.starts += 1
        env = {
            **self.world.sandbox.process_env(),
            "POD_NAME": self.name,
            "CANARY_STORE_URL": self.world.store_url_via(self.relay.port),
            "CANARY_LOG_LEVEL": "INFO",
        }
        command = self.world.sandbox.serve_command(port=self.port, admin_port=self.admin_port)
        with self.log_path.open("ab") as log:
            log.write(f"===== start #{self.starts} =====\n".encode())
            self.proc = subprocess.Popen(command, cwd=REPO, env=env, stdout=log, stderr=log)

    def readyz(self) -> tuple[int, str]:
        try:
            answer = requests.get(f"http://127.0.0.1:{self.admin_port}/readyz", timeout=1)
        except requests.RequestException as error:
            return 0, str(error)
        return answer.status_code, str(answer.json().get("status"))

    def ready(self) -> bool:
        return self.alive and self.readyz()[0] == 200

    def kill(self) -> None:
        """SIGKILL: no handler, no shutdown, no Lease handed back."""
        if self.proc is not None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)

    def log_tail(self, lines: int = 30) -> str:
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return "\n".join(text.splitlines()[-lines:])


@dataclass
class HaWorld:
    workdir: Path
    sandbox: Sandbox
    database: tuple[str, int]  # host, port of PostgreSQL
    store_url_template: str  # with {port} where the relay's port goes
    settings: Settings
    store_url: str = ""  # the database itself, for the test's own reads
    replicas: list[Replica] = field(default_factory=list)
    rng: random.Random = field(default_factory=lambda: random.Random(20261205))

    def store_url_via(self, port: int) -> str:
        return self.store_url_template.format(port=port)

    def add_replicas(self, count: int) -> None:
        for n in range(count):
            replica = Replica(self, f"bot-{n}", Relay(self.database))
            self.replicas.append(replica)
            replica.start()

    def replica(self, name: str) -> Replica:
        return next(r for r in self.replicas if r.name == name)

    def holder(self) -> str | None:
        lease = self.sandbox.kube.get("coordination.k8s.io/v1", "Lease", LEASE_NS, "canary-bot")
        return None if lease is None else lease["spec"].get("holderIdentity")

    def leader(self, *, timeout: float = 60.0, other_than: str | None = None) -> Replica:
        """The live replica that holds the Lease and says on /readyz that it leads."""

        def probe() -> Replica | None:
            name = self.holder()
            if name is None or name == other_than:
                return None
            replica = self.replica(name)
            _, text = replica.readyz()
            return replica if replica.alive and text.startswith("leader") else None

        return wait_for(probe, what="a leader", timeout=timeout)

    def all_ready(self, timeout: float = 60.0) -> None:
        for replica in self.replicas:
            wait_for(replica.ready, what=f"{replica.name} ready", timeout=timeout)

    def driver(self) -> SlackDriver:
        """A random live replica, as a load balancer would pick."""
        live = [r for r in self.replicas if r.alive and r.readyz()[0] == 200]
        assert live, "no live replica to send to"
        return self.sandbox.driver_for(self.rng.choice(live).url)

    def stop(self) -> None:
        for replica in self.replicas:
            replica.stop()
            replica.relay.close()


def new_sandbox(workdir: Path, text: str) -> Sandbox:
    sandbox = Sandbox(workdir=workdir / "sandbox", config_text=text, seed=False)
    sandbox.start()
    kube = sandbox.kube
    for namespace in ("shop", LEASE_NS):
        kube.seed({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}})
    kube.seed(stable_deployment(replicas=10))
    return sandbox


@contextlib.contextmanager
def ha_world(
    workdir: Path,
    *,
    database: tuple[str, int],
    store_url_template: str,
    prometheus_url: str,
    settings: Settings,
    replicas: int = 3,
) -> Iterator[HaWorld]:
    sandbox = new_sandbox(workdir, config_text(settings, prometheus_url=prometheus_url))
    world = HaWorld(
        workdir=workdir,
        sandbox=sandbox,
        database=database,
        store_url_template=store_url_template,
        settings=settings,
    )
    try:
        world.add_replicas(replicas)
        yield world
    finally:
        world.stop()
        sandbox.stop()


def logs(world: HaWorld) -> str:
    return "\n".join(f"--- {r.name} ---\n{r.log_tail()}" for r in world.replicas)
