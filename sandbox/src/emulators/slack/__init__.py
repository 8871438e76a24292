"""A local stand-in for Slack: the Web API the bot calls, and the requests Slack sends the bot.

`SlackEmulator` answers the Web API (point `WebClient(base_url=...)` at `emulator.api_url`) and
records every call, message, thread, file, view and response-URL post. `SlackDriver` sends the
bot signed slash commands, button clicks and view submissions exactly as Slack does.
"""

from emulators.slack.driver import DriverResponse, SlackDriver
from emulators.slack.emulator import SlackEmulator
from emulators.slack.faults import SlackFaults
from emulators.slack.limits import SlackRateLimits
from emulators.slack.records import (
    ApiCall,
    EphemeralMessage,
    Message,
    MessageVersion,
    ResponseUrlPost,
    UploadedFile,
)

__all__ = [
    "ApiCall",
    "DriverResponse",
    "EphemeralMessage",
    "Message",
    "MessageVersion",
    "ResponseUrlPost",
    "SlackDriver",
    "SlackEmulator",
    "SlackFaults",
    "SlackRateLimits",
    "UploadedFile",
]
