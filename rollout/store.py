"""Where the store used to live: the names its importers know, now in rollout/stores/."""

from rollout.stores import ActiveRolloutExists, FencedOut, SqliteStore, StaleRollout, Store

__all__ = ["ActiveRolloutExists", "FencedOut", "SqliteStore", "StaleRollout", "Store"]
