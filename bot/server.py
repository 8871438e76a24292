"""The HTTP side: Slack's `POST /slack/events`, `GET /healthz` and `GET /metrics`.

Flask routes behind waitress, a production WSGI server with a thread pool: Bolt acknowledges
on the request thread and runs the slow part of a listener on its own executor, so a slow
cluster never holds up the HTTP answer Slack is waiting for.
"""

from __future__ import annotations

import threading
import time

from flask import Flask, Response, jsonify, request
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from slack_bolt.adapter.flask import SlackRequestHandler
from waitress.server import BaseWSGIServer, create_server

from bot.runtime import Runtime

# Slack's payloads are a few KB; anything far larger is not from Slack.
MAX_BODY_BYTES = 256 * 1024


def create_web_app(runtime: Runtime) -> Flask:
    web = Flask("canary-bot")
    web.config["MAX_CONTENT_LENGTH"] = MAX_BODY_BYTES
    slack = SlackRequestHandler(runtime.app)
    metrics = runtime.metrics

    @web.post("/slack/events")
    def slack_events() -> Response:
        started = time.perf_counter()
        response: Response = slack.handle(request)
        metrics.ack_seconds.observe(time.perf_counter() - started)
        metrics.requests.labels(status=str(response.status_code)).inc()
        return response

    @web.get("/healthz")
    def healthz() -> tuple[Response, int]:
        try:
            active = len(runtime.store.active())
        except Exception as error:  # the database is the one thing the bot cannot do without
            return jsonify(ok=False, error=f"store: {type(error).__name__}"), 503
        return jsonify(ok=True, active_rollouts=active), 200

    @web.get("/metrics")
    def prometheus_metrics() -> Response:
        return Response(generate_latest(metrics.registry), content_type=CONTENT_TYPE_LATEST)

    return web


class HttpServer:
    """waitress in a background thread, so the CLI, the demo and tests share one code path."""

    def __init__(self, runtime: Runtime, *, host: str, port: int, threads: int = 8) -> None:
        server = create_server(
            create_web_app(runtime), host=host, port=port, threads=threads, ident="canary-bot"
        )
        assert isinstance(server, BaseWSGIServer)  # one host and port: never a multi-socket one
        self._server = server
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="http", daemon=True)

    def _run(self) -> None:
        try:
            self._server.run()
        except OSError:
            # Closing the listening socket from another thread wakes the loop on a dead file
            # descriptor; that is the expected way out once stop() was called.
            if not self._stopping.is_set():
                raise

    @property
    def url(self) -> str:
        sock = self._server.socket
        assert sock is not None  # bound in create_server
        host, port = sock.getsockname()[:2]
        return f"http://{host}:{port}"

    def start(self) -> None:
        self._thread.start()

    def wait(self) -> None:
        self._thread.join()

    def stop(self) -> None:
        self._stopping.set()
        self._server.close()
        self._thread.join(timeout=5)
