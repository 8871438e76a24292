"""The demo page's HTTP server: the static chat client and the small JSON API behind it.

The browser never talks to the bot or the emulators itself: it posts what its user typed or
clicked here, and `DemoSession` turns that into the signed requests Slack would send. The page
polls `/api/state` for what the emulated Slack now shows. Every POST must carry a JSON body, so
another site open in the same browser cannot drive the demo with a plain form post.
"""

from __future__ import annotations

import threading
from importlib import resources
from typing import Any

from flask import Flask, Response, abort, jsonify, request
from waitress.server import BaseWSGIServer, create_server
from werkzeug.exceptions import HTTPException

from canary_sandbox.demo_web.session import DemoError, DemoSession
from canary_sandbox.demo_web.world import DemoWorld

STATIC = resources.files("canary_sandbox.demo_web") / "static"


def create_demo_app(world: DemoWorld, session: DemoSession) -> Flask:
    app = Flask("canary-bot-demo", static_folder=str(STATIC), static_url_path="/static")

    @app.get("/")
    def index() -> Response:
        return app.send_static_file("index.html")

    @app.get("/api/state")
    def state() -> Response:
        user = request.args.get("user", "")
        return jsonify(session.state(user=user, thread_ts=request.args.get("thread") or None))

    @app.post("/api/command")
    def command() -> Response:
        body = _json()
        session.command(user=str(body.get("user")), text=str(body.get("text") or ""))
        return jsonify(ok=True)

    @app.post("/api/click")
    def click() -> Response:
        body = _json()
        value = body.get("value")
        session.click(
            user=str(body.get("user")),
            channel=str(body.get("channel")),
            ts=str(body.get("ts")),
            action_id=str(body.get("action_id")),
            value=None if value is None else str(value),
        )
        return jsonify(ok=True)

    @app.post("/api/views/<view_id>/submit")
    def submit_view(view_id: str) -> Response:
        body = _json()
        values = body.get("values")
        errors = session.submit_view(
            user=str(body.get("user")),
            view_id=view_id,
            values=values if isinstance(values, dict) else {},
        )
        return jsonify(ok=not errors, errors=errors)

    @app.post("/api/views/<view_id>/close")
    def close_view(view_id: str) -> Response:
        session.close_view(user=str(_json().get("user")), view_id=view_id)
        return jsonify(ok=True)

    @app.post("/api/canary")
    def canary() -> Response:
        world.break_canary(bool(_json().get("broken")))
        return jsonify(ok=True, broken=world.canary_broken)

    @app.get("/files/<file_id>")
    def file(file_id: str) -> Response:
        found = session.file(file_id)
        if found is None:
            abort(404)
        mimetype = "image/png" if found.filename.endswith(".png") else "application/octet-stream"
        return Response(found.content, mimetype=mimetype)

    @app.errorhandler(DemoError)
    def refused(error: DemoError) -> tuple[Response, int]:
        return jsonify(ok=False, error=str(error)), 409

    @app.errorhandler(HTTPException)
    def http_error(error: HTTPException) -> tuple[Response, int]:
        return jsonify(ok=False, error=error.description), error.code or 500

    return app


def _json() -> dict[str, Any]:
    body = request.get_json(silent=False)  # 415 unless Content-Type is application/json
    if not isinstance(body, dict):
        abort(400, "expected a JSON object")
    return body


class DemoWebServer:
    """waitress in a background thread on 127.0.0.1 (port 0: one the OS picks)."""

    def __init__(self, world: DemoWorld, *, port: int, host: str = "127.0.0.1") -> None:
        self.session = DemoSession(world)
        server = create_server(
            create_demo_app(world, self.session), host=host, port=port, threads=6, ident="demo"
        )
        assert isinstance(server, BaseWSGIServer)  # one host and port
        self._server = server
        self._thread = threading.Thread(target=self._server.run, name="demo-web", daemon=True)

    @property
    def url(self) -> str:
        sock = self._server.socket
        assert sock is not None
        host, port = sock.getsockname()[:2]
        return f"http://{host}:{port}"

    def start(self) -> DemoWebServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.close()
        if self._thread.ident is not None:  # started
            self._thread.join(timeout=5)
