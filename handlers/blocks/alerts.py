"""The page for on-call: a top-level message that stands on its own.

Whoever is paged reads this first, maybe on a phone, maybe in another channel than the
release: it names the cluster and service, what was breached, whether production traffic is
already safe on stable, and links the rollout's thread for the story.
"""

from __future__ import annotations

import re

from handlers.blocks.common import (
    Message,
    code,
    context,
    fallback,
    mention,
    percent,
    plain,
    section,
    slack_date,
)
from rollout.events import Alert
from rollout.model import Rollout

# A link target must not break out of `<url|label>`.
_SAFE_URL = re.compile(r"https?://[^\s<>|]+")


def alert_message(
    rollout: Rollout,
    alert: Alert,
    *,
    oncall: str | None,
    permalink: str | None,
    cluster_name: str,
) -> Message:
    who = f"{mention(oncall)} " if oncall else ""
    where = f"*{plain(rollout.service, 100)}* on *{plain(cluster_name, 100)}*"
    headline = (
        f":rotating_light: {who}*{plain(alert.title, 300)}*\n{where}: {plain(alert.detail, 2000)}"
    )
    if alert.traffic_on_stable:
        traffic = (
            f":white_check_mark: All traffic is back on stable {code(rollout.stable_image)}; "
            "the canary is being removed."
        )
    else:
        traffic = (
            f":warning: Traffic is *not* back on stable yet: the canary still gets "
            f"{percent(rollout.weight)}."
        )
    if permalink and _SAFE_URL.fullmatch(permalink):
        thread = f"Details in the <{permalink}|rollout thread>."
    else:
        thread = f"Details in the rollout thread in <#{rollout.channel}>."
    blocks = (
        section(headline),
        section(f"{traffic}\n{thread}"),
        context(
            f"Canary {code(rollout.canary_image, 300)} · rollout {code(rollout.id, 80)} · "
            f"{slack_date(alert.at)}"
        ),
    )
    text = (
        f"{who}{plain(alert.title, 300)}: {plain(rollout.service, 100)} on "
        f"{plain(cluster_name, 100)}"
    )
    return Message(text=fallback(text), blocks=blocks)
