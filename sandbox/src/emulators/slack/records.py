"""What the Slack emulator remembers, as plain dataclasses tests can assert on.

Every record is copied out of the emulator under its lock, so a test holds a snapshot that the
bot's threads cannot change underneath it; ask the emulator again to see later changes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

JsonObject = dict[str, Any]


@dataclass(frozen=True, kw_only=True)
class ApiCall:
    """One Web API call, in arrival order. `at` is `time.monotonic()`, `wall` is `time.time()`."""

    method: str
    args: JsonObject
    at: float
    wall: float
    ok: bool
    error: str | None
    status: int
    response: JsonObject


@dataclass(kw_only=True)
class UploadedFile:
    """A file sent through the external upload flow; `channel` is set once it is shared."""

    file_id: str
    filename: str
    title: str
    length: int
    content: bytes = b""
    uploaded: bool = False
    channel: str | None = None
    thread_ts: str | None = None
    message_ts: str | None = None
    created: float = 0.0


@dataclass(kw_only=True)
class MessageVersion:
    """The content of a message at one moment; `edited_ts` is None for the original."""

    text: str
    blocks: list[JsonObject]
    attachments: list[JsonObject]
    edited_ts: str | None
    at: float
    metadata: JsonObject | None = None


@dataclass(kw_only=True)
class Message:
    """A message as a channel member sees it now.

    `thread_ts` is None for a top-level message and the root's `ts` for a thread reply.
    `edited` counts the updates (so it is also truthy once the message was edited);
    `history` holds every version, the current one last. `metadata` is the message metadata
    (`{"event_type": ..., "event_payload": {...}}`) Slack keeps for apps, or None.
    """

    channel: str
    ts: str
    thread_ts: str | None
    user: str
    text: str
    blocks: list[JsonObject]
    attachments: list[JsonObject] = field(default_factory=list)
    files: list[UploadedFile] = field(default_factory=list)
    reply_broadcast: bool = False
    edited: int = 0
    history: list[MessageVersion] = field(default_factory=list)
    deleted: bool = False
    metadata: JsonObject | None = None

    @property
    def is_reply(self) -> bool:
        return self.thread_ts is not None


@dataclass(frozen=True, kw_only=True)
class EphemeralMessage:
    """A message only `user` sees: from `chat.postEphemeral` or an ephemeral response_url post."""

    channel: str
    user: str
    ts: str
    thread_ts: str | None
    text: str
    blocks: list[JsonObject]
    source: str
    at: float


@dataclass(frozen=True, kw_only=True)
class ResponseUrlPost:
    """A POST to a response URL the emulator handed out (slash command or interaction)."""

    url: str
    body: JsonObject
    at: float

    @property
    def text(self) -> str:
        return str(self.body.get("text", ""))

    @property
    def response_type(self) -> str:
        return str(self.body.get("response_type", "ephemeral"))


@dataclass(kw_only=True)
class ResponseTarget:
    """Where a response URL points: the conversation, the user, and the clicked message."""

    channel: str | None
    user: str | None
    message_ts: str | None
    uses: int = 0
