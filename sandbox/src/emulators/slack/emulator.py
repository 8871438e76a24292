"""`SlackEmulator`: a local Slack Web API that tests and `canary-bot demo` point the bot at.

The bot keeps using the real slack_sdk `WebClient`, only with `base_url=emulator.api_url`, so
the requests it makes, their encoding and its error handling are exercised exactly as in
production. Reads return snapshots taken under the workspace lock.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Mapping, Sequence
from types import TracebackType
from typing import Any

from emulators.slack import response_urls
from emulators.slack.faults import SlackFaults
from emulators.slack.limits import SlackRateLimits
from emulators.slack.records import (
    ApiCall,
    EphemeralMessage,
    JsonObject,
    Message,
    ResponseUrlPost,
    UploadedFile,
)
from emulators.slack.state import Workspace
from emulators.slack.web_api import ServerThread, build_app


class SlackEmulator:
    def __init__(
        self,
        *,
        bot_token: str = "xoxb-test-token",
        usergroups: Mapping[str, Sequence[str]] | None = None,
        users: Mapping[str, Mapping[str, Any]] | None = None,
        team_domain: str = "canary-demo",
        team_id: str = "T0CANARY",
        api_app_id: str = "A0CANARY",
        bot_user_id: str = "UBOT",
        bot_id: str = "BBOT",
        channel_names: Mapping[str, str] | None = None,
    ) -> None:
        self._ws = Workspace(
            bot_token=bot_token,
            team_id=team_id,
            team_domain=team_domain,
            bot_user_id=bot_user_id,
            bot_id=bot_id,
            app_id=api_app_id,
            usergroups=usergroups or {},
            users=users or {},
            channel_names=channel_names or {},
        )
        self.faults = SlackFaults()
        # Slack's rate limits on chat.update and chat.postMessage: off unless set.
        self.limits: SlackRateLimits | None = None
        self._server: ServerThread | None = None

    # -- lifecycle ----------------------------------------------------------------------------

    def start(self) -> str:
        """Serve on a free port of 127.0.0.1; returns the URL to give `WebClient(base_url=...)`."""
        if self._server is None:
            self._server = ServerThread(
                build_app(self._ws, lambda: self.faults, lambda: self.limits)
            )
            self._ws.base_url = self._server.base_url
            self._server.start()
        return self.api_url

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop()
            self._server = None

    def __enter__(self) -> SlackEmulator:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def base_url(self) -> str:
        if not self._ws.base_url:
            raise RuntimeError("SlackEmulator.start() has not been called")
        return self._ws.base_url

    @property
    def api_url(self) -> str:
        return f"{self.base_url}/api/"

    # -- identity and directory (live: change them while the bot runs) ------------------------

    @property
    def bot_token(self) -> str:
        return self._ws.bot_token

    @property
    def bot_user_id(self) -> str:
        return self._ws.bot_user_id

    @property
    def team_id(self) -> str:
        return self._ws.team_id

    @property
    def team_domain(self) -> str:
        return self._ws.team_domain

    @property
    def usergroups(self) -> dict[str, list[str]]:
        return self._ws.usergroups

    @usergroups.setter
    def usergroups(self, groups: Mapping[str, Sequence[str]]) -> None:
        with self._ws.lock:
            self._ws.usergroups = {k: list(v) for k, v in groups.items()}

    @property
    def users(self) -> dict[str, dict[str, Any]]:
        return self._ws.users

    @users.setter
    def users(self, users: Mapping[str, Mapping[str, Any]]) -> None:
        with self._ws.lock:
            self._ws.users = {k: dict(v) for k, v in users.items()}

    def user_name(self, user: str) -> str:
        return str(self._ws.user(user)["name"])

    def channel_name(self, channel: str) -> str:
        return self._ws.channel_name(channel)

    # -- what happened ------------------------------------------------------------------------

    # Calls, ephemerals and response posts are never changed once recorded: a list copy is a
    # snapshot. Messages, files and views do change, so those are copied deeply.

    @property
    def calls(self) -> list[ApiCall]:
        with self._ws.lock:
            return list(self._ws.calls)

    def calls_to(self, method: str) -> list[ApiCall]:
        with self._ws.lock:
            return [c for c in self._ws.calls if c.method == method]

    def messages(self, channel: str) -> list[Message]:
        """Top-level messages (and replies broadcast to the channel), current content."""
        with self._ws.lock:
            return copy.deepcopy(self._ws.top_level(channel))

    def thread(self, channel: str, ts: str) -> list[Message]:
        """Replies under the root `ts`, oldest first, the root itself excluded."""
        with self._ws.lock:
            return copy.deepcopy(self._ws.replies(channel, ts))

    def message(self, channel: str, ts: str) -> Message | None:
        with self._ws.lock:
            return copy.deepcopy(self._ws.find(channel, ts))

    def as_slack_json(self, message: Message) -> JsonObject:
        """The message as Slack's API (and interaction payloads) show it now."""
        with self._ws.lock:
            current = self._ws.find(message.channel, message.ts)
            if current is None:
                raise AssertionError(f"message {message.ts} in {message.channel} is gone")
            return self._ws.render(current)

    def permalink(self, message: Message) -> str:
        return self._ws.permalink(message)

    @property
    def ephemerals(self) -> list[EphemeralMessage]:
        with self._ws.lock:
            return list(self._ws.ephemerals)

    @property
    def responses(self) -> list[ResponseUrlPost]:
        with self._ws.lock:
            return list(self._ws.responses)

    def responses_to(self, url: str) -> list[ResponseUrlPost]:
        return [r for r in self.responses if r.url == url]

    @property
    def files(self) -> list[UploadedFile]:
        """Files whose bytes arrived, in upload order; `channel` is None until shared."""
        with self._ws.lock:
            return copy.deepcopy([f for f in self._ws.uploads.values() if f.uploaded])

    @property
    def views(self) -> list[JsonObject]:
        with self._ws.lock:
            return copy.deepcopy(self._ws.views)

    def new_response_url(
        self, *, channel: str | None = None, user: str | None = None, message_ts: str | None = None
    ) -> str:
        """A response URL on this server; POSTs to it are recorded in `responses` and applied."""
        return response_urls.new_response_url(
            self._ws, channel=channel, user=user, message_ts=message_ts
        )

    def wait_for(
        self,
        predicate: Callable[[], bool],
        *,
        timeout: float = 10.0,
        interval: float = 0.02,
        what: str | None = None,
    ) -> None:
        """Poll `predicate` until it holds; on timeout fail with what Slack saw meanwhile."""
        deadline = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() >= deadline:
                described = what or getattr(predicate, "__qualname__", repr(predicate))
                raise AssertionError(
                    f"still waiting after {timeout}s for: {described}\n"
                    f"last Web API calls:\n{self._recent_calls()}"
                )
            time.sleep(interval)

    def _recent_calls(self, count: int = 15) -> str:
        lines = [
            f"  {c.method} ok={c.ok}" + (f" error={c.error}" if c.error else "")
            for c in self.calls[-count:]
        ]
        return "\n".join(lines) or "  (none)"

    def transcript(self, channel: str) -> str:
        """A plain-text view of a channel and its threads, for the demo and failure messages."""
        lines: list[str] = []
        for root in self.messages(channel):
            lines.append(f"[{root.ts}] {root.text}" + (" (edited)" if root.edited else ""))
            for reply in self.thread(channel, root.ts):
                names = ", ".join(f.filename for f in reply.files)
                lines.append(f"    [{reply.ts}] {reply.text}" + (f" <{names}>" if names else ""))
        return "\n".join(lines)
