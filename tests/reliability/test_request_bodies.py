"""Bodies are limited at the server and never parsed before the signature is checked.

`canary-bot serve` runs as its own process so that what it costs can be read from /proc: its
resident memory (`VmRSS` in /proc/PID/status) and the bytes it has written (`wchar` in
/proc/PID/io, every write() the process made, to files or sockets; a spooled body shows up
there in full, even in a temporary file that was unlinked at once).

Bounds are generous on purpose, with the reason next to each: these tests run on a shared
2-core machine, and each bound is still far from what the defect costs (the figures measured
are printed with `-s` and quoted in README "Guarantees").
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import pytest
import requests

from canary_sandbox.sandbox import SIGNING_SECRET, Sandbox
from tests.reliability.support import FORM, free_port, logged_errors, wait_for

MIB = 1024 * 1024
HUGE = 60 * MIB
# The bounds are 10 MB of RSS and nothing on disk; a spooled 60 MB body writes 60 MiB.
RSS_BOUND = 10 * MIB
WRITTEN_BOUND = 1 * MIB  # the 413 itself and a log line are a few hundred bytes
# The issue asks for an answer within 1 s; 5 s leaves room for a loaded shared machine while
# still far below reading 60 MB first, which is what the bound is there to catch.
ANSWER_BOUND_S = 5.0


@dataclass
class Bot:
    process: subprocess.Popen[bytes]
    port: int
    log_path: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def rss(self) -> int:
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        raise AssertionError("no VmRSS")

    def written(self) -> int:
        for line in Path(f"/proc/{self.process.pid}/io").read_text().splitlines():
            if line.startswith("wchar:"):
                return int(line.split()[1])
        raise AssertionError("no wchar")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


@pytest.fixture(scope="module")
def bot(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Bot]:
    where = tmp_path_factory.mktemp("bodies")
    box = Sandbox(workdir=where / "sandbox")
    box.start()
    port, admin_port = free_port(), free_port()
    log_path = where / "bot.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            box.serve_command(port=port, admin_port=admin_port),
            env=box.process_env(),  # log level WARNING, where refusals are logged
            stdout=log,
            stderr=log,
        )
    running = Bot(process=process, port=port, log_path=log_path)
    try:
        wait_for(lambda: _ok(f"http://127.0.0.1:{admin_port}/readyz"), what="/readyz")
        yield running
    finally:
        process.terminate()
        process.wait(timeout=30)
        box.stop()


def _ok(url: str) -> bool:
    try:
        return requests.get(url, timeout=1).status_code == 200
    except requests.RequestException:
        return False


def signed_headers(body: bytes, *, secret: str = SIGNING_SECRET) -> dict[str, str]:
    stamp = str(int(time.time()))
    digest = hmac.new(secret.encode(), b"v0:" + stamp.encode() + b":" + body, hashlib.sha256)
    return {"X-Slack-Request-Timestamp": stamp, "X-Slack-Signature": "v0=" + digest.hexdigest()}


def send_huge(port: int, size: int) -> tuple[bytes, float]:
    """POST a `size`-byte body as fast as loopback takes it; (status line, seconds to it).

    A second thread keeps sending while this one waits for the answer, as a real client
    would: the server must answer without reading what it will refuse anyway.
    """
    head = (
        "POST /slack/events HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        f"Content-Type: {FORM}\r\nContent-Length: {size}\r\n"
        f"X-Slack-Request-Timestamp: {int(time.time())}\r\nX-Slack-Signature: v0=00\r\n\r\n"
    ).encode()
    chunk = b"x" * MIB
    with socket.create_connection(("127.0.0.1", port), timeout=30) as conn:

        def pour() -> None:
            try:
                conn.sendall(head)
                for _ in range(size // MIB):
                    conn.sendall(chunk)
            except OSError:
                pass  # the server answered and closed: what it should do

        began = time.monotonic()
        sender = threading.Thread(target=pour, daemon=True)
        sender.start()
        answer = b""
        while b"\r\n" not in answer:
            part = conn.recv(4096)
            if not part:
                break
            answer += part
        seconds = time.monotonic() - began
        with contextlib.suppress(OSError):  # already reset by the server
            conn.shutdown(socket.SHUT_RDWR)
        sender.join(timeout=30)
    return answer.split(b"\r\n", 1)[0], seconds


def test_a_60_mb_body_is_refused_before_it_is_read(bot: Bot) -> None:
    rss_before, written_before = bot.rss(), bot.written()
    status_line, seconds = send_huge(bot.port, HUGE)
    rss_growth, written = bot.rss() - rss_before, bot.written() - written_before
    print(
        f"\n60 MiB body: {status_line.decode()} after {seconds * 1000:.0f} ms; "
        f"RSS {rss_growth / MIB:+.1f} MiB; {written} bytes written"
    )
    assert status_line.startswith(b"HTTP/1.1 413"), status_line
    assert seconds < ANSWER_BOUND_S
    assert rss_growth < RSS_BOUND
    assert written < WRITTEN_BOUND
    assert bot.process.poll() is None


def nested(depth: int) -> str:
    return "[" * depth + "]" * depth


@pytest.mark.parametrize("kind", ["json", "form payload"])
def test_a_deeply_nested_body_with_a_bad_signature_is_401_without_a_traceback(
    bot: Bot, kind: str
) -> None:
    # 200 KB of nesting, far deeper than Python's parser can go (percent-encoding triples the
    # size of a form field, so that one nests less to stay under the body limit).
    if kind == "json":
        body, content_type = nested(100 * 1024).encode(), "application/json"
    else:
        body, content_type = f"payload={quote(nested(40_000))}".encode(), FORM
    log_before = len(bot.log())
    headers = {
        **signed_headers(body, secret="not-the-signing-secret"),
        "Content-Type": content_type,
    }
    answer = requests.post(f"{bot.url}/slack/events", data=body, headers=headers, timeout=10)
    assert answer.status_code == 401, answer.text
    logged = bot.log()[log_before:]
    assert "Traceback" not in logged
    assert logged_errors(logged) == []
    [line] = logged.strip().splitlines()
    assert "refused POST /slack/events: 401" in line


def test_a_signed_but_unparseable_body_is_400_with_one_log_line(bot: Bot) -> None:
    body = nested(100 * 1024).encode()
    log_before = len(bot.log())
    headers = {**signed_headers(body), "Content-Type": "application/json"}
    answer = requests.post(f"{bot.url}/slack/events", data=body, headers=headers, timeout=10)
    assert answer.status_code == 400, answer.text
    assert json.loads(answer.text) == {"error": "malformed request body"}
    logged = bot.log()[log_before:].strip().splitlines()
    assert len(logged) == 1 and "refused POST /slack/events: 400" in logged[0], logged


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [("GET", "/nowhere", 404), ("GET", "/slack/events", 405), ("GET", "/metrics", 404)],
)
def test_other_malformed_requests_get_a_4xx_and_one_log_line(
    bot: Bot, method: str, path: str, status: int
) -> None:
    log_before = len(bot.log())
    answer = requests.request(method, f"{bot.url}{path}", timeout=10)
    assert answer.status_code == status
    assert "error" in answer.json()
    logged = bot.log()[log_before:].strip().splitlines()
    assert len(logged) == 1 and f"refused {method} {path}: {status}" in logged[0], logged
