"""Where the outbox's names used to live: now rollout/stores/protocol.py and outbox.py."""

from rollout.stores.protocol import REFRESHED_KEYS, TS_FIELDS, Message, OutboxRow

__all__ = ["REFRESHED_KEYS", "TS_FIELDS", "Message", "OutboxRow"]
