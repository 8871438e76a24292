"""The Web API methods the emulator answers, by Slack's method name.

A method not listed here answers `unknown_method`, as Slack does, so a bot that starts calling
something new fails loudly in tests until the emulator learns it.
"""

from __future__ import annotations

from collections.abc import Callable

from emulators.slack.api_args import Args
from emulators.slack.methods import chat, directory, files, views
from emulators.slack.records import JsonObject
from emulators.slack.state import Workspace

Handler = Callable[[Workspace, Args], JsonObject]

METHODS: dict[str, Handler] = {
    "auth.test": directory.auth_test,
    "chat.postMessage": chat.post_message,
    "chat.update": chat.update,
    "chat.delete": chat.delete,
    "chat.postEphemeral": chat.post_ephemeral,
    "chat.getPermalink": chat.get_permalink,
    "conversations.info": directory.conversations_info,
    "conversations.history": directory.conversations_history,
    "conversations.replies": directory.conversations_replies,
    "usergroups.users.list": directory.usergroup_users,
    "users.info": directory.users_info,
    "files.getUploadURLExternal": files.get_upload_url,
    "files.completeUploadExternal": files.complete_upload,
    "files.info": files.files_info,
    "views.open": views.views_open,
    "views.push": views.views_push,
    "views.update": views.views_update,
}

__all__ = ["METHODS", "Handler"]
