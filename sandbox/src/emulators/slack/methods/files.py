"""The external upload flow `WebClient.files_upload_v2` uses, and `files.info`.

Slack's flow has three legs: ask for an upload URL, POST the raw bytes to it, then complete the
upload, which shares the file into a channel or thread as a message of its own. The raw POST is
not a Web API method; `web_api.py` routes it to `receive_bytes`.
"""

from __future__ import annotations

import time

from emulators.slack.api_args import Args, SlackError
from emulators.slack.records import JsonObject, UploadedFile
from emulators.slack.state import Workspace


def get_upload_url(ws: Workspace, args: Args) -> JsonObject:
    filename = args.require("filename")
    length = args.integer("length")
    if length < 0:
        raise SlackError("invalid_arguments")
    file_id = ws.new_id("F")
    with ws.lock:
        ws.uploads[file_id] = UploadedFile(
            file_id=file_id, filename=filename, title=filename, length=length, created=time.time()
        )
    return {"upload_url": f"{ws.base_url}/upload/v1/{file_id}", "file_id": file_id}


def receive_bytes(ws: Workspace, file_id: str, content: bytes) -> tuple[int, str]:
    """The raw upload leg: (HTTP status, body). The bytes must match the announced length."""
    with ws.lock:
        upload = ws.uploads.get(file_id)
        if upload is None:
            return 404, "file_not_found"
        if len(content) != upload.length:
            return 400, f"length mismatch: announced {upload.length}, received {len(content)}"
        upload.content = content
        upload.uploaded = True
    return 200, f"OK - {len(content)}"


def complete_upload(ws: Workspace, args: Args) -> JsonObject:
    entries = args.json_value("files")
    if not isinstance(entries, list) or not entries:
        raise SlackError("invalid_arguments")
    channels = _channels(ws, args)
    thread_ts = args.text("thread_ts")
    if thread_ts and not channels:
        raise SlackError("invalid_arguments")
    with ws.lock:
        uploads = [_uploaded(ws, entry) for entry in entries]
        # Resolve every thread first so that a bad thread_ts shares nothing at all.
        roots = {c: ws.root_of(c, thread_ts) if thread_ts else None for c in channels}
        for channel, root in roots.items():
            message = ws.post(
                channel=channel,
                text=args.text("initial_comment") or "",
                blocks=[],
                attachments=[],
                thread_ts=root,
                files=uploads,
            )
            for upload in uploads:
                if upload.channel is None:
                    upload.channel, upload.thread_ts, upload.message_ts = channel, root, message.ts
        return {"files": [ws.render_file(u) for u in uploads]}


def _channels(ws: Workspace, args: Args) -> list[str]:
    named = args.text("channel_id") or args.text("channels") or ""
    return [ws.check_channel(c.strip()) for c in named.split(",") if c.strip()]


def _uploaded(ws: Workspace, entry: object) -> UploadedFile:
    if not isinstance(entry, dict) or "id" not in entry:
        raise SlackError("invalid_arguments")
    upload = ws.uploads.get(str(entry["id"]))
    if upload is None or not upload.uploaded:
        raise SlackError("file_not_found")
    if entry.get("title"):
        upload.title = str(entry["title"])
    return upload


def files_info(ws: Workspace, args: Args) -> JsonObject:
    upload = ws.uploads.get(args.require("file"))
    if upload is None or not upload.uploaded:
        raise SlackError("file_not_found")
    return {
        "file": ws.render_file(upload),
        "comments": [],
        "response_metadata": {"next_cursor": ""},
    }
