"""The Dockerfile: pinned bases, the product installed from the constraints, a final stage
without compiler, pip or source, a non-root user, and a health check that follows `/healthz`.
"""

from __future__ import annotations

import http.server
import re
import subprocess
import sys
import threading
from typing import Any

import dockerfile
import pytest

from tests.install_support import HEALTHZ, REPO

# --- Dockerfile ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def instructions() -> list[dockerfile.Command]:
    return list(dockerfile.parse_file(str(REPO / "Dockerfile")))


def final_stage(instructions: list[dockerfile.Command]) -> list[dockerfile.Command]:
    last_from = max(i for i, c in enumerate(instructions) if c.cmd == "FROM")
    return instructions[last_from:]


def test_dockerfile_bases_are_pinned_by_digest(instructions: list[dockerfile.Command]) -> None:
    bases = [c.value[0] for c in instructions if c.cmd == "FROM"]
    assert len(bases) >= 2  # multi-stage: no build tools in the runtime image
    for base in bases:
        # A tag can be pushed again; a digest names one image. The tag stays for readers.
        assert re.fullmatch(r"python:\d+\.\d+\.\d+-slim-[a-z]+@sha256:[0-9a-f]{64}", base), base


def test_dockerfile_installs_the_product_from_the_constraints(
    instructions: list[dockerfile.Command],
) -> None:
    runs = [" ".join(c.value) for c in instructions if c.cmd == "RUN"]
    installs = [run for run in runs if "pip install" in run]
    assert installs, "no pip install in the Dockerfile"
    for run in installs:
        assert "-c constraints.txt" in run, run  # the versions CI tested, not the newest
        assert "--no-cache-dir" in run, run
    copied = [
        c.value
        for c in instructions
        if c.cmd == "COPY" and not any(f.startswith("--from=") for f in c.flags)
    ]
    sources = {part for value in copied for part in value[:-1]}
    assert "constraints.txt" in sources
    # The image is the product only: the sandbox distribution never goes in.
    assert not {"sandbox", "emulators", "tests", "."} & sources, sources


def test_dockerfile_final_stage_has_no_compiler_pip_or_source(
    instructions: list[dockerfile.Command],
) -> None:
    stage = final_stage(instructions)
    copies = [c for c in stage if c.cmd == "COPY"]
    assert copies, "the runtime stage copies nothing"
    for copy in copies:
        assert any(flag.startswith("--from=") for flag in copy.flags), copy.original
        assert copy.value == ("/opt/venv", "/opt/venv"), copy.original
    runs = " ".join(" ".join(c.value) for c in stage if c.cmd == "RUN")
    for tool in ("apt-get install", "gcc", "build-essential", "pip install"):
        assert tool not in runs, f"the runtime stage runs {tool!r}"
    build_runs = " ".join(" ".join(c.value) for c in instructions if c.cmd == "RUN")
    assert "pip uninstall --yes pip" in build_runs  # no pip left in the copied venv


def test_dockerfile_runs_as_a_non_root_user(instructions: list[dockerfile.Command]) -> None:
    users = [c.value[0] for c in final_stage(instructions) if c.cmd == "USER"]
    assert users, "the runtime stage sets no USER"
    user = users[-1].split(":")[0]
    assert user not in {"root", "0"}
    assert user.isdigit()  # numeric, so Kubernetes' runAsNonRoot can verify it


def test_dockerfile_checks_health_on_the_admin_port_and_serves_on_3000(
    instructions: list[dockerfile.Command],
) -> None:
    stage = final_stage(instructions)
    [healthcheck] = [c for c in stage if c.cmd == "HEALTHCHECK"]
    assert healthcheck.value[0] == "CMD"
    assert HEALTHZ in " ".join(healthcheck.value)
    by_cmd = {c.cmd: c.value for c in stage}
    assert by_cmd["EXPOSE"] == ("3000", "9100")
    assert by_cmd["ENTRYPOINT"] == ("canary-bot",)
    command = list(by_cmd["CMD"])
    assert command[:1] == ["serve"]
    assert command[command.index("--port") + 1] == "3000"
    assert command[command.index("--admin-port") + 1] == "9100"


@pytest.mark.parametrize(("status", "healthy"), [(200, True), (503, False)])
def test_dockerfile_healthcheck_command_follows_healthz(
    instructions: list[dockerfile.Command], status: int, healthy: bool
) -> None:
    class Healthz(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(status if self.path == "/healthz" else 404)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    [healthcheck] = [c for c in final_stage(instructions) if c.cmd == "HEALTHCHECK"]
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Healthz)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        local = f"http://127.0.0.1:{server.server_address[1]}/healthz"
        argv = [arg.replace(HEALTHZ, local) for arg in healthcheck.value[1:]]
        argv[0] = sys.executable if argv[0] == "python" else argv[0]
        result = subprocess.run(argv, capture_output=True, timeout=30, check=False)
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
    assert (result.returncode == 0) is healthy, result.stderr
