"""The HTTP side: a threaded server on 127.0.0.1 that the official client reaches by kubeconfig.

It adds what only makes sense over the wire: fault injection (see `faults`), the record of
every write request (`WriteRecord`), including the ones that failed or were failed on purpose,
so tests can assert what the bot sent and how often it retried, and a count of every request
(reads too) by method and path. Connections are HTTP/1.1
keep-alive (urllib3 pools them); `stop()` closes them so no handler thread outlives the server.
"""

from __future__ import annotations

import contextlib
import json
import socket
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from emulators.kube import errors
from emulators.kube.faults import FaultDice, Faults
from emulators.kube.routing import WRITE_METHODS, Request, Router, Target, parse_target


@dataclass(frozen=True, kw_only=True)
class WriteRecord:
    method: str
    path: str
    status: int
    kind: str | None
    name: str | None
    namespace: str | None
    subresource: str | None
    content_type: str
    body: Any  # the decoded JSON body, or None
    at: float  # time.time() when the answer was ready


class Frontend:
    """Faults, then the router, then the write record: one call per HTTP request."""

    def __init__(self, router: Router, *, faults: Faults, dice: FaultDice) -> None:
        self.router = router
        self.faults = faults
        self.dice = dice
        self.stopping = threading.Event()
        self.writes: list[WriteRecord] = []
        self.writes_lock = threading.Lock()
        # Every request received, reads too, counted by (method, path): how many calls the bot
        # makes per tick, whatever they were.
        self.requests: Counter[tuple[str, str]] = Counter()

    def respond(self, request: Request) -> tuple[int, Any]:
        with self.writes_lock:
            self.requests[(request.method, request.path)] += 1
        faults = self.faults
        if faults.latency > 0:
            self.stopping.wait(faults.latency)
        held_back = self.dice.roll(faults.timeout_rate)
        target = parse_target(self.router.registry, request.path)
        if faults.held_names:
            faults.wait_while_held(request.path, _body_name(request.body), self.stopping)
        write = request.method in WRITE_METHODS
        code: int
        body: Any
        if write and self.dice.roll(faults.error_rate):
            failure = errors.internal("injected fault")
            code, body = failure.code, failure.status()
        elif (
            request.method in ("PUT", "PATCH")
            and target.rk is not None
            and target.name
            and self.dice.roll(faults.conflict_rate)
        ):
            failure = errors.conflict(
                plural=target.rk.plural, group=target.rk.group, name=target.name
            )
            code, body = failure.code, failure.status()
        else:
            code, body = self.router.handle(request)
        if write:
            self._record(request, target=target, code=code)
        if held_back:
            # The work is done but the answer comes too late: the client cannot tell whether
            # its write happened, which is exactly what a real timeout leaves it with.
            self.stopping.wait(faults.timeout_sleep)
        return code, body

    def _record(self, request: Request, *, target: Target, code: int) -> None:
        try:
            decoded = json.loads(request.body) if request.body.strip() else None
        except ValueError:
            decoded = None
        name = target.name
        if name is None and isinstance(decoded, dict) and isinstance(decoded.get("metadata"), dict):
            name = decoded["metadata"].get("name")  # a create names its object in the body
        record = WriteRecord(
            method=request.method,
            path=request.path,
            status=code,
            kind=target.rk.kind if target.rk is not None else None,
            name=name,
            namespace=target.namespace,
            subresource=target.subresource,
            content_type=request.content_type,
            body=decoded,
            at=time.time(),
        )
        with self.writes_lock:
            self.writes.append(record)


def _body_name(body: bytes) -> str | None:
    """The `metadata.name` a create carries in its body, if any."""
    try:
        decoded = json.loads(body) if body.strip() else None
    except ValueError:
        return None
    if isinstance(decoded, dict) and isinstance(decoded.get("metadata"), dict):
        name = decoded["metadata"].get("name")
        return name if isinstance(name, str) else None
    return None


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Headers and body go out in separate sends; without this, Nagle's algorithm and the
    # client's delayed ACK hold every answer back by ~40 ms.
    disable_nagle_algorithm = True
    server: KubeHTTPServer
    timeout = 60  # an idle keep-alive connection does not hold a thread forever

    def setup(self) -> None:
        super().setup()
        self.server.track(self.connection, add=True)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.server.track(self.connection, add=False)

    def log_message(self, format: str, *args: Any) -> None:
        """Silent: tests read `writes`, not an access log."""

    def _serve(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        if self.server.frontend.faults.refuses(self.headers.get("User-Agent") or ""):
            # Cut off: no answer at all, and the connection goes, as behind a partition.
            self.close_connection = True
            with contextlib.suppress(OSError):
                self.connection.shutdown(socket.SHUT_RDWR)
            return
        url = urlsplit(self.path)
        query = {k: v[-1] for k, v in parse_qs(url.query, keep_blank_values=True).items()}
        content_type = (self.headers.get("Content-Type") or "").split(";")[0].strip().lower()
        request = Request(
            method=self.command, path=url.path, query=query, content_type=content_type, body=body
        )
        code, payload = self.server.frontend.respond(request)
        if self.server.frontend.stopping.is_set():
            self.close_connection = True
        data = (payload if isinstance(payload, str) else json.dumps(payload)).encode()
        self.send_response(code)
        self.send_header(
            "Content-Type", "text/plain" if isinstance(payload, str) else "application/json"
        )
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _serve


class KubeHTTPServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, frontend: Frontend) -> None:
        self.frontend = frontend
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()
        super().__init__(("127.0.0.1", 0), _Handler)
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        return int(self.server_address[1])

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Quiet about clients that hung up (a timed-out request); loud about anything else."""
        error = sys.exc_info()[1]
        if not isinstance(error, (ConnectionError, TimeoutError)):
            super().handle_error(request, client_address)

    def track(self, connection: socket.socket, *, add: bool) -> None:
        with self._connections_lock:
            if add:
                self._connections.add(connection)
            else:
                self._connections.discard(connection)

    def start(self) -> None:
        self._thread = threading.Thread(
            target=self.serve_forever,
            kwargs={"poll_interval": 0.1},
            name="kube-emulator-http",
            daemon=True,
        )
        self._thread.start()

    def stop(self) -> None:
        self.frontend.stopping.set()
        self.shutdown()
        with self._connections_lock:
            connections = list(self._connections)
        for connection in connections:
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)
        self.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
